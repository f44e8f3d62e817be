"""Random fields and shapes on a voxel grid in millimetres: the building blocks of the phantom's anatomy and
lesions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["smooth_noise", "ramp", "ellipsoid_depth", "rotation"]


def smooth_noise(rng: np.random.Generator, axes: Sequence[np.ndarray], scale_mm: float) -> np.ndarray:
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


def ramp(x: np.ndarray | float, width: float) -> np.ndarray:
    """Soft step: 0 for ``x <= -width/2``, 1 for ``x >= width/2``, linear between (partial volume)."""
    return np.clip(np.asarray(x, dtype=np.float32) / width + 0.5, 0.0, 1.0)


def ellipsoid_depth(u: np.ndarray, v: np.ndarray, w: np.ndarray, semi: Sequence[float]) -> np.ndarray:
    """Approximate signed distance (mm, positive inside) to the surface of an axis-aligned ellipsoid."""
    a, b, c = semi
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2) + 1e-6
    grad = np.sqrt((u / a**2) ** 2 + (v / b**2) ** 2 + (w / c**2) ** 2) / rho + 1e-6
    return ((1.0 - rho) / grad).astype(np.float32)


def rotation(rng: np.random.Generator, max_deg: Sequence[float] | None = None) -> np.ndarray:
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
