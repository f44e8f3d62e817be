"""Surface distances between two binary masks, in mm: HD95 and the average symmetric surface distance.

The **surface** of a mask is its boundary voxels: the voxels of the mask that a one-voxel erosion with face
connectivity (6 neighbours in 3D) removes. The volume's edge counts as background, so a mask that touches
it has a surface there. Distances are Euclidean between voxel centres, with the voxel spacing of the
image (``sampling=spacing`` of :func:`scipy.ndimage.distance_transform_edt`), so they are in mm for a
NIfTI header's zooms and anisotropic voxels are measured correctly.

From the distances of each surface voxel of one mask to the nearest surface voxel of the other
(``d(P→G)`` and ``d(G→P)``):

- **HD95** (95th-percentile Hausdorff distance): ``max(p95(d(P→G)), p95(d(G→P)))``, each percentile with
  numpy's linear interpolation (as MedPy's ``hd95``); the Hausdorff distance with the worst 5 % of each
  surface ignored, so a single stray voxel does not dominate it.
- **ASD** (average symmetric surface distance, Heimann et al. 2009): the mean of all distances of both
  sets together, ``(Σ d(P→G) + Σ d(G→P)) / (|S_P| + |S_G|)``.

Empty masks (documented once, used everywhere):

===========================  =============================
case                         HD95, ASD
===========================  =============================
both empty                   0 mm (nothing to disagree on)
exactly one empty            NaN (no surface to measure to)
===========================  =============================

A NaN is not a number to average: :func:`mdanet_sdk.metrics.aggregate` leaves such cases out of a mean,
and the evaluation report says how many it left out (JSON ``null``). A missed lesion is still penalised by
DSC, recall and lesion-wise F1, which are 0 for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from mdanet_sdk.errors import InputError
from mdanet_sdk.metrics import binary_mask

__all__ = ["SurfaceDistances", "surface", "surface_distances", "hd95", "asd", "surface_metrics"]


class SurfaceDistances(NamedTuple):
    """Distances in mm from each surface voxel of one mask to the nearest surface voxel of the other.

    ``pred_to_gt`` has one entry per surface voxel of the prediction, ``gt_to_pred`` one per surface voxel
    of the ground truth; both are empty when the two masks are empty, and ``None`` when exactly one is.
    """

    pred_to_gt: np.ndarray | None
    gt_to_pred: np.ndarray | None

    @property
    def hd95(self) -> float:
        """95th-percentile Hausdorff distance in mm (module docstring; 0 both empty, NaN one empty)."""
        if self.pred_to_gt is None or self.gt_to_pred is None:
            return float("nan")
        if self.pred_to_gt.size == 0:
            return 0.0
        return float(max(np.percentile(self.pred_to_gt, 95), np.percentile(self.gt_to_pred, 95)))

    @property
    def asd(self) -> float:
        """Average symmetric surface distance in mm (module docstring; 0 both empty, NaN one empty)."""
        if self.pred_to_gt is None or self.gt_to_pred is None:
            return float("nan")
        n = self.pred_to_gt.size + self.gt_to_pred.size
        return 0.0 if n == 0 else float((self.pred_to_gt.sum() + self.gt_to_pred.sum()) / n)


def _spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    out = tuple(float(s) for s in spacing)
    if len(out) != ndim or not all(np.isfinite(s) and s > 0 for s in out):
        raise InputError(f"spacing must be {ndim} positive voxel sizes in mm (one per axis), got {spacing!r}.")
    return out


def surface(mask: np.ndarray) -> np.ndarray:
    """Boolean array of the boundary voxels of a boolean ``mask`` (any dimension, same shape)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _crop(p: np.ndarray, g: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of both masks grown by one voxel (clipped to the volume).

    Every surface voxel lies inside it, so the distances computed on the crop are those of the whole
    volume; the one-voxel margin is background (or the volume's edge), so the erosion sees the same
    neighbours as on the whole volume. It keeps large volumes with small lesions fast.
    """
    nonzero = np.nonzero(p | g)
    return tuple(
        slice(max(int(ix.min()) - 1, 0), min(int(ix.max()) + 2, n)) for ix, n in zip(nonzero, p.shape, strict=True)
    )


def surface_distances(pred: object, gt: object, spacing: Sequence[float] | None = None) -> SurfaceDistances:
    """Surface-to-surface distances of ``pred`` and ``gt`` in mm.

    Args:
        pred: predicted binary mask, any dimension (a volume, usually ``(X, Y, Z)``).
        gt: ground-truth binary mask of the same shape.
        spacing: voxel size in mm along each axis of the arrays; default 1 (distances in voxels).

    Returns:
        the :class:`SurfaceDistances` (see the module docstring for empty masks).
    """
    p, g = binary_mask(pred, "pred"), binary_mask(gt, "gt")
    if p.shape != g.shape or p.ndim == 0:
        raise InputError(f"pred and gt must be arrays of the same shape, got {p.shape} and {g.shape}.")
    sampling = _spacing(spacing, p.ndim)
    has_p, has_g = bool(p.any()), bool(g.any())
    if not has_p and not has_g:
        return SurfaceDistances(np.zeros(0), np.zeros(0))
    if has_p != has_g:
        return SurfaceDistances(None, None)
    box = _crop(p, g)
    sp, sg = surface(p[box]), surface(g[box])
    # The EDT of the complement of a surface is, at every voxel, the distance to that surface's nearest voxel.
    to_g = ndimage.distance_transform_edt(~sg, sampling=sampling)
    to_p = ndimage.distance_transform_edt(~sp, sampling=sampling)
    return SurfaceDistances(np.asarray(to_g[sp], dtype=float), np.asarray(to_p[sg], dtype=float))


def hd95(pred: object, gt: object, spacing: Sequence[float] | None = None) -> float:
    """95th-percentile Hausdorff distance in mm (module docstring; 0 when both are empty, NaN when one is)."""
    return surface_distances(pred, gt, spacing).hd95


def asd(pred: object, gt: object, spacing: Sequence[float] | None = None) -> float:
    """Average symmetric surface distance in mm (module docstring; 0 when both are empty, NaN when one is)."""
    return surface_distances(pred, gt, spacing).asd


def surface_metrics(pred: object, gt: object, spacing: Sequence[float] | None = None) -> dict[str, float]:
    """``{"hd95_mm": ..., "asd_mm": ...}`` of one case, from one pair of distance transforms."""
    d = surface_distances(pred, gt, spacing)
    return {"hd95_mm": d.hd95, "asd_mm": d.asd}
