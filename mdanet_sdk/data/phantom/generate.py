"""Synthetic stroke phantoms with the physics of ISLES'22 (DWI/ADC) and ISLES'18 (CT perfusion), and a writer
that lays them out like the real datasets.

A phantom is built in three steps, all from one ``numpy`` generator seeded with ``seed`` (deterministic):

1. **Anatomy** on the voxel grid, in millimetres: an egg-shaped cerebrum with a wavy surface, cerebellum and
   brainstem, interhemispheric fissure, lateral and third ventricles whose size varies (atrophy), deep grey
   matter (basal ganglia, thalami), and a folded cortex: sulci are the zero crossings of a smooth random field
   (one every ~11 mm, down to ~15 mm depth), lined by a ~3 mm grey-matter ribbon. The result is a fraction
   of CSF, grey and white matter per voxel (partial volume included). In ``"isles18"`` mode a skull and scalp
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

Dataset seeds: case ``i`` (0-based) of ``write_dataset(..., seed=s)`` is ``make_phantom(kind, case_seed(s, i))``
with ``case_seed(s, i) = s * 1000 + i``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from mdanet_sdk._files import write_json
from mdanet_sdk.data.cases import LAYOUT_MODALITIES, Case
from mdanet_sdk.data.nifti import Volume, atomic_save
from mdanet_sdk.data.phantom_domain import DOMAINS, Domain, ctp_background, mri_background
from mdanet_sdk.errors import InputError

__all__ = [
    "Phantom",
    "make_phantom",
    "write_dataset",
    "case_seed",
    "case_name",
    "KINDS",
    "PATTERNS",
    "PHANTOM_MODALITIES",
]

KINDS = ("isles22", "isles18")
#: Lesion patterns of each kind (``pattern=`` of :func:`make_phantom`; default: drawn per case).
PATTERNS: dict[str, tuple[str, ...]] = {
    "isles22": ("territorial", "lacunar", "embolic", "multiple"),
    "isles18": ("core",),
}
#: Images of each kind, model modalities first (``"ct"`` is the plain CT of ISLES'18).
PHANTOM_MODALITIES: dict[str, tuple[str, ...]] = {
    "isles22": LAYOUT_MODALITIES["isles22"],
    "isles18": LAYOUT_MODALITIES["isles18"] + ("ct",),
}

_PATTERN_P = {"isles22": (0.3, 0.2, 0.3, 0.2), "isles18": (1.0,)}
# ISLES'18 file tokens (SMIR.Brain.XX.O.<token>.<id>.nii).
_SMIR_TOKENS = {"cbf": "CT_CBF", "cbv": "CT_CBV", "mtt": "CT_MTT", "tmax": "CT_Tmax", "ct": "CT", "label": "OT"}
# Stored voxel axis codes -> which canonical axes are flipped.
_FLIPS = {"RAS": (False, False, False), "LAS": (True, False, False), "LPS": (True, True, False)}


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` (0-based) of a dataset written with ``seed``: ``seed * 1000 + index``."""
    return int(seed) * 1000 + int(index)


def case_name(kind: str, index: int) -> str:
    """Case id of case ``index`` (0-based): ``sub-strokecase0001`` (isles22) or ``case_1`` (isles18)."""
    return f"sub-strokecase{index + 1:04d}" if kind == "isles22" else f"case_{index + 1}"


@dataclass
class Phantom(Case):
    """A synthetic case: a :class:`~mdanet_sdk.data.cases.Case` plus what the generator knows.

    Attributes:
        kind: ``"isles22"`` or ``"isles18"``.
        masks: ground truth of the anatomy, bool ``(X, Y, Z)``: ``"brain"``, ``"csf"`` (CSF fraction > 0.5),
            ``"mimic"`` (lesion look-alikes flagged by one modality group only: T2 shine-through, chronic
            infarcts, susceptibility; CTP: penumbra and vessels), ISLES'18 also ``"head"``.
        info: JSON-serialisable description: seed, spacing, units, gains, orientation and dtypes used by
            :func:`write_dataset`, and one entry per lesion and confounder.
    """

    kind: str = "isles22"
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel-to-world (mm) matrix of the canonical arrays."""
        return self.reference.affine


# ------------------------------------------------------------------------------------------------ fields


def _smooth_noise(rng: np.random.Generator, axes: Sequence[np.ndarray], scale_mm: float) -> np.ndarray:
    """Unit-variance smooth Gaussian random field with correlation length ``scale_mm``, on a separable grid.

    Fine fields (at most 3 voxels along every axis) are white noise filtered with a Gaussian of
    ``scale_mm``. Coarser ones are a sum of Gaussian bumps (width ``scale_mm``) on a lattice of spacing
    ``scale_mm`` with i.i.d. normal weights, evaluated axis by axis (three small matrix products instead of
    a wide 3D filter). Both live in millimetres and work on any anisotropic grid; an axis whose voxels are
    more than twice ``scale_mm`` apart gets independent values per voxel.

    Args:
        rng: the generator.
        axes: 1D voxel-centre coordinates (mm) of each of the 3 axes.
        scale_mm: correlation length.

    Returns:
        float32 ``(len(axes[0]), len(axes[1]), len(axes[2]))``, mean 0 and variance 1 at (almost) every voxel.
    """
    spacing = [float(c[1] - c[0]) if len(c) > 1 else np.inf for c in axes]
    sigma = [scale_mm / d if d < 2 * scale_mm else 0.0 for d in spacing]
    if max(sigma) <= 3.0:
        white = rng.standard_normal(tuple(len(c) for c in axes), dtype=np.float32)
        field = ndimage.gaussian_filter(white, sigma, truncate=3.0, mode="reflect")
        norm = 1.0
        for s in sigma:
            if s > 0:
                radius = int(3.0 * s + 0.5)
                kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / s) ** 2)
                norm *= np.sqrt(np.sum((kernel / kernel.sum()) ** 2))
        return field / np.float32(norm)
    mats = []
    for coords, s in zip(axes, sigma):
        if s == 0.0:
            mats.append(np.eye(len(coords), dtype=np.float32))
            continue
        nodes = np.arange(coords.min() - 3 * scale_mm, coords.max() + 3 * scale_mm + 1e-6, scale_mm)
        w = np.exp(-0.5 * ((coords[:, None] - nodes[None, :]) / scale_mm) ** 2)
        mats.append((w / np.linalg.norm(w, axis=1, keepdims=True)).astype(np.float32))
    coef = rng.standard_normal(tuple(m.shape[1] for m in mats), dtype=np.float32)
    out = np.tensordot(mats[0], coef, axes=(1, 0))  # (nx, ky, kz)
    out = np.tensordot(out, mats[1], axes=(1, 1))  # (nx, kz, ny)
    return np.ascontiguousarray(np.tensordot(out, mats[2], axes=(1, 1)))  # (nx, ny, nz)


def _ramp(x: np.ndarray | float, width: float) -> np.ndarray:
    """Soft step: 0 for ``x <= -width/2``, 1 for ``x >= width/2``, linear between (partial volume)."""
    return np.clip(np.asarray(x, dtype=np.float32) / width + 0.5, 0.0, 1.0)


def _ellipsoid_depth(u: np.ndarray, v: np.ndarray, w: np.ndarray, semi: Sequence[float]) -> np.ndarray:
    """Approximate signed distance (mm, positive inside) to the surface of an axis-aligned ellipsoid."""
    a, b, c = semi
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2) + 1e-6
    grad = np.sqrt((u / a**2) ** 2 + (v / b**2) ** 2 + (w / c**2) ** 2) / rho + 1e-6
    return ((1.0 - rho) / grad).astype(np.float32)


def _rotation(rng: np.random.Generator, max_deg: Sequence[float] | None = None) -> np.ndarray:
    """A 3x3 rotation: uniformly random, or small Euler angles up to ``max_deg`` (x, y, z) degrees."""
    if max_deg is None:
        q, r = np.linalg.qr(rng.standard_normal((3, 3)))
        q = q * np.sign(np.diag(r))
        return q if np.linalg.det(q) > 0 else -q
    ax, ay, az = np.deg2rad(rng.uniform(-1, 1, 3) * np.asarray(max_deg))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


# ---------------------------------------------------------------------------------------------- anatomy


@dataclass
class _Anatomy:
    """Tissue model on the voxel grid (all arrays ``(X, Y, Z)``)."""

    spacing: np.ndarray  # (3,) mm
    axes: list[np.ndarray]  # voxel-centre coordinates per axis, mm, grid centre at 0
    u: np.ndarray  # brain frame (mm): right, anterior, superior of the brain centre
    v: np.ndarray
    w: np.ndarray
    depth: np.ndarray  # mm below the brain surface (negative outside)
    brain: np.ndarray  # bool
    csf: np.ndarray  # fractions, float32, 0 outside the brain
    gm: np.ndarray
    wm: np.ndarray
    deep: np.ndarray  # share of grey matter that is deep grey matter (0..1)
    sulcal: np.ndarray  # sulcal CSF fraction (where vessels run)
    hindbrain: np.ndarray  # share of cerebellum / brainstem (0..1)
    dims: tuple[float, float, float]  # semi-axes of the cerebrum, mm

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.brain.shape

    def noise(self, rng: np.random.Generator, scale_mm: float) -> np.ndarray:
        """A unit-variance smooth random field on this grid (:func:`_smooth_noise`)."""
        return _smooth_noise(rng, self.axes, scale_mm)


def _folds(rng, u: np.ndarray, v: np.ndarray, w: np.ndarray, dims, band: np.ndarray) -> np.ndarray:
    """The cortical folding field: sulci are where it is near 0 (one every ~11 mm along the surface).

    A smooth 3D field is read at each voxel's point pushed out towards the cerebrum's ellipsoidal surface
    (``x · rho^-0.7``), so the field varies along the surface but little with depth: its zero sets are
    sheets running inwards from the surface, as sulci do, slightly curved. Computed on a 1.2 mm lattice in
    the brain frame and interpolated, only inside ``band`` (elsewhere the field is 10: no sulcus).
    """
    lattice = [np.arange(-1.2 * s - 4.0, 1.2 * s + 4.0, 1.2, dtype=np.float32) for s in dims]
    field = _smooth_noise(rng, lattice, rng.uniform(2.3, 2.9))
    rho = np.sqrt((u[band] / dims[0]) ** 2 + (v[band] / dims[1]) ** 2 + (w[band] / dims[2]) ** 2)
    push = np.maximum(rho, 0.2) ** -0.7
    index = [(x[band] * push - axis[0]) / 1.2 for x, axis in zip((u, v, w), lattice)]
    out = np.full(band.shape, 10.0, np.float32)
    out[band] = ndimage.map_coordinates(field, index, order=1, mode="nearest")
    return out


def _anatomy(rng: np.random.Generator, shape: tuple[int, int, int], spacing: np.ndarray, dims, centre_w: float) -> _Anatomy:
    """The tissue model of a brain with cerebrum semi-axes ``dims`` (mm) whose centre lies ``centre_w`` mm
    above the grid centre along Z (plus a few mm of random shift and degrees of random rotation)."""
    axes = [((np.arange(n) - (n - 1) / 2) * s).astype(np.float32) for n, s in zip(shape, spacing)]
    offset = np.array([rng.normal(0, 2.0), rng.normal(0, 3.0), centre_w + rng.normal(0, 1.5)])
    rot = _rotation(rng, (6.0, 5.0, 8.0))
    grid = [axes[0][:, None, None] - offset[0], axes[1][None, :, None] - offset[1], axes[2][None, None, :] - offset[2]]
    # Brain frame = rotation^T applied to grid-frame coordinates.
    u, v, w = (sum(rot[i, j] * grid[i] for i in range(3)).astype(np.float32) for j in range(3))
    a, b, c = dims

    # Cerebrum: narrower in front, flatter at the base; cerebellum and brainstem below and behind.
    frontal = 1.0 - 0.07 * np.clip(v / b, -1, 1)
    base = np.where(w < 0, 0.82, 1.0).astype(np.float32)
    cerebrum = _ellipsoid_depth(u / frontal, v, w / base, dims)
    cerebellum = _ellipsoid_depth(u, v + 0.52 * b, w + 0.68 * c, (0.72 * a, 0.36 * b, 0.32 * c))
    stem = _ellipsoid_depth(u, v + 0.12 * b, w + 0.7 * c, (12.0, 14.0, 0.45 * c))
    depth = np.maximum(np.maximum(cerebrum, cerebellum), stem) + rng.uniform(1.2, 2.8) * _smooth_noise(rng, axes, 18.0)
    brain = depth > 0

    # Cortex: sulci at the zero crossings of a smooth field, lined by a grey-matter ribbon. Atrophy widens
    # the sulci, the subarachnoid space and the ventricles (ISLES patients are mostly elderly).
    fold = _folds(rng, u / frontal, v, w / base, dims, brain & (depth < 26.0))
    sulcus_depth = rng.uniform(13.0, 19.0) + 3.0 * _smooth_noise(rng, axes, 20.0)
    atrophy = rng.uniform(0.7, 1.5)
    open_ = 0.3 * atrophy
    sulcal = _ramp(open_ - np.abs(fold), 0.5) * _ramp(sulcus_depth - depth, 3.0)
    ribbon = np.maximum(_ramp(open_ + 1.0 - np.abs(fold), 0.3) * _ramp(sulcus_depth + 2.5 - depth, 3.0),
                        _ramp(3.0 - depth, 2.0))
    surface = _ramp(atrophy - depth, 2.5)
    tentorium = _ramp(1.2 - np.abs(cerebrum - cerebellum), 1.0) * (cerebellum > 0) * (cerebrum > 0)

    # Interhemispheric fissure (wavy) down to the corpus callosum, to the base in front and behind.
    reach = (w > 0.3 * c) | (np.abs(v) > 0.45 * b)
    midline = np.abs(u - 1.5 * _smooth_noise(rng, axes, 12.0))
    fissure = _ramp(0.9 * atrophy - midline, 1.0) * reach
    fissure_gm = _ramp(3.5 - midline, 1.5) * reach

    # Lateral ventricles (arched bodies either side of the septum, horns lower) and the third ventricle.
    ventricles = np.zeros_like(depth)
    for side in (-1.0, 1.0):
        width = 3.0 + 3.5 * atrophy
        arch = w - (0.3 * c - 0.008 * (v + 4.0) ** 2)
        body = _ellipsoid_depth(u - side * (1.2 + width), v + 4.0, arch, (width, 32.0, 3.0 + 5.0 * atrophy))
        ventricles = np.maximum(ventricles, _ramp(body, 1.5))
    third = _ellipsoid_depth(u, v + 8.0, w + 0.02 * c, (1.3 * atrophy, 11.0, 0.16 * c))
    ventricles = np.maximum(ventricles, _ramp(third, 1.0))

    # Deep grey matter: lentiform/caudate and thalami.
    deep = np.zeros_like(depth)
    for side in (-1.0, 1.0):
        for centre, semi in (((18.0, 4.0, 0.02 * c), (7.0, 14.0, 10.0)), ((9.5, -14.0, 0.06 * c), (7.0, 10.0, 9.0))):
            d = _ellipsoid_depth(u - side * centre[0], v - centre[1], w - centre[2], semi)
            deep = np.maximum(deep, _ramp(d, 2.0))

    csf = np.maximum.reduce([surface, sulcal, tentorium, fissure, ventricles]) * brain
    grey = np.maximum.reduce([ribbon, fissure_gm, deep]) * (1.0 - csf) * brain
    white = (1.0 - csf - grey) * brain
    deep_share = np.where(grey > 0, deep / np.maximum(np.maximum(ribbon, fissure_gm), deep + 1e-6), 0.0)
    return _Anatomy(
        spacing=np.asarray(spacing, dtype=np.float64), axes=axes, u=u, v=v, w=w, depth=depth, brain=brain,
        csf=csf.astype(np.float32), gm=grey.astype(np.float32), wm=white.astype(np.float32),
        deep=np.clip(deep_share, 0, 1).astype(np.float32), sulcal=(sulcal * brain).astype(np.float32),
        hindbrain=(_ramp(np.maximum(cerebellum, stem) - cerebrum, 2.0) * brain).astype(np.float32), dims=dims,
    )


# ---------------------------------------------------------------------------------------- lesions, mimics


def _pick(rng: np.random.Generator, mask: np.ndarray) -> tuple[int, int, int] | None:
    """A random voxel index of ``mask``, or None when it is empty."""
    flat = np.flatnonzero(mask)
    if flat.size == 0:
        return None
    return tuple(int(i) for i in np.unravel_index(flat[rng.integers(flat.size)], mask.shape))


def _blob(
    rng: np.random.Generator, anat: _Anatomy, centre: tuple[int, int, int], radius_mm: float, irregular: float
) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """An irregular blob around voxel ``centre``: a randomly oriented ellipsoid with smoothly displaced surface.

    Returns:
        ``(region, profile)``: the bounding box and float32 ``profile`` over it, 1 inside, 0 outside, a
        ~1.5 mm ramp across the surface (``profile >= 0.5`` is the blob).
    """
    semi = radius_mm * np.exp(rng.normal(0.0, 0.25, 3))
    half = np.ceil(1.8 * semi.max() / anat.spacing).astype(int) + 1
    region = tuple(slice(max(c - h, 0), min(c + h + 1, n)) for c, h, n in zip(centre, half, anat.shape))
    local = [((np.arange(s.start, s.stop) - c) * d).astype(np.float32) for s, c, d in zip(region, centre, anat.spacing)]
    coords = (local[0][:, None, None], local[1][None, :, None], local[2][None, None, :])
    rot = _rotation(rng)
    rho2 = sum((sum(rot[i, j] * coords[i] for i in range(3)) / semi[j]) ** 2 for j in range(3))
    dist = np.sqrt(rho2) + irregular * _smooth_noise(rng, local, max(0.45 * radius_mm, 1.0))
    return region, _ramp((1.0 - dist) * radius_mm, 1.5)


@dataclass
class _Effects:
    """Per-voxel lesion and confounder maps (float32 ``(X, Y, Z)``, 0 where nothing happens)."""

    core: np.ndarray  # lesion profile (label = core >= 0.5 in tissue)
    strength: np.ndarray  # per-lesion severity, 0..1, where the core is
    penumbra: np.ndarray  # CTP hypoperfused tissue around the core (not in the label)
    mimic: np.ndarray  # profile of the confounders
    lesions: list[dict[str, Any]] = field(default_factory=list)
    mimics: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def empty(cls, shape: tuple[int, int, int]) -> "_Effects":
        return cls(*(np.zeros(shape, np.float32) for _ in range(4)))

    def paint(self, target: np.ndarray, region, profile: np.ndarray, value: float = 1.0) -> None:
        np.maximum(target[region], profile * value, out=target[region])


def _centre_mm(anat: _Anatomy, index: tuple[int, int, int]) -> list[float]:
    return [round(float(anat.axes[k][index[k]]), 1) for k in range(3)]


def _add_lesion(rng, anat: _Anatomy, fx: _Effects, mask: np.ndarray, radius: float, kind: str) -> tuple | None:
    """Draw one lesion centred in ``mask``; record it; return its centre (None if ``mask`` is empty)."""
    centre = _pick(rng, mask)
    if centre is None:
        return None
    region, profile = _blob(rng, anat, centre, radius, rng.uniform(0.2, 0.45))
    # Vascular territories end at the midline: keep the blob in the hemisphere of its centre.
    profile *= _ramp(np.sign(anat.u[centre] or 1.0) * anat.u[region], 2.0)
    profile[tuple(c - s.start for c, s in zip(centre, region))] = 1.0  # never an empty lesion
    fx.paint(fx.core, region, profile)
    fx.paint(fx.strength, region, profile >= 0.5, rng.uniform(0.6, 1.0))
    fx.lesions.append({"type": kind, "centre_mm": _centre_mm(anat, centre), "radius_mm": round(radius, 1)})
    return centre


def _near(anat: _Anatomy, centre: tuple[int, int, int], radius_mm: float) -> np.ndarray:
    """Voxels within ``radius_mm`` of voxel ``centre``."""
    d2 = sum(((anat.axes[k] - anat.axes[k][centre[k]]) ** 2).reshape([-1 if j == k else 1 for j in range(3)]) for k in range(3))
    return d2 < radius_mm**2


def _mri_lesions(rng, anat: _Anatomy, pattern: str, n_lesions: int | None, dom: Domain) -> _Effects:
    fx = _Effects.empty(anat.shape)
    a, b, c = anat.dims
    tissue = anat.brain & (anat.csf < 0.2) & (anat.depth > 1.0)
    cerebrum = tissue & (anat.w > -0.45 * c)
    side = rng.choice((-1.0, 1.0))
    if pattern == "territorial":
        n = n_lesions or 1 + int(rng.random() < 0.5) * int(rng.integers(1, 4))
        centre = _add_lesion(rng, anat, fx, cerebrum & (side * anat.u > 12) & (anat.depth > 4) & (anat.depth < 22),
                             rng.uniform(12.0, 35.0), "territorial")
        near = _near(anat, centre, 45.0) if centre is not None else cerebrum
        for _ in range(n - 1):
            _add_lesion(rng, anat, fx, cerebrum & near & (anat.depth < 25), rng.uniform(2.0, 5.0), "satellite")
    elif pattern == "lacunar":
        for _ in range(n_lesions or 1 + int(rng.random() < 0.3)):
            _add_lesion(rng, anat, fx, tissue & (anat.depth > 22) & (anat.csf < 0.05), rng.uniform(3.0, 8.0), "lacunar")
    elif pattern == "embolic":
        cluster = _pick(rng, cerebrum & (anat.depth < 30))
        near = _near(anat, cluster, 35.0) & (anat.depth < 25)
        for _ in range(n_lesions or int(rng.integers(*dom.embolic_count))):
            _add_lesion(rng, anat, fx, tissue & near, rng.uniform(1.5, 5.0), "embolic")
    else:  # multiple
        for _ in range(n_lesions or int(rng.integers(2, 5))):
            _add_lesion(rng, anat, fx, cerebrum, rng.uniform(5.0, 15.0), "multiple")
    if not fx.lesions:  # a grid too small for the pattern's region: any tissue voxel
        _add_lesion(rng, anat, fx, anat.brain & (anat.csf < 0.5), 4.0, "fallback")
    return fx


def _add_mimic(rng, anat: _Anatomy, fx: _Effects, mask: np.ndarray, radius: float, kind: str, **effect) -> np.ndarray | None:
    """Draw one confounder in ``mask`` (away from the lesions); return its full-size profile (or None)."""
    centre = _pick(rng, mask & (fx.core < 0.05))
    if centre is None:
        return None
    region, profile = _blob(rng, anat, centre, radius, rng.uniform(0.2, 0.45))
    profile *= 1.0 - fx.core[region]  # a look-alike never overlaps a lesion
    full = np.zeros(anat.shape, np.float32)
    full[region] = profile
    fx.paint(fx.mimic, region, profile)
    fx.mimics.append({"type": kind, "centre_mm": _centre_mm(anat, centre), "radius_mm": round(radius, 1),
                      **{k: round(float(v), 3) for k, v in effect.items()}})
    return full


# ------------------------------------------------------------------------------------------------ images


def _mri_images(rng, anat: _Anatomy, fx: _Effects, dom: Domain) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """DWI (b = 1000 s/mm², arbitrary units) and ADC (1e-3 mm²/s) from the diffusion signal equation."""
    c = anat.dims[2]
    tissue = anat.brain & (anat.csf < 0.5)
    # Tissue parameters (ADC in 1e-3 mm²/s, T2-weighted S0 relative to white matter) with texture.
    tex_a, tex_s = anat.noise(rng, 2.0), anat.noise(rng, 2.0)
    regional_a, regional_s = anat.noise(rng, 15.0), anat.noise(rng, 12.0)
    adc_wm, adc_gm, adc_deep, adc_csf = rng.uniform(0.68, 0.76), rng.uniform(0.80, 0.92), rng.uniform(0.72, 0.80), rng.uniform(2.8, 3.3)
    s0_gm, s0_csf = dom.uniform(rng, dom.gm_t2), rng.uniform(3.0, 4.2)
    amp = dom.uniform(rng, dom.texture)
    tex = 1.0 + amp * tex_a + amp * regional_a
    adc_grey = (adc_gm + (adc_deep - adc_gm) * anat.deep) * tex
    adc_white = adc_wm * tex
    # The cerebellum is often brighter in DWI than the cerebrum (measured on the real case: ~1.3x).
    s0_white = (1.0 + amp * tex_s + rng.uniform(0.05, 0.12) * regional_s) * (1.0 + rng.uniform(0.0, 0.3) * anat.hindbrain)
    s0_grey = s0_gm * s0_white

    # Acute lesions: ADC down (stronger in the core of each lesion), T2 mildly up.
    adc_factor = 1.0 - dom.uniform(rng, dom.adc_drop) * fx.core * (0.75 + 0.25 * fx.strength) * (1.0 + 0.12 * tex_a)
    t2_factor = 1.0 + dom.uniform(rng, dom.t2_rise) * fx.core
    # Confounders seen by one group only.
    dwi_only = np.ones(anat.shape, np.float32)
    for _ in range(int(rng.integers(0, 4))):  # T2 shine-through: DWI bright, ADC normal or raised
        t2, adc = rng.uniform(0.5, 1.1), rng.uniform(0.0, 0.4)
        p = _add_mimic(rng, anat, fx, tissue & (anat.depth > 8), rng.uniform(4.0, 14.0), "t2-shine-through", t2=t2, adc=adc)
        if p is not None:
            t2_factor *= 1.0 + t2 * p
            adc_factor *= 1.0 + adc * p
    if rng.random() < 0.3:  # chronic infarct: ADC high, DWI dark
        t2, adc = rng.uniform(1.8, 2.8), rng.uniform(1.5, 2.5)
        p = _add_mimic(rng, anat, fx, tissue & (anat.depth < 20), rng.uniform(5.0, 15.0), "chronic", t2=t2, adc=adc)
        if p is not None:
            t2_factor *= 1.0 + t2 * p
            adc_factor *= 1.0 + adc * p
    base = anat.brain & (anat.w < -0.2 * c) & (anat.depth < 15) & ((np.abs(anat.u) > 20) | (anat.v > 0.3 * anat.dims[1]))
    for _ in range(int(rng.integers(0, 3)) + int(rng.random() < 0.5)):  # susceptibility at the skull base: DWI only
        gain = rng.uniform(0.3, 1.0)
        p = _add_mimic(rng, anat, fx, base, rng.uniform(8.0, 20.0), "susceptibility", dwi=gain)
        if p is not None:
            dwi_only *= 1.0 + gain * p

    # Signals: fraction-weighted sums over the compartments (partial volume), then noise.
    g = anat.gm * s0_grey * t2_factor
    wm = anat.wm * s0_white * t2_factor
    csf = anat.csf * s0_csf
    s0 = g + wm + csf
    sb = g * np.exp(-adc_grey * adc_factor) + wm * np.exp(-adc_white * adc_factor) + csf * np.exp(-adc_csf)
    sigma = dom.uniform(rng, dom.noise) * np.exp(-adc_wm)
    s0 = np.maximum(s0 + 0.7 * sigma * rng.standard_normal(anat.shape, dtype=np.float32), 1e-3)
    sb = np.hypot(sb + sigma * rng.standard_normal(anat.shape, dtype=np.float32),
                  sigma * rng.standard_normal(anat.shape, dtype=np.float32))
    adc = np.clip(-np.log(np.maximum(sb, 1e-4) / s0), 0.0, 4.5)

    # Coil bias (brighter towards the periphery and, often, towards the base; smooth) on DWI only: it
    # cancels in the ADC ratio.
    radial = (anat.u / anat.dims[0]) ** 2 + (anat.v / anat.dims[1]) ** 2
    axial = rng.uniform(-0.05, 0.3) * np.clip(-anat.w / c, -1.0, 1.5)
    bias = np.exp(rng.uniform(0.0, 0.3) * radial + axial + rng.uniform(0.08, 0.22) * anat.noise(rng, 50.0))
    bias = bias ** dom.uniform(rng, dom.bias)
    gain = dom.log_uniform(rng, dom.log_dwi_gain)
    dwi = sb * bias * dwi_only * (gain / np.exp(-adc_wm))
    images = {"dwi": np.where(anat.brain, dwi, 0.0), "adc": np.where(anat.brain, adc, 0.0)}
    background = dom.choice(rng, dom.mri_backgrounds)
    images = mri_background(rng, anat.depth, images, background, float(sigma), gain / np.exp(-adc_wm))
    info = {"dwi_gain": round(gain, 3), "noise_sigma": round(float(sigma), 5), "b_value": 1000,
            "background": background}
    return images, info


def _ctp_images(rng, anat: _Anatomy, fx: _Effects, head: np.ndarray, skull: np.ndarray, dom: Domain):
    """CBF, CBV, MTT, Tmax maps and a plain CT, in physical units."""
    a = anat.dims[0]
    shape = anat.shape
    # The affected hemisphere: a mild delay across the territory, hypoperfused penumbra, vessels.
    side = np.sign(np.mean(anat.u[fx.core >= 0.5])) or 1.0
    territory = _ramp(side * anat.u - 0.2 * a, 20.0) * anat.brain
    vessels = (anat.sulcal > 0.5) & (anat.noise(rng, 4.0) > rng.uniform(1.6, 2.2))
    rim = head & ~anat.brain
    core, pen = fx.core, np.clip(fx.penumbra - fx.core, 0.0, 1.0)
    tex = [anat.noise(rng, 1.5) for _ in range(4)]  # one fine field per map (texture and noise)

    def tissue(gm: float, wm: float, csf: float) -> np.ndarray:
        return anat.gm * gm + anat.wm * wm + anat.csf * csf

    cbf = tissue(rng.uniform(45, 65), rng.uniform(18, 28), rng.uniform(1, 3))
    cbv = tissue(rng.uniform(3.5, 5.0), rng.uniform(1.6, 2.4), rng.uniform(0.1, 0.4))
    # Core: CBV down, CBF down more (so MTT = CBV/CBF rises); penumbra: CBF down, CBV kept (autoregulation).
    cbv_core = dom.uniform(rng, dom.ctp_core_cbv)
    cbv *= (1.0 - (1.0 - cbv_core) * core) * (1.0 + rng.uniform(-0.1, 0.25) * pen)
    cbf_core = cbv_core * rng.uniform(0.3, 0.7) if dom.ctp_core_cbf is None else dom.uniform(rng, dom.ctp_core_cbf)
    cbf *= (1.0 - (1.0 - cbf_core) * core) * (1.0 - (1.0 - rng.uniform(0.5, 0.8)) * pen)
    cbf[vessels] = rng.uniform(80, 150)
    cbv[vessels] = rng.uniform(8, 20)
    mtt = np.clip(60.0 * cbv / np.maximum(cbf, 1.0), 0.0, 20.0)
    tmax = rng.uniform(0.3, 1.5) + rng.uniform(0.5, 2.0) * territory
    tmax += (rng.uniform(6, 10) - tmax) * pen
    tmax += (rng.uniform(9, 16) - tmax) * core
    tmax[vessels] = 0.0
    if dom.ctp_csf_zero and rng.random() < dom.ctp_csf_zero:  # no perfusion in CSF: MTT and Tmax undefined, 0
        mtt, tmax = mtt * (1.0 - anat.csf), tmax * (1.0 - anat.csf)
    maps = {"cbf": cbf, "cbv": cbv, "mtt": mtt, "tmax": tmax}
    rim_values = {"cbf": (3, 10), "cbv": (0.5, 2), "mtt": (3, 8), "tmax": (0, 2)}
    texture = {"cbf": 0.15, "cbv": 0.12, "mtt": 0.1, "tmax": 0.3}
    noise = {"cbf": 0.08, "cbv": 0.08, "mtt": 0.1, "tmax": 0.08}
    images, gains = {}, {}
    blur = 1.5 / anat.spacing[:2]  # the maps of a deconvolution are smoothed in-plane (~1.5 mm)
    for (name, value), field_ in zip(maps.items(), tex):
        value = np.where(rim, rng.uniform(*rim_values[name]), value).astype(np.float32)
        value = ndimage.gaussian_filter(value, (*blur, 0.0), truncate=2.5)
        # Multiplicative texture, and additive noise: correlated (the same fine field) plus white.
        scale = float(np.percentile(value[anat.brain], 90)) if anat.brain.any() else 1.0
        white = rng.standard_normal(shape, dtype=np.float32)
        noisy = value * (1.0 + texture[name] * field_) + noise[name] * scale * (field_ + 0.5 * white)
        bias = np.exp(0.08 * anat.noise(rng, 60.0))
        gains[name] = dom.log_uniform(rng, dom.log_ctp_gain)
        images[name] = np.where(head, np.maximum(noisy * bias, 0.0) * gains[name], 0.0)
    # Plain CT (HU): brain ~30-38, CSF ~6, a slightly hypodense core, skull ~1000, air -1000.
    hu = tissue(rng.uniform(34, 40), rng.uniform(25, 30), rng.uniform(3, 8)) - rng.uniform(2, 8) * core
    hu = np.where(skull, rng.uniform(900, 1400), np.where(rim, rng.uniform(20, 45), hu))
    hu = hu + rng.uniform(3, 6) * rng.standard_normal(shape, dtype=np.float32)
    images["ct"] = np.where(head, hu, -1000.0)
    return images, {"gains": {k: round(v, 4) for k, v in gains.items()}}


# ------------------------------------------------------------------------------------------------ public


def _geometry(rng, kind: str, shape, spacing, dom: Domain, rim_mm: float | None = None
              ) -> tuple[tuple[int, int, int], np.ndarray, tuple[float, float, float], float, float]:
    """Grid shape, voxel size (mm), cerebrum semi-axes, brain-centre z offset and head rim width (``rim_mm``
    replaces the default: 0 for a brain-only CTP, a few mm for an MRI with skull)."""
    scale = rng.uniform(0.9, 1.08)
    dims = (rng.uniform(62, 72) * scale, rng.uniform(78, 90) * scale, rng.uniform(58, 66) * scale)
    if kind == "isles22":
        n = int(rng.choice([96, 104, 112, 120, 128]))
        default = (n, n + 16 * int(rng.random() < 0.3), int(rng.integers(40, 81)))
        base = np.array([dom.uniform(rng, dom.mri_inplane_mm)] * 2 + [2.0])
        rim, centre_w = rim_mm or 0.0, rng.uniform(-0.1, 0.05) * dims[2]
        cover_z = 2.1 * dims[2] + 4.0
        if dom.mri_log_slice_mm is not None:  # the matrix follows the voxel size
            base[2] = dom.log_uniform(rng, dom.mri_log_slice_mm)
            side = 2.0 * (max(dims[:2]) + rim) * 1.06 + 8.0
            default = (int(np.ceil(side / base[0])), int(np.ceil(side / base[0])) + 8 * int(rng.random() < 0.3),
                       int(np.ceil(cover_z / base[2])))
    else:
        default = (256, 256, int(rng.integers(2, 9)))
        base = np.array([dom.uniform(rng, dom.ctp_inplane_mm)] * 2 + [dom.uniform(rng, dom.ctp_slice_mm)])
        rim, centre_w = rng.uniform(9.0, 16.0), -rng.uniform(-0.15, 0.45) * dims[2]
        rim = rim if rim_mm is None else rim_mm
        cover_z = 0.0  # a slab: no need to hold the whole head
    shape = tuple(int(s) if s else d for s, d in zip(shape or (None,) * 3, default))
    cover = np.array([2.0 * (max(dims[:2]) + rim) * 1.06 + 8.0] * 2 + [cover_z])
    sp = np.maximum(base if spacing is None else np.broadcast_to(np.asarray(spacing, float), (3,)), cover / np.array(shape))
    return shape, sp, dims, centre_w, rim


def _check(kind: str, shape, pattern: str | None, n_lesions: int | None, domain: str = "classic") -> None:
    if domain not in (*DOMAINS, "mixed"):
        raise InputError(f"domain must be one of {', '.join(DOMAINS)}, mixed; got {domain!r}.")
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}.")
    if shape is not None and (len(shape) != 3 or any(s is not None and int(s) < m for s, m in zip(shape, (16, 16, 1)))):
        raise InputError(f"shape must be (X, Y, Z) with X, Y >= 16 and Z >= 1 (None keeps a default), got {shape!r}.")
    if pattern is not None and pattern not in PATTERNS[kind]:
        raise InputError(f"pattern for {kind} must be one of {', '.join(PATTERNS[kind])}, got {pattern!r}.")
    if n_lesions is not None and n_lesions < 1:
        raise InputError(f"n_lesions must be at least 1, got {n_lesions}.")


def make_phantom(
    kind: str = "isles22",
    seed: int = 0,
    *,
    shape: Sequence[int | None] | None = None,
    spacing: float | Sequence[float] | None = None,
    pattern: str | None = None,
    n_lesions: int | None = None,
    case_id: str | None = None,
    domain: str = "classic",
) -> Phantom:
    """Generate one synthetic stroke case (module docstring: anatomy, lesions, physics, variability).

    Args:
        kind: ``"isles22"`` (DWI + ADC) or ``"isles18"`` (CBF, CBV, MTT, Tmax + CT).
        seed: the same seed gives the same case, bit for bit.
        shape: grid ``(X, Y, Z)``; an entry ``None`` keeps its random default (ISLES'22: 96-128 in-plane,
            40-80 slices; ISLES'18: 256×256, 2-8 slices).
        spacing: minimum voxel size in mm (scalar or per axis; default ~2 mm, or ~0.9×0.9×5 mm). Axes grow
            beyond it when the grid is too small to hold the head.
        pattern: lesion pattern (:data:`PATTERNS`); default drawn per case.
        n_lesions: number of lesions of the pattern (default random).
        case_id: the case's id (default ``phantom-<seed>``).
        domain: ``"classic"``, ``"randomised"`` (:mod:`mdanet_sdk.data.phantom_domain`: wider contrast,
            noise, bias, background, resolution and unit ranges, for training models that generalise) or
            ``"mixed"`` (classic for even seeds, randomised for odd ones).

    Returns:
        a :class:`Phantom` (a :class:`~mdanet_sdk.data.cases.Case`): float32 ``(X, Y, Z)`` images in canonical
        RAS+ order, uint8 label with at least one lesion voxel, ``affine``, ``masks`` and ``info``.

    Raises:
        InputError: unknown kind or pattern, a grid smaller than 16×16×1, ``n_lesions < 1``.
    """
    _check(kind, shape, pattern, n_lesions, domain)
    if domain == "mixed":  # half the seeds each: the randomised world keeps its classic centre in view
        domain = "classic" if seed % 2 == 0 else "randomised"
    dom = DOMAINS[domain]
    rng = np.random.default_rng(seed)
    background = dom.choice(rng, dom.ctp_backgrounds) if kind == "isles18" else None
    rim_mm = 0.0 if background == "zero" else None
    shape, spacing, dims, centre_w, rim = _geometry(rng, kind, shape, spacing, dom, rim_mm)
    anat = _anatomy(rng, shape, spacing, dims, centre_w)
    pattern = pattern or str(rng.choice(PATTERNS[kind], p=_PATTERN_P[kind]))
    info: dict[str, Any] = {"kind": kind, "seed": int(seed), "domain": domain, "pattern": pattern, "shape": list(shape),
                            "spacing_mm": [round(float(s), 4) for s in spacing]}
    if kind == "isles22":
        fx = _mri_lesions(rng, anat, pattern, n_lesions, dom)
        images, extra = _mri_images(rng, anat, fx, dom)
        head = anat.brain
        per_mille = bool(rng.random() < 0.5)  # ADC in 1e-6 mm²/s, stored as integers like many scanners
        if per_mille:
            images["adc"] = np.round(images["adc"] * 1000.0)
        extra["units"] = {"adc": "1e-6 mm^2/s" if per_mille else "1e-3 mm^2/s", "dwi": "arbitrary"}
        dtypes = {"dwi": "float32", "adc": "int16" if per_mille else "float32"}
        orientation = str(rng.choice(["LAS", "RAS"]))
    else:
        fx = _ctp_lesions(rng, anat, n_lesions)
        head = anat.depth > -rim
        skull = (anat.depth < -rim * rng.uniform(0.15, 0.3)) & (anat.depth > -rim * rng.uniform(0.6, 0.75))
        images, extra = _ctp_images(rng, anat, fx, head, skull, dom)
        ctp_background(rng, images, head, str(background))
        images["ct"] = np.round(images["ct"])
        extra["background"] = background
        extra["units"] = {"cbf": "ml/100g/min x gain", "cbv": "ml/100g x gain", "mtt": "s x gain",
                          "tmax": "s x gain", "ct": "HU"}
        dtypes = {**{m: "float32" for m in LAYOUT_MODALITIES["isles18"]}, "ct": "int16"}
        orientation = str(rng.choice(["LPS", "LAS", "RAS"]))
    label = ((fx.core >= 0.5) & anat.brain & (anat.csf < 0.5)).astype(np.uint8)
    images = {m: np.ascontiguousarray(images[m], dtype=np.float32) for m in PHANTOM_MODALITIES[kind]}
    affine = _affine(rng, shape, spacing, oblique=kind == "isles22")
    info.update(extra, dtypes=dtypes, orientation=orientation, lesions=fx.lesions, mimics=fx.mimics,
                lesion_voxels=int(label.sum()))
    masks = {"brain": anat.brain, "csf": anat.csf > 0.5, "mimic": (fx.mimic >= 0.5) & (label == 0) & anat.brain}
    if kind == "isles18":
        masks.update(head=head, mimic=masks["mimic"] | ((fx.penumbra >= 0.5) & (label == 0)))
    first = PHANTOM_MODALITIES[kind][0]
    header = nib.Nifti1Image(images[first], affine).header
    reference = Volume(images[first], affine, header, affine, tuple(shape), ("R", "A", "S"))
    return Phantom(case_id or f"phantom-{seed}", images, label, reference, kind=kind, masks=masks, info=info)


def _ctp_lesions(rng, anat: _Anatomy, n_lesions: int | None) -> _Effects:
    fx = _Effects.empty(anat.shape)
    tissue = anat.brain & (anat.csf < 0.2) & (anat.depth > 1.0)
    side = rng.choice((-1.0, 1.0))
    for _ in range(n_lesions or 1 + int(rng.random() < 0.25)):
        mask = tissue & (side * anat.u > 8) & (anat.depth < 35)
        radius = rng.uniform(8.0, 28.0)
        centre = _add_lesion(rng, anat, fx, mask if mask.any() else tissue, radius, "core")
        if centre is not None:
            region, profile = _blob(rng, anat, centre, radius * rng.uniform(1.4, 2.2), rng.uniform(0.2, 0.4))
            fx.paint(fx.penumbra, region, profile)
    if not fx.lesions:
        _add_lesion(rng, anat, fx, anat.brain & (anat.csf < 0.5), 6.0, "fallback")
    return fx


def _affine(rng, shape, spacing, oblique: bool) -> np.ndarray:
    """A RAS affine with the grid centre near the world origin, slightly oblique for MRI."""
    rot = _rotation(rng, (2.5, 2.5, 2.5)) if oblique else np.eye(3)
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    centre = (np.asarray(shape) - 1) / 2.0
    affine[:3, 3] = rng.normal(0.0, 5.0, 3) + np.array([0.0, -18.0, 10.0]) - affine[:3, :3] @ centre
    return affine


def _stored(array: np.ndarray, affine: np.ndarray, orientation: str) -> tuple[np.ndarray, np.ndarray]:
    """Canonical RAS array and affine → the same image stored with voxel axes ``orientation`` (exact flips)."""
    flip = np.eye(4)
    for axis, flipped in enumerate(_FLIPS[orientation]):
        if flipped:
            array = array[(slice(None),) * axis + (slice(None, None, -1),)]
            flip[axis, axis], flip[axis, 3] = -1.0, array.shape[axis] - 1
    return np.ascontiguousarray(array), affine @ flip


def _save(array: np.ndarray, phantom: Phantom, dtype: str, path: Path, qform_code: int) -> None:
    data, affine = _stored(array, phantom.affine, phantom.info["orientation"])
    img = nib.Nifti1Image(data.astype(dtype), affine)
    img.header.set_qform(affine, code=qform_code)
    img.header.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    atomic_save(img, path)


def write_dataset(
    out_dir: str | os.PathLike[str], kind: str = "isles22", n_cases: int = 10, seed: int = 0, **options: Any
) -> Path:
    """Write ``n_cases`` phantoms as real NIfTI files in the folder layout of the real dataset.

    Layouts (case ``i`` is ``make_phantom(kind, case_seed(seed, i), **options)``, see :func:`case_name`):

    - ``"isles22"``: ``rawdata/sub-strokecaseXXXX/ses-0001/dwi/sub-strokecaseXXXX_ses-0001_{dwi,adc}.nii.gz``
      and ``derivatives/sub-strokecaseXXXX/ses-0001/sub-strokecaseXXXX_ses-0001_msk.nii.gz``, plus
      ``dataset_description.json``; stored LAS or RAS, qform code 2, sform code 1.
    - ``"isles18"``: ``TRAINING/case_N/SMIR.Brain.XX.O.{CT_CBF,CT_CBV,CT_MTT,CT_Tmax,CT,OT}.NNNNNN/`` each with
      one same-named ``.nii``; stored LPS, LAS or RAS.

    ``phantoms.json`` at the root records each case's id, seed and :attr:`Phantom.info`. Every file is
    written atomically; existing files of the same names are replaced.

    Args:
        out_dir: dataset root (created).
        kind: ``"isles22"`` or ``"isles18"``.
        n_cases: number of cases (>= 1).
        seed: dataset seed.
        **options: passed to :func:`make_phantom` (``shape``, ``spacing``, ``pattern``, ``n_lesions``).

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: ``n_cases < 1``, ``out_dir`` is a file, or an invalid phantom option.
    """
    out = Path(out_dir)
    if n_cases < 1:
        raise InputError(f"n_cases must be at least 1, got {n_cases}.")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder to write the dataset into.")
    _check(kind, options.get("shape"), options.get("pattern"), options.get("n_lesions"), options.get("domain", "classic"))
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n_cases):
        name, case_s = case_name(kind, i), case_seed(seed, i)
        ph = make_phantom(kind, case_s, case_id=name, **options)
        if kind == "isles22":
            stem = f"{name}_ses-0001"
            for modality in PHANTOM_MODALITIES[kind]:
                path = out / "rawdata" / name / "ses-0001" / "dwi" / f"{stem}_{modality}.nii.gz"
                _save(ph.images[modality], ph, ph.info["dtypes"][modality], path, qform_code=2)
            _save(ph.label, ph, "uint8", out / "derivatives" / name / "ses-0001" / f"{stem}_msk.nii.gz", qform_code=2)
        else:
            for k, modality in enumerate((*PHANTOM_MODALITIES[kind], "label")):
                file = f"SMIR.Brain.XX.O.{_SMIR_TOKENS[modality]}.{300000 + 10 * i + k}"
                array, dtype = (ph.label, "uint8") if modality == "label" else (ph.images[modality], ph.info["dtypes"][modality])
                _save(array, ph, dtype, out / "TRAINING" / name / file / f"{file}.nii", qform_code=1)
        records.append({"case_id": name, "seed": case_s, "info": ph.info})
    if kind == "isles22":
        write_json(out / "dataset_description.json", {
            "Name": "mdanet-sdk synthetic ISLES'22-like phantoms", "BIDSVersion": "1.7.0", "DatasetType": "raw",
            "GeneratedBy": [{"Name": "mdanet_sdk.data.phantom"}],
        })
    write_json(out / "phantoms.json", {"generator": "mdanet_sdk.data.phantom", "kind": kind, "seed": int(seed),
                                        "case_seed": "seed * 1000 + index", "cases": records})
    return out
