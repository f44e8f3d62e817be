"""Tests of mdanet_sdk.metrics: hand-computed voxel-wise and lesion-wise cases."""

from __future__ import annotations

import numpy as np
import pytest

from mdanet_sdk.errors import InputError
from mdanet_sdk.metrics import (
    abs_lesion_count_difference,
    abs_volume_difference,
    aggregate,
    case_metrics,
    confusion,
    count_nan,
    dsc,
    f1,
    f1_score,
    label_lesions,
    lesion_f1,
    match_lesions,
    precision,
    recall,
    spacing_to_ml,
    mean_std_text,
    summarize_folds,
    volume_ml,
)

# 3×3 case counted by hand: TP at (0,0),(1,1); FP at (0,1); FN at (1,0),(2,2); 4 TN.
PRED = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=np.uint8)
GT = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=np.uint8)


def test_confusion_hand_counts() -> None:
    assert tuple(confusion(PRED, GT)) == (2, 1, 2, 4)


def test_scores_hand_values() -> None:
    assert dsc(PRED, GT) == pytest.approx(4 / 7)
    assert precision(PRED, GT) == pytest.approx(2 / 3)
    assert recall(PRED, GT) == pytest.approx(2 / 4)
    assert f1(PRED, GT) == pytest.approx(4 / 7)  # 2·(2/3)·(1/2) / (2/3 + 1/2)


def test_accepts_bool_and_float_masks() -> None:
    assert dsc(PRED.astype(bool), GT.astype(np.float32)) == pytest.approx(4 / 7)


E = np.zeros((2, 2), dtype=bool)
F1VOX = np.array([[1, 0], [0, 0]], dtype=bool)


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        (E, E, (1.0, 1.0, 1.0, 1.0)),  # both empty
        (F1VOX, E, (0.0, 0.0, 1.0, 0.0)),  # false alarm on an empty truth
        (E, F1VOX, (0.0, 0.0, 0.0, 0.0)),  # lesion missed entirely
    ],
    ids=["both-empty", "gt-empty", "pred-empty"],
)
def test_empty_conventions(pred: np.ndarray, gt: np.ndarray, expected: tuple[float, ...]) -> None:
    assert (dsc(pred, gt), precision(pred, gt), recall(pred, gt), f1(pred, gt)) == expected


def test_f1_score_from_precision_recall() -> None:
    assert f1_score(0.6, 0.4) == pytest.approx(0.48)
    assert f1_score(0.0, 0.0) == 0.0


def test_rejects_probabilities_and_shape_mismatch() -> None:
    with pytest.raises(InputError, match="threshold"):
        dsc(np.full((2, 2), 0.7), GT[:2, :2])
    with pytest.raises(InputError, match="same shape"):
        dsc(PRED, GT[:2])


# ---------------------------------------------------------------- volumes


def test_volumes_in_ml() -> None:
    vox = spacing_to_ml((2.0, 2.0, 2.0))
    assert vox == pytest.approx(0.008)
    assert volume_ml(GT, vox) == pytest.approx(4 * 0.008)
    assert abs_volume_difference(PRED, GT, vox) == pytest.approx(1 * 0.008)  # 3 vs 4 voxels
    with pytest.raises(InputError):
        abs_volume_difference(PRED, GT, 0.0)
    with pytest.raises(InputError):
        spacing_to_ml((1.0, -1.0))


# ---------------------------------------------------------------- lesion-wise


def _volume(voxels: list[tuple[int, int, int]], shape: tuple[int, int, int] = (5, 5, 5)) -> np.ndarray:
    v = np.zeros(shape, dtype=bool)
    v[tuple(np.array(voxels).T)] = True
    return v


# GT: G1 = two voxels touching only at a corner (one lesion with 26-connectivity, two with 6),
# G2 = one voxel, G3 = a two-voxel bar.
GT3 = _volume([(0, 0, 0), (1, 1, 1), (4, 4, 4), (0, 4, 0), (0, 4, 1)])
# Pred: P1 = (1,1,1)+(2,2,2), corner-touching, hits G1; P2 = (4,0,4), hits nothing.
PRED3 = _volume([(1, 1, 1), (2, 2, 2), (4, 0, 4)])


def test_label_uses_full_connectivity() -> None:
    assert label_lesions(GT3)[1] == 3
    assert label_lesions(PRED3)[1] == 2
    diagonal_2d = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]])
    assert label_lesions(diagonal_2d)[1] == 1  # 8-connectivity in 2D


def test_lesion_match_hand_counts() -> None:
    m = match_lesions(PRED3, GT3)
    assert (m.tp, m.fp, m.fn, m.n_gt, m.n_pred) == (1, 1, 2, 3, 2)
    assert lesion_f1(PRED3, GT3) == pytest.approx(1 / (1 + (1 + 2) / 2))  # 0.4
    assert abs_lesion_count_difference(PRED3, GT3) == 1


def test_one_prediction_covering_two_lesions_detects_both() -> None:
    gt = np.zeros((1, 7), dtype=bool)
    gt[0, [1, 5]] = True
    pred = np.zeros((1, 7), dtype=bool)
    pred[0, 1:6] = True
    m = match_lesions(pred, gt)
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    assert lesion_f1(pred, gt) == 1.0
    assert abs_lesion_count_difference(pred, gt) == 1


@pytest.mark.parametrize(("pred", "gt", "expected"), [(E, E, 1.0), (F1VOX, E, 0.0), (E, F1VOX, 0.0)])
def test_lesion_f1_empty_cases(pred: np.ndarray, gt: np.ndarray, expected: float) -> None:
    assert lesion_f1(pred, gt) == expected


# ---------------------------------------------------------------- case / aggregate


def test_case_metrics_entries() -> None:
    r = case_metrics(PRED3, GT3, voxel_volume_ml=0.5)
    # voxel-wise: TP (1,1,1); FP (2,2,2),(4,0,4); FN 4 voxels → DSC 2/(2+2+4).
    assert r["dsc"] == pytest.approx(0.25)
    assert r["precision"] == pytest.approx(1 / 3)
    assert r["recall"] == pytest.approx(1 / 5)
    assert r["f1"] == pytest.approx(r["dsc"])
    assert r["volume_gt_ml"] == pytest.approx(2.5)
    assert r["volume_pred_ml"] == pytest.approx(1.5)
    assert r["abs_volume_diff_ml"] == pytest.approx(1.0)
    assert (r["n_lesions_gt"], r["n_lesions_pred"], r["abs_lesion_count_diff"]) == (3.0, 2.0, 1.0)
    assert r["lesion_f1"] == pytest.approx(0.4)
    assert all(isinstance(v, float) for v in r.values())


def test_aggregate_mean_std_skips_labels() -> None:
    out = aggregate([{"case": "a", "dsc": 0.5, "n": 1}, {"case": "b", "dsc": 1.0, "n": 3}])
    assert out == {"dsc": (0.75, 0.25), "n": (2.0, 1.0)}
    sample = aggregate([{"dsc": 0.5}, {"dsc": 1.0}], ddof=1)
    assert sample["dsc"][1] == pytest.approx(np.sqrt(0.125))
    with pytest.raises(InputError):
        aggregate([])


def test_aggregate_leaves_nan_out_and_count_nan_counts_it() -> None:
    nan = float("nan")
    cases = [{"dsc": 0.0, "hd95_mm": nan}, {"dsc": 1.0, "hd95_mm": 4.0}, {"dsc": 1.0, "hd95_mm": 2.0}]
    out = aggregate(cases)
    assert out["dsc"] == pytest.approx((2 / 3, np.std([0, 1, 1])))
    assert out["hd95_mm"] == pytest.approx((3.0, 1.0))  # the mean of 4 and 2 only
    assert count_nan(cases) == {"hd95_mm": 1}
    all_nan = aggregate([{"hd95_mm": nan}, {"hd95_mm": nan}])["hd95_mm"]
    assert np.isnan(all_nan[0]) and np.isnan(all_nan[1])
    # Over folds: a fold whose every case is NaN has no mean, and is left out of the mean over folds.
    assert summarize_folds([[{"hd95_mm": nan}], [{"hd95_mm": 5.0}, {"hd95_mm": 1.0}]])["hd95_mm"] == (3.0, 0.0)


def test_summarize_folds_over_fold_means() -> None:
    # Fold means 0.3 and 0.5 (not the 3-case mean 0.3667): mean 0.4, population std 0.1.
    folds = [[{"dsc": 0.2}, {"dsc": 0.4}], [{"dsc": 0.5}]]
    mean, std = summarize_folds(folds)["dsc"]
    assert (mean, std) == (pytest.approx(0.4), pytest.approx(0.1))
    assert mean_std_text(mean, std, 2, 100) == "40.00 ± 10.00"
    # One fold has no spread to show: its mean alone, not "± 0.00"; no mean at all is n/a.
    assert mean_std_text(*summarize_folds(folds[:1])["dsc"], 1, 100) == "30.00"
    assert mean_std_text(float("nan"), float("nan"), 3) == "n/a"
