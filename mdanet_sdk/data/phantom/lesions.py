"""Step 2 of a phantom: lesions of random irregular shape, size and position in tissue, and the look-alikes
(confounders) around them. Parameters: :data:`~.tables.LESION`, :data:`~.tables.LESION_PATTERNS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from mdanet_sdk.data.phantom.anatomy import Anatomy
from mdanet_sdk.data.phantom.domain import Domain
from mdanet_sdk.data.phantom.fields import ramp, rotation, smooth_noise
from mdanet_sdk.data.phantom.tables import LESION, LESION_PATTERNS

__all__ = ["Effects", "add_mimic", "blob", "ctp_lesions", "mri_lesions"]


@dataclass
class Effects:
    """Per-voxel lesion and confounder maps (float32 ``(X, Y, Z)``, 0 where nothing happens)."""

    core: np.ndarray  # lesion profile (label = core >= 0.5 in tissue)
    strength: np.ndarray  # per-lesion severity, 0..1, where the core is
    penumbra: np.ndarray  # CTP hypoperfused tissue around the core (not in the label)
    mimic: np.ndarray  # profile of the confounders
    lesions: list[dict[str, Any]] = field(default_factory=list)
    mimics: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def empty(cls, shape: tuple[int, int, int]) -> "Effects":
        core, strength, penumbra, mimic = (np.zeros(shape, np.float32) for _ in range(4))
        return cls(core, strength, penumbra, mimic)

    def paint(self, target: np.ndarray, region, profile: np.ndarray, value: float = 1.0) -> None:
        np.maximum(target[region], profile * value, out=target[region])


def _pick(rng: np.random.Generator, mask: np.ndarray) -> tuple[int, int, int] | None:
    """A random voxel index of ``mask``, or None when it is empty."""
    flat = np.flatnonzero(mask)
    if flat.size == 0:
        return None
    x, y, z = (int(i) for i in np.unravel_index(flat[rng.integers(flat.size)], mask.shape))
    return x, y, z


def blob(
    rng: np.random.Generator, anat: Anatomy, centre: tuple[int, int, int], radius_mm: float, irregular: float
) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """An irregular blob around voxel ``centre``: a randomly oriented ellipsoid with smoothly displaced surface.

    Returns:
        ``(region, profile)``: the bounding box and float32 ``profile`` over it, 1 inside, 0 outside, a
        ~1.5 mm ramp across the surface (``profile >= 0.5`` is the blob).
    """
    semi = radius_mm * np.exp(rng.normal(0.0, LESION.axis_spread, 3))
    half = np.ceil(1.8 * semi.max() / anat.spacing).astype(int) + 1
    region = cast(
        "tuple[slice, slice, slice]",  # zip over three axes: three slices
        tuple(slice(max(c - h, 0), min(c + h + 1, n)) for c, h, n in zip(centre, half, anat.shape)),
    )
    local = [((np.arange(s.start, s.stop) - c) * d).astype(np.float32) for s, c, d in zip(region, centre, anat.spacing)]
    coords = (local[0][:, None, None], local[1][None, :, None], local[2][None, None, :])
    rot = rotation(rng)
    rho2 = sum((sum(rot[i, j] * coords[i] for i in range(3)) / semi[j]) ** 2 for j in range(3))
    dist = np.sqrt(rho2) + irregular * smooth_noise(rng, local, max(0.45 * radius_mm, 1.0))
    return region, ramp((1.0 - dist) * radius_mm, 1.5)


def _centre_mm(anat: Anatomy, index: tuple[int, int, int]) -> list[float]:
    return [round(float(anat.axes[k][index[k]]), 1) for k in range(3)]


def _add_lesion(rng, anat: Anatomy, fx: Effects, mask: np.ndarray, radius: float, kind: str) -> tuple | None:
    """Draw one lesion of type ``kind`` centred in ``mask``; record it; return its centre (None if ``mask`` is
    empty)."""
    centre = _pick(rng, mask)
    if centre is None:
        return None
    region, profile = blob(rng, anat, centre, radius, rng.uniform(*LESION.irregularity))
    # Vascular territories end at the midline: keep the blob in the hemisphere of its centre.
    profile *= ramp(np.sign(anat.u[centre] or 1.0) * anat.u[region], 2.0)
    profile[tuple(c - s.start for c, s in zip(centre, region))] = 1.0  # never an empty lesion
    fx.paint(fx.core, region, profile)
    fx.paint(fx.strength, region, profile >= 0.5, rng.uniform(*LESION.severity))
    fx.lesions.append({"type": kind, "centre_mm": _centre_mm(anat, centre), "radius_mm": round(radius, 1)})
    return centre


def _near(anat: Anatomy, centre: tuple[int, int, int], radius_mm: float) -> np.ndarray:
    """Voxels within ``radius_mm`` of voxel ``centre``."""
    d2 = sum(
        ((anat.axes[k] - anat.axes[k][centre[k]]) ** 2).reshape([-1 if j == k else 1 for j in range(3)])
        for k in range(3)
    )
    return d2 < radius_mm**2


def _tissue(anat: Anatomy) -> np.ndarray:
    """Where a lesion may be centred: brain, little CSF, not at the very surface."""
    return anat.brain & (anat.csf < LESION.tissue_max_csf) & (anat.depth > LESION.tissue_min_depth_mm)


def mri_lesions(rng, anat: Anatomy, pattern: str, n_lesions: int | None, dom: Domain) -> Effects:
    """The lesions of an ISLES'22-like case for ``pattern`` (:data:`~.tables.LESION_PATTERNS`); ``n_lesions``
    replaces the drawn number."""
    fx = Effects.empty(anat.shape)
    c = anat.dims[2]
    tissue = _tissue(anat)
    cerebrum = tissue & (anat.w > -LESION.cerebrum_floor * c)
    side = rng.choice((-1.0, 1.0))
    p = LESION_PATTERNS[pattern]
    if pattern == "territorial":
        # Set for this pattern in LESION_PATTERNS:
        assert p.count is not None and p.spread_mm is not None and p.satellite_radius_mm is not None
        n = n_lesions or 1 + int(rng.random() < p.extra_p) * int(rng.integers(*p.count))
        region = (
            cerebrum & (side * anat.u > p.min_offset_mm) & (anat.depth > p.min_depth_mm) & (anat.depth < p.max_depth_mm)
        )
        centre = _add_lesion(rng, anat, fx, region, rng.uniform(*p.radius_mm), "territorial")
        near = _near(anat, centre, p.spread_mm) if centre is not None else cerebrum
        for _ in range(n - 1):
            _add_lesion(
                rng,
                anat,
                fx,
                cerebrum & near & (anat.depth < p.satellite_max_depth_mm),
                rng.uniform(*p.satellite_radius_mm),
                "satellite",
            )
    elif pattern == "lacunar":
        for _ in range(n_lesions or 1 + int(rng.random() < p.extra_p)):
            _add_lesion(
                rng,
                anat,
                fx,
                tissue & (anat.depth > p.min_depth_mm) & (anat.csf < p.max_csf),
                rng.uniform(*p.radius_mm),
                "lacunar",
            )
    elif pattern == "embolic":
        assert p.spread_mm is not None  # set for this pattern in LESION_PATTERNS
        cluster = _pick(rng, cerebrum & (anat.depth < p.max_depth_mm))
        # No cerebrum voxel shallow enough for a cluster centre: scatter the emboli like territorial satellites.
        near = (_near(anat, cluster, p.spread_mm) if cluster is not None else cerebrum) & (
            anat.depth < p.satellite_max_depth_mm
        )
        for _ in range(n_lesions or int(rng.integers(*dom.embolic_count))):
            _add_lesion(rng, anat, fx, tissue & near, rng.uniform(*p.radius_mm), "embolic")
    else:  # multiple
        assert p.count is not None  # set for this pattern in LESION_PATTERNS
        for _ in range(n_lesions or int(rng.integers(*p.count))):
            _add_lesion(rng, anat, fx, cerebrum, rng.uniform(*p.radius_mm), "multiple")
    if not fx.lesions:  # a grid too small for the pattern's region: any tissue voxel
        _add_lesion(rng, anat, fx, anat.brain & (anat.csf < 0.5), LESION.fallback_radius_mm["isles22"], "fallback")
    return fx


def ctp_lesions(rng, anat: Anatomy, n_lesions: int | None) -> Effects:
    """One or two infarct cores in one hemisphere, each inside a larger hypoperfused penumbra."""
    fx = Effects.empty(anat.shape)
    tissue = _tissue(anat)
    side = rng.choice((-1.0, 1.0))
    p = LESION_PATTERNS["core"]
    assert (
        p.penumbra_scale is not None and p.penumbra_irregularity is not None
    )  # set for this pattern in LESION_PATTERNS
    for _ in range(n_lesions or 1 + int(rng.random() < p.extra_p)):
        mask = tissue & (side * anat.u > p.min_offset_mm) & (anat.depth < p.max_depth_mm)
        radius = rng.uniform(*p.radius_mm)
        centre = _add_lesion(rng, anat, fx, mask if mask.any() else tissue, radius, "core")
        if centre is not None:
            region, profile = blob(
                rng, anat, centre, radius * rng.uniform(*p.penumbra_scale), rng.uniform(*p.penumbra_irregularity)
            )
            fx.paint(fx.penumbra, region, profile)
    if not fx.lesions:
        _add_lesion(rng, anat, fx, anat.brain & (anat.csf < 0.5), LESION.fallback_radius_mm["isles18"], "fallback")
    return fx


def add_mimic(
    rng, anat: Anatomy, fx: Effects, mask: np.ndarray, radius: float, kind: str, **effect
) -> np.ndarray | None:
    """Draw one confounder of type ``kind`` in ``mask`` (away from the lesions); return its full-size profile
    (or None when ``mask`` holds no voxel away from the lesions)."""
    centre = _pick(rng, mask & (fx.core < 0.05))
    if centre is None:
        return None
    region, profile = blob(rng, anat, centre, radius, rng.uniform(*LESION.irregularity))
    profile *= 1.0 - fx.core[region]  # a look-alike never overlaps a lesion
    full = np.zeros(anat.shape, np.float32)
    full[region] = profile
    fx.paint(fx.mimic, region, profile)
    fx.mimics.append(
        {
            "type": kind,
            "centre_mm": _centre_mm(anat, centre),
            "radius_mm": round(radius, 1),
            **{k: round(float(v), 3) for k, v in effect.items()},
        }
    )
    return full
