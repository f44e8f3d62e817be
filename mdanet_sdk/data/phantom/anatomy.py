"""Step 1 of a phantom: the voxel grid, its affine, and the tissue model on it (fractions of CSF, grey and
white matter per voxel, partial volume included). Parameters: :data:`~.tables.GEOMETRY`, :data:`~.tables.ANATOMY`;
the second argument of each :func:`~.fields.ramp` is the width (mm) of a partial-volume transition, not
anatomy, and stays with the shape it softens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mdanet_sdk.data.phantom.domain import Domain
from mdanet_sdk.data.phantom.fields import ellipsoid_depth, ramp, rotation, smooth_noise
from mdanet_sdk.data.phantom.tables import ANATOMY, GEOMETRY

__all__ = ["Anatomy", "build_anatomy", "geometry", "affine"]


@dataclass
class Anatomy:
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
        """A unit-variance smooth random field on this grid (:func:`~.fields.smooth_noise`)."""
        return smooth_noise(rng, self.axes, scale_mm)


def geometry(
    rng, layout: str, shape, spacing, dom: Domain, rim_mm: float | None = None
) -> tuple[tuple[int, int, int], np.ndarray, tuple[float, float, float], float, float]:
    """Grid shape, voxel size (mm), cerebrum semi-axes, brain-centre z offset and head rim width (``rim_mm``
    replaces the default: 0 for a brain-only CTP, a few mm for an MRI with skull)."""
    g = GEOMETRY
    scale = rng.uniform(*g.head_scale)
    dims = tuple(rng.uniform(*r) * scale for r in g.cerebrum_mm)
    if layout == "isles22":
        n = int(rng.choice(list(g.mri_matrix)))
        default = (
            n,
            n + g.mri_non_square_rows * int(rng.random() < g.mri_non_square_p),
            int(rng.integers(*g.mri_slices)),
        )
        base = np.array([dom.uniform(rng, dom.mri_inplane_mm)] * 2 + [g.mri_slice_mm])
        rim, centre_w = rim_mm or 0.0, rng.uniform(*g.mri_centre_z) * dims[2]
        cover_z = g.mri_cover_z[0] * dims[2] + g.mri_cover_z[1]
        if dom.mri_log_slice_mm is not None:  # the matrix follows the voxel size
            base[2] = dom.log_uniform(rng, dom.mri_log_slice_mm)
            side = 2.0 * (max(dims[:2]) + rim) * g.fit_margin + g.fit_pad_mm
            default = (
                int(np.ceil(side / base[0])),
                int(np.ceil(side / base[0])) + g.mri_non_square_rows_fitted * int(rng.random() < g.mri_non_square_p),
                int(np.ceil(cover_z / base[2])),
            )
    else:
        default = (g.ctp_matrix, g.ctp_matrix, int(rng.integers(*g.ctp_slices)))
        base = np.array([dom.uniform(rng, dom.ctp_inplane_mm)] * 2 + [dom.uniform(rng, dom.ctp_slice_mm)])
        rim, centre_w = rng.uniform(*g.ctp_rim_mm), -rng.uniform(*g.ctp_centre_z) * dims[2]
        rim = rim if rim_mm is None else rim_mm
        cover_z = 0.0  # a slab: no need to hold the whole head
    shape = tuple(int(s) if s else d for s, d in zip(shape or (None,) * 3, default))
    cover = np.array([2.0 * (max(dims[:2]) + rim) * g.fit_margin + g.fit_pad_mm] * 2 + [cover_z])
    sp = np.maximum(
        base if spacing is None else np.broadcast_to(np.asarray(spacing, float), (3,)), cover / np.array(shape)
    )
    return shape, sp, dims, centre_w, rim


def affine(rng, shape, spacing, oblique: bool) -> np.ndarray:
    """A RAS affine with the grid centre near the world origin, slightly oblique for MRI."""
    g = GEOMETRY
    rot = rotation(rng, g.affine_tilt_deg) if oblique else np.eye(3)
    out = np.eye(4)
    out[:3, :3] = rot @ np.diag(spacing)
    centre = (np.asarray(shape) - 1) / 2.0
    out[:3, 3] = rng.normal(0.0, g.affine_shift_sd_mm, 3) + np.array(g.affine_centre_mm) - out[:3, :3] @ centre
    return out


def _folds(rng, u: np.ndarray, v: np.ndarray, w: np.ndarray, dims, band: np.ndarray) -> np.ndarray:
    """The cortical folding field: sulci are where it is near 0 (one every ~11 mm along the surface).

    A smooth 3D field is read at each voxel's point pushed out towards the cerebrum's ellipsoidal surface
    (``x · rho^-0.7``), so the field varies along the surface but little with depth: its zero sets are
    sheets running inwards from the surface, as sulci do, slightly curved. Computed on a 1.2 mm lattice in
    the brain frame and interpolated, only inside ``band`` (elsewhere the field is 10: no sulcus).
    """
    step = ANATOMY.fold_lattice_mm
    lattice = [np.arange(-step * s - 4.0, step * s + 4.0, step, dtype=np.float32) for s in dims]
    field = smooth_noise(rng, lattice, rng.uniform(*ANATOMY.fold_scale_mm))
    rho = np.sqrt((u[band] / dims[0]) ** 2 + (v[band] / dims[1]) ** 2 + (w[band] / dims[2]) ** 2)
    push = np.maximum(rho, 0.2) ** ANATOMY.fold_push
    index = [(x[band] * push - axis[0]) / step for x, axis in zip((u, v, w), lattice)]
    out = np.full(band.shape, 10.0, np.float32)
    out[band] = ndimage.map_coordinates(field, index, order=1, mode="nearest")
    return out


def _brain_frame(rng, shape, spacing, centre_w: float) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre axes (mm) and the brain-frame coordinates ``u, v, w`` of every voxel (float32 ``(X, Y, Z)``):
    the grid shifted to a randomly displaced brain centre ``centre_w`` mm up, and rotated by a few degrees."""
    a = ANATOMY
    axes = [((np.arange(n) - (n - 1) / 2) * s).astype(np.float32) for n, s in zip(shape, spacing)]
    offset = np.array(
        [
            rng.normal(0, a.offset_sd_mm[0]),
            rng.normal(0, a.offset_sd_mm[1]),
            centre_w + rng.normal(0, a.offset_sd_mm[2]),
        ]
    )
    rot = rotation(rng, a.tilt_deg)
    grid = [axes[0][:, None, None] - offset[0], axes[1][None, :, None] - offset[1], axes[2][None, None, :] - offset[2]]
    # Brain frame = rotation^T applied to grid-frame coordinates.
    u, v, w = (sum(rot[i, j] * grid[i] for i in range(3)).astype(np.float32) for j in range(3))
    return axes, u, v, w


def _ventricles(u, v, w, c: float, atrophy: float) -> np.ndarray:
    """CSF fraction of the lateral ventricles (arched bodies either side of the septum, horns lower) and the
    third ventricle."""
    a = ANATOMY
    ventricles = np.zeros_like(u)
    for side in (-1.0, 1.0):
        width = a.ventricle_width_mm[0] + a.ventricle_width_mm[1] * atrophy
        arch = w - (a.ventricle_arch[0] * c - a.ventricle_arch[1] * (v + a.ventricle_arch[2]) ** 2)
        height = a.ventricle_height_mm[0] + a.ventricle_height_mm[1] * atrophy
        body = ellipsoid_depth(
            u - side * (a.ventricle_septum_mm + width),
            v + a.ventricle_arch[2],
            arch,
            (width, a.ventricle_length_mm, height),
        )
        ventricles = np.maximum(ventricles, ramp(body, 1.5))
    (tv, tw), (ts_u, ts_v, ts_w) = a.third_ventricle_centre, a.third_ventricle_semi
    third = ellipsoid_depth(u, v + tv, w + tw * c, (ts_u * atrophy, ts_v, ts_w * c))
    return np.maximum(ventricles, ramp(third, 1.0))


def _deep_grey(u, v, w, c: float) -> np.ndarray:
    """Grey-matter fraction of the deep nuclei (lentiform/caudate and thalami) of both sides."""
    deep = np.zeros_like(u)
    for side in (-1.0, 1.0):
        for centre, semi in ANATOMY.deep_nuclei:
            d = ellipsoid_depth(u - side * centre[0], v - centre[1], w - centre[2] * c, semi)
            deep = np.maximum(deep, ramp(d, 2.0))
    return deep


def _outline(
    rng, axes: list[np.ndarray], u: np.ndarray, v: np.ndarray, w: np.ndarray, dims
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The brain's outline: ``(frontal, base, cerebrum, cerebellum, stem, depth)``, float32 ``(X, Y, Z)``.

    ``frontal`` and ``base`` divide ``u`` and ``w`` to narrow the cerebrum in front and flatten it at the base;
    ``cerebrum``, ``cerebellum`` and ``stem`` are the depths (mm, negative outside) below each part's surface,
    and ``depth`` the brain's, with a smooth random wave on the surface.
    """
    an = ANATOMY
    a, b, c = dims
    # Cerebrum: narrower in front, flatter at the base; cerebellum and brainstem below and behind.
    frontal = 1.0 - an.frontal_taper * np.clip(v / b, -1, 1)
    base = np.where(w < 0, an.base_flattening, 1.0).astype(np.float32)
    cerebrum = ellipsoid_depth(u / frontal, v, w / base, dims)
    (cb_v, cb_w), (cs_a, cs_b, cs_c) = an.cerebellum_centre, an.cerebellum_semi
    cerebellum = ellipsoid_depth(u, v + cb_v * b, w + cb_w * c, (cs_a * a, cs_b * b, cs_c * c))
    stem = ellipsoid_depth(
        u, v + an.stem_centre[0] * b, w + an.stem_centre[1] * c, (*an.stem_semi_mm, an.stem_height * c)
    )
    depth = np.maximum(np.maximum(cerebrum, cerebellum), stem) + rng.uniform(*an.surface_wave_mm) * smooth_noise(
        rng, axes, an.surface_wave_scale_mm
    )
    return frontal, base, cerebrum, cerebellum, stem, depth


def _cortex(
    rng, axes: list[np.ndarray], u: np.ndarray, v: np.ndarray, w: np.ndarray, dims, depth: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Sulcal CSF and the grey-matter ribbon of the cortex: ``(sulcal, ribbon, atrophy)``.

    Sulci lie at the zero crossings of a smooth field (:func:`_folds`; ``u, v, w`` in the cerebrum's tapered
    frame), lined by a grey-matter ribbon. ``atrophy`` (drawn here) widens the sulci, and the caller's
    subarachnoid space and ventricles (ISLES patients are mostly elderly).
    """
    an = ANATOMY
    fold = _folds(rng, u, v, w, dims, (depth > 0) & (depth < an.cortex_band_mm))
    sulcus_depth = rng.uniform(*an.sulcus_depth_mm) + an.sulcus_depth_sd_mm * smooth_noise(
        rng, axes, an.sulcus_depth_scale_mm
    )
    atrophy = rng.uniform(*an.atrophy)
    open_ = an.sulcus_opening * atrophy
    sulcal = ramp(open_ - np.abs(fold), 0.5) * ramp(sulcus_depth - depth, 3.0)
    ribbon = np.maximum(
        ramp(open_ + 1.0 - np.abs(fold), 0.3) * ramp(sulcus_depth + an.sulcus_ribbon_mm - depth, 3.0),
        ramp(an.ribbon_mm - depth, 2.0),
    )
    return sulcal, ribbon, atrophy


def _fissure(
    rng, axes: list[np.ndarray], u: np.ndarray, v: np.ndarray, w: np.ndarray, dims, atrophy: float
) -> tuple[np.ndarray, np.ndarray]:
    """The interhemispheric fissure (wavy) down to the corpus callosum, to the base in front and behind:
    ``(CSF fraction, grey-matter fraction of its walls)``, float32 ``(X, Y, Z)``."""
    an = ANATOMY
    _, b, c = dims
    reach = (w > an.fissure_reach[0] * c) | (np.abs(v) > an.fissure_reach[1] * b)
    midline = np.abs(u - an.fissure_wave_mm * smooth_noise(rng, axes, an.fissure_wave_scale_mm))
    fissure = ramp(an.fissure_width * atrophy - midline, 1.0) * reach
    fissure_gm = ramp(an.fissure_gm_mm - midline, 1.5) * reach
    return fissure, fissure_gm


def build_anatomy(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: np.ndarray, dims, centre_w: float
) -> Anatomy:
    """The tissue model of a brain with cerebrum semi-axes ``dims`` (mm) whose centre lies ``centre_w`` mm
    above the grid centre along Z (plus a few mm of random shift and degrees of random rotation)."""
    axes, u, v, w = _brain_frame(rng, shape, spacing, centre_w)
    c = dims[2]
    frontal, base, cerebrum, cerebellum, stem, depth = _outline(rng, axes, u, v, w, dims)
    brain = depth > 0
    sulcal, ribbon, atrophy = _cortex(rng, axes, u / frontal, v, w / base, dims, depth)
    surface = ramp(atrophy - depth, 2.5)
    tentorium = ramp(1.2 - np.abs(cerebrum - cerebellum), 1.0) * (cerebellum > 0) * (cerebrum > 0)
    fissure, fissure_gm = _fissure(rng, axes, u, v, w, dims, atrophy)
    ventricles = _ventricles(u, v, w, c, atrophy)
    deep = _deep_grey(u, v, w, c)
    csf = np.maximum.reduce([surface, sulcal, tentorium, fissure, ventricles]) * brain
    grey = np.maximum.reduce([ribbon, fissure_gm, deep]) * (1.0 - csf) * brain
    white = (1.0 - csf - grey) * brain
    deep_share = np.where(grey > 0, deep / np.maximum(np.maximum(ribbon, fissure_gm), deep + 1e-6), 0.0)
    return Anatomy(
        spacing=np.asarray(spacing, dtype=np.float64),
        axes=axes,
        u=u,
        v=v,
        w=w,
        depth=depth,
        brain=brain,
        csf=csf.astype(np.float32),
        gm=grey.astype(np.float32),
        wm=white.astype(np.float32),
        deep=np.clip(deep_share, 0, 1).astype(np.float32),
        sulcal=(sulcal * brain).astype(np.float32),
        hindbrain=(ramp(np.maximum(cerebellum, stem) - cerebrum, 2.0) * brain).astype(np.float32),
        dims=dims,
    )
