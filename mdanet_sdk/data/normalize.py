"""The head mask and the per-modality normalisation: steps 1-2 of :mod:`mdanet_sdk.data.preprocess`, on the
native grid.

1. **Head mask** (:func:`head_support`), or the caller's brain mask (:func:`head_region`): voxels that stand
   out from the background in any modality. The background value of a modality is the median of the in-plane
   border of its slices (0 for skull-stripped MRI and perfusion maps, -1000 for CT, the noise floor of an MRI
   that is not skull-stripped); a voxel belongs to the head when it differs from it by more than 1 % of the
   modality's range and by more than 8 robust noise sigmas of the border (so noise stays background).
   Holes of each slice are filled (CSF is ~0 in perfusion maps) and specks dropped. A noisy background is
   reported as a warning (the input does not look skull-stripped).
2. **Normalisation** (:func:`normalize_volumes`), per modality, with statistics taken inside the head mask
   only. ``"relative"`` (the default of new runs, :func:`normalize_relative`): divided by the median of the
   positive values, minus 1, clipped to -1..10, so tissue is ~0 whatever its texture or noise. ``"zscore"``
   (checkpoints written before ``normalization`` existed, and maps with negative values, :func:`normalize`):
   clipped to the ``clip_percentiles`` (0.5 and 99.5 by default), centred on the median and divided by the
   robust standard deviation ``IQR / 1.349`` (the standard deviation if the IQR is 0, else 1). Both are
   invariant to the gain and unit of a modality (ADC in 1e-3 or 1e-6 mm²/s gives the same result).
   Everything outside the head mask becomes one constant (the lowest value), whatever it was (zero, noise,
   air, skull rim beyond the mask).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from mdanet_sdk.errors import InputError

__all__ = [
    "NORMALIZATIONS",
    "RELATIVE_MAX",
    "NOT_A_RATIO_SCALE",
    "NOT_SKULL_STRIPPED",
    "head_support",
    "head_mask",
    "head_region",
    "not_a_ratio_scale",
    "normalize",
    "normalize_relative",
    "normalize_volumes",
]

# Share of a modality's range a voxel must differ from the background to count as head.
_HEAD_TOLERANCE = 0.01
# Below this share of voxels the mask is not trusted and statistics use the whole volume.
_MIN_HEAD_FRACTION = 1e-3
#: Normalisations of :class:`~mdanet_sdk.data.preprocess.PreprocessConfig`.
NORMALIZATIONS = ("relative", "zscore")
#: Largest relative value kept above tissue (×11 of the median: a Tmax of 11 s over 1 s of tissue).
RELATIVE_MAX = 10.0
NOT_A_RATIO_SCALE = "A modality has negative values: it is normalised by z-scores instead of by its median."
NOT_SKULL_STRIPPED = (
    "The input has a noisy, non-zero background: it does not look skull-stripped; pass a brain mask for reliable "
    "results (--brain-mask FILE, or brain_mask= in Python)."
)
# A background whose robust noise sigma exceeds this share of the head's range is noise, not a constant.
_NOISY_BACKGROUND = 0.001
# A border "noise" above this share of the head's range is head tissue on the border, not noise.
_TISSUE_LEVEL_NOISE = 0.05


def _border(volume: np.ndarray) -> np.ndarray:
    """The voxels of the in-plane border of every axial slice (a slab's top and bottom slices are tissue)."""
    return np.concatenate([volume[[0, -1]].ravel(), volume[:, [0, -1]].ravel()])


def _support(volume: np.ndarray) -> tuple[np.ndarray, bool]:
    """Voxels that stand out from this volume's background, and whether that background is noisy.

    The background value is the median of the in-plane border; a voxel stands out when it differs from it by
    more than 1 % of the volume's largest difference and by more than 8 robust noise sigmas (1.4826 × the
    border's median absolute deviation), so that Gaussian or Rician noise stays background. Where the head
    touches the border so much that the "noise" is at tissue level (over 5 % of that difference), only the
    1 % rule applies.
    """
    border = _border(volume)
    middle = float(np.median(border))
    offset = np.abs(volume - middle)
    noise = 1.4826 * float(np.median(np.abs(border - middle)))
    top = float(np.percentile(offset, 99.9))
    if noise > _TISSUE_LEVEL_NOISE * top:
        return offset > _HEAD_TOLERANCE * top, False
    return offset > max(_HEAD_TOLERANCE * top, 8.0 * noise), noise > _NOISY_BACKGROUND * top


def _clean(mask: np.ndarray) -> np.ndarray:
    """Fill each axial slice's holes (CSF is ~0 in perfusion maps) and drop specks: 3D components smaller
    than 1 % of the largest."""
    filled = np.stack([ndimage.binary_fill_holes(mask[..., z]) for z in range(mask.shape[2])], axis=-1)
    labels, n = ndimage.label(filled)
    if n <= 1:
        return filled
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes >= 0.01 * sizes.max()) + 1
    return np.isin(labels, keep)


def head_support(volumes: Sequence[np.ndarray]) -> tuple[np.ndarray, bool]:
    """The head (or brain) in co-registered ``(X, Y, Z)`` volumes, and whether any background is noisy.

    A voxel is head when it stands out from the background in any volume (:func:`_support`); each slice's
    enclosed holes are filled and specks dropped. The background may be zero (skull-stripped MRI, perfusion
    maps), a constant (-1000 HU) or noise (an MRI that is not skull-stripped).

    Returns:
        ``(mask, noisy)``: bool ``(X, Y, Z)``, all True when fewer than 0.1 % of the voxels would be head
        (nothing to trust); ``noisy`` when some volume's background is not a constant.
    """
    mask = np.zeros(volumes[0].shape, dtype=bool)
    noisy = False
    for volume in volumes:
        support, noise = _support(np.asarray(volume, dtype=np.float32))
        mask |= support
        noisy |= noise
    mask = _clean(mask)
    return (mask if mask.mean() >= _MIN_HEAD_FRACTION else np.ones_like(mask)), noisy


def head_mask(volumes: Sequence[np.ndarray]) -> np.ndarray:
    """The head mask of :func:`head_support`: bool ``(X, Y, Z)``."""
    return head_support(volumes)[0]


def not_a_ratio_scale(inside: np.ndarray) -> bool:
    """Whether values are not a non-negative physical quantity (over 5 % negative) or have no positive one."""
    return bool((inside < 0).mean() > 0.05 or not (inside > 0).any())


def normalize_relative(
    volume: np.ndarray, mask: np.ndarray, clip_percentiles: tuple[float, float] = (0.5, 99.5)
) -> np.ndarray:
    """Divide by the modality's median in ``mask`` (its positive voxels), minus 1; clip to -1..:data:`RELATIVE_MAX`.

    Tissue becomes ~0, a voxel at half the tissue value -0.5 (an ischaemic core's CBF), at twice 1 (a DWI
    lesion), and everything outside ``mask`` -1. Unlike a z-score it does not depend on the tissue's texture
    or noise (a uniform phantom and a textured brain give the same lesion contrast), and like it, not on
    gain or unit. Falls back to :func:`normalize` for a map that is not a non-negative physical quantity
    (more than 5 % of ``mask`` negative, e.g. CT in HU or an input already z-scored) or has no positive value.

    Returns:
        float32 array of ``volume``'s shape.
    """
    inside = volume[mask]
    if not_a_ratio_scale(inside):
        return normalize(volume, mask, clip_percentiles)
    reference = float(np.median(inside[inside > 0]))
    out = np.where(mask, np.clip(volume / reference, 0.0, RELATIVE_MAX + 1.0), 0.0) - 1.0
    return out.astype(np.float32)


def normalize(volume: np.ndarray, mask: np.ndarray, clip_percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Clip to percentiles inside ``mask`` and robust-z-score (median, IQR / 1.349) with the same statistics.

    Args:
        volume: any-shape float array.
        mask: bool array of the same shape, where the statistics are taken (not empty).
        clip_percentiles: ``(low, high)`` in 0-100.

    Returns:
        float32 array of ``volume``'s shape.
    """
    inside = volume[mask]
    low, q25, median, q75, high = np.percentile(inside, [clip_percentiles[0], 25.0, 50.0, 75.0, clip_percentiles[1]])
    # Clipping at the outer percentiles leaves the quartiles and the median unchanged.
    scale = (q75 - q25) / 1.349
    if scale <= 0:
        scale = float(np.clip(inside, low, high).std())
    scale = scale if scale > 0 else 1.0
    # Outside the mask every background (zero, -1000 HU, noise, skull) becomes the same constant, the
    # clipped low end: the network never sees what lies outside the head.
    out = np.where(mask, np.clip(volume, low, high), low)
    return ((out - median) / scale).astype(np.float32)


def head_region(volumes: Sequence[np.ndarray], brain_mask: np.ndarray | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Where statistics are taken and lesions may lie: the caller's brain mask, else :func:`head_support`.

    Args:
        volumes: co-registered float ``(X, Y, Z)`` volumes.
        brain_mask: ``(X, Y, Z)`` (non-zero = brain) or None.

    Returns:
        ``(mask, warnings)``: bool ``(X, Y, Z)``, and :data:`NOT_SKULL_STRIPPED` when the automatic mask saw a
        noisy background.

    Raises:
        InputError: the brain mask is not on the volumes' grid, or empty.
    """
    if brain_mask is not None:
        mask = np.asarray(brain_mask) != 0
        if mask.shape != volumes[0].shape or not mask.any():
            raise InputError(
                f"the brain mask has shape {mask.shape} and {int(mask.sum())} voxels; it must be a non-empty mask "
                f"on the images' grid {volumes[0].shape}."
            )
        return mask, ()
    mask, noisy = head_support(volumes)
    if noisy:
        return mask, (NOT_SKULL_STRIPPED,)
    return mask, ()


def normalize_volumes(
    volumes: Sequence[np.ndarray], mask: np.ndarray, normalization: str, clip_percentiles: tuple[float, float]
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Normalise each modality with its statistics inside ``mask`` (module docstring, step 2).

    Args:
        volumes: float ``(X, Y, Z)`` volumes, one per modality, in channel order.
        mask: bool ``(X, Y, Z)``, not empty (:func:`head_region`).
        normalization: ``"relative"`` or ``"zscore"`` (:data:`NORMALIZATIONS`).
        clip_percentiles: ``(low, high)`` in 0-100, for z-scores.

    Returns:
        ``(normalised, warnings)``: float32 ``(C, X, Y, Z)``, and :data:`NOT_A_RATIO_SCALE` when a modality
        asked to be normalised relatively fell back to z-scores.
    """
    if normalization == "relative":
        warnings = (NOT_A_RATIO_SCALE,) if any(not_a_ratio_scale(v[mask]) for v in volumes) else ()
        return np.stack([normalize_relative(v, mask, clip_percentiles) for v in volumes]), warnings
    return np.stack([normalize(v, mask, clip_percentiles) for v in volumes]), ()
