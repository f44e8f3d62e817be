"""The head region and per-modality normalisation of co-registered volumes (steps 1-2 of preprocessing).

TorchScript-compatible: :mod:`mdanet_sdk.data.normalize` calls these functions in Python and exported artefacts
carry them scripted, so the C API normalises as Python does. Volumes are float32 ``(X, Y, Z)``; masks bool.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from mdanet_sdk.pipeline.morphology import bounding_box, component_sizes, fill_holes_planar, keep_components, label
from mdanet_sdk.pipeline.stats import median, quantiles

__all__ = [
    "HEAD_TOLERANCE",
    "MIN_HEAD_FRACTION",
    "RELATIVE_MAX",
    "NO_BLOOD",
    "BRAIN_SHARE",
    "HYPOPERFUSED_HALF",
    "NEGATIVE_NOISE",
    "support",
    "clean_head",
    "stored_field",
    "magnitude_images",
    "head_support",
    "not_a_ratio_scale",
    "normalize_zscore",
    "normalize_relative",
    "undefined_transit_times",
    "reference_region",
    "perfused_half",
    "normalize_volumes",
]

#: A voxel is head when it differs from the background by more than this share of the volume's largest difference.
HEAD_TOLERANCE = 0.01
#: Below this fraction of head voxels the automatic mask is not trusted (all voxels are taken instead).
MIN_HEAD_FRACTION = 1e-3
#: Relative normalisation clips at this multiple of the tissue value (minus 1).
RELATIVE_MAX = 10.0
#: Where CBF and CBV are both under this share of the tissue's, no blood flows: transit times are undefined there.
NO_BLOOD = 0.1
#: When less of a head's DWI than this share is parenchyma, the head holds skull, scalp or neck: the tissue values
#: that the relative normalisation divides by are then taken in the parenchyma (:func:`reference_region`).
BRAIN_SHARE = 0.7
# Parenchyma is brighter in DWI than this share of its median; CSF, bone, scalp, muscle and air are darker.
_DARK_IN_DWI = 0.5
#: Negative values whose median magnitude stays under this share of the positive values' median are noise around 0
#: (CSF and air of a map not clipped at 0), not a scale centred on 0.
NEGATIVE_NOISE = 0.25
#: When the head's median Tmax is this many times that of its left or right half, a hypoperfused territory
#: covers much of the other half: the perfusion maps' tissue values are taken in the lower half. Held-out own CTP
#: phantoms reach 1.12-1.68 (lesions raise the head's median a little), half-delayed heads 5.9-8.1.
HYPOPERFUSED_HALF = 2.5
# A border noise sigma above this share of the head's range makes a background "noisy" (not skull-stripped).
_NOISY_BACKGROUND = 0.001
# Noise sigmas that make a voxel head by itself, and those that make it head when connected to such a voxel.
_SEED_SIGMAS = 8.0
_GROW_SIGMAS = 4.0
# A border "noise" above this share of the head's range is head tissue on the border, not noise, unless (in a
# magnitude image) it is noise after all (:func:`_border_is_noise`):
_TISSUE_LEVEL_NOISE = 0.05
# its median lies within this many of its sigmas of 0 (noise around nothing),
_NOISE_AROUND_ZERO = 2.5
# its voxels one or two apart differ at least this share as much as independent samples do (white noise),
_WHITE_NOISE = 0.85
# and no more than this share of the voxels found lie below its median (a head above its air).
_STRAY = 0.01
# A textured border that more than this share of the voxels found lie below is tissue, not background, where tissue
# is brighter than the background (a head than its air, perfusing tissue than where no blood flows): the whole field
# is head. Not in maps whose background can be brighter (fitted noise in ADC, deconvolution junk in MTT and Tmax).
_TISSUE_BORDER = 0.5
# 3D components (faces) smaller than this share of the largest are specks, not head.
_SPECK_FRACTION = 0.01
# A volume whose support covers this much more of the slices' border than the cleanest volume's cannot tell its
# background from head (an ADC map that is half 0, half fitted noise: its border MAD is 0); it is left out.
_LEAKY_BORDER = 0.1
# A data box whose border is at least this share non-fill, and whose border's median lies within this share of
# the volume's range of the fill, is a field of view stored in a larger frame (its border is background, not tissue).
_FILLED_FIELD = 0.9
_FIELD_BACKGROUND = 0.25


def _border(volume: Tensor) -> Tensor:
    """The voxels of the in-plane border of every axial slice (a slab's top and bottom slices are tissue)."""
    return _border_lines(volume).reshape(-1)


def _border_lines(volume: Tensor) -> Tensor:
    """The four in-plane edges of every axial slice, one after another along dim 0: ``(2X + 2Y, Z)``."""
    return torch.cat([volume[0], volume[-1], volume[:, 0], volume[:, -1]], 0)


def support(
    volume: Tensor,
    tolerance: float = HEAD_TOLERANCE,
    tissue_noise: float = _TISSUE_LEVEL_NOISE,
    noisy_background: float = _NOISY_BACKGROUND,
    seed_sigmas: float = _SEED_SIGMAS,
    grow_sigmas: float = _SEED_SIGMAS,
    faint_sigmas: float = _GROW_SIGMAS,
    magnitude: bool = True,
    tissue_border: float = _TISSUE_BORDER,
    tissue_above: bool = True,
) -> Tuple[Tensor, bool]:
    """Voxels that stand out from this volume's background, and whether that background is noisy.

    The background value is the median of the in-plane border; a voxel stands out when it differs from it by
    more than 1 % of the volume's largest difference (its 99.9th percentile) and by more than 8 robust noise
    sigmas (1.4826 × the border's median absolute deviation), so that Gaussian or Rician noise stays
    background, or, with ``grow_sigmas`` under ``seed_sigmas`` (:func:`magnitude_images`), by more than ``grow_sigmas`` while
    connected to such a voxel (hysteresis: white matter a few noise sigmas above noise in the air of a perfusion
    map joins the head; isolated noise does not). Where the head touches the border so much that the "noise" is
    at tissue level (over 5 % of that difference), only the 1 % rule applies, unless the volume is a ``magnitude``
    image (MRI, whose air is noise around 0; not a perfusion map, whose 0 is tissue: a healthy Tmax) and that border
    is noise after all (:func:`_border_is_noise`): a DWI of SNR 5-10, whose tissue lies under 20 noise sigmas above
    its air. Then white matter can lie under 8 sigmas too, and the head grows by hysteresis to ``faint_sigmas`` (4).

    With ``tissue_above`` (tissue brighter than this volume's background: DWI, CBF, CBV, not ADC, MTT, Tmax), a
    textured border (noise above 0; a constant is a fill) that over half the 8-sigma voxels lie below is tissue:
    what stands out below it is lesion, CSF or air in a box mostly inside the head. Then every voxel is head (all
    True, not noisy).
    """
    border = _border(volume)
    middle = median(border)
    offset = (volume - middle).abs()
    noise = 1.4826 * median((border - middle).abs())
    top = quantiles(offset, [0.999])[0]
    high = max(tolerance * top, seed_sigmas * noise)
    found = offset > high
    if tissue_above and noise > 0 and _share_below(volume, found, middle) > tissue_border:
        return torch.ones_like(found), False
    grow = grow_sigmas
    if noise > tissue_noise * top:
        if not (magnitude and _border_is_noise(volume, found, middle, noise)):
            return offset > tolerance * top, False
        grow = min(grow, faint_sigmas)
    low = max(tolerance * top, grow * noise)
    if low < high:
        found = _grown(found, offset > low)
    return found, noise > noisy_background * top


def _border_is_noise(
    volume: Tensor,
    found: Tensor,
    middle: float,
    noise: float,
    around: float = _NOISE_AROUND_ZERO,
    white: float = _WHITE_NOISE,
    stray: float = _STRAY,
) -> bool:
    """Whether a border whose spread is at tissue level is noise around a head after all. Three tests: its median lies
    within 2.5 of its robust sigmas of 0, as noise around nothing does (magnitude noise, Rayleigh: 1.77; tissue with
    a fifth of its value as noise: 5); border voxels next to each other or two apart (in-plane) differ as independent
    samples do (the robust spread of their differences at least 0.85 × √2 × the border's: 0.91-0.99 for white
    noise and for noise interpolated 2× by Fourier or cubic interpolation; tissue on the border varies smoothly,
    0.01-0.77 in phantoms cropped to their head); and the voxels ``found`` lie above the border's median (at most 1 %
    of them below): a head brighter than its air, not the air of a tissue border. ``found`` may touch the border (a
    head cut by the field of view)."""
    if not bool(found.any()) or abs(middle) > around * noise:
        return False
    lines = _border_lines(volume)  # the 3 × lag pairs across two edges' joins are too few to matter
    spread = 0.0
    for lag in [1, 2]:  # 2: a scanner's 2x interpolation correlates neighbours, not voxels two apart
        steps = (lines[lag:] - lines[:-lag]).reshape(-1)
        spread = max(spread, 1.4826 * median((steps - median(steps)).abs()))
    if spread < white * noise * 2.0**0.5:
        return False
    return _share_below(volume, found, middle) <= stray


def _share_below(volume: Tensor, found: Tensor, middle: float) -> float:
    """The share of the voxels ``found`` that lie below ``middle`` (0 when none is found)."""
    if not bool(found.any()):
        return 0.0
    return float((volume[found] < middle).to(torch.float32).mean().item())


def _grown(seeds: Tensor, candidates: Tensor) -> Tensor:
    """The components (by faces) of ``candidates`` that hold a voxel of ``seeds`` (hysteresis; ``seeds`` lie in
    ``candidates``)."""
    labels = label(candidates)
    keep = torch.zeros(labels.numel() + 1, dtype=torch.bool, device=labels.device)
    keep[labels[seeds]] = True
    return keep_components(labels, keep)


def clean_head(mask: Tensor, speck_fraction: float = _SPECK_FRACTION) -> Tensor:
    """Fill each axial slice's holes (CSF is ~0 in perfusion maps) and drop specks: 3D components (faces)
    smaller than 1 % of the largest."""
    filled = fill_holes_planar(mask)
    labels = label(filled)
    sizes = component_sizes(labels)
    sizes[0] = 0
    if int((sizes > 0).sum().item()) <= 1:
        return filled
    return keep_components(labels, sizes >= speck_fraction * float(sizes.max().item()))


def stored_field(
    volumes: List[Tensor], filled: float = _FILLED_FIELD, background: float = _FIELD_BACKGROUND
) -> List[int]:
    """The box ``[x0, x1, y0, y1, z0, z1]`` that holds the scan's own field of view.

    The whole volume, unless every volume's slice border is one constant and, in some volume, the box around the
    voxels that differ from it has an in-plane border that is at least 90 % such voxels and lies near the
    constant (its median within a quarter of the volume's range of it): a scan resampled onto a larger grid and
    zero-filled around its field of view (a registration's output; empty slices included). Then the box's border
    is the background to model (noise, for an MRI that is not skull-stripped), not the fill. A skull-stripped
    head in zeros never qualifies (its bounding box's border is mostly zeros), nor does tissue that fills its box
    (a perfusion map computed in a rectangle: its border is tissue, far from the fill).
    """
    x, y, z = volumes[0].shape[0], volumes[0].shape[1], volumes[0].shape[2]
    whole = [0, x, 0, y, 0, z]
    data = torch.zeros([x, y, z], dtype=torch.bool)
    fills: List[float] = []
    for volume in volumes:
        border = _border(volume)
        fill = float(border[0].item())
        if not bool((border == fill).all()):
            return whole
        fills.append(fill)
        data = data | (volume != fill)
    if not bool(data.any()):
        return whole
    box = bounding_box(data)
    for i in range(len(volumes)):
        field = volumes[i][box[0] : box[1], box[2] : box[3], box[4] : box[5]]
        edge = _border(field)
        if float((edge != fills[i]).to(torch.float32).mean().item()) < filled:
            continue  # a head in the fill, not a field of view: the common case, decided without a quantile
        spread = quantiles((field - fills[i]).abs().reshape(-1), [0.999])[0]
        if abs(median(edge) - fills[i]) <= background * spread:
            return box
    return whole


def magnitude_images(modalities: List[str]) -> bool:
    """Whether volumes of these modalities are read as magnitude images (DWI, ADC, CT: :func:`support`'s
    ``magnitude``), i.e. unless any is a perfusion map (CBF, CBV, MTT, Tmax, in any case), whose 0 is tissue.

    It decides how far above a noisy background the head mask grows from its 8-sigma voxels: perfusion maps to 4
    sigmas, since their white matter can lie a few sigmas above positive noise in the air; magnitude images not at
    all unless the air's noise reaches tissue level, since what lies 4-8 sigmas above the air next to a head is
    scalp and partial volume, which the network then marks (docs/history.md, 2026-12-05)."""
    for name in modalities:
        if name.lower() in ["cbf", "cbv", "mtt", "tmax"]:
            return False
    return True


def head_support(
    volumes: List[Tensor],
    modalities: Optional[List[str]] = None,
    min_fraction: float = MIN_HEAD_FRACTION,
    leaky_border: float = _LEAKY_BORDER,
) -> Tuple[Tensor, bool]:
    """The head (or brain) in co-registered ``(X, Y, Z)`` volumes, and whether any background is noisy.

    Inside :func:`stored_field` (the whole slice unless the scan lies zero-filled in a larger grid; nothing
    outside it is head), a voxel is head when it stands out from the background in any volume (:func:`support`), then
    :func:`clean_head`. The background may be zero (skull-stripped MRI, perfusion maps), a constant (-1000 HU)
    or noise (an MRI that is not skull-stripped). A volume whose support covers over 10 % more of the slices'
    border than the cleanest volume's is left out of the union and counts as a noisy background: its
    background is neither a constant nor noise the rule can model (an ADC map outside the head is often half
    0, half fitted noise), while the border is background in the others. Where the border of a volume whose tissue
    is brighter than its background is tissue (:func:`support`: all True), the head fills the field.
    ``modalities``: the volumes' names, which say whether they are magnitude images (:func:`magnitude_images`;
    without names they are) and whether their background can be brighter than tissue (ADC, MTT, Tmax).

    Returns:
        ``(mask, noisy)``: bool ``(X, Y, Z)``, all True (inside the stored field of view) when fewer than 0.1 % of
        its voxels would be head (nothing to trust).
    """
    magnitude = True if modalities is None else magnitude_images(modalities)
    above = [True for _ in volumes]
    if modalities is not None and len(modalities) == len(volumes):  # names of the volumes, not of a model
        above = [name.lower() not in ["adc", "mtt", "tmax"] for name in modalities]
    box = stored_field(volumes)
    if box == [0, volumes[0].shape[0], 0, volumes[0].shape[1], 0, volumes[0].shape[2]]:
        return _head_in_field(volumes, above, min_fraction, leaky_border, magnitude)
    inside, noisy = _head_in_field(
        [v[box[0] : box[1], box[2] : box[3], box[4] : box[5]].contiguous() for v in volumes],
        above,
        min_fraction,
        leaky_border,
        magnitude,
    )
    whole = torch.zeros(volumes[0].shape, dtype=torch.bool)
    whole[box[0] : box[1], box[2] : box[3], box[4] : box[5]] = inside
    return whole, noisy


def _head_in_field(
    volumes: List[Tensor],
    above: List[bool],
    min_fraction: float,
    leaky_border: float,
    magnitude: bool,
    seed_sigmas: float = _SEED_SIGMAS,
    grow_sigmas: float = _GROW_SIGMAS,
) -> Tuple[Tensor, bool]:
    """:func:`head_support` of volumes whose slice border is their field of view's; ``above``: whether each
    volume's tissue is brighter than its background (:func:`support`'s ``tissue_above``)."""
    grow = seed_sigmas if magnitude else grow_sigmas  # magnitude images grow only from tissue-level noise
    found: List[Tensor] = []
    leaks: List[float] = []
    noisy = False
    for i, volume in enumerate(volumes):
        support_of_volume, noise = support(
            volume.to(torch.float32), grow_sigmas=grow, magnitude=magnitude, tissue_above=above[i]
        )
        if bool(support_of_volume.all()):  # its border is tissue: no background in sight
            return support_of_volume, False
        found.append(support_of_volume)
        leaks.append(float(_border(support_of_volume).to(torch.float32).mean().item()))
        noisy = noisy or noise
    cleanest = min(leaks)
    mask = torch.zeros(volumes[0].shape, dtype=torch.bool)
    for i in range(len(found)):
        if leaks[i] > cleanest + leaky_border:
            noisy = True
        else:
            mask = mask | found[i]
    mask = clean_head(mask)
    if float(mask.to(torch.float32).mean().item()) < min_fraction:
        return torch.ones_like(mask), noisy
    return mask, noisy


def not_a_ratio_scale(inside: Tensor, noise: float = NEGATIVE_NOISE) -> bool:
    """Whether values are not a non-negative physical quantity: none positive, or over 5 % negative where the
    negative values' median magnitude exceeds ``noise`` x the positive values' median (a z-scored or offset map).
    Noise around 0 in CSF or air, which maps not clipped at 0 carry, keeps a ratio scale: it is clipped to 0."""
    positive = inside[inside > 0]
    if positive.numel() == 0:
        return True
    negative = inside[inside < 0]
    if negative.numel() <= 0.05 * inside.numel():
        return False
    return median(-negative) > noise * median(positive)


def normalize_zscore(volume: Tensor, mask: Tensor, clip_low: float = 0.5, clip_high: float = 99.5) -> Tensor:
    """Clip to percentiles inside ``mask`` and robust-z-score (median, IQR / 1.349) with the same statistics.

    Outside the mask every background (zero, -1000 HU, noise, skull) becomes the clipped low end: the network
    never sees what lies outside the head. Returns float32 of ``volume``'s shape.
    """
    inside = volume[mask]
    low, q25, middle, q75, high = quantiles(inside, [clip_low / 100.0, 0.25, 0.5, 0.75, clip_high / 100.0])
    # Clipping at the outer percentiles leaves the quartiles and the median unchanged.
    scale = (q75 - q25) / 1.349
    if scale <= 0:
        scale = float(torch.std(inside.clamp(low, high).to(torch.float64), unbiased=False).item())
    if not scale > 0:
        scale = 1.0
    out = torch.where(mask, volume.clamp(low, high), torch.full_like(volume, low))
    return ((out - middle) / scale).to(torch.float32)


def normalize_relative(
    volume: Tensor, mask: Tensor, clip_low: float = 0.5, clip_high: float = 99.5, ceiling: float = RELATIVE_MAX
) -> Tensor:
    """Divide by the modality's median in ``mask`` (its positive voxels), minus 1; clip to -1..:data:`RELATIVE_MAX`.

    Tissue becomes ~0, a voxel at half the tissue value -0.5 (an ischaemic core's CBF), at twice 1 (a DWI
    lesion), and everything outside ``mask`` -1. Falls back to :func:`normalize_zscore` for a map that is not a
    non-negative physical quantity (:func:`not_a_ratio_scale`). Returns float32 of ``volume``'s shape.
    """
    out = torch.empty(volume.shape, dtype=torch.float32, device=volume.device)
    _relative_into(out, volume, mask, clip_low, clip_high, ceiling)
    return out


def _relative_into(
    out: Tensor,
    volume: Tensor,
    mask: Tensor,
    clip_low: float,
    clip_high: float,
    ceiling: float,
    region: Optional[Tensor] = None,
) -> bool:
    """:func:`normalize_relative` written into ``out`` (in place: no temporaries of the volume's size), the tissue
    value taken in ``region`` (:func:`reference_region`; ``mask`` when None); returns whether it fell back to
    z-scores."""
    inside = volume[mask]
    if not_a_ratio_scale(inside):
        out.copy_(normalize_zscore(volume, mask, clip_low, clip_high))
        return True
    values = inside if region is None else volume[region]
    if not bool((values > 0).any()):
        values = inside
    reference = median(values[values > 0])
    out.copy_(volume).div_(reference).clamp_(0.0, ceiling + 1.0).masked_fill_(~mask, 0.0).sub_(1.0)
    return False


def undefined_transit_times(
    volumes: List[Tensor], modalities: List[str], mask: Tensor, share: float = NO_BLOOD
) -> List[Tensor]:
    """Perfusion maps with MTT and Tmax set to 0 where no blood flows: CBF and CBV both under ``share`` (10 %) of
    the tissue's (their medians over the positive voxels in ``mask``, the references of the normalisation).

    A transit time is a ratio of blood volume to flow (MTT = CBV / CBF) or the delay of a residue function
    (Tmax): without blood (CSF, bone, air) it is undefined, and deconvolution leaves 0 there or junk, such as a
    skull ring or ventricles at a Tmax of 12-14 s, which look exactly like an infarct core and also raise the Tmax
    median that normalises the map. 0 is the convention of the training maps (CSF in half of them). Infarct
    cores keep a quarter or more of their tissue's CBV, so only the odd core voxel is touched where noise and
    texture take both maps under 10 % of the whole head's median (in the own phantoms, with white-matter cores,
    at most 3 % of a core's voxels); a core whose CBV itself falls under 10 % would lose its Tmax.
    Volumes without both a ``"cbf"`` and a ``"cbv"`` map (names in any case), or where one of them is not a ratio
    scale (:func:`not_a_ratio_scale`) or has no positive voxel in ``mask``, are returned as given.
    """
    names = [m.lower() for m in modalities]
    if "cbf" not in names or "cbv" not in names:
        return volumes
    no_blood = torch.ones(mask.shape, dtype=torch.bool, device=mask.device)
    for name in ["cbf", "cbv"]:
        volume = volumes[names.index(name)]
        inside = volume[mask]
        positive = inside[inside > 0]
        if not_a_ratio_scale(inside) or positive.numel() == 0:
            return volumes
        no_blood = no_blood & (volume < share * median(positive))
    out = list(volumes)
    for name in ["mtt", "tmax"]:
        if name in names:
            c = names.index(name)
            out[c] = volumes[c].masked_fill(no_blood, 0.0)
    return out


def reference_region(
    volumes: List[Tensor], modalities: List[str], mask: Tensor, share: float = BRAIN_SHARE, dark: float = _DARK_IN_DWI
) -> Optional[Tensor]:
    """Where the relative normalisation takes each modality's tissue value: ``mask`` (None), unless a DWI shows
    that under 70 % of the head is parenchyma (a head that is not skull-stripped: skull, scalp, muscle, neck), then
    the parenchyma.

    Parenchyma is where the DWI is above half the parenchyma's median (a fixed point reached from the head's
    median); CSF (~0.3x), bone, scalp and muscle (~0.35x) and air lie under it. In skull-stripped brains and the
    own phantoms it holds 82-100 % of the head's positive DWI (CSF is the rest), so their references are the
    head's medians, as in training; where skull, scalp and neck make up half the head, the head's median DWI falls
    to ~0.35x the parenchyma's and its ADC rises (scalp and muscle ~1.5x), so tissue looked like a lesion and
    lesions like tissue. Without a ``"dwi"`` among ``modalities`` (perfusion maps) it is :func:`perfused_half`. The
    switch is a
    step: a skull-stripped brain with over 30 % CSF (atrophy) takes the parenchyma's medians too (its white matter
    moves by ~0.08), and in a head with skull and scalp a lesion filling half the brain can be the reference, as it
    is the median of a skull-stripped brain from 55 % on.
    """
    names = [m.lower() for m in modalities]
    if "dwi" not in names:
        return perfused_half(volumes, names, mask)
    dwi = volumes[names.index("dwi")]
    head = mask & (dwi > 0)
    total = int(head.sum().item())
    if total == 0:
        return None
    level = median(dwi[head])
    region = head
    for _ in range(20):
        region = head & (dwi > dark * level)
        moved = median(dwi[region])
        if moved == level:
            break
        level = moved
    if int(region.sum().item()) >= share * total:
        return None
    return region


def perfused_half(
    volumes: List[Tensor], names: List[str], mask: Tensor, ratio: float = HYPOPERFUSED_HALF
) -> Optional[Tensor]:
    """The half of the head whose perfusion is normal, where a hypoperfused territory has made the head's median
    Tmax its own; None (the whole head) otherwise, or without a ``"tmax"`` map.

    The relative normalisation divides each map by its median in the head: healthy tissue becomes ~0 as long as
    lesions fill well under half the head. A large vessel occlusion can delay a whole hemisphere (Tmax > 6 s) around
    a small core, and the head's median Tmax is then the delayed tissue's, so that the core's Tmax no longer stands
    out. The head is split at its centre along left-right (axis 0 of RAS+ volumes); where the head's median Tmax
    (positive voxels) is ``ratio`` times the lower half's, that half is the reference. Below that the head's medians
    stay the reference, as in training, where large lesions raise them a little too. MTT, which such a territory
    raises by only ~1.3x, does not tell it.
    """
    if "tmax" not in names:
        return None
    time = volumes[names.index("tmax")]
    head = mask & (time > 0)
    columns = head.sum(dim=[1, 2]).to(torch.float64)
    total = float(columns.sum().item())
    if total == 0.0:
        return None
    x = torch.arange(columns.shape[0], dtype=torch.float64, device=columns.device)
    left = (x < float((columns * x).sum().item()) / total).view(-1, 1, 1)
    halves = [head & left, head & ~left]
    if int(halves[0].sum().item()) == 0 or int(halves[1].sum().item()) == 0:
        return None
    medians = [median(time[h]) for h in halves]
    lower = 0 if medians[0] <= medians[1] else 1
    if median(time[head]) < ratio * medians[lower]:
        return None
    return mask & left if lower == 0 else mask & ~left


def normalize_volumes(
    volumes: List[Tensor],
    mask: Tensor,
    normalization: str,
    clip_low: float,
    clip_high: float,
    modalities: List[str],
    ceiling: float = RELATIVE_MAX,
) -> Tuple[Tensor, bool, Optional[Tensor]]:
    """Normalise each modality with its statistics inside ``mask``; for ``"relative"``, transit times are first
    set to 0 where no blood flows (:func:`undefined_transit_times`).

    Args:
        volumes: float32 ``(X, Y, Z)`` volumes in channel order.
        mask: bool ``(X, Y, Z)``, not empty.
        normalization: ``"relative"`` or ``"zscore"``.
        clip_low, clip_high: percentiles (0-100) for z-scores.
        modalities: the volumes' names (``"cbf"``, ``"tmax"``, ...), in channel order.
        ceiling: the relative normalisation's clip (:data:`RELATIVE_MAX`).

    Returns:
        ``(normalised (C, X, Y, Z) float32, fell_back, parenchyma)``: ``fell_back`` when a modality asked to be
        normalised relatively was z-scored instead; ``parenchyma`` where the tissue values were taken
        (:func:`reference_region`; None: ``mask``), where the ADC gate takes its tissue ADC too.
    """
    region: Optional[Tensor] = None
    if normalization == "relative":  # z-score checkpoints (written before) keep the inputs they were trained on
        volumes = undefined_transit_times(volumes, modalities, mask)
        region = reference_region(volumes, modalities, mask)
    out = torch.empty([len(volumes)] + list(volumes[0].shape), dtype=torch.float32, device=volumes[0].device)
    fell_back = False
    for c, volume in enumerate(volumes):
        if normalization == "relative":
            fell_back = _relative_into(out[c], volume, mask, clip_low, clip_high, ceiling, region) or fell_back
        else:
            out[c].copy_(normalize_zscore(volume, mask, clip_low, clip_high))
    return out, fell_back, region
