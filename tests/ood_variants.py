"""Acquisition variants of the OOD phantoms (:mod:`ood_phantoms`), for TESTING only: what a scanner or a user's
pipeline does to a case (a field of view smaller than the head, a head that is not skull-stripped)."""

from __future__ import annotations

import numpy as np
from ood_phantoms import OODCase, _rician, _rng
from scipy import ndimage

__all__ = ["delayed_hemisphere", "inside_the_head", "with_scalp"]


def inside_the_head(case: OODCase, share: float) -> OODCase:
    """``case`` cut to the centred in-plane box of ``share`` of its head's extent: a field of view (or a crop)
    smaller than the head, whose slice border is mostly tissue. Images, label and masks are cut alike; the
    affine keeps every voxel's world position."""
    head = case.masks["head"]
    box = []
    for axis in (0, 1):
        inside = np.flatnonzero(head.any(axis=tuple(a for a in (0, 1, 2) if a != axis)))
        centre, half = (inside[0] + inside[-1]) / 2, share * (inside[-1] - inside[0] + 1) / 2
        box.append(slice(int(centre - half), int(centre + half)))
    cut = (box[0], box[1], slice(None))
    affine = case.affine.copy()
    affine[:3, 3] = case.affine[:3] @ np.array([box[0].start, box[1].start, 0, 1], dtype=float)
    return OODCase(
        case.kind,
        case.seed,
        {k: np.ascontiguousarray(v[cut]) for k, v in case.images.items()},
        np.ascontiguousarray(case.label[cut]),
        affine,
        {**case.info, "inside_the_head": share},
        {k: np.ascontiguousarray(v[cut]) for k, v in case.masks.items()},
    )


def with_scalp(case: OODCase, thickness_mm: float, noise: float = 0.03) -> OODCase:
    """An MRI ``case``'s brain inside a head that is not skull-stripped: bone 2-8 mm outside the brain (DWI 0.03x,
    ADC 0.3x the tissue's), then scalp and muscle ``thickness_mm`` thick (DWI 0.35x, ADC 1.5x), Rician noise of
    ``noise`` x tissue in the DWI everywhere and in the ADC inside the head; air 0 in the ADC. The brain's own
    skull ring, if any, is replaced."""
    rng = _rng(case.seed, "mri")
    brain = case.masks["brain"]
    outside = ndimage.distance_transform_edt(~brain, sampling=case.spacing)
    bone = (outside > 2.0) & (outside <= 8.0)
    scalp = (outside > 8.0) & (outside <= 8.0 + thickness_mm)
    dwi_tissue = float(np.median(case.images["dwi"][case.masks["tissue"]]))
    adc_tissue = float(np.median(case.images["adc"][case.masks["tissue"]]))
    dwi = np.select([brain, bone, scalp], [case.images["dwi"], 0.03 * dwi_tissue, 0.35 * dwi_tissue], 0.0)
    adc = np.select([brain, bone, scalp], [case.images["adc"], 0.3 * adc_tissue, 1.5 * adc_tissue], 0.0)
    head = brain | bone | scalp
    adc = np.where(head, np.abs(adc * (1 + noise * rng.standard_normal(adc.shape))), 0.0)
    images = {"dwi": _rician(rng, dwi.astype(np.float32), noise * dwi_tissue), "adc": adc.astype(np.float32)}
    masks = {**case.masks, "skull": bone, "head": head}
    return OODCase("mri", case.seed, images, case.label, case.affine, {**case.info, "scalp_mm": thickness_mm}, masks)


def delayed_hemisphere(case: OODCase, share: float = 0.6, tmax_s: float = 7.5, cbf: float = 0.75) -> OODCase:
    """A CTP ``case`` whose core lies in a territory that is hypoperfused throughout (a large vessel occlusion with a
    small core): the ``share`` of the tissue on the core's side of a sagittal plane (the core's hemisphere and, for
    a share over 0.5, some of the other) takes Tmax ``tmax_s`` seconds and ``cbf`` x its CBF outside the core (MTT
    rises alike: CBV kept). The label is the core, as before; the delayed tissue joins ``masks["penumbra"]``."""
    rng = _rng(case.seed + 7919, "ctp")
    tissue, core = case.masks["tissue"], case.label > 0
    x = np.broadcast_to(np.arange(tissue.shape[0])[:, None, None], tissue.shape)
    low_side = float(x[core].mean()) < float(x[tissue].mean())
    plane = np.quantile(x[tissue], share if low_side else 1.0 - share)
    delayed = (x <= plane if low_side else x >= plane) & tissue & ~core
    images = {k: v.copy() for k, v in case.images.items()}
    noise = 1.0 + case.info["noise_frac"] * rng.standard_normal(int(delayed.sum()))
    images["tmax"][delayed] = np.float32(tmax_s * case.info["tmax_gain"]) * noise.astype(np.float32)
    images["cbf"][delayed] *= np.float32(cbf)
    images["mtt"][delayed] /= np.float32(cbf)
    masks = {**case.masks, "penumbra": case.masks["penumbra"] | delayed}
    info = {**case.info, "delayed_hemisphere": {"share": share, "tmax_s": tmax_s, "cbf": cbf}}
    return OODCase(case.kind, case.seed, images, case.label, case.affine, info, masks)
