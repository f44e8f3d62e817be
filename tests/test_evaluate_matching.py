"""mdanet_sdk.evaluate with predictions named by other tools, missing cases, surface distances, CLI errors."""

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

SHAPE = (12, 12, 12)
AFFINE = np.diag([2.0, 1.0, 1.0, 1.0])  # 2 mm along X


def _cube(shift: int = 0, axis: int = 0) -> np.ndarray:
    """A 4³ cube of ones, shifted by ``shift`` voxels along ``axis``."""
    mask = np.zeros(SHAPE, np.uint8)
    mask[2:6, 2:6, 2:6] = 1
    return np.roll(mask, shift, axis=axis)


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def _half(shift: int = 2) -> np.ndarray:
    """A prediction that overlaps the cube by half: DSC 0.5."""
    return _cube(shift, axis=1)


@pytest.fixture
def gt(tmp_path: Path) -> Path:
    """Flat label folder, nnU-Net labelsTr style: cases A, B, C, each the same cube."""
    for case_id in "ABC":
        _save(tmp_path / "gt" / f"{case_id}.nii.gz", _cube())
    return tmp_path / "gt"


def _dsc(result) -> dict[str, float]:
    return {c["case_id"]: c["dsc"] for c in result.cases}


def test_nnunet_named_predictions(gt: Path, tmp_path: Path) -> None:
    pred = tmp_path / "nnunet_out"
    _save(pred / "A.nii.gz", _cube())
    _save(pred / "B.nii.gz", _half())
    _save(pred / "C.nii.gz", np.zeros(SHAPE, np.uint8))
    (pred / "plans.json").write_text("{}")  # nnU-Net writes these beside the masks
    (pred / "A.npz").write_bytes(b"not read")
    _save(pred / "A_prob.nii.gz", np.full(SHAPE, 0.7, np.float32))  # never a mask, even with a case's name
    result = evaluate(pred, gt)
    assert _dsc(result) == pytest.approx({"A": 1.0, "B": 0.5, "C": 0.0})
    assert result.unmatched == [] and result.missing == []


def test_deepisles_named_predictions(gt: Path, tmp_path: Path) -> None:
    pred = tmp_path / "deepisles"
    _save(pred / "A" / "lesion_msk.nii.gz", _cube())
    _save(pred / "B" / "results" / "lesion_msk.nii.gz", _half())
    _save(pred / "B" / "results" / "SEALS_msk.nii.gz", _cube())  # a team's output: lesion_msk wins
    _save(pred / "B" / "dwi.nii.gz", _cube().astype(np.float32) * 300)  # an input copy, not a mask
    _save(pred / "C" / "ensemble_msk.nii.gz", _cube())  # the `<anything>_msk` variant
    _save(pred / "C" / "lesion_prob.nii.gz", np.full(SHAPE, 0.2, np.float32))
    (pred / "logs").mkdir()  # a folder without a mask is no case
    result = evaluate(pred, gt)
    assert _dsc(result) == pytest.approx({"A": 1.0, "B": 0.5, "C": 1.0})
    got = {c["case_id"]: Path(c["prediction"]).relative_to(pred).as_posix() for c in result.cases}
    assert got == {"A": "A/lesion_msk.nii.gz", "B": "B/results/lesion_msk.nii.gz", "C": "C/ensemble_msk.nii.gz"}


def test_pattern_named_predictions(gt: Path, tmp_path: Path) -> None:
    pred = tmp_path / "other_tool"
    _save(pred / "A" / "output" / "lesion.nii.gz", _cube())
    _save(pred / "B" / "output" / "lesion.nii.gz", _half())
    _save(pred / "A_seg.nii.gz", np.zeros(SHAPE, np.uint8))  # not of the pattern: not read
    result = evaluate(pred, gt, pred_pattern="{case}/output/lesion.nii.gz")
    assert _dsc(result) == pytest.approx({"A": 1.0, "B": 0.5, "C": 0.0})  # C missing: empty mask
    assert result.missing == ["C"]
    flat = tmp_path / "flat"
    _save(flat / "pred_A.nii.gz", _half())
    _save(flat / "pred_B.nii.gz", _cube())
    _save(flat / "pred_B_prob.nii.gz", np.full(SHAPE, 0.5, np.float32))
    assert _dsc(evaluate(flat, gt, pred_pattern="pred_{case}.nii.gz", missing="skip")) == pytest.approx(
        {"A": 0.5, "B": 1.0}
    )
    # * stands for any characters of one name; a probability map never matches.
    assert find_predictions(flat, pattern="pred_{case}*.nii.gz") == {
        None: {"A": flat / "pred_A.nii.gz", "B": flat / "pred_B.nii.gz"}
    }
    for bad in ("lesion.nii.gz", "/abs/{case}.nii.gz", "../{case}.nii.gz", "{case}_{x}.nii.gz"):
        with pytest.raises(InputError, match="pred-pattern"):
            evaluate(flat, gt, pred_pattern=bad)


def test_two_files_of_one_case_are_refused_naming_both(gt: Path, tmp_path: Path) -> None:
    layouts = {
        "ours_and_nnunet": ("A_seg.nii.gz", "A.nii.gz"),
        "two_deepisles": ("A/lesion_msk.nii.gz", "A/results/lesion_msk.nii.gz"),
        "two_variants": ("A/x_msk.nii.gz", "A/y_msk.nii.gz"),
        "flat_and_folder": ("A.nii.gz", "A/lesion_msk.nii.gz"),
    }
    for name, files in layouts.items():
        for file in files:
            _save(tmp_path / name / file, _cube())
        with pytest.raises(InputError) as err:
            evaluate(tmp_path / name, gt)
        assert all(file in str(err.value) for file in files) and "case A" in str(err.value), name


def test_probability_maps_and_hidden_files_are_never_masks(gt: Path, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    _save(pred / "A_prob.nii.gz", np.ones(SHAPE, np.float32))
    _save(pred / ".A_seg.nii.gz", _cube())  # e.g. a temporary file of an interrupted write
    with pytest.raises(InputError, match="holds no predictions"):
        evaluate(pred, gt)


def test_missing_case_under_each_policy(tmp_path: Path) -> None:
    _save(tmp_path / "gt" / "good.nii.gz", _cube())
    _save(tmp_path / "gt" / "lost.nii.gz", _cube())
    _save(tmp_path / "pred" / "good_seg.nii.gz", _cube())
    empty = evaluate(tmp_path / "pred", tmp_path / "gt")
    assert empty.summary["dsc"] == pytest.approx((0.5, 0.5)) and empty.summary["recall"][0] == 0.5
    assert (empty.missing, empty.skipped, empty.missing_policy) == (["lost"], [], "empty")
    # The surface distances of the missing case are undefined: left out of their mean, and counted.
    assert empty.summary["hd95_mm"] == (0.0, 0.0) and empty.excluded == {"hd95_mm": 1, "asd_mm": 1}
    skip = evaluate(tmp_path / "pred", tmp_path / "gt", missing="skip")
    assert skip.summary["dsc"] == (1.0, 0.0) and [c["case_id"] for c in skip.cases] == ["good"]
    assert (skip.missing, skip.skipped, skip.missing_policy) == (["lost"], ["lost"], "skip")
    with pytest.raises(InputError, match="1 ground-truth case.* lost"):
        evaluate(tmp_path / "pred", tmp_path / "gt", missing="fail")
    with pytest.raises(InputError, match="not a policy"):
        evaluate(tmp_path / "pred", tmp_path / "gt", missing="ignore")


def test_surface_distances_in_mm_on_the_ground_truth_grid(tmp_path: Path) -> None:
    _save(tmp_path / "gt" / "A.nii.gz", _cube())
    _save(tmp_path / "gt" / "B.nii.gz", _cube())
    _save(tmp_path / "pred" / "A_seg.nii.gz", _cube(3, axis=0))  # 3 voxels of 2 mm
    # B: the same 3-voxel shift along Y (1 mm), stored with Y reversed: the affine puts it back.
    flipped = AFFINE.copy()
    flipped[1, 1], flipped[1, 3] = -1.0, SHAPE[1] - 1.0
    _save(tmp_path / "pred" / "B_seg.nii.gz", _cube(3, axis=1)[:, ::-1].copy(), flipped)
    got = {c["case_id"]: c for c in evaluate(tmp_path / "pred", tmp_path / "gt").cases}
    assert got["A"]["hd95_mm"] == pytest.approx(6.0)
    assert got["B"]["hd95_mm"] == pytest.approx(3.0)
    # 4³ cubes shifted by 3 along one axis: the inner faces coincide with nothing, so ASD > 0 but < HD95.
    assert 0 < got["A"]["asd_mm"] < 6.0 and got["A"]["asd_mm"] == pytest.approx(2 * got["B"]["asd_mm"])


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_cli_json_to_stdout_carries_missing_and_null_distances(gt: Path, tmp_path: Path) -> None:
    _save(tmp_path / "pred" / "A_seg.nii.gz", _cube())
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "pred"), str(gt), "--json", "-"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert (report["missing"], report["skipped"], report["missing_policy"]) == (["B", "C"], [], "empty")
    cases = {c["case_id"]: c for c in report["cases"]}
    assert cases["B"]["hd95_mm"] is None and cases["B"]["missing"] is True and cases["A"]["hd95_mm"] == 0.0
    assert report["summary"]["dsc"] == pytest.approx([1 / 3, np.std([1, 0, 0])])
    assert report["excluded_from_means"] == {"hd95_mm": 2, "asd_mm": 2}
    assert not (tmp_path / "pred" / "evaluation.json").exists()


def test_cli_bad_data_exits_1_with_one_error_line(gt: Path, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    _save(pred / "A_seg.nii.gz", _cube())
    (pred / "B_seg.nii.gz").write_bytes(b"\x1f\x8b not a gzip stream")
    res = CliRunner().invoke(app, ["evaluate", str(pred), str(gt)])
    assert res.exit_code == 1 and len(error_lines(res)) == 1 and "B_seg.nii.gz" in error_lines(res)[0]
    assert list(json.loads((pred / "evaluation.json").read_text())["failed"]) == ["B"]  # the others are scored
    for name in ("B_seg.nii.gz", "evaluation.json", "evaluation.csv"):
        (pred / name).unlink()
    res = CliRunner().invoke(app, ["evaluate", str(pred), str(gt), "--missing", "fail"])
    assert res.exit_code == 1 and len(error_lines(res)) == 1 and "B, C" in error_lines(res)[0]
    _save(pred / "A.nii.gz", _cube())
    res = CliRunner().invoke(app, ["evaluate", str(pred), str(gt)])
    assert res.exit_code == 1 and "two predictions of case A" in error_lines(res)[0]
    assert not (pred / "evaluation.json").exists()


def test_cli_wrong_arguments_exit_2(gt: Path, tmp_path: Path) -> None:
    _save(tmp_path / "pred" / "A_seg.nii.gz", _cube())
    for args in (["--missing", "ignore"], ["--pred-pattern", "lesion.nii.gz"], ["--layout", "bids2"]):
        res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "pred"), str(gt), *args])
        assert res.exit_code == 2 and len(error_lines(res)) == 1, args
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "nope")])
    assert res.exit_code == 2 and "GT_DIR" in error_lines(res)[0]


def _isles22_labels(root: Path, cases: str, images: str) -> Path:
    """An ISLES'22 tree: a derivatives mask for each of ``cases``, DWI and ADC in rawdata for ``images`` only."""
    for case in cases:
        sub = f"sub-strokecase000{case}"
        _save(root / "derivatives" / sub / "ses-0001" / f"{sub}_ses-0001_msk.nii.gz", _cube())
        if case in images:
            for i, modality in enumerate(("dwi", "adc")):
                image = np.random.default_rng(i).uniform(100, 200, SHAPE).astype(np.float32)
                _save(root / "rawdata" / sub / "ses-0001" / "dwi" / f"{sub}_ses-0001_{modality}.nii.gz", image)
    return root


@pytest.mark.parametrize("images", ["13", ""], ids=["one-without-images", "derivatives-only"])
def test_labels_whose_images_are_missing_are_still_scored(tmp_path: Path, images: str) -> None:
    """Scoring reads no image: case 2 of an ISLES'22 tree without its rawdata (or a derivatives tree alone) used
    to be left out of the means, and its prediction reported as "without ground truth"."""
    root = _isles22_labels(tmp_path / "isles22", "123", images)
    pred = tmp_path / "pred"
    for case, mask in zip("123", (_cube(), _half(), np.zeros(SHAPE, np.uint8))):
        _save(pred / f"sub-strokecase000{case}_seg.nii.gz", mask)
    result = evaluate(pred, root)
    assert _dsc(result) == pytest.approx(
        {"sub-strokecase0001": 1.0, "sub-strokecase0002": 0.5, "sub-strokecase0003": 0.0}
    )
    assert result.unmatched == [] and result.missing == [] and result.failed == {}


def test_extra_label_files_are_no_cases_of_their_own(tmp_path: Path) -> None:
    """A pipeline's output under ``derivatives/<tool>/`` and a second label in a case's own subfolder are not
    cases whose images are missing: a first version scored each as an extra case with Dice 0. A subject with two
    sessions in a derivatives-only tree gets the reader's ``sub-X_ses-Y`` ids."""
    root = _isles22_labels(tmp_path / "isles22", "12", "12")
    _save(root / "derivatives" / "deepisles" / "sub-strokecase0001" / "ses-0001" / "x_msk.nii.gz", _half())
    _save(root / "derivatives" / "deepisles" / "sub-strokecase0002_lesion.nii.gz", _half())
    pred = tmp_path / "pred"
    for case in "12":
        _save(pred / f"sub-strokecase000{case}_seg.nii.gz", _cube())
    assert _dsc(evaluate(pred, root)) == pytest.approx({"sub-strokecase0001": 1.0, "sub-strokecase0002": 1.0})
    generic = tmp_path / "generic"
    for case in ("case1", "case2"):
        for modality in ("dwi", "adc"):
            _save(generic / case / f"{modality}.nii.gz", np.random.default_rng(0).uniform(1, 2, SHAPE).astype("f4"))
        _save(generic / case / "lesion.nii.gz", _cube())
    _save(generic / "case2" / "manual_v1" / "lesion.nii.gz", _half())
    scored = evaluate(_copy_as(pred, tmp_path / "pg", "case"), generic)
    assert _dsc(scored) == pytest.approx({"case1": 1.0, "case2": 1.0})
    flat = tmp_path / "flat"  # one folder of several cases: there a label of no found case is one
    for case in ("case1", "case2"):
        for modality in ("dwi", "adc"):
            _save(flat / f"{case}_{modality}.nii.gz", np.random.default_rng(0).uniform(1, 2, SHAPE).astype("f4"))
        _save(flat / f"{case}_lesion.nii.gz", _cube())
    _save(flat / "case7_lesion.nii.gz", _cube())
    _save(tmp_path / "pg" / "case7_seg.nii.gz", _half())
    assert _dsc(evaluate(tmp_path / "pg", flat)) == pytest.approx({"case1": 1.0, "case2": 1.0, "case7": 0.5})
    sites = tmp_path / "sites"  # no case found at all: a rater's subfolder is still no case
    _save(sites / "siteA" / "case1" / "lesion.nii.gz", _cube())
    _save(sites / "siteA" / "case1" / "manual_v1" / "lesion.nii.gz", _half())
    with pytest.raises(InputError, match="no generic cases found"):
        evaluate(tmp_path / "pg", sites)
    sessions = tmp_path / "sessions"
    for session in ("ses-0001", "ses-0002"):
        _save(sessions / "derivatives" / "sub-a" / session / f"sub-a_{session}_msk.nii.gz", _cube())
        _save(tmp_path / "ps" / f"sub-a_{session}_seg.nii.gz", _cube())
    assert _dsc(evaluate(tmp_path / "ps", sessions)) == pytest.approx({"sub-a_ses-0001": 1.0, "sub-a_ses-0002": 1.0})


def _copy_as(pred: Path, target: Path, prefix: str) -> Path:
    """``pred``'s ``sub-strokecase000N_seg`` masks saved as ``<prefix>N_seg``."""
    for path in pred.glob("*_seg.nii.gz"):
        _save(target / f"{prefix}{path.name.split('_')[0][-1]}_seg.nii.gz", np.asarray(nib.load(path).dataobj))
    return target
