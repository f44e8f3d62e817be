"""The ranges a phantom's parameters are drawn from: the classic generator and its domain-randomised twin.

A model trained on one generator learns that generator (its noise, its contrast, its background), not the
physics. SynthSeg (Billot et al., MedIA 2023) and SynthStroke (Chalcroft et al., MELBA 2025) randomise every
generation parameter the model should not rely on; :data:`RANDOMISED` does that for the parameters below
while keeping the physics (restricted diffusion: ADC down, DWI up; CTP core: CBF and CBV down, Tmax up; the
ISLES 2018 definition of the core, relative CBF below ~30 %). :data:`CLASSIC` reproduces the original
generator bit for bit.

Each range is ``(low, high)`` of a uniform draw unless named ``log_…`` (log-uniform). The parameters every
domain shares are in :mod:`mdanet_sdk.data.phantom.tables`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CLASSIC", "DOMAINS", "RANDOMISED", "Domain"]


@dataclass(frozen=True)
class Domain:
    """Parameter ranges of one phantom domain.

    Attributes:
        name: ``"classic"`` or ``"randomised"``.
        mri_inplane_mm: in-plane voxel side (ISLES'22-like); the matrix grows to hold the head.
        mri_log_slice_mm: slice thickness, log-uniform (``None``: the classic 2 mm grid of 96-128).
        ctp_inplane_mm, ctp_slice_mm: the same for the CTP slab.
        gm_t2: grey-matter T2 signal relative to white matter (tissue contrast in DWI).
        texture: amplitude of the fine and regional tissue texture (share of the value).
        adc_drop: fractional ADC drop in a lesion. Randomised: ADC 0.4-0.95× tissue; the upper end is the
            subacute lesion whose ADC has pseudo-normalised and the small focus whose ADC is averaged with its
            surroundings, both still DWI-bright and labelled as lesion in ISLES'22.
        embolic_count: number of foci of an embolic shower, ``[low, high)``.
        t2_rise: fractional T2 rise in an acute lesion (with the ADC drop: DWI ~1.1-3× tissue).
        noise: noise sigma relative to white-matter signal at b = 1000.
        bias: factor on the coil-bias field's strength.
        log_dwi_gain: white-matter DWI in scanner units.
        mri_backgrounds: ``"zero"`` (skull-stripped), ``"noise"`` (Rician noise around the brain), ``"skull"``
            (a scalp/skull ring and noise).
        ctp_core_cbf, ctp_core_cbv: core CBF and CBV relative to tissue (``None`` for CBF: the classic rule,
            a share of the CBV drop).
        ctp_backgrounds: ``"rim"`` (skull and scalp around the brain), ``"zero"`` (brain only, air 0),
            ``"noise"`` (the rim, plus noise in the air).
        ctp_csf_zero: probability that CSF has MTT and Tmax 0 (perfusion software leaves them undefined).
        log_ctp_gain: per-map gain (units).
    """

    name: str
    mri_inplane_mm: tuple[float, float] = (1.85, 2.15)
    mri_log_slice_mm: tuple[float, float] | None = None
    ctp_inplane_mm: tuple[float, float] = (0.78, 1.0)
    ctp_slice_mm: tuple[float, float] = (5.0, 5.0)
    gm_t2: tuple[float, float] = (1.12, 1.3)
    texture: tuple[float, float] = (0.06, 0.06)
    adc_drop: tuple[float, float] = (0.35, 0.55)
    embolic_count: tuple[int, int] = (3, 13)
    t2_rise: tuple[float, float] = (0.05, 0.35)
    noise: tuple[float, float] = (0.025, 0.07)
    bias: tuple[float, float] = (1.0, 1.0)
    log_dwi_gain: tuple[float, float] = (100.0, 3000.0)
    mri_backgrounds: tuple[str, ...] = ("zero",)
    ctp_core_cbf: tuple[float, float] | None = None
    ctp_core_cbv: tuple[float, float] = (0.25, 0.55)
    ctp_backgrounds: tuple[str, ...] = ("rim",)
    ctp_csf_zero: float = 0.0
    log_ctp_gain: tuple[float, float] = (0.5, 5.0)

    def uniform(self, rng: np.random.Generator, bounds: tuple[float, float]) -> float:
        """A draw from ``bounds``; a degenerate range costs no draw (the classic stream stays unchanged)."""
        return float(bounds[0]) if bounds[0] == bounds[1] else float(rng.uniform(*bounds))

    @staticmethod
    def log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
        return float(np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]))))

    def choice(self, rng: np.random.Generator, options: tuple[str, ...]) -> str:
        return options[0] if len(options) == 1 else str(rng.choice(options))


CLASSIC = Domain("classic")

RANDOMISED = Domain(
    "randomised",
    mri_inplane_mm=(1.2, 2.4),
    mri_log_slice_mm=(1.0, 6.0),
    ctp_inplane_mm=(0.7, 1.2),
    ctp_slice_mm=(3.0, 6.0),
    gm_t2=(0.95, 1.5),
    texture=(0.02, 0.12),
    adc_drop=(0.05, 0.6),
    embolic_count=(3, 40),
    t2_rise=(0.1, 0.9),
    noise=(0.01, 0.15),
    bias=(0.3, 2.0),
    log_dwi_gain=(1.0, 10000.0),
    mri_backgrounds=("zero", "zero", "noise", "skull"),
    ctp_core_cbf=(0.08, 0.3),
    ctp_core_cbv=(0.3, 0.75),
    ctp_backgrounds=("rim", "zero", "noise"),
    ctp_csf_zero=0.5,
    log_ctp_gain=(0.05, 50.0),
)

DOMAINS = {d.name: d for d in (CLASSIC, RANDOMISED)}
