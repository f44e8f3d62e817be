"""The head mask and the per-modality normalisation: steps 1-2 of :mod:`mdanet_sdk.data.preprocess`, on the
native grid.

1. **Head mask** (:func:`head_support`), or the caller's brain mask (:func:`head_region`): voxels that stand
   out from the background in any modality. The background value of a modality is the median of the in-plane
   border of its slices (0 for skull-stripped MRI and perfusion maps, -1000 for CT, the noise floor of an MRI
   that is not skull-stripped); a voxel belongs to the head when it differs from it by more than 1 % of the
   modality's range and by more than 8 robust noise sigmas of the border (so noise stays background), or, for
   perfusion maps, by more than 4 while connected to such a voxel (white matter a few sigmas above noisy air).
   Holes of each slice are filled (CSF is ~0 in perfusion maps) and specks dropped. A textured border that most
   of what stands out lies below, in a DWI, CBF or CBV map, is tissue (a field of view smaller than the head): the
   whole field is head. A noisy background is reported as a warning (the input does not look skull-stripped).
2. **Normalisation** (:func:`normalize_volumes`), per modality, with statistics taken inside the head mask
   only. ``"relative"`` (the default of new runs, :func:`normalize_relative`): divided by the median of the
   positive values, minus 1, clipped to -1..10, so tissue is ~0 whatever its texture or noise; where a DWI shows
   the head to be under 70 % parenchyma (skull, scalp, neck), the medians are the parenchyma's
   (:func:`mdanet_sdk.pipeline.intensity.reference_region`). ``"zscore"``
   (checkpoints written before ``normalization`` existed, and maps with negative values, :func:`normalize`):
   clipped to the ``clip_percentiles`` (0.5 and 99.5 by default), centred on the median and divided by the
   robust standard deviation ``IQR / 1.349`` (the standard deviation if the IQR is 0, else 1). Both are
   invariant to the gain and unit of a modality (ADC in 1e-3 or 1e-6 mm²/s gives the same result).
   Everything outside the head mask becomes one constant (the lowest value), whatever it was (zero, noise,
   air, skull rim beyond the mask). With ``"relative"``, perfusion maps first get MTT and Tmax 0 where CBF and
   CBV are both under 10 % of tissue: without blood a transit time is undefined, and deconvolution junk there
   looks like a core.

The computations are :mod:`mdanet_sdk.pipeline.intensity` (torch, scriptable, carried by exported artefacts so
that the C API normalises as Python does); this module takes and returns numpy arrays and adds the checks and
warnings a user sees.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mdanet_sdk.errors import InputError
from mdanet_sdk.pipeline import intensity

__all__ = [
    "NORMALIZATIONS",
    "RELATIVE_MAX",
    "NOT_A_RATIO_SCALE",
    "NOT_SKULL_STRIPPED",
    "offset_background",
    "head_support",
    "head_mask",
    "head_region",
    "not_a_ratio_scale",
    "normalize",
    "normalize_relative",
    "normalize_volumes",
]

#: Normalisations of :class:`~mdanet_sdk.data.preprocess.PreprocessConfig`.
NORMALIZATIONS = ("relative", "zscore")
#: Largest relative value kept above tissue (×11 of the median: a Tmax of 11 s over 1 s of tissue).
RELATIVE_MAX = intensity.RELATIVE_MAX
NOT_A_RATIO_SCALE = (
    "A modality has many negative values beyond noise: it is normalised by z-scores instead of by its median, which "
    "the model was not trained on, so the mask is less reliable; give the map in physical units, 0 and up."
)
NOT_SKULL_STRIPPED = (
    "The input has a noisy, non-zero background: it does not look skull-stripped; pass a brain mask for reliable "
    "results (--brain-mask FILE, or brain_mask= in Python)."
)


#: A diffusion map whose border is one value above this share of its tissue value was shifted, not filled.
_OFFSET_SHARE = 0.05


def offset_background(volumes: Sequence[np.ndarray], modalities: Sequence[str], mask: np.ndarray) -> tuple[str, ...]:
    """One warning per DWI or ADC whose background is a positive constant well above 0: no signal stored as
    ``v > 0`` means the whole image was shifted (an offset, a rescale to another range), which the relative
    normalisation cannot see, and its lesion contrast is squashed (DWI + 1000 gave 10 lesion voxels of 310).
    Negative values already fall back to z-scores with :data:`NOT_A_RATIO_SCALE`."""
    warnings = []
    for volume, name in zip(volumes, modalities):
        if name.lower() not in ("dwi", "adc"):
            continue
        border = intensity._border(_tensor(volume)).numpy()  # the border the head mask reads its background from
        values, counts = np.unique(border, return_counts=True)
        level = float(values[counts.argmax()])
        if counts.max() < 0.9 * border.size or level <= 0 or not mask.any():
            continue  # the head's median (~1 s for 80 M voxels) only where the border is a positive constant
        if level > _OFFSET_SHARE * abs(float(np.median(volume[mask]))):
            warnings.append(
                f"The {name} image's background is a constant {level:g}, not 0: if the image was shifted (an offset "
                "or a rescale to another range) its lesion contrast is lost; store it with 0 for no signal."
            )
    return tuple(warnings)


def _tensor(array: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)


def head_support(volumes: Sequence[np.ndarray], modalities: Sequence[str] = ()) -> tuple[np.ndarray, bool]:
    """The head (or brain) in co-registered ``(X, Y, Z)`` volumes, and whether any background is noisy
    (:func:`mdanet_sdk.pipeline.intensity.head_support`); with perfusion maps among ``modalities`` the mask grows
    into tissue 4-8 noise sigmas above noisy air (:func:`mdanet_sdk.pipeline.intensity.magnitude_images`), and a
    magnitude image's only where that noise reaches tissue level. Without ``modalities`` (the default) the volumes
    are taken for magnitude images: pass them for perfusion maps.

    Returns:
        ``(mask, noisy)``: bool ``(X, Y, Z)``, all True (inside the stored field of view) when fewer than 0.1 %
        of its voxels would be head (nothing to trust); ``noisy`` when some volume's background is not a constant.
    """
    tensors = [_tensor(np.asarray(v, dtype=np.float32)) for v in volumes]
    mask, noisy = intensity.head_support(tensors, list(modalities))
    return mask.numpy(), noisy


def head_mask(volumes: Sequence[np.ndarray], modalities: Sequence[str] = ()) -> np.ndarray:
    """The head mask of :func:`head_support`: bool ``(X, Y, Z)``."""
    return head_support(volumes, modalities)[0]


def not_a_ratio_scale(inside: np.ndarray) -> bool:
    """Whether values are not a non-negative physical quantity (:func:`mdanet_sdk.pipeline.intensity.not_a_ratio_scale`:
    none positive, or over 5 % negative values beyond noise around 0)."""
    return intensity.not_a_ratio_scale(_tensor(inside))


def normalize_relative(
    volume: np.ndarray, mask: np.ndarray, clip_percentiles: tuple[float, float] = (0.5, 99.5)
) -> np.ndarray:
    """Divide by the modality's median in ``mask`` (its positive voxels), minus 1; clip to -1..:data:`RELATIVE_MAX`
    (:func:`mdanet_sdk.pipeline.intensity.normalize_relative`; z-scores for a map that is not a ratio scale).

    Returns:
        float32 array of ``volume``'s shape.
    """
    low, high = clip_percentiles
    return intensity.normalize_relative(_tensor(volume), _tensor(mask, torch.bool), low, high).numpy()


def normalize(volume: np.ndarray, mask: np.ndarray, clip_percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Clip to percentiles inside ``mask`` and robust-z-score (median, IQR / 1.349) with the same statistics
    (:func:`mdanet_sdk.pipeline.intensity.normalize_zscore`).

    Args:
        volume: any-shape float array.
        mask: bool array of the same shape, where the statistics are taken (not empty).
        clip_percentiles: ``(low, high)`` in 0-100.

    Returns:
        float32 array of ``volume``'s shape.
    """
    low, high = clip_percentiles
    return intensity.normalize_zscore(_tensor(volume), _tensor(mask, torch.bool), low, high).numpy()


def head_region(
    volumes: Sequence[np.ndarray], brain_mask: np.ndarray | None, modalities: Sequence[str]
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Where statistics are taken and lesions may lie: the caller's brain mask, else :func:`head_support`.

    Args:
        volumes: co-registered float ``(X, Y, Z)`` volumes.
        brain_mask: ``(X, Y, Z)`` (non-zero = brain) or None.
        modalities: the volumes' names (perfusion maps grow the automatic mask, :func:`head_support`).

    Returns:
        ``(mask, warnings)``: bool ``(X, Y, Z)``; :data:`NOT_SKULL_STRIPPED` when the automatic mask saw a
        noisy background, and :func:`offset_background`'s warnings.

    Raises:
        InputError: the brain mask is not on the volumes' grid, or empty.
    """
    noisy = False
    if brain_mask is not None:
        mask = np.asarray(brain_mask) != 0
        if mask.shape != volumes[0].shape or not mask.any():
            raise InputError(
                f"the brain mask has shape {mask.shape} and {int(mask.sum())} voxels; it must be a non-empty mask "
                f"on the images' grid {volumes[0].shape}."
            )
    else:
        mask, noisy = head_support(volumes, modalities)
    warnings = (NOT_SKULL_STRIPPED,) if noisy else ()
    return mask, warnings + offset_background(volumes, modalities, mask)


def normalize_volumes(
    volumes: Sequence[np.ndarray],
    mask: np.ndarray,
    normalization: str,
    clip_percentiles: tuple[float, float],
    modalities: Sequence[str],
) -> tuple[np.ndarray, tuple[str, ...], np.ndarray | None]:
    """Normalise each modality with its statistics inside ``mask`` (module docstring, step 2).

    Args:
        volumes: float ``(X, Y, Z)`` volumes, one per modality, in channel order.
        mask: bool ``(X, Y, Z)``, not empty (:func:`head_region`).
        normalization: ``"relative"`` or ``"zscore"`` (:data:`NORMALIZATIONS`).
        clip_percentiles: ``(low, high)`` in 0-100, for z-scores.
        modalities: the volumes' names; with ``"cbf"`` and ``"cbv"`` among them and ``"relative"``, MTT and Tmax
            are first set to 0 where no blood flows (:func:`mdanet_sdk.pipeline.intensity.undefined_transit_times`).

    Returns:
        ``(normalised, warnings, parenchyma)``: float32 ``(C, X, Y, Z)``; :data:`NOT_A_RATIO_SCALE` when a
        modality asked to be normalised relatively fell back to z-scores; bool ``(X, Y, Z)`` where the tissue values
        were taken in a head that is not skull-stripped, None where they were taken in ``mask``
        (:func:`mdanet_sdk.pipeline.intensity.reference_region`).
    """
    low, high = clip_percentiles
    tensors = [_tensor(np.asarray(v, dtype=np.float32)) for v in volumes]
    normalised, fell_back, region = intensity.normalize_volumes(
        tensors, _tensor(mask, torch.bool), normalization, low, high, list(modalities)
    )
    parenchyma = None if region is None else region.numpy()
    return normalised.numpy(), (NOT_A_RATIO_SCALE,) if fell_back else (), parenchyma
