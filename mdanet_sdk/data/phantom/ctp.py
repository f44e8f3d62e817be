"""Step 3 of an ISLES'18-like phantom: CBF, CBV, MTT and Tmax maps and a plain CT, in physical units, and the
noise in the air around the head. Parameters: :data:`~.tables.PERFUSION`, :data:`~.tables.CT`,
:data:`~.tables.BACKGROUND` and the domain's ranges.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from mdanet_sdk.data.phantom.anatomy import Anatomy
from mdanet_sdk.data.phantom.domain import Domain
from mdanet_sdk.data.phantom.fields import ramp
from mdanet_sdk.data.phantom.lesions import Effects
from mdanet_sdk.data.phantom.tables import BACKGROUND, CT, PERFUSION

__all__ = ["ctp_images", "ctp_background"]


def _vessels(rng, anat: Anatomy) -> np.ndarray:
    """Large vessels: bool ``(X, Y, Z)``, the peaks of a fine random field in the sulcal CSF."""
    p = PERFUSION
    return (anat.sulcal > 0.5) & (anat.noise(rng, p.vessel_scale_mm) > rng.uniform(*p.vessel_threshold))


def _perfusion(rng, anat: Anatomy, fx: Effects, vessels: np.ndarray, dom: Domain) -> dict[str, np.ndarray]:
    """The four perfusion maps in physical units, before smoothing and noise (float ``(X, Y, Z)``).

    The affected hemisphere has a mild delay across its territory; the core lowers CBV and CBF more (so MTT
    = CBV/CBF rises), the penumbra lowers CBF and keeps CBV (autoregulation); large ``vessels`` are very high.
    """
    p = PERFUSION
    side = np.sign(np.mean(anat.u[fx.core >= 0.5])) or 1.0
    territory = ramp(side * anat.u - p.territory_offset * anat.dims[0], p.territory_ramp_mm) * anat.brain
    core, pen = fx.core, np.clip(fx.penumbra - fx.core, 0.0, 1.0)

    def tissue(gm: float, wm: float, csf: float) -> np.ndarray:
        return anat.gm * gm + anat.wm * wm + anat.csf * csf

    cbf = tissue(*(rng.uniform(*r) for r in p.cbf))
    cbv = tissue(*(rng.uniform(*r) for r in p.cbv))
    cbv_core = dom.uniform(rng, dom.ctp_core_cbv)
    cbv *= (1.0 - (1.0 - cbv_core) * core) * (1.0 + rng.uniform(*p.penumbra_cbv) * pen)
    cbf_core = (
        cbv_core * rng.uniform(*p.core_cbf_share) if dom.ctp_core_cbf is None else dom.uniform(rng, dom.ctp_core_cbf)
    )
    cbf *= (1.0 - (1.0 - cbf_core) * core) * (1.0 - (1.0 - rng.uniform(*p.penumbra_cbf)) * pen)
    cbf[vessels] = rng.uniform(*p.vessel_cbf)
    cbv[vessels] = rng.uniform(*p.vessel_cbv)
    mtt = np.clip(p.central_volume * cbv / np.maximum(cbf, 1.0), 0.0, p.mtt_max)
    tmax = rng.uniform(*p.tmax_normal) + rng.uniform(*p.tmax_territory) * territory
    tmax += (rng.uniform(*p.tmax_penumbra) - tmax) * pen
    tmax += (rng.uniform(*p.tmax_core) - tmax) * core
    tmax[vessels] = 0.0
    if dom.ctp_csf_zero and rng.random() < dom.ctp_csf_zero:  # no perfusion in CSF: MTT and Tmax undefined, 0
        mtt, tmax = mtt * (1.0 - anat.csf), tmax * (1.0 - anat.csf)
    return {"cbf": cbf, "cbv": cbv, "mtt": mtt, "tmax": tmax}


def _plain_ct(rng, anat: Anatomy, core: np.ndarray, head: np.ndarray, skull: np.ndarray, rim: np.ndarray) -> np.ndarray:
    """Plain CT (HU): brain ~30-38, CSF ~6, a slightly hypodense core, skull ~1000, air -1000."""
    tissue = anat.gm * rng.uniform(*CT.grey) + anat.wm * rng.uniform(*CT.white) + anat.csf * rng.uniform(*CT.csf)
    hu = tissue - rng.uniform(*CT.core_drop) * core
    hu = np.where(skull, rng.uniform(*CT.bone), np.where(rim, rng.uniform(*CT.scalp), hu))
    hu = hu + rng.uniform(*CT.noise) * rng.standard_normal(anat.shape, dtype=np.float32)
    return np.where(head, hu, CT.air)


def ctp_images(
    rng, anat: Anatomy, fx: Effects, head: np.ndarray, skull: np.ndarray, dom: Domain
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """CBF, CBV, MTT, Tmax maps and a plain CT, in physical units.

    Args:
        head, skull: bool ``(X, Y, Z)``: brain plus rim, and the bone shell within the rim.

    Returns:
        ``(images, info)``: float ``(X, Y, Z)`` maps ``"cbf"``, ``"cbv"``, ``"mtt"``, ``"tmax"``, ``"ct"``,
        and the per-map gains.
    """
    p = PERFUSION
    shape = anat.shape
    rim = head & ~anat.brain
    vessels = _vessels(rng, anat)
    tex = [anat.noise(rng, p.texture_scale_mm) for _ in range(4)]  # one fine field per map (texture and noise)
    maps = _perfusion(rng, anat, fx, vessels, dom)
    images, gains = {}, {}
    blur = p.smoothing_mm / anat.spacing[:2]  # the maps of a deconvolution are smoothed in-plane
    for (name, value), field_ in zip(maps.items(), tex):
        value = np.where(rim, rng.uniform(*p.rim[name]), value).astype(np.float32)
        value = ndimage.gaussian_filter(value, (*blur, 0.0), truncate=2.5)
        # Multiplicative texture, and additive noise: correlated (the same fine field) plus white.
        scale = float(np.percentile(value[anat.brain], 90)) if anat.brain.any() else 1.0
        white = rng.standard_normal(shape, dtype=np.float32)
        noisy = value * (1.0 + p.texture[name] * field_) + p.noise[name] * scale * (field_ + p.white_noise * white)
        bias = np.exp(p.bias * anat.noise(rng, p.bias_scale_mm))
        gains[name] = dom.log_uniform(rng, dom.log_ctp_gain)
        images[name] = np.where(head, np.maximum(noisy * bias, 0.0) * gains[name], 0.0)
    images["ct"] = _plain_ct(rng, anat, fx.core, head, skull, rim)
    return images, {"gains": {k: round(v, 4) for k, v in gains.items()}}


def ctp_background(rng: np.random.Generator, images: dict[str, np.ndarray], head: np.ndarray, kind: str) -> None:
    """Noise in the air around the head for a ``"noise"`` background (in place); others are set by the
    generator's head mask."""
    if kind != "noise":
        return
    for name, value in images.items():
        if name == "ct":
            continue
        scale = float(np.percentile(value[head], 50)) if head.any() else 1.0
        noise = np.abs(rng.standard_normal(value.shape, dtype=np.float32)) * rng.uniform(*BACKGROUND.ctp_noise) * scale
        images[name] = np.where(head, value, noise).astype(np.float32)
