"""How the layouts of mdanet_sdk.data.layouts reach the commands that use them: segment planning (nnU-Net
channel order, other image formats), training (broken cases refused), evaluation (label patterns, labels of
cases whose images are incomplete)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mdanet_sdk.data.layouts import find_cases
from mdanet_sdk.errors import InputError
from mdanet_sdk.evaluate import evaluate
from mdanet_sdk.inference.inputs import volume_count
from mdanet_sdk.inference.planning import plan_jobs
from mdanet_sdk.train.config import TrainConfig
from mdanet_sdk.train.trainer import Trainer

SHAPE = (8, 8, 4)


def _write(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4)), path)
    return path


def _label(n: int) -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    label[n, 1:3, 1] = 1
    return label


def _nnunet(root: Path, named: bool) -> Path:
    for n in (1, 2):
        for channel in (0, 1):
            _write(root / "imagesTs" / f"case{n}_{channel:04d}.nii.gz", np.full(SHAPE, n + channel, np.float32))
    if named:
        (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "ADC", "1": "DWI"}}))
    return root


def test_nnunet_channels_come_from_dataset_json_or_the_user_never_from_the_model(tmp_path) -> None:
    unnamed = _nnunet(tmp_path / "unnamed", named=False)
    (job,) = {j.error for j in plan_jobs([unnamed], None, ("dwi", "adc"))}
    assert job is not None and "without dataset.json" in job and "--modalities dwi,adc" in job
    jobs = plan_jobs([unnamed], ("adc", "dwi"), ("dwi", "adc"))  # the user's order: channel 0 is ADC
    assert [j.error for j in jobs] == [None, None]
    assert jobs[0].source is not None and jobs[0].source.paths["adc"].name == "case1_0000.nii.gz"
    named = _nnunet(tmp_path / "named", named=True)
    jobs = plan_jobs([named], None, ("dwi", "adc"))  # named channels, chosen by the model's names
    assert jobs[0].source is not None and jobs[0].source.paths == {
        "dwi": named / "imagesTs/case1_0001.nii.gz",
        "adc": named / "imagesTs/case1_0000.nii.gz",
    }
    jobs = plan_jobs([named], None, None)  # bundled weights: DWI + ADC -> default-mri
    assert [j.weights for j in jobs] == ["mri", "mri"] and jobs[0].source is not None
    assert jobs[0].source.modalities == ("adc", "dwi")


def test_volume_count_reads_other_formats(tmp_path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    path = tmp_path / "case.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 4, 5, 6), np.float32), isVector=False), str(path))
    assert volume_count(path) == 2
    (job,) = plan_jobs([path], None, None)
    assert job.error is None and job.weights == "mri"


def _generic_dataset(root: Path) -> Path:
    for n in (1, 2, 3):
        case = root / f"case{n}"
        _write(case / "dwi.nii.gz", np.full(SHAPE, 2.0, np.float32))
        if n != 3:
            _write(case / "adc.nii.gz", np.full(SHAPE, 1.0, np.float32))
        _write(case / f"case{n}_seg.nii.gz", _label(n))  # lesion labels under a name only a pattern makes one
    return root


def test_training_refuses_a_dataset_with_a_broken_case(tmp_path) -> None:
    root = _generic_dataset(tmp_path / "data")
    cfg = TrainConfig(str(root), str(tmp_path / "run"), kind="mri", label_pattern="{case}_seg.nii.gz", folds=2)
    with pytest.raises(InputError, match=r"1 case\(s\) .* cannot be read .*case3.*no adc"):
        Trainer(cfg)._load_cases("generic", ("dwi", "adc"))
    cfg = TrainConfig(str(root), str(tmp_path / "run"), kind="mri", folds=2)
    with pytest.raises(InputError, match="cannot be read"):  # broken cases are named before missing labels
        Trainer(cfg)._load_cases("generic", ("dwi", "adc"))


def test_evaluate_finds_labels_by_pattern_also_in_cases_missing_an_image(tmp_path) -> None:
    gt = _generic_dataset(tmp_path / "gt")
    assert all(s.label_path is None for s in find_cases(gt))  # '<case>_seg' is not a lesion-label name
    pred = tmp_path / "pred"
    _write(pred / "case1_seg.nii.gz", _label(1))
    _write(pred / "case3_seg.nii.gz", np.zeros(SHAPE, np.uint8))
    result = evaluate(pred, gt, label_pattern="{case}_seg.nii.gz")
    scores = {c["case_id"]: c["dsc"] for c in result.cases}
    assert scores == {"case1": 1.0, "case2": 0.0, "case3": 0.0}  # case2 missing -> empty; case3 lacks ADC only
    assert result.missing == ["case2"]


def test_read_case_without_label_opens_no_label_file(tmp_path) -> None:
    from mdanet_sdk.data.cases import read_case

    case = tmp_path / "case1"
    rng = np.random.default_rng(0)
    _write(case / "dwi.nii.gz", rng.random(SHAPE, np.float32) + 1)
    _write(case / "adc.nii.gz", rng.random(SHAPE, np.float32) + 1)
    (case / "label.nii.gz").write_bytes(b"not a NIfTI")  # would fail if it were read
    with pytest.raises(InputError, match="label"):
        read_case(case)
    assert read_case(case, label=False).label is None
    mapping = {"dwi": case / "dwi.nii.gz", "adc": case / "adc.nii.gz", "label": case / "label.nii.gz"}
    assert read_case(mapping, label=False).label is None
