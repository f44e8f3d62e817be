"""Evaluation metrics on binary lesion masks (numpy only, no model).

Voxel-wise metrics of the paper (section 4.2, Eq. 13-16): DSC, precision, recall and F1, computed per
volume from the confusion counts. ISLES'22 challenge metrics: absolute volume difference (mL), absolute
lesion-count difference and lesion-wise F1, following the official evaluation code
(github.com/ezequieldlrosa/isles22, ``utils/eval_utils.py``).

All scores are fractions in ``[0, 1]`` (the paper prints them as percentages). Masks may be boolean,
integer or float arrays of 0/1 of any dimension; non-zero means lesion.

Conventions where a ratio is 0/0 (documented once, used everywhere):

===========================  =====  =========  ======  ===
case                         DSC    precision  recall  F1
===========================  =====  =========  ======  ===
both empty                   1      1          1       1
ground truth empty only      0      0          1       0
prediction empty only        0      0          0       0
===========================  =====  =========  ======  ===

Recall is 1 when there is no lesion to find, since nothing was missed; precision is 0 for an empty
prediction of a real lesion, so predicting nothing can never score well. F1 (Eq. 16, from precision and
recall) then equals DSC in every case.

Lesions are the connected components of a mask with full connectivity: 26 neighbours in 3D, 8 in 2D.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from mdanet_sdk._values import is_real
from mdanet_sdk.errors import InputError

__all__ = [
    "Confusion",
    "binary_mask",
    "LesionMatch",
    "confusion",
    "dsc",
    "precision",
    "recall",
    "f1",
    "f1_score",
    "spacing_to_ml",
    "volume_ml",
    "abs_volume_difference",
    "label_lesions",
    "match_lesions",
    "abs_lesion_count_difference",
    "lesion_f1",
    "case_metrics",
    "aggregate",
    "count_nan",
    "mean_std_text",
    "summarize_folds",
]


def binary_mask(a: object, name: str) -> np.ndarray:
    """A boolean view of a 0/1 mask; refuses probabilities, which must be thresholded first."""
    arr = np.asarray(a)
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind == "f" and not np.isin(arr, (0.0, 1.0)).all():
        fix = (  # a label is the reference: no threshold of ours applies to it
            "binarise it (lesion = 1) first"
            if name == "gt"
            else "threshold the probabilities first (evaluate: --threshold)"
        )
        raise InputError(f"{name} holds values other than 0 and 1; {fix}.")
    return arr != 0


def _pair(pred: object, gt: object) -> tuple[np.ndarray, np.ndarray]:
    p, g = binary_mask(pred, "pred"), binary_mask(gt, "gt")
    if p.shape != g.shape:
        raise InputError(f"pred and gt must have the same shape, got {p.shape} and {g.shape}.")
    return p, g


def f1_score(precision: float, recall: float) -> float:
    """Eq. 16, the harmonic mean ``2PR / (P + R)``; 0 when both are 0."""
    total = precision + recall
    return 0.0 if total == 0 else 2.0 * precision * recall / total


class Confusion(NamedTuple):
    """Voxel counts of one prediction against its ground truth, and the paper's scores from them."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def dsc(self) -> float:
        """Eq. 13, ``2TP / (2TP + FP + FN)``; 1 when both masks are empty."""
        denom = 2 * self.tp + self.fp + self.fn
        return 1.0 if denom == 0 else 2.0 * self.tp / denom

    @property
    def precision(self) -> float:
        """Eq. 14, ``TP / (TP + FP)``; for an empty prediction 1 if the truth is empty too, else 0."""
        denom = self.tp + self.fp
        if denom == 0:
            return 1.0 if self.fn == 0 else 0.0
        return self.tp / denom

    @property
    def recall(self) -> float:
        """Eq. 15, ``TP / (TP + FN)``; 1 when the ground truth is empty (nothing to miss)."""
        denom = self.tp + self.fn
        return 1.0 if denom == 0 else self.tp / denom

    @property
    def f1(self) -> float:
        """Eq. 16 from :attr:`precision` and :attr:`recall` (equal to :attr:`dsc`)."""
        return f1_score(self.precision, self.recall)


def confusion(pred: object, gt: object) -> Confusion:
    """Voxel-wise TP, FP, FN, TN of ``pred`` against ``gt`` (same shape, any dimension)."""
    p, g = _pair(pred, gt)
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(g)) - tp
    return Confusion(tp, fp, fn, p.size - tp - fp - fn)


def dsc(pred: object, gt: object) -> float:
    """Dice score of one volume, Eq. 13 (see the module's table for empty masks)."""
    return confusion(pred, gt).dsc


def precision(pred: object, gt: object) -> float:
    """Precision of one volume, Eq. 14 (see the module's table for empty masks)."""
    return confusion(pred, gt).precision


def recall(pred: object, gt: object) -> float:
    """Recall of one volume, Eq. 15 (see the module's table for empty masks)."""
    return confusion(pred, gt).recall


def f1(pred: object, gt: object) -> float:
    """F1 of one volume, Eq. 16 (see the module's table for empty masks)."""
    return confusion(pred, gt).f1


def spacing_to_ml(spacing_mm: Sequence[float]) -> float:
    """Volume of one voxel in mL from its spacing in mm (e.g. a NIfTI header's zooms): ``Π s / 1000``."""
    spacing = np.asarray(spacing_mm, dtype=float)
    if spacing.ndim != 1 or spacing.size == 0 or (spacing <= 0).any():
        raise InputError(f"spacing_mm must be positive voxel sizes in mm, got {spacing_mm!r}.")
    return float(np.prod(spacing)) / 1000.0


def _check_voxel_volume(voxel_volume_ml: float) -> float:
    if not voxel_volume_ml > 0:
        raise InputError(f"voxel_volume_ml must be > 0 (mL per voxel), got {voxel_volume_ml!r}.")
    return float(voxel_volume_ml)


def volume_ml(mask: object, voxel_volume_ml: float) -> float:
    """Lesion volume of a mask in mL."""
    return int(np.count_nonzero(binary_mask(mask, "mask"))) * _check_voxel_volume(voxel_volume_ml)


def abs_volume_difference(pred: object, gt: object, voxel_volume_ml: float) -> float:
    """ISLES'22 absolute volume difference ``|V_gt - V_pred|`` in mL."""
    p, g = _pair(pred, gt)
    return abs(volume_ml(g, voxel_volume_ml) - volume_ml(p, voxel_volume_ml))


def label_lesions(mask: object) -> tuple[np.ndarray, int]:
    """Connected components of a mask with full connectivity (26 in 3D, 8 in 2D).

    Returns:
        ``(labels, n)``: an int array of the mask's shape, 0 outside lesions and ``1..n`` inside.
    """
    m = binary_mask(mask, "mask")
    if m.ndim == 0:
        raise InputError("mask must have at least one dimension, got a scalar.")
    labels, n = ndimage.label(m, structure=ndimage.generate_binary_structure(m.ndim, m.ndim))
    return labels, int(n)


class LesionMatch(NamedTuple):
    """Lesion-wise counts of one prediction, ISLES'22 convention.

    ``tp``: ground-truth lesions that at least one predicted voxel overlaps; ``fn``: the other ground-truth
    lesions; ``fp``: predicted lesions that overlap no ground-truth voxel. A predicted lesion that overlaps
    is never counted on its own, so one prediction covering two true lesions gives ``tp = 2``.
    """

    tp: int
    fp: int
    fn: int
    n_gt: int
    n_pred: int

    @property
    def f1(self) -> float:
        """``TP / (TP + (FP + FN) / 2)``; 1 when both masks hold no lesion."""
        errors = self.fp + self.fn
        return 1.0 if self.tp + errors == 0 else self.tp / (self.tp + errors / 2.0)


def match_lesions(pred: object, gt: object) -> LesionMatch:
    """Count detected, missed and spurious lesions of ``pred`` against ``gt`` (see :class:`LesionMatch`)."""
    p, g = _pair(pred, gt)
    gt_labels, n_gt = label_lesions(g)
    pred_labels, n_pred = label_lesions(p)
    overlap = p & g
    # Labels present in the overlap are exactly the components that touch the other mask.
    tp = np.unique(gt_labels[overlap]).size
    hit = np.unique(pred_labels[overlap]).size
    return LesionMatch(tp=tp, fp=n_pred - hit, fn=n_gt - tp, n_gt=n_gt, n_pred=n_pred)


def abs_lesion_count_difference(pred: object, gt: object) -> int:
    """ISLES'22 absolute difference of the numbers of lesions (connected components)."""
    m = match_lesions(pred, gt)
    return abs(m.n_gt - m.n_pred)


def lesion_f1(pred: object, gt: object) -> float:
    """ISLES'22 lesion-wise F1 (see :class:`LesionMatch`); 1 when both masks are empty."""
    return match_lesions(pred, gt).f1


def case_metrics(pred: object, gt: object, voxel_volume_ml: float = 1.0) -> dict[str, float]:
    """Every metric of one case.

    Args:
        pred: predicted binary mask, any dimension (a volume, usually ``(D, H, W)``).
        gt: ground-truth binary mask of the same shape.
        voxel_volume_ml: volume of one voxel in mL (see :func:`spacing_to_ml`); the default 1 makes the
            volume entries plain voxel counts.

    Returns:
        ``dsc``, ``precision``, ``recall``, ``f1`` (fractions, Eq. 13-16); ``volume_gt_ml``,
        ``volume_pred_ml``, ``abs_volume_diff_ml``; ``n_lesions_gt``, ``n_lesions_pred``,
        ``abs_lesion_count_diff``, ``lesion_f1`` (ISLES'22). All values are Python floats.
    """
    p, g = _pair(pred, gt)
    vox = _check_voxel_volume(voxel_volume_ml)
    c = confusion(p, g)
    m = match_lesions(p, g)
    v_gt, v_pred = (c.tp + c.fn) * vox, (c.tp + c.fp) * vox
    return {
        "dsc": c.dsc,
        "precision": c.precision,
        "recall": c.recall,
        "f1": c.f1,
        "volume_gt_ml": v_gt,
        "volume_pred_ml": v_pred,
        "abs_volume_diff_ml": abs(v_gt - v_pred),
        "n_lesions_gt": float(m.n_gt),
        "n_lesions_pred": float(m.n_pred),
        "abs_lesion_count_diff": float(abs(m.n_gt - m.n_pred)),
        "lesion_f1": m.f1,
    }


def aggregate(results: Sequence[Mapping[str, object]], ddof: int = 0) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each numeric entry over cases.

    Entries that are not numbers in every dict (a case id, a path) are left out, so per-case records can
    carry their labels. A NaN value (a surface distance with one mask empty, :mod:`mdanet_sdk.surface`) is
    not a score: it is left out of its entry's mean and std (:func:`count_nan` counts such values); an
    entry that is NaN in every dict gives ``(nan, nan)``.

    Args:
        results: one dict per case, e.g. from :func:`case_metrics`.
        ddof: delta degrees of freedom of the std (0: population, as ``numpy.std``; 1: sample).

    Returns:
        ``name -> (mean, std)``, in the key order of the first dict.
    """
    if not results:
        raise InputError("aggregate needs at least one result; the list is empty.")
    if len(results) <= ddof:
        raise InputError(f"ddof={ddof} needs more than {ddof} results, got {len(results)}.")
    names = [k for k in results[0] if all(k in r and is_real(r[k]) for r in results)]
    summary = {}
    for name in names:
        values = np.array([r[name] for r in results], dtype=float)
        values = values[~np.isnan(values)]
        if values.size <= ddof:
            summary[name] = (float("nan"), float("nan"))
            continue
        summary[name] = (float(values.mean()), float(values.std(ddof=ddof)))
    return summary


def count_nan(results: Sequence[Mapping[str, object]]) -> dict[str, int]:
    """How many dicts hold NaN for each entry (only entries with at least one): what :func:`aggregate` left
    out of each mean."""
    counts: dict[str, int] = {}
    for r in results:
        for name, value in r.items():
            if is_real(value) and np.isnan(float(value)):  # type: ignore[arg-type]
                counts[name] = counts.get(name, 0) + 1
    return counts


def mean_std_text(mean: float, std: float, n: int, scale: float = 1.0) -> str:
    """``mean ± std`` times ``scale`` with two decimals, as the paper prints them; the mean alone when it is of
    ``n`` = 1 value (one fold or case has no spread to show), ``n/a`` when it is NaN."""
    if math.isnan(mean):
        return "n/a"
    return f"{mean * scale:.2f}" if n == 1 else f"{mean * scale:.2f} ± {std * scale:.2f}"


def summarize_folds(
    per_fold: Sequence[Sequence[Mapping[str, object]]], ddof: int = 0
) -> dict[str, tuple[float, float]]:
    """Mean ± std over the fold means, as the paper reports 5-fold cross-validation.

    Each fold's cases are averaged first (:func:`aggregate`), then the fold means are averaged.

    Note:
        The paper's F1 column has no std and is close to, but not always exactly,
        ``f1_score(mean precision, mean recall)``; per case, F1 equals DSC.

    Args:
        per_fold: for each fold, the per-case dicts of its validation cases.
        ddof: delta degrees of freedom of the std over folds (see :func:`aggregate`).

    Returns:
        ``name -> (mean of fold means, std of fold means)``.
    """
    if not per_fold:
        raise InputError("summarize_folds needs at least one fold; the list is empty.")
    fold_means = [{name: mean for name, (mean, _) in aggregate(fold).items()} for fold in per_fold]
    return aggregate(fold_means, ddof=ddof)
