"""Out-of-distribution (OOD) stroke phantoms, for TESTING generalisation only: never train on them.

Models trained on :mod:`mdanet_sdk.data.phantom` can learn that generator's quirks instead of stroke. This
module draws cases from a deliberately *different and simpler* world, written from scratch (it imports
nothing from the package and shares no code or parameters with the training generator), so a score on
these cases measures how well what a model learned transfers. Only ``numpy`` and ``scipy`` are used.

API (every case is a pure function of its seed):

- :func:`ood_mri_case` ``(seed) -> OODCase``: DWI + ADC;
- :func:`ood_ctp_case` ``(seed) -> OODCase``: CBF, CBV, MTT, Tmax;
- :func:`ood_case` ``(kind, seed)`` with ``kind`` ``"mri"`` or ``"ctp"``.

Acquisition variants of these cases (a field of view inside the head, a head with skull and scalp) are in
:mod:`ood_variants`.

An :class:`OODCase` holds float32 ``(X, Y, Z)`` images in canonical RAS order, a uint8 label, a 4x4 affine
(diagonal: the voxel spacing, centred grid), bool anatomy ``masks`` and a JSON-serialisable ``info``.
It feeds ``Segmenter.predict_arrays(case.images, case.affine)`` directly.

What is deliberately different from ``mdanet_sdk/data/phantom/``:

- **Anatomy is geometric**: the brain is one ellipsoid, one superellipsoid (boxier) or a union of two
  "hemisphere" ellipsoids (+ an optional inferior one); no folded cortex, no sulci, no grey/white matter,
  no deep grey nuclei, no fissure, no partial volume (hard edges). Ventricles are 2-3 plain ellipsoids.
- **Lesions are geometric**: spheres, ellipsoids, rotated boxes (cubes) and clusters of small spheres, 3
  in-plane voxels to ~30 mm across, with hard edges, instead of noise-displaced ellipsoids in territories.
  No confounders (no T2 shine-through, chronic infarcts, susceptibility or vessels).
- **Contrast is set directly**, not by diffusion physics: lesion DWI = 1.5-2.5x and ADC = 0.45-0.7x the local
  tissue value; CSF DWI dark and ADC ~3x tissue. Tissue varies by a smooth field of a few long-wavelength
  cosines (5-12 %), not by a bias field.
- **Acquisition variants the training data lack**: non-zero noisy backgrounds (Rician, not skull-stripped)
  with, in some cases, a bright skull ring; DWI scale log-uniform over 1-5000; anisotropic voxels (1.5-3 mm
  in-plane, 2-5 mm slices) on 96-160 matrices.
- **CTP**: an elliptic head of uniform tissue with a CSF rim and ventricles, no GM/WM, no vessels, no
  in-plane smoothing; one or two geometric cores inside a geometric penumbra shell; additive white noise;
  unit variants (CBF/CBV gains, MTT and Tmax in s or ms) drawn independently per map.

Seeds: streams are salted per kind (``numpy.random.default_rng([seed, salt])``), so MRI and CTP case ``i``
are unrelated, and unrelated to training phantom ``i``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "LESION_SHAPES",
    "MODALITIES",
    "OOD_KINDS",
    "OODCase",
    "ood_case",
    "ood_ctp_case",
    "ood_mri_case",
]

OOD_KINDS = ("mri", "ctp")
#: Images of each kind, in the bundled models' channel order.
MODALITIES: dict[str, tuple[str, ...]] = {"mri": ("dwi", "adc"), "ctp": ("cbf", "cbv", "mtt", "tmax")}
#: Geometric lesion / core shapes.
LESION_SHAPES = ("sphere", "ellipsoid", "box", "cluster")
# Per-kind salts of the random streams (arbitrary constants, chosen to differ from any plain seed use).
_SALT = {"mri": 0x00D_0001, "ctp": 0x00D_0002}


@dataclass(frozen=True)
class OODCase:
    """One OOD phantom.

    Attributes:
        kind: ``"mri"`` or ``"ctp"``.
        seed: the seed it was drawn from.
        images: modality -> float32 ``(X, Y, Z)`` in canonical RAS order (:data:`MODALITIES` order).
        label: uint8 ``(X, Y, Z)`` ground truth (MRI: lesions; CTP: ischaemic core only, not the penumbra).
        affine: 4x4 voxel-to-world matrix (mm), diagonal spacing, grid centred on the origin.
        info: JSON-serialisable description (variants, units, tissue values, one entry per lesion).
        masks: bool ``(X, Y, Z)`` anatomy: MRI ``brain``, ``tissue``, ``csf``, ``skull``, ``head``;
            CTP ``head``, ``tissue``, ``csf``, ``penumbra`` (penumbra ring, outside the core).
    """

    kind: str
    seed: int
    images: dict[str, np.ndarray]
    label: np.ndarray
    affine: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def case_id(self) -> str:
        """E.g. ``"ood-mri-0003"``."""
        return f"ood-{self.kind}-{self.seed:04d}"

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid ``(X, Y, Z)``."""
        return tuple(int(n) for n in self.label.shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along X, Y, Z."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL."""
        return float(np.prod(self.spacing)) / 1000.0


@dataclass(frozen=True)
class _Shape:
    """A superellipsoid ``Σ |u_i / r_i|^p <= 1`` (p = 2: ellipsoid; p = inf: box), yawed about Z, in mm."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    power: float = 2.0
    yaw: float = 0.0


# --------------------------------------------------------------------------------------------- geometry


def _rng(seed: int, kind: str) -> np.random.Generator:
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}.")
    return np.random.default_rng([int(seed), _SALT[kind]])


def _grid(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> tuple[np.ndarray, ...]:
    """Voxel-centre coordinates (mm, origin at the grid centre) as open, broadcastable X, Y, Z arrays."""
    axes = [((np.arange(n) - (n - 1) / 2) * s).astype(np.float32) for n, s in zip(shape, spacing)]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


def _affine(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """RAS affine whose world coordinates are those of :func:`_grid`."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-(n - 1) / 2 * s for n, s in zip(shape, spacing)]
    return affine


def _local_to_world(origin: np.ndarray, yaw: float, offset: tuple[float, float, float]) -> tuple[float, ...]:
    """Point at ``offset`` in a frame yawed by ``yaw`` around ``origin``: lets parts follow the brain's yaw."""
    u, v, w = offset
    c, s = np.cos(yaw), np.sin(yaw)
    return float(origin[0] + c * u - s * v), float(origin[1] + s * u + c * v), float(origin[2] + w)


def _inside(coords: tuple[np.ndarray, ...], shape: _Shape) -> np.ndarray:
    """Bool mask of ``shape`` on (possibly sub-) open coordinates ``coords``."""
    x, y, z = (c - c0 for c, c0 in zip(coords, shape.center))
    c, s = np.cos(shape.yaw), np.sin(shape.yaw)
    u, v = (c * x + s * y) / shape.radii[0], (-s * x + c * y) / shape.radii[1]
    w = z / shape.radii[2]
    if np.isinf(shape.power):
        return np.maximum(np.maximum(np.abs(u), np.abs(v)), np.abs(w)) <= 1.0
    p = shape.power
    return np.abs(u) ** p + np.abs(v) ** p + np.abs(w) ** p <= 1.0


def _paint(target: np.ndarray, value: int, coords: tuple[np.ndarray, ...], spacing, shape: _Shape) -> None:
    """Set ``target`` to ``value`` inside ``shape``, evaluating only its bounding box (lesions are small)."""
    reach = float(np.linalg.norm(shape.radii))  # bounding sphere of any superellipsoid with p >= 2
    box = []
    for axis, (n, s) in enumerate(zip(target.shape, spacing)):
        centre = shape.center[axis] / s + (n - 1) / 2
        box.append(slice(max(int(np.floor(centre - reach / s)), 0), min(int(np.ceil(centre + reach / s)) + 1, n)))
    sub = (coords[0][box[0]], coords[1][:, box[1]], coords[2][:, :, box[2]])
    target[tuple(box)][_inside(sub, shape)] = value


def _smooth_field(rng: np.random.Generator, coords: tuple[np.ndarray, ...], amplitude: float) -> np.ndarray:
    """``1 + amplitude * f`` with ``f`` in [-1, 1] a sum of 4 random cosines of 80-250 mm wavelength."""
    total = np.zeros(np.broadcast_shapes(*(c.shape for c in coords)), np.float32)
    for _ in range(4):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        k = 2 * np.pi / rng.uniform(80.0, 250.0)
        phase = rng.uniform(0, 2 * np.pi)
        total += np.cos(k * (direction[0] * coords[0] + direction[1] * coords[1] + direction[2] * coords[2]) + phase)
    total /= max(float(np.abs(total).max()), 1e-6)
    return 1.0 + np.float32(amplitude) * total


def _pick_centre(rng: np.random.Generator, depth: np.ndarray, coords, want_mm: float) -> tuple[float, ...]:
    """A voxel centre (mm) at least ``want_mm`` deep in the region ``depth > 0`` (else anywhere in it).

    Snapping to a voxel centre inside the region guarantees every shape keeps at least that voxel.
    """
    candidates = np.flatnonzero(depth >= want_mm)
    if candidates.size == 0:
        candidates = np.flatnonzero(depth > 0)
    index = np.unravel_index(int(candidates[rng.integers(candidates.size)]), depth.shape)
    return tuple(float(c.ravel()[i]) for c, i in zip(coords, index))


def _lesion_shapes(rng: np.random.Generator, centre, diameter: float, d_min: float, kind: str) -> list[_Shape]:
    """The parts of one geometric lesion of ``kind`` about ``diameter`` mm across, none under ``d_min``."""
    r, r_min = diameter / 2, d_min / 2

    def axes() -> tuple[float, float, float]:
        radii = np.maximum(r * rng.uniform(0.5, 1.0, 3), r_min)
        radii[rng.integers(3)] = r  # the longest axis is the drawn size
        return tuple(float(a) for a in radii)

    if kind == "sphere":
        return [_Shape(centre, (r, r, r))]
    if kind == "ellipsoid":
        return [_Shape(centre, axes(), 2.0, float(rng.uniform(0, np.pi)))]
    if kind == "box":
        return [_Shape(centre, axes(), np.inf, float(rng.uniform(0, np.pi / 2)))]
    # A cluster: 3-6 small spheres within the drawn diameter, the first on the (in-region) centre.
    parts = []
    for k in range(int(rng.integers(3, 7))):
        direction = rng.normal(size=3)
        offset = direction / np.linalg.norm(direction) * (rng.uniform(0, r) if k else 0.0)
        rb = float(rng.uniform(r_min, max(r_min, r / 2.5)))
        parts.append(_Shape(tuple(float(c + o) for c, o in zip(centre, offset)), (rb, rb, rb)))
    return parts


def _place_lesions(
    rng: np.random.Generator, coords, spacing, region: np.ndarray, count: int, size_mm: tuple[float, float]
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Draw ``count`` geometric lesions centred in ``region`` and clipped to it.

    Returns:
        ``(ids, lesions)``: int16 map (0 outside, ``i + 1`` in lesion ``i``; later lesions win overlaps) and
        one dict per lesion (shape, centre, drawn diameter; ``voxels`` left after clipping and overlaps).
    """
    depth = ndimage.distance_transform_edt(region, sampling=spacing)
    ids = np.zeros(region.shape, np.int16)
    lesions = []
    d_min = 3 * min(spacing[:2])  # "3 voxels across" in-plane
    for i in range(count):
        diameter = float(np.exp(rng.uniform(np.log(max(size_mm[0], d_min)), np.log(size_mm[1]))))
        kind = str(rng.choice(LESION_SHAPES))
        centre = _pick_centre(rng, depth, coords, min(0.6 * diameter / 2, 12.0))
        drawn = np.zeros(region.shape, bool)
        for part in _lesion_shapes(rng, centre, diameter, d_min, kind):
            _paint(drawn, 1, coords, spacing, part)
        ids[drawn & region] = i + 1
        lesions.append({"shape": kind, "center_mm": list(centre), "diameter_mm": diameter})
    for i, lesion in enumerate(lesions):
        lesion["voxels"] = int(np.count_nonzero(ids == i + 1))
    return ids, lesions


def _rician(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise: Rician inside, Rayleigh where the image is 0."""
    real = image + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    imag = rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.hypot(real, imag).astype(np.float32)


# ------------------------------------------------------------------------------------------------- MRI


def _mri_brain(rng: np.random.Generator) -> tuple[str, list[_Shape], np.ndarray, float]:
    """Brain parts (their union is the brain), its kind, centre (mm) and yaw."""
    rx, ry, rz = rng.uniform(58, 70), rng.uniform(72, 88), rng.uniform(52, 64)
    centre, yaw = rng.uniform(-4, 4, 3), float(rng.uniform(-0.15, 0.15))
    kind = str(rng.choice(["ellipsoid", "superellipsoid", "union"]))
    if kind != "union":
        power = 2.0 if kind == "ellipsoid" else float(rng.uniform(2.5, 4.0))
        return kind, [_Shape(tuple(centre), (rx, ry, rz), power, yaw)], centre, yaw
    # Two overlapping "hemispheres" (no fissure between them) and, often, an inferior posterior lobe.
    parts = [
        _Shape(_local_to_world(centre, yaw, (sign * 0.42 * rx, 0, 0)), (0.6 * rx, ry, rz), 2.0, yaw) for sign in (-1, 1)
    ]
    if rng.random() < 0.7:
        low = _local_to_world(centre, yaw, (0, -0.55 * ry, -0.55 * rz))
        parts.append(_Shape(low, (0.55 * rx, 0.35 * ry, 0.38 * rz), 2.0, yaw))
    return kind, parts, centre, yaw


def _mri_grid(rng: np.random.Generator, parts: list[_Shape]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Anisotropic spacing and a matrix of 96-160 in-plane that holds the brain, a skull ring and margin."""
    s_xy, s_z = float(rng.uniform(1.5, 3.0)), float(rng.uniform(2.0, 5.0))
    margin = 14.0  # skull gap and thickness
    half = np.zeros(3)
    for p in parts:  # half extent of each part's yawed bounding box, about the grid centre
        c, s = abs(np.cos(p.yaw)), abs(np.sin(p.yaw))
        reach = (p.radii[0] * c + p.radii[1] * s, p.radii[0] * s + p.radii[1] * c, p.radii[2])
        half = np.maximum(half, np.abs(p.center) + reach)
    n_min = [int(np.ceil(2 * (h + margin) / sp)) + 2 for h, sp in zip(half, (s_xy, s_xy, s_z))]
    nx, ny = (max(int(rng.integers(96, 161)), n) for n in n_min[:2])
    nz = n_min[2] + int(rng.integers(0, 6))
    return (nx, ny, nz), (s_xy, s_xy, s_z)


def _mri_anatomy(rng: np.random.Generator, coords, spacing, parts, centre, yaw) -> dict[str, np.ndarray]:
    """Brain, ventricles (CSF), tissue and, in about a third of the cases, a skull ring (maybe empty)."""
    brain = np.zeros(np.broadcast_shapes(*(c.shape for c in coords)), bool)
    for part in parts:
        brain |= _inside(coords, part)
    csf = np.zeros_like(brain)
    for sign in (-1, 1):  # lateral ventricles, either side of the midline
        at = _local_to_world(centre, yaw, (sign * rng.uniform(5, 11), rng.uniform(-5, 10), rng.uniform(0, 15)))
        radii = (rng.uniform(3.5, 8), rng.uniform(14, 26), rng.uniform(5, 11))
        csf |= _inside(coords, _Shape(at, radii, 2.0, yaw + rng.uniform(-0.2, 0.2)))
    if rng.random() < 0.5:  # a posterior midline cavity
        at = _local_to_world(centre, yaw, (0, rng.uniform(-25, -10), rng.uniform(-10, 0)))
        csf |= _inside(coords, _Shape(at, (rng.uniform(2, 4), rng.uniform(6, 10), rng.uniform(4, 8)), 2.0, yaw))
    csf &= brain
    skull = np.zeros_like(brain)
    if rng.random() < 0.35:
        outside = ndimage.distance_transform_edt(~brain, sampling=spacing)
        gap, thick = rng.uniform(1.5, 5.0), rng.uniform(4.0, 9.0)
        skull = (outside > gap) & (outside <= gap + thick)
    return {"brain": brain, "tissue": brain & ~csf, "csf": csf, "skull": skull, "head": brain | skull}


def _mri_images(
    rng: np.random.Generator, coords, masks: dict[str, np.ndarray], ids: np.ndarray, lesions: list[dict]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """DWI and ADC with contrast set directly (ratios to local tissue), then noise and the background variant."""
    dwi_tissue = float(np.exp(rng.uniform(np.log(1.0), np.log(5000.0))))
    adc_unit = float(rng.choice([1e-3, 1e-6]))
    adc_tissue = float(rng.uniform(0.72, 0.95)) * 1e-3 / adc_unit  # in the case's unit
    dwi = dwi_tissue * _smooth_field(rng, coords, rng.uniform(0.05, 0.12))
    adc = adc_tissue * _smooth_field(rng, coords, rng.uniform(0.05, 0.12))
    csf_dwi, csf_adc = rng.uniform(0.25, 0.45), rng.uniform(2.7, 3.3)
    dwi[masks["csf"]] *= csf_dwi
    adc[masks["csf"]] *= csf_adc
    for i, lesion in enumerate(lesions):
        lesion["dwi_ratio"], lesion["adc_ratio"] = float(rng.uniform(1.5, 2.5)), float(rng.uniform(0.45, 0.7))
        inside = ids == i + 1
        dwi[inside] *= lesion["dwi_ratio"]
        adc[inside] *= lesion["adc_ratio"]
    dwi[masks["skull"]] = dwi_tissue * rng.uniform(1.3, 2.5)  # bright bone marrow / scalp
    adc[masks["skull"]] = adc_tissue * rng.uniform(0.6, 1.2)
    dwi[~masks["head"]] = 0.0
    adc[~masks["head"]] = 0.0
    background = str(rng.choice(["zero", "noisy"]))
    noise = float(rng.uniform(0.02, 0.05))
    dwi, adc = _rician(rng, dwi, noise * dwi_tissue), _rician(rng, adc, noise * adc_tissue)
    if background == "zero":  # skull-stripped style: exactly 0 outside the head
        dwi[~masks["head"]] = 0.0
        adc[~masks["head"]] = 0.0
    info = {
        "background": background,
        "noise_frac": noise,
        "dwi_tissue": dwi_tissue,
        "adc_tissue": adc_tissue,
        "adc_unit": adc_unit,
        "csf_dwi_ratio": float(csf_dwi),
        "csf_adc_ratio": float(csf_adc),
    }
    return {"dwi": dwi.astype(np.float32), "adc": adc.astype(np.float32)}, info


def ood_mri_case(seed: int) -> OODCase:
    """An OOD DWI + ADC case (see the module docstring); the label holds 1-4 geometric lesions in tissue."""
    rng = _rng(seed, "mri")
    brain_kind, parts, centre, yaw = _mri_brain(rng)
    shape, spacing = _mri_grid(rng, parts)
    coords = _grid(shape, spacing)
    masks = _mri_anatomy(rng, coords, spacing, parts, centre, yaw)
    ids, lesions = _place_lesions(rng, coords, spacing, masks["tissue"], int(rng.integers(1, 5)), (0.0, 30.0))
    images, contrast = _mri_images(rng, coords, masks, ids, lesions)
    label = (ids > 0).astype(np.uint8)
    info = {
        "kind": "mri",
        "seed": int(seed),
        "shape": list(shape),
        "spacing_mm": list(spacing),
        "brain_shape": brain_kind,
        "skull": bool(masks["skull"].any()),
        **contrast,
        "lesions": lesions,
        "lesion_volume_ml": float(label.sum() * np.prod(spacing) / 1000.0),
    }
    return OODCase("mri", int(seed), images, label, _affine(shape, spacing), info, masks)


# ------------------------------------------------------------------------------------------------- CTP


def _ctp_anatomy(rng: np.random.Generator, coords) -> dict[str, np.ndarray]:
    """Elliptic head (all brain, no skull) with an outer CSF rim and two ventricles."""
    centre = (*rng.uniform(-5, 5, 2), float(rng.uniform(-10, 10)))
    radii = np.array([rng.uniform(62, 76), rng.uniform(78, 95), rng.uniform(90, 140)])
    yaw = float(rng.uniform(-0.1, 0.1))
    head = _inside(coords, _Shape(centre, tuple(radii), 2.0, yaw))
    rim = float(rng.uniform(1.5, 4.0))
    inner = _inside(coords, _Shape(centre, tuple(radii - [rim, rim, 0]), 2.0, yaw))
    csf = head & ~inner
    for sign in (-1, 1):
        offset = (sign * rng.uniform(5, 11), rng.uniform(-5, 8), rng.uniform(-10, 10))
        at = _local_to_world(np.array(centre), yaw, offset)
        csf |= _inside(coords, _Shape(at, (rng.uniform(4, 9), rng.uniform(15, 28), rng.uniform(10, 25)), 2.0, yaw))
    csf &= head
    return {"head": head, "tissue": head & ~csf, "csf": csf}


def _ctp_lesions(rng: np.random.Generator, coords, spacing, tissue: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
    """1-2 geometric cores and, around each, a penumbra shell (the core's shape, 1.5-2.2x larger in-plane)."""
    depth = ndimage.distance_transform_edt(tissue, sampling=spacing)
    core, outer = np.zeros(tissue.shape, bool), np.zeros(tissue.shape, bool)
    cores = []
    for _ in range(1 if rng.random() < 0.75 else 2):
        kind = str(rng.choice(["sphere", "ellipsoid", "box", "superellipsoid"]))
        r_xy = float(rng.uniform(7, 22))
        radii = (r_xy, r_xy, r_xy) if kind == "sphere" else (r_xy, r_xy * rng.uniform(0.6, 1.0), rng.uniform(4, 14))
        power = {"box": np.inf, "superellipsoid": float(rng.uniform(2.5, 4))}.get(kind, 2.0)
        shape = _Shape(
            _pick_centre(rng, depth, coords, min(r_xy, 15.0)),
            tuple(float(r) for r in radii),
            power,
            float(rng.uniform(0, np.pi)),
        )
        _paint(core, 1, coords, spacing, shape)
        grow = float(rng.uniform(1.5, 2.2))
        halo = (shape.radii[0] * grow, shape.radii[1] * grow, shape.radii[2] + rng.uniform(0, 5))
        _paint(outer, 1, coords, spacing, _Shape(shape.center, halo, power, shape.yaw))
        cores.append(
            {"shape": kind, "center_mm": list(shape.center), "radii_mm": list(shape.radii), "penumbra_scale": grow}
        )
    core &= tissue
    return core, outer & tissue & ~core, cores


def _ctp_maps(
    rng: np.random.Generator, coords, masks: dict[str, np.ndarray], core: np.ndarray, penumbra: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Perfusion maps in physical units (CBF ml/100g/min, CBV ml/100g, MTT and Tmax s), noise added."""
    cbf0, cbv0, tmax0 = float(rng.uniform(42, 58)), float(rng.uniform(3.4, 4.6)), float(rng.uniform(0.7, 1.3))
    ratios = {
        "core_cbf": rng.uniform(0.2, 0.3),
        "core_cbv": rng.uniform(0.35, 0.5),
        "core_tmax": rng.uniform(10, 12),
        "pen_cbf": rng.uniform(0.6, 0.8),
        "pen_cbv": rng.uniform(0.95, 1.08),
        "pen_tmax": rng.uniform(6, 8),
    }
    ratios = {k: float(v) for k, v in ratios.items()}
    tissue = masks["tissue"]
    cbf = np.where(tissue, cbf0 * _smooth_field(rng, coords, rng.uniform(0.05, 0.12)), 0).astype(np.float32)
    cbv = np.where(tissue, cbv0 * _smooth_field(rng, coords, rng.uniform(0.05, 0.12)), 0).astype(np.float32)
    tmax = np.where(tissue, tmax0 * _smooth_field(rng, coords, rng.uniform(0.05, 0.12)), 0).astype(np.float32)
    for region, prefix in ((penumbra, "pen"), (core, "core")):
        cbf[region] *= ratios[f"{prefix}_cbf"]
        cbv[region] *= ratios[f"{prefix}_cbv"]
        tmax[region] = ratios[f"{prefix}_tmax"]
    mtt = np.divide(60.0 * cbv, cbf, out=np.zeros_like(cbf), where=cbf > 0)  # central volume principle
    noise = float(rng.uniform(0.02, 0.05))
    maps = {"cbf": (cbf, cbf0), "cbv": (cbv, cbv0), "mtt": (mtt, 60 * cbv0 / cbf0), "tmax": (tmax, tmax0)}
    out = {}
    for name, (image, typical) in maps.items():
        noisy = image + rng.normal(0.0, noise * typical, image.shape).astype(np.float32)
        out[name] = np.where(masks["head"], np.maximum(noisy, 0.0), 0.0).astype(np.float32)
    info = {
        "noise_frac": noise,
        "cbf_tissue": cbf0,
        "cbv_tissue": cbv0,
        "tmax_tissue": tmax0,
        "mtt_tissue": 60 * cbv0 / cbf0,
        **ratios,
    }
    return out, info


def _ctp_units(rng: np.random.Generator, images: dict[str, np.ndarray]) -> dict[str, Any]:
    """Rescale the maps in place to a drawn unit / gain each; returns the factors (stored = physical x gain)."""
    gains = {
        "cbf_gain": float(rng.choice([1.0, 10.0, rng.uniform(0.2, 5.0)])),  # ml/100g/min, x10, vendor gain
        "cbv_gain": float(rng.choice([1.0, 10.0, rng.uniform(0.2, 5.0)])),  # ml/100g, ml/1000g, vendor gain
        "mtt_gain": float(rng.choice([1.0, 1000.0])),  # s or ms
        "tmax_gain": float(rng.choice([1.0, 1000.0])),
    }
    for name in images:
        images[name] *= np.float32(gains[f"{name}_gain"])
    return {
        **gains,
        "mtt_unit": "ms" if gains["mtt_gain"] > 1 else "s",
        "tmax_unit": "ms" if gains["tmax_gain"] > 1 else "s",
    }


def ood_ctp_case(seed: int) -> OODCase:
    """An OOD CT-perfusion case (see the module docstring); the label is the ischaemic core only."""
    rng = _rng(seed, "ctp")
    shape = (256, 256, 8)
    s_xy = float(rng.uniform(0.85, 1.05))
    spacing = (s_xy, s_xy, float(rng.uniform(4.5, 5.5)))
    coords = _grid(shape, spacing)
    masks = _ctp_anatomy(rng, coords)
    core, penumbra, cores = _ctp_lesions(rng, coords, spacing, masks["tissue"])
    masks["penumbra"] = penumbra
    images, values = _ctp_maps(rng, coords, masks, core, penumbra)
    units = _ctp_units(rng, images)
    label = core.astype(np.uint8)
    info = {
        "kind": "ctp",
        "seed": int(seed),
        "shape": list(shape),
        "spacing_mm": list(spacing),
        **values,
        **units,
        "cores": cores,
        "lesion_volume_ml": float(label.sum() * np.prod(spacing) / 1000.0),
    }
    return OODCase("ctp", int(seed), images, label, _affine(shape, spacing), info, masks)


def ood_case(kind: str, seed: int) -> OODCase:
    """:func:`ood_mri_case` (``kind="mri"``) or :func:`ood_ctp_case` (``"ctp"``)."""
    if kind not in OOD_KINDS:
        raise ValueError(f"kind must be one of {OOD_KINDS}, got {kind!r}.")
    return ood_mri_case(seed) if kind == "mri" else ood_ctp_case(seed)
