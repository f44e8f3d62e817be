"""Probability map → lesion mask: threshold, minimum lesion size, and the restricted-diffusion gate.

TorchScript-compatible: :mod:`mdanet_sdk.inference.postprocess` calls these functions in Python and exported
artefacts carry them scripted. Lesions are connected with full connectivity (26 neighbours in 3D).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from mdanet_sdk.pipeline.morphology import component_sizes, keep_components, label
from mdanet_sdk.pipeline.stats import median

__all__ = ["remove_small_lesions", "tissue_adc", "lesion_medians", "keep_restricted_lesions", "postprocess"]


def remove_small_lesions(mask: Tensor, min_size: int) -> Tensor:
    """Drop connected lesions (26-connectivity) of fewer than ``min_size`` voxels: uint8 of ``mask``'s shape."""
    mask = mask.to(torch.bool)
    if min_size <= 1 or not bool(mask.any().item()):
        return mask.to(torch.uint8)
    labels = label(mask, full=True)
    return keep_components(labels, component_sizes(labels) >= min_size).to(torch.uint8)


def tissue_adc(adc: Tensor, parenchyma: Optional[Tensor] = None) -> float:
    """The case's parenchymal ADC: the median over brain voxels (``ADC > 0``) after dropping CSF.

    CSF (ADC ~3e-3 mm²/s, about 4x tissue) would pull a plain median up by an amount that depends on atrophy,
    so voxels above 1.5x the plain median are left out first. 0.0 for a map without positive voxels. With
    ``parenchyma`` (bool: the parenchyma of a head that is not skull-stripped,
    :func:`mdanet_sdk.pipeline.intensity.reference_region`) only its voxels count, so that scalp and muscle (ADC
    ~1.5x tissue) do not raise it; unless under half of them hold a positive ADC (a map that does not cover the
    DWI's parenchyma), as the normalisation then falls back to the head.
    """
    values = adc
    if parenchyma is not None:
        inside = adc[parenchyma]
        if 2 * int((inside > 0).sum().item()) > inside.numel():
            values = inside
    values = values[values > 0]
    if values.numel() == 0:
        return 0.0
    return median(values[values <= 1.5 * median(values)])


def lesion_medians(values: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor]:
    """The median of ``values`` over each label of ``labels`` (> 0), as ``scipy.ndimage.median``.

    Returns:
        ``(label_values, medians)``: the distinct labels (int64, ascending) and their medians (float64; the
        mean of the two middle values of an even count).
    """
    inside = labels > 0
    v = values[inside].to(torch.float64)
    lab = labels[inside]
    order = torch.argsort(v, stable=True)
    lab, v = lab[order], v[order]
    order = torch.argsort(lab, stable=True)  # grouped by label, sorted by value within each group
    lab, v = lab[order], v[order]
    names, counts = torch.unique_consecutive(lab, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    return names, (v[starts + (counts - 1) // 2] + v[starts + counts // 2]) / 2.0


def keep_restricted_lesions(mask: Tensor, adc: Tensor, max_ratio: float, parenchyma: Optional[Tensor] = None) -> Tensor:
    """Keep only the lesions that show restricted diffusion, as acute infarcts do.

    A connected lesion (26-connectivity) stays when its median ADC is at most ``max_ratio`` times the case's
    parenchymal ADC (:func:`tissue_adc`, in ``parenchyma`` when given) and above 0 (an ADC of 0 is outside the
    brain, not restriction); ``max_ratio <= 0`` keeps everything. Returns uint8.
    """
    mask = mask.to(torch.bool)
    if max_ratio <= 0 or not bool(mask.any().item()):
        return mask.to(torch.uint8)
    reference = tissue_adc(adc, parenchyma)
    if reference <= 0:
        return mask.to(torch.uint8)
    labels = label(mask, full=True)
    names, medians = lesion_medians(adc, labels)
    keep = torch.zeros(labels.numel() + 1, dtype=torch.bool)
    keep[names] = (medians > 0) & (medians / reference <= max_ratio)  # ADC <= 0 is outside the brain
    return keep_components(labels, keep).to(torch.uint8)


def postprocess(
    probability: Tensor,
    threshold: float,
    min_size: int = 0,
    adc: Optional[Tensor] = None,
    max_adc_ratio: float = 0.0,
    parenchyma: Optional[Tensor] = None,
) -> Tensor:
    """Probability map → uint8 mask: above ``threshold``, without lesions under ``min_size`` voxels, then (with
    an ADC map and ``max_adc_ratio > 0``) without lesions lacking restricted diffusion
    (:func:`keep_restricted_lesions`; ``parenchyma``: where the tissue ADC is taken, :func:`tissue_adc`)."""
    mask = remove_small_lesions(probability > threshold, min_size)
    if adc is not None and max_adc_ratio > 0:
        mask = keep_restricted_lesions(mask, adc, max_adc_ratio, parenchyma)
    return mask
