"""Step 3 of an ISLES'22-like phantom: DWI (b = 1000 s/mm²) and ADC from the diffusion signal equation, the
look-alikes only one of them flags, and what lies around the brain. Parameters: :data:`~.tables.MRI`,
:data:`~.tables.MRI_MIMICS`, :data:`~.tables.BACKGROUND` and the domain's ranges.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mdanet_sdk.data.phantom.anatomy import Anatomy
from mdanet_sdk.data.phantom.domain import Domain
from mdanet_sdk.data.phantom.lesions import Effects, add_mimic
from mdanet_sdk.data.phantom.tables import BACKGROUND, MRI, MRI_MIMICS

__all__ = ["mri_images", "mri_background"]


def _mimics(
    rng, anat: Anatomy, fx: Effects, t2_factor: np.ndarray, adc_factor: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add the confounders: T2 shine-through (DWI bright, ADC normal or raised), a chronic infarct (ADC high,
    DWI dark) and susceptibility at the skull base (DWI only).

    Returns:
        ``(t2_factor, adc_factor, dwi_only)``: the factors multiplied by the confounders', and the DWI-only
        factor, float32 ``(X, Y, Z)``.
    """
    m, c = MRI_MIMICS, anat.dims[2]
    tissue = anat.brain & (anat.csf < 0.5)
    dwi_only = np.ones(anat.shape, np.float32)
    for _ in range(int(rng.integers(*m.shine_count))):
        t2, adc = rng.uniform(*m.shine_t2), rng.uniform(*m.shine_adc)
        p = add_mimic(
            rng,
            anat,
            fx,
            tissue & (anat.depth > m.shine_min_depth_mm),
            rng.uniform(*m.shine_radius_mm),
            "t2-shine-through",
            t2=t2,
            adc=adc,
        )
        if p is not None:
            t2_factor *= 1.0 + t2 * p
            adc_factor *= 1.0 + adc * p
    if rng.random() < m.chronic_p:
        t2, adc = rng.uniform(*m.chronic_t2), rng.uniform(*m.chronic_adc)
        p = add_mimic(
            rng,
            anat,
            fx,
            tissue & (anat.depth < m.chronic_max_depth_mm),
            rng.uniform(*m.chronic_radius_mm),
            "chronic",
            t2=t2,
            adc=adc,
        )
        if p is not None:
            t2_factor *= 1.0 + t2 * p
            adc_factor *= 1.0 + adc * p
    below, lateral, front = m.skull_base
    base = (
        anat.brain
        & (anat.w < -below * c)
        & (anat.depth < m.susceptibility_max_depth_mm)
        & ((np.abs(anat.u) > lateral) | (anat.v > front * anat.dims[1]))
    )
    for _ in range(int(rng.integers(*m.susceptibility_count)) + int(rng.random() < m.susceptibility_extra_p)):
        gain = rng.uniform(*m.susceptibility_dwi)
        p = add_mimic(rng, anat, fx, base, rng.uniform(*m.susceptibility_radius_mm), "susceptibility", dwi=gain)
        if p is not None:
            dwi_only *= 1.0 + gain * p
    return t2_factor, adc_factor, dwi_only


def _bias(rng, anat: Anatomy, dom: Domain) -> np.ndarray:
    """Coil bias on DWI only (it cancels in the ADC ratio): brighter towards the periphery and, often, towards
    the base; smooth. float32 ``(X, Y, Z)``."""
    radial = (anat.u / anat.dims[0]) ** 2 + (anat.v / anat.dims[1]) ** 2
    axial = rng.uniform(*MRI.bias_axial) * np.clip(-anat.w / anat.dims[2], *MRI.bias_axial_clip)
    bias = np.exp(
        rng.uniform(*MRI.bias_radial) * radial
        + axial
        + rng.uniform(*MRI.bias_field) * anat.noise(rng, MRI.bias_scale_mm)
    )
    return bias ** dom.uniform(rng, dom.bias)


def mri_images(rng, anat: Anatomy, fx: Effects, dom: Domain) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """DWI (b = 1000 s/mm², arbitrary units) and ADC (1e-3 mm²/s) from the diffusion signal equation.

    Returns:
        ``(images, info)``: float ``(X, Y, Z)`` ``"dwi"`` and ``"adc"``, and the case's gain, noise, b-value
        and background.
    """
    # Tissue parameters (ADC in 1e-3 mm²/s, T2-weighted S0 relative to white matter) with texture.
    tex_a, tex_s = anat.noise(rng, MRI.texture_scale_mm), anat.noise(rng, MRI.texture_scale_mm)
    regional_a, regional_s = anat.noise(rng, MRI.regional_adc_scale_mm), anat.noise(rng, MRI.regional_s0_scale_mm)
    adc_wm, adc_gm = rng.uniform(*MRI.adc_wm), rng.uniform(*MRI.adc_gm)
    adc_deep, adc_csf = rng.uniform(*MRI.adc_deep), rng.uniform(*MRI.adc_csf)
    s0_gm, s0_csf = dom.uniform(rng, dom.gm_t2), rng.uniform(*MRI.s0_csf)
    amp = dom.uniform(rng, dom.texture)
    tex = 1.0 + amp * tex_a + amp * regional_a
    adc_grey = (adc_gm + (adc_deep - adc_gm) * anat.deep) * tex
    adc_white = adc_wm * tex
    # The cerebellum is often brighter in DWI than the cerebrum (measured on the real case: ~1.3x).
    s0_white = (1.0 + amp * tex_s + rng.uniform(*MRI.regional_s0) * regional_s) * (
        1.0 + rng.uniform(*MRI.hindbrain_s0) * anat.hindbrain
    )
    s0_grey = s0_gm * s0_white

    # Acute lesions: ADC down (stronger in the core of each lesion), T2 mildly up.
    w0, w1 = MRI.lesion_core_weight
    adc_factor = 1.0 - dom.uniform(rng, dom.adc_drop) * fx.core * (w0 + w1 * fx.strength) * (
        1.0 + MRI.lesion_texture * tex_a
    )
    t2_factor = 1.0 + dom.uniform(rng, dom.t2_rise) * fx.core
    t2_factor, adc_factor, dwi_only = _mimics(rng, anat, fx, t2_factor, adc_factor)

    # Signals: fraction-weighted sums over the compartments (partial volume), then noise.
    g = anat.gm * s0_grey * t2_factor
    wm = anat.wm * s0_white * t2_factor
    csf = anat.csf * s0_csf
    s0 = g + wm + csf
    sb = g * np.exp(-adc_grey * adc_factor) + wm * np.exp(-adc_white * adc_factor) + csf * np.exp(-adc_csf)
    sigma = dom.uniform(rng, dom.noise) * np.exp(-adc_wm)
    s0 = np.maximum(s0 + MRI.s0_noise * sigma * rng.standard_normal(anat.shape, dtype=np.float32), 1e-3)
    sb = np.hypot(
        sb + sigma * rng.standard_normal(anat.shape, dtype=np.float32),
        sigma * rng.standard_normal(anat.shape, dtype=np.float32),
    )
    adc = np.clip(-np.log(np.maximum(sb, 1e-4) / s0), 0.0, MRI.adc_max)

    bias = _bias(rng, anat, dom)
    gain = dom.log_uniform(rng, dom.log_dwi_gain)
    dwi = sb * bias * dwi_only * (gain / np.exp(-adc_wm))
    images = {"dwi": np.where(anat.brain, dwi, 0.0), "adc": np.where(anat.brain, adc, 0.0)}
    background = dom.choice(rng, dom.mri_backgrounds)
    images = mri_background(rng, anat.depth, images, background, float(sigma), gain / np.exp(-adc_wm))
    info = {
        "dwi_gain": round(gain, 3),
        "noise_sigma": round(float(sigma), 5),
        "b_value": MRI.b_value,
        "background": background,
    }
    return images, info


def mri_background(
    rng: np.random.Generator, depth: np.ndarray, images: dict[str, np.ndarray], kind: str, sigma: float, scale: float
) -> dict[str, np.ndarray]:
    """DWI and ADC outside the brain for a background ``kind`` (``images`` hold 0 there).

    Args:
        depth: mm below the brain surface (negative outside), ``(X, Y, Z)``.
        kind: ``"zero"`` (skull-stripped: unchanged), ``"noise"`` (Rician noise around the brain) or
            ``"skull"`` (a scalp/skull ring and noise).
        sigma: noise sigma of the b = 1000 signal; ``scale``: its factor to DWI units.
    """
    if kind == "zero":
        return images
    bg = BACKGROUND
    outside = depth <= 0
    shape = depth.shape
    noise = np.hypot(rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32))
    dwi = np.where(outside, sigma * scale * noise, images["dwi"])
    tissue_adc = float(np.median(images["adc"][~outside])) if (~outside).any() else 1.0
    adc = np.where(
        outside, rng.uniform(*bg.mri_adc_noise) * tissue_adc * (rng.random(shape) < bg.mri_adc_noise_p), images["adc"]
    )
    if kind == "skull":
        # Scalp and marrow bright, cortical bone dark; a ring a few mm outside the brain surface.
        width = rng.uniform(*bg.skull_mm)
        ring = outside & (depth > -width)
        bright = float(np.median(images["dwi"][~outside])) * rng.uniform(*bg.skull_dwi)
        texture = 1.0 + bg.skull_texture * rng.standard_normal(shape, dtype=np.float32)
        dwi = np.where(ring & (depth < -bg.skull_bone * width), bright * texture, dwi)
        adc = np.where(ring, tissue_adc * rng.uniform(*bg.skull_adc) * np.abs(texture), adc)
    return {"dwi": dwi.astype(np.float32), "adc": adc.astype(np.float32)}
