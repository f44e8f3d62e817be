"""Synthetic stroke phantoms with the physics of ISLES'22 (DWI/ADC) and ISLES'18 (CT perfusion), and a writer
that lays them out like the real datasets.

A phantom is built in three steps, all from one ``numpy`` generator seeded with ``seed`` (deterministic):

1. **Anatomy** on the voxel grid, in millimetres: an egg-shaped cerebrum with a wavy surface, cerebellum and
   brainstem, interhemispheric fissure, lateral and third ventricles whose size varies (atrophy), deep grey
   matter (basal ganglia, thalami), and a folded cortex: sulci are the zero crossings of a smooth random field
   (one every ~11 mm, down to ~15 mm depth), lined by a ~3 mm grey-matter ribbon. The result is a fraction
   of CSF, grey and white matter per voxel (partial volume included). In the ``"isles18"`` layout a skull and scalp
   rim surrounds the brain.
2. **Lesions** of random irregular shape (an ellipsoid of random axes and orientation whose surface is
   displaced by smooth noise), size and position, in tissue only (never in CSF, never outside the brain).
   MRI patterns: one territorial infarct (radius 12-35 mm, reaching the cortex), a lacune (deep, 3-8 mm),
   an embolic shower (3-12 lesions of 1.5-5 mm, a few voxels each, in one territory), or several medium
   lesions. CTP: one or two infarct cores (8-28 mm) inside a larger hypoperfused penumbra.
   **Confounders** that only one modality group flags: T2 shine-through (DWI bright, ADC normal or raised),
   chronic infarcts (ADC high, DWI dark), DWI-bright susceptibility regions at the skull base (no ADC
   change); in CTP the penumbra (MTT/Tmax raised, CBF mildly lowered, CBV normal: not in the label) and
   large vessels (CBF/CBV very high).
3. **Images** from the tissue parameters:

   - ``"isles22"``: per compartment a T2-weighted signal ``S0`` and a diffusivity ``ADC`` (1e-3 mm²/s: white
     matter ~0.72, grey ~0.85, CSF ~3.0); the voxel's ``b = 0`` and ``b = 1000 s/mm²`` signals are the
     fraction-weighted sums ``S0 = Σ f·S0ₜ``, ``Sb = Σ f·S0ₜ·exp(-b·ADCₜ)``, with Gaussian noise on ``S0``
     and Rician noise on ``Sb``; then ``DWI = Sb × bias field × gain`` and ``ADC = -ln(Sb/S0)/b`` (the bias
     cancels in ADC, as on a scanner). The bias field brightens the periphery and, often, the base of the
     brain, and the cerebellum may be brighter (both seen on the real case: DWI ~1.4× higher at the base). An acute lesion lowers ADC by 35-55 % in its tissue and raises
     T2 by 5-35 %, so DWI rises ~1.5-2× (measured on the real ISLES'22 case: tissue DWI ≈ 240, CSF
     ≈ 115, lesion ≈ 475; ADC tissue ≈ 0.8, CSF ≈ 3.0, lesion ≈ 0.4). CSF is dark in DWI, bright in ADC;
     grey matter is slightly brighter than white matter in DWI. Skull-stripped: 0 outside the brain.
   - ``"isles18"``: CBF (ml/100 g/min; GM ~55, WM ~23), CBV (ml/100 g; GM ~4.2, WM ~2.0), MTT = 60·CBV/CBF
     (s, central volume principle) and Tmax (s; ~1 normal). The core lowers CBV to 25-55 % and CBF
     further (to 30-70 % of that), so MTT rises, as does Tmax (9-16 s). Maps are smoothed in-plane and
     carry spatially correlated noise. A plain CT (``"ct"``, Hounsfield units, bright skull, slightly
     hypodense core) is also produced.

Nothing downstream may rely on absolute intensities: every case draws its own DWI gain (white matter at
100-3000 scanner units, log-uniform), ADC unit (1e-3 or 1e-6 mm²/s; the latter stored as int16 as many
scanners do), CTP map gains, bias field and noise level.

Geometry: ISLES'22-like cases have ~2 mm voxels (1.85-2.15 mm in-plane), matrices of 96-128 (sometimes
non-square) × 40-80 slices; ISLES'18-like cases 256×256 pixels of 0.78-1.0 mm and, by default, 2-8 slices
of 5 mm (the real data have 2-22; ``shape`` asks for more). ``shape`` overrides the matrix; a voxel side grows beyond its default when the grid
would otherwise not hold the head (small test grids therefore show a whole, coarser brain). Images are in
canonical RAS+ voxel order with a (slightly oblique) RAS affine; :func:`write_dataset` stores them LAS or RAS
(ISLES'22) or LPS, LAS or RAS (ISLES'18) as the real datasets vary.

Dataset seeds: case ``i`` (0-based) of ``write_dataset(..., seed=s)`` is ``make_phantom(layout, case_seed(s, i))``
with ``case_seed(s, i) = s * 1000 + i``.

Words: ``layout`` is the dataset layout a phantom imitates (``"isles22"``, ``"isles18"``); the modality kind
(``"mri"``, ``"ctp"``, as in ``mdanet-sdk train --kind``) maps to it by :data:`KIND_LAYOUT`.

Modules: :mod:`~.tables` (the physics and geometry as named parameter tables), :mod:`~.domain` (the ranges
domain randomisation widens), :mod:`~.fields` (random fields and shapes), :mod:`~.anatomy` (step 1),
:mod:`~.lesions` (step 2), :mod:`~.mri` and :mod:`~.ctp` (step 3), :mod:`~.generate` (:func:`make_phantom`),
:mod:`~.writer` (:func:`write_dataset`).
"""

from __future__ import annotations

from mdanet_sdk.data.phantom.generate import (
    KIND_LAYOUT,
    KINDS,
    PATTERNS,
    PHANTOM_LAYOUTS,
    PHANTOM_MODALITIES,
    Phantom,
    case_name,
    case_seed,
    make_phantom,
)
from mdanet_sdk.data.phantom.writer import write_dataset

__all__ = [
    "Phantom",
    "make_phantom",
    "write_dataset",
    "case_seed",
    "case_name",
    "PHANTOM_LAYOUTS",
    "KINDS",
    "KIND_LAYOUT",
    "PATTERNS",
    "PHANTOM_MODALITIES",
]
