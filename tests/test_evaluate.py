"""mdanet_sdk.evaluate and ``mdanet-sdk evaluate``: metrics against hand-computed values on tiny masks."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from mdanet_sdk.cli import app
from mdanet_sdk.errors import InputError
from mdanet_sdk.evaluate import evaluate, find_predictions
from mdanet_sdk.evaluate.result import summary_rows

SHAPE = (10, 10, 4)
AFFINE = np.diag([2.0, 2.0, 2.5, 1.0])  # 10 mm³ = 0.01 mL per voxel
VOX_ML = 0.01


def _masks() -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """case id → (ground truth, prediction), with the hand-computed scores in :data:`EXPECTED`."""
    a_gt, a_pred = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
    a_gt[1:3, 1:3, 0] = 1  # lesion 1: 4 voxels
    a_gt[6:8, 6:8, 2] = 1  # lesion 2: 4 voxels, missed
    a_pred[1:3, 1, 0] = 1  # 2 voxels inside lesion 1
    a_pred[8:10, 0, 3] = 1  # 2 voxels, a spurious lesion
    b_gt = np.zeros(SHAPE, np.uint8)
    b_gt[4:6, 4:6, 1] = 1
    c_gt = np.zeros(SHAPE, np.uint8)
    d_gt = b_gt.copy()
    return {"A": (a_gt, a_pred), "B": (b_gt, b_gt.copy()), "C": (c_gt, c_gt.copy()), "D": (d_gt, None)}


# A: TP 2, FP 2, FN 6 -> DSC 4/12, P 1/2, R 1/4, F1 1/3; volumes 0.08 vs 0.04 mL; 2 vs 2 lesions,
# one detected, one missed, one spurious -> lesion F1 = 1 / (1 + (1 + 1) / 2) = 1/2.
EXPECTED = {
    "A": {
        "dsc": 1 / 3,
        "precision": 0.5,
        "recall": 0.25,
        "f1": 1 / 3,
        "abs_volume_diff_ml": 0.04,
        "abs_lesion_count_diff": 0.0,
        "lesion_f1": 0.5,
        "n_lesions_gt": 2.0,
        "n_lesions_pred": 2.0,
    },
    "B": {
        "dsc": 1.0,
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "abs_volume_diff_ml": 0.0,
        "abs_lesion_count_diff": 0.0,
        "lesion_f1": 1.0,
    },
    "C": {
        "dsc": 1.0,
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "abs_volume_diff_ml": 0.0,
        "abs_lesion_count_diff": 0.0,
        "lesion_f1": 1.0,
    },  # both empty
}


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(flat prediction folder, run folder with folds 0: A, B and 1: C, flat ground-truth folder)."""
    gt, flat, run = tmp_path / "gt", tmp_path / "pred", tmp_path / "run"
    fold_of = {"A": 0, "B": 0, "C": 1}
    for case_id, (g, p) in _masks().items():
        _save(gt / f"{case_id}_msk.nii.gz", g)
        if p is not None:
            _save(flat / f"{case_id}_seg.nii.gz", p)
            _save(run / f"fold_{fold_of[case_id]}" / "predictions" / f"{case_id}_seg.nii.gz", p)
    _save(flat / "E_seg.nii.gz", np.zeros(SHAPE, np.uint8))  # no ground truth
    _save(flat / "A_prob.nii.gz", np.full(SHAPE, 0.3, np.float32))  # not a mask: ignored
    return flat, run, gt


def test_per_case_metrics_match_hand_values(folders) -> None:
    flat, _, gt = folders
    result = evaluate(flat, gt)
    got = {c["case_id"]: c for c in result.cases}
    assert sorted(got) == ["A", "B", "C", "D"]
    for case_id, expected in EXPECTED.items():
        for name, value in expected.items():
            assert got[case_id][name] == pytest.approx(value, abs=1e-9), (case_id, name)
    assert got["A"]["volume_gt_ml"] == pytest.approx(8 * VOX_ML)
    assert result.missing == ["D"] and result.unmatched == ["E"] and result.skipped == []
    # D has no prediction: scored as an empty mask, which misses its lesion.
    assert got["D"]["missing"] and got["D"]["prediction"] is None and not got["A"]["missing"]
    assert (got["D"]["dsc"], got["D"]["recall"], got["D"]["volume_pred_ml"]) == (0.0, 0.0, 0.0)
    assert np.isnan(got["D"]["hd95_mm"]) and np.isnan(got["D"]["asd_mm"])
    assert got["A"]["prediction"].endswith("A_seg.nii.gz")  # never A_prob.nii.gz


def test_flat_summary_is_over_cases_missing_included(folders) -> None:
    flat, _, gt = folders
    result = evaluate(flat, gt)
    assert result.over == "cases" and result.missing_policy == "empty"
    dsc = np.array([1 / 3, 1.0, 1.0, 0.0])
    assert result.summary["dsc"] == pytest.approx((dsc.mean(), dsc.std()))
    assert result.summary["lesion_f1"] == pytest.approx((2.5 / 4, np.std([0.5, 1, 1, 0])))
    # Paper's F1 column: F1 of the mean precision (2.5/4) and mean recall (2.25/4).
    p, r = 2.5 / 4, 2.25 / 4
    assert result.f1_of_means == pytest.approx(2 * p * r / (p + r))
    assert result.excluded == {"hd95_mm": 1, "asd_mm": 1}  # D: one mask empty
    skipped = evaluate(flat, gt, missing="skip")
    assert skipped.summary["dsc"] == pytest.approx((7 / 9, np.std([1 / 3, 1, 1])))
    assert skipped.missing == skipped.skipped == ["D"] and "D" not in {c["case_id"] for c in skipped.cases}


def test_run_folder_summary_is_over_fold_means(folders) -> None:
    _, run, gt = folders
    assert list(find_predictions(run)) == [0, 1]
    result = evaluate(run, gt)
    assert result.over == "folds"
    assert {c["case_id"]: c["fold"] for c in result.cases} == {"A": 0, "B": 0, "C": 1}
    # Fold means of DSC: (1/3 + 1)/2 = 2/3 and 1 -> mean 5/6, std 1/6.
    assert result.summary["dsc"] == pytest.approx((5 / 6, 1 / 6))
    assert result.per_fold[0]["dsc"] == pytest.approx((2 / 3, 1 / 3))
    assert "fold" not in result.summary
    # D is in no fold of the run (no val_metrics.json lists it): listed, and in no fold's mean.
    assert result.missing == ["D"] and result.skipped == ["D"]
    assert dict(summary_rows(result))["dsc"] == "83.33 ± 16.67"
    shown = CliRunner().invoke(app, ["evaluate", str(run), str(gt), "--no-cases"])
    assert shown.exit_code == 0 and "(1 in no fold of the run, left out)" in shown.output  # not "scored as empty"
    result.per_fold.pop(1)  # as after a call that finished one fold: its mean alone, not "± 0.00"
    result.summary["dsc"] = (2 / 3, 0.0)
    assert dict(summary_rows(result))["dsc"] == "66.67"


def test_run_folder_missing_case_counts_in_its_fold(folders) -> None:
    _, run, gt = folders
    listed = {"cases": [{"case_id": "C", "dsc": 1.0}, {"case_id": "D", "dsc": 0.0}]}
    (run / "fold_1" / "val_metrics.json").write_text(json.dumps(listed))
    result = evaluate(run, gt)
    assert {c["case_id"]: c["fold"] for c in result.cases} == {"A": 0, "B": 0, "C": 1, "D": 1}
    # Fold 1 is now C (1) and D (0, empty): fold means 2/3 and 1/2.
    assert result.per_fold[1]["dsc"] == pytest.approx((0.5, 0.5))
    assert result.summary["dsc"] == pytest.approx((7 / 12, 1 / 12))
    assert result.skipped == [] and result.missing == ["D"]


def test_prediction_in_another_orientation_matches(tmp_path: Path) -> None:
    a_gt, a_pred = _masks()["A"]
    assert a_pred is not None
    _save(tmp_path / "gt" / "A.nii.gz", a_gt)
    # Stored with the X axis reversed (affine flips it back): the same mask in world space.
    flipped = AFFINE.copy()
    flipped[0, 0], flipped[0, 3] = -2.0, 2.0 * (SHAPE[0] - 1)
    _save(tmp_path / "pred" / "A_seg.nii.gz", a_pred[::-1].copy(), flipped)
    (case,) = evaluate(tmp_path / "pred", tmp_path / "gt").cases
    assert case["dsc"] == pytest.approx(1 / 3)


def test_errors_and_threshold(tmp_path: Path) -> None:
    a_gt, _ = _masks()["A"]
    _save(tmp_path / "gt" / "A.nii.gz", a_gt)
    _save(tmp_path / "pred" / "A_seg.nii.gz", a_gt.astype(np.float32) * 0.9)
    with pytest.raises(InputError, match="threshold"):
        evaluate(tmp_path / "pred", tmp_path / "gt")
    assert evaluate(tmp_path / "pred", tmp_path / "gt", threshold=0.5).cases[0]["dsc"] == 1.0
    _save(tmp_path / "other" / "A_seg.nii.gz", np.zeros((8, 10, 4), np.uint8))
    with pytest.raises(InputError, match="voxel grid"):
        evaluate(tmp_path / "other", tmp_path / "gt")
    _save(tmp_path / "nomatch" / "Z_seg.nii.gz", a_gt)
    with pytest.raises(InputError, match="matches"):
        evaluate(tmp_path / "nomatch", tmp_path / "gt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no predictions"):
        evaluate(tmp_path / "empty", tmp_path / "gt")


def test_cli_writes_json_and_csv(folders) -> None:
    _, run, gt = folders
    res = CliRunner().invoke(app, ["evaluate", str(run), str(gt)])
    assert res.exit_code == 0, res.output
    assert "83.33 ± 16.67" in res.output  # DSC over fold means, in percent
    assert "hd95_mm" in res.output and "1 ground-truth case(s) without prediction" in res.output
    report = json.loads((run / "evaluation.json").read_text())
    assert report["over"] == "folds" and report["summary"]["dsc"] == pytest.approx([5 / 6, 1 / 6])
    assert (report["missing"], report["skipped"], report["missing_policy"]) == (["D"], ["D"], "empty")
    rows = (run / "evaluation.csv").read_text().splitlines()
    assert rows[0].startswith("case_id,fold,dsc") and "hd95_mm,asd_mm" in rows[0] and len(rows) == 5
    assert rows[-1].startswith("D,,") and rows[-1].endswith(",True,")
    bad = CliRunner().invoke(app, ["evaluate", str(run / "nope"), str(gt)])
    assert bad.exit_code == 2 and "not a folder" in bad.output


def test_cli_json_option_and_its_deprecated_alias(folders, tmp_path) -> None:
    _, run, gt = folders
    res = CliRunner().invoke(app, ["evaluate", str(run), str(gt), "--json", str(tmp_path / "a" / "m.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "a" / "m.json").read_text())["over"] == "folds"
    assert (tmp_path / "a" / "m.csv").read_text().startswith("case_id,fold,dsc")
    old = CliRunner().invoke(app, ["evaluate", str(run), str(gt), "-o", str(tmp_path / "b.json"), "--no-cases"])
    assert old.exit_code == 0 and "deprecated; use --json" in old.output
    assert (tmp_path / "b.json").read_bytes() == (tmp_path / "a" / "m.json").read_bytes()
    both = CliRunner().invoke(app, ["evaluate", str(run), str(gt), "--json", "x.json", "-o", "y.json"])
    assert both.exit_code == 2 and "give only --json" in both.output
    assert "--json" in CliRunner().invoke(app, ["evaluate", "--help"]).output


def test_cli_never_writes_scores_over_an_image_or_scores_a_label_against_itself(folders, tmp_path) -> None:
    flat, _, gt = folders
    runner = CliRunner()
    before = (flat / "A_seg.nii.gz").read_bytes()
    onto = runner.invoke(app, ["evaluate", str(flat), str(gt), "--json", str(flat / "A_seg.nii.gz")])
    assert onto.exit_code == 2 and "like an image" in onto.output  # used to replace the prediction with JSON
    assert (flat / "A_seg.nii.gz").read_bytes() == before
    csv = runner.invoke(app, ["evaluate", str(flat), str(gt), "--json", str(tmp_path / "scores.csv")])
    assert csv.exit_code == 2 and "name the JSON report .json" in csv.output and not (tmp_path / "scores.csv").exists()
    labels = tmp_path / "labels"
    for case_id, (g, _) in _masks().items():
        _save(labels / f"{case_id}.nii.gz", g)
    itself = runner.invoke(app, ["evaluate", str(labels), str(labels)])  # used to score DSC 1.0 for every case
    assert itself.exit_code == 1 and "is its label file" in itself.output


def test_integer_masks_count_any_non_zero_value_and_thresholds_are_probabilities(folders, tmp_path) -> None:
    """0/255 masks (prediction and label) score as their 0/1 versions, as documented; they used to be refused
    without naming a file. A threshold outside [0, 1) (NaN, inf, -1) used to empty or fill every prediction."""
    flat, _, gt = folders
    scaled_pred, scaled_gt = tmp_path / "pred255", tmp_path / "gt255"
    for source, target in ((flat, scaled_pred), (gt, scaled_gt)):
        for path in source.glob("*.nii.gz"):
            image = nib.load(path)
            if image.get_data_dtype().kind in "iu":
                _save(target / path.name, (np.asarray(image.dataobj) != 0).astype(np.uint8) * 255)
    plain = evaluate(flat, gt).to_dict()["summary"]["dsc"]
    assert evaluate(scaled_pred, scaled_gt).to_dict()["summary"]["dsc"] == pytest.approx(plain)
    for bad in (float("nan"), float("inf"), -1.0, 1.0):
        with pytest.raises(InputError, match="threshold must be"):
            evaluate(flat, gt, threshold=bad)
    result = CliRunner().invoke(app, ["evaluate", str(flat), str(gt), "--threshold", "1"])
    assert result.exit_code == 2 and "threshold must be" in result.stderr  # a wrong argument, as --help says


def test_a_prediction_with_nan_voxels_is_refused_not_scored_as_empty(folders, tmp_path) -> None:
    flat, _, gt = folders
    nan_pred = tmp_path / "nan"
    for path in flat.glob("*_seg.nii.gz"):
        data = np.asarray(nib.load(path).dataobj).astype(np.float32)
        _save(nan_pred / path.name, np.where(data > 0, np.nan, data).astype(np.float32))  # lesions marked NaN
    result = evaluate(nan_pred, gt)
    assert sorted(result.failed) == ["A", "B"]  # C marks no lesion, so it has no NaN and is scored
    assert all("NaN/Inf voxels were set to 0" in error for error in result.failed.values())
    assert [c["case_id"] for c in result.cases] == ["C", "D"]


def test_a_label_with_nan_voxels_fails_its_case(folders, tmp_path) -> None:
    """A NaN label voxel used to count as background: a lesion stored as NaN scored as missed."""
    flat, _, gt = folders
    nan_gt = tmp_path / "gt"
    for path in gt.glob("*.nii.gz"):
        data = np.asarray(nib.load(path).dataobj).astype(np.float32)
        _save(nan_gt / path.name, np.where(data > 0, np.nan, data) if path.name.startswith("A") else data)
    result = evaluate(flat, nan_gt)
    assert list(result.failed) == ["A"] and "NaN/Inf voxels were set to 0" in result.failed["A"]
    assert [c["case_id"] for c in result.cases] == ["B", "C", "D"]
    # A probability map given as the label: the advice is the label's, not --threshold (which reads predictions).
    for path in nan_gt.glob("A*.nii.gz"):
        data = np.asarray(nib.load(path).dataobj)
        _save(path, np.where(np.isnan(data), 0.7, data).astype(np.float32))
    assert "gt holds values other than 0 and 1; binarise it" in evaluate(flat, nan_gt).failed["A"]


def test_one_case_that_cannot_be_scored_fails_alone(folders) -> None:
    flat, _, gt = folders
    _save(flat / "B_seg.nii.gz", np.zeros((8, 10, 4), np.uint8))  # B predicted on another grid
    result = evaluate(flat, gt)
    assert [c["case_id"] for c in result.cases] == ["A", "C", "D"]
    assert list(result.failed) == ["B"] and "voxel grid" in result.failed["B"]
    assert result.summary["dsc"][0] == pytest.approx((1 / 3 + 1 + 0) / 3)  # B is in no mean
    res = CliRunner().invoke(app, ["evaluate", str(flat), str(gt)])
    assert res.exit_code == 1
    (line,) = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert "case B" in line and "voxel grid" in line
    report = json.loads((flat / "evaluation.json").read_text())
    assert list(report["failed"]) == ["B"] and len(report["cases"]) == 3
    assert (flat / "evaluation.csv").read_text().splitlines()[-1].startswith("B,")
