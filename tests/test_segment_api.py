"""Tests of :func:`mdanet_sdk.segment`: everything ``mdanet-sdk segment`` does, reached from Python.

Uses the random ``small`` stand-ins for the bundled weights of tests/test_segment_cli.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import mdanet_sdk
from mdanet_sdk.errors import InputError
from mdanet_sdk.inference import FailedCase, Segmenter, SegmentationResult
from tests.test_segment_cli import bundled, cli_weights, volumes, write  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("bundled")


def test_python_api_picks_the_bundled_weights_per_case_as_the_cli_does(tmp_path) -> None:
    """A CTP file and an MRI mapping in one call: each gets its own bundled model (the Segmenter alone cannot)."""
    ctp = write(tmp_path / "in" / "ctp.nii.gz", volumes(4))
    mri = volumes(2, seed=1)
    dwi = write(tmp_path / "in" / "sub-9_dwi.nii.gz", mri[..., 0])
    adc = write(tmp_path / "in" / "sub-9_adc.nii.gz", mri[..., 1])
    events: list[str] = []
    out = tmp_path / "out"
    results = list(
        mdanet_sdk.segment(
            [ctp, {"dwi": dwi, "adc": adc}],
            out,
            prob=True,
            report=out / "run.json",
            device="cpu",
            progress=lambda event, case_id, n: events.append(event),
        )
    )
    assert [r.case_id for r in results] == ["ctp", "sub-9"] and all(r.ok for r in results)
    assert {r.case_id: r.report.model for r in results} == {"ctp": "default-ctp", "sub-9": "default-mri"}
    assert results[1].outputs == {"mask": out / "sub-9_seg.nii.gz", "prob": out / "sub-9_prob.nii.gz"}
    saved = nib.load(results[0].outputs["mask"])
    np.testing.assert_array_equal(np.asarray(saved.dataobj), results[0].mask)
    assert np.allclose(saved.affine, nib.load(ctp).affine)
    assert events.count("model") == 2 and events.count("done") == 2
    assert [c["case_id"] for c in json.loads((out / "run.json").read_text())["cases"]] == ["ctp", "sub-9"]
    with pytest.raises(InputError, match="4 volumes"):  # one model: what segment() plans around
        Segmenter.default("mri", device="cpu").predict(ctp)


def test_one_bad_input_fails_alone_in_input_order_and_nothing_partial_is_written(tmp_path) -> None:
    good = write(tmp_path / "in" / "good.nii.gz", volumes(2))
    broken = tmp_path / "in" / "broken.nii.gz"
    broken.write_bytes(b"not a nifti")
    three = write(tmp_path / "in" / "three.nii.gz", volumes(3))
    out = tmp_path / "out"
    results = list(mdanet_sdk.segment([broken, good, three, good], out, device="cpu"))
    assert [(r.case_id, r.ok) for r in results] == [
        ("broken", False),
        ("good", True),
        ("three", False),
        ("good-2", True),
    ]
    failed = [r for r in results if isinstance(r, FailedCase)]
    assert "NIfTI" in failed[0].error and "3 volumes" in failed[1].error
    assert all(isinstance(r.exception, InputError) and r.outputs == {} for r in failed)
    assert sorted(p.name for p in out.iterdir()) == ["good-2_seg.nii.gz", "good_seg.nii.gz"]
    assert all(isinstance(r, SegmentationResult) for r in results if r.ok)


def test_usage_errors_raise_before_anything_runs(tmp_path) -> None:
    a = write(tmp_path / "a.nii.gz", volumes(2))
    b = write(tmp_path / "b.nii.gz", volumes(2, seed=3))
    with pytest.raises(InputError, match="no input"):
        mdanet_sdk.segment([])
    with pytest.raises(InputError, match="one file"):
        mdanet_sdk.segment([a, b], tmp_path / "one_seg.nii.gz")
    with pytest.raises(InputError, match="report .* like an image"):
        mdanet_sdk.segment(a, tmp_path / "out", report=a)
    assert not (tmp_path / "out").exists()


def test_every_failure_is_reported_even_for_inputs_without_a_name(tmp_path, monkeypatch) -> None:
    """``.`` (an empty folder) and a bare ``.nii.gz`` get non-empty ids and a FailedCase each."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    results = list(mdanet_sdk.segment([Path("."), tmp_path / ".nii.gz"], tmp_path / "out", device="cpu"))
    assert [(r.case_id, r.ok) for r in results] == [("empty", False), (str(tmp_path / ".nii.gz"), False)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"device": "tpu"}, "unknown device"),
        ({"precision": "off"}, "unknown precision"),
        ({"threshold": 2}, "threshold must be between 0 and 1"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"colour": "red"}, "unknown option"),
    ],
)
def test_bad_options_raise_at_the_call(tmp_path, options, message) -> None:
    case = write(tmp_path / "a.nii.gz", volumes(2))
    with pytest.raises(InputError, match=message):
        mdanet_sdk.segment(case, tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


def test_segmenter_settings_can_be_set_one_by_one_and_are_checked() -> None:
    seg = Segmenter.default("mri", device="cpu")
    seg.threshold, seg.min_size, seg.tta = 0.3, 5, False
    assert seg.settings.to_dict() == {"tta": False, "threshold": 0.3, "min_size": 5, "max_adc_ratio": seg.max_adc_ratio}
    with pytest.raises(InputError, match="between 0 and 1"):
        seg.threshold = 1.5


def test_cli_json_dash_prints_the_report_alone(tmp_path) -> None:
    from typer.testing import CliRunner

    from mdanet_sdk.cli import app

    case = write(tmp_path / "c1.nii.gz", volumes(2))
    result = CliRunner().invoke(app, ["segment", str(case), "-o", str(tmp_path / "out"), "--json", "-"])
    assert result.exit_code == 0, result.output
    assert [c["case_id"] for c in json.loads(result.stdout)["cases"]] == ["c1"]
    assert not (tmp_path / "-").exists() and not Path("-").exists()


def _bids_subject(root: Path, n: int, modalities=("dwi", "adc")) -> None:
    sub = f"sub-{n:02d}"
    data = volumes(2, seed=n)
    for i, modality in enumerate(modalities):
        write(root / "rawdata" / sub / "ses-0001" / "dwi" / f"{sub}_ses-0001_{modality}.nii.gz", data[..., i])


def test_one_broken_subject_fails_alone_in_a_dataset_root(tmp_path) -> None:
    """An ISLES'22 root whose second subject lacks ADC and a generic root with a DWI-only folder: every readable
    case is written, each broken one is one FailedCase naming the missing modality, and the CLI exits 1."""
    from typer.testing import CliRunner

    from mdanet_sdk.cli import app

    root = tmp_path / "isles22"
    for n, modalities in ((1, ("dwi", "adc")), (2, ("dwi",)), (3, ("dwi", "adc"))):
        _bids_subject(root, n, modalities)
    generic = tmp_path / "generic"
    write(generic / "caseA" / "dwi.nii.gz", volumes(1)[..., 0])
    write(generic / "caseB" / "dwi.nii.gz", volumes(2)[..., 0])
    write(generic / "caseB" / "adc.nii.gz", volumes(2)[..., 1])
    out = tmp_path / "out"
    results = list(mdanet_sdk.segment([root, generic], out, device="cpu"))
    assert [(r.case_id, r.ok) for r in results] == [
        ("sub-01", True),
        ("sub-02", False),
        ("sub-03", True),
        ("caseA", False),
        ("caseB", True),
    ]
    assert "no adc image" in results[1].error and "no adc image" in results[3].error
    assert sorted(p.name for p in out.iterdir()) == ["caseB_seg.nii.gz", "sub-01_seg.nii.gz", "sub-03_seg.nii.gz"]
    cli = CliRunner().invoke(app, ["segment", str(root), "-o", str(tmp_path / "cli"), "-q"])
    assert cli.exit_code == 1
    assert [line for line in cli.stderr.splitlines() if line.startswith("error:")] == [
        line for line in cli.stderr.splitlines() if "sub-02" in line and "no adc image" in line
    ]


def test_speed_options_reach_the_segmenter_and_are_checked(tmp_path, monkeypatch) -> None:
    """batch_size=None (by footprint), channels_last, optimize and compile are Segmenter options of segment();
    a bad batch size is refused at the call."""
    seen: dict = {}
    original = Segmenter.default

    def spy(kind, **options):
        seen.update(options)
        return original(kind, **options)

    monkeypatch.setattr(Segmenter, "default", spy)
    case = write(tmp_path / "c1.nii.gz", volumes(2))
    (result,) = mdanet_sdk.segment(case, tmp_path / "out", batch_size=None, channels_last=False, optimize=False)
    assert result.ok and seen["batch_size"] is None and seen["channels_last"] is False and seen["optimize"] is False
    with pytest.raises(InputError, match="batch_size must be a whole number"):
        mdanet_sdk.segment(case, tmp_path / "out2", batch_size=0)


def _saved_case(tmp_path: Path) -> tuple[SegmentationResult, Path, bytes]:
    """A segmented two-file case and its DWI file with that file's bytes."""
    data = volumes(2, seed=3)
    files = {m: tmp_path / f"case_{m}.nii.gz" for m in ("dwi", "adc")}
    for i, path in enumerate(files.values()):
        write(path, data[..., i])
    result = Segmenter.default("mri", tta=False).predict({m: str(p) for m, p in files.items()})
    return result, files["dwi"], files["dwi"].read_bytes()


def test_save_never_replaces_an_input_or_writes_two_outputs_to_one_file(tmp_path) -> None:
    """``result.save`` refuses, before writing anything, a name holding an image it did not write (the input's
    DWI, directly or through a link; an expert mask named like an output), a non-NIfTI probability name after
    a valid mask name (which used to write the mask over the input, then delete it), and one file for both
    outputs, also through ``..``."""
    result, dwi, original = _saved_case(tmp_path)
    link = tmp_path / "link.nii.gz"
    link.symlink_to(dwi)
    expert = write(tmp_path / "case_seg.nii.gz", (volumes(1)[..., 0] > 1).astype(np.uint8))
    (tmp_path / "sub").mkdir()
    fresh = tmp_path / "m.nii.gz"
    for mask, prob, message in (
        (dwi, None, "did not write"),
        (link, None, "did not write"),
        (expert, None, "did not write"),
        (fresh, tmp_path / "p.mha", "must end in"),
        (dwi, tmp_path / "p.mha", "did not write"),  # used to write over the input, then delete it
        (fresh, fresh, "both be"),
        (fresh, tmp_path / "sub" / ".." / "m.nii.gz", "both be"),
    ):
        with pytest.raises(InputError, match=message):
            result.save(mask, prob)
        assert dwi.read_bytes() == original and not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "case_adc.nii.gz",
        "case_dwi.nii.gz",
        "case_seg.nii.gz",
        "link.nii.gz",
        "sub",
    ]


def test_save_replaces_an_earlier_prediction_and_an_unreadable_leftover(tmp_path) -> None:
    result, _, _ = _saved_case(tmp_path)
    mask, prob = result.save(tmp_path / "m.nii.gz", tmp_path / "p.nii.gz")
    result.save(mask, prob)  # a rerun over its own outputs
    (tmp_path / "left.nii.gz").write_bytes(b"\x1f\x8b cut short")
    result.save(tmp_path / "left.nii.gz")
    assert np.array_equal(np.asarray(nib.load(tmp_path / "left.nii.gz").dataobj), result.mask)


def test_one_image_given_for_two_modalities_is_refused(tmp_path) -> None:
    """The same file as DWI and ADC used to give a confident "no lesion"; each input form now refuses it."""
    dwi = write(tmp_path / "case_dwi.nii.gz", volumes(2)[..., 0])
    (failed,) = mdanet_sdk.segment({"dwi": dwi, "adc": dwi}, tmp_path / "out")
    assert not failed.ok and "the dwi and adc images are identical" in failed.error
    assert not (tmp_path / "out").exists()
    array = np.asarray(nib.load(dwi).dataobj)
    with pytest.raises(InputError, match="identical"):
        Segmenter.default("mri").predict_arrays({"dwi": array, "adc": array.copy()}, np.eye(4))


def test_an_output_folder_that_cannot_be_made_fails_its_cases_before_the_model_runs(tmp_path, monkeypatch) -> None:
    """Used to surface as a raw errno after the prediction; now each case fails at once, in one sentence."""
    case = write(tmp_path / "a.nii.gz", volumes(2))
    (tmp_path / "taken").write_text("a file where a folder is wanted")
    monkeypatch.setattr(Segmenter, "predict_many", lambda *a, **k: pytest.fail("the model ran"))
    (failed,) = mdanet_sdk.segment(case, tmp_path / "taken" / "masks")
    assert not failed.ok and "cannot be written" in failed.error and "taken is not a folder" in failed.error


@pytest.mark.parametrize("name", ["dwi.nii.gz", "DWI.nii.gz"])
def test_files_named_after_their_modality_take_their_folders_name(tmp_path, name) -> None:
    data = volumes(2)
    dwi = write(tmp_path / "sub-42" / name, data[..., 0])
    adc = write(tmp_path / "sub-42" / "adc.nii.gz", data[..., 1])
    (result,) = mdanet_sdk.segment({"dwi": dwi, "adc": adc}, tmp_path / "out")
    assert result.ok and result.case_id == "sub-42"
    assert (tmp_path / "out" / "sub-42_seg.nii.gz").is_file()


def test_a_foreign_image_named_like_an_output_fails_its_case_before_the_model_runs(tmp_path, monkeypatch) -> None:
    case = write(tmp_path / "a.nii.gz", volumes(2))
    label = write(tmp_path / "out" / "a_seg.nii.gz", (volumes(1)[..., 0] > 1).astype(np.uint8))  # e.g. a label
    kept = label.read_bytes()
    monkeypatch.setattr(Segmenter, "predict_many", lambda *a, **k: pytest.fail("the model ran"))
    (failed,) = mdanet_sdk.segment(case, tmp_path / "out")
    assert not failed.ok and "did not write" in failed.error and label.read_bytes() == kept


def test_arrays_are_read_as_a_mapping_of_files_is_and_never_shared_with_the_caller() -> None:
    """``predict_arrays`` kept the caller's affine and (for RAS+ arrays) its images by reference, merged ``DWI``
    and ``dwi``, took ``mask`` for an image, checked extra arrays it then ignored, and failed with raw errors on
    a flipped axis of length 1, a tensor that requires grad and a wrong-shaped affine."""
    import torch

    seg = Segmenter.default("mri", device="cpu", tta=False)
    data = volumes(2)
    ras = np.diag([2.0, 2.0, 3.0, 1.0])
    dwi, adc = np.ascontiguousarray(data[..., 0]), np.ascontiguousarray(data[..., 1])
    affine = ras.copy()
    result = seg.predict_arrays({"dwi": dwi, "adc": adc}, affine)
    expected = result.mask.copy()
    dwi[:] = 0
    affine[:3, :3] *= 3  # a pipeline reusing its buffers for the next case
    assert np.array_equal(result.affine, ras) and result.case.images["dwi"].any()
    result.mask[:] = 1  # the caller's copy of the mask; what save() writes stays the prediction
    assert np.array_equal(result.mask_canonical, expected)
    dwi, adc = data[..., 0], data[..., 1]
    with pytest.raises(InputError, match="names dwi twice"):
        seg.predict_arrays({"dwi": dwi, "DWI": adc, "adc": adc}, ras)
    half = np.zeros(dwi.shape, np.uint8)
    half[: dwi.shape[0] // 2] = 1
    masked = seg.predict_arrays({"dwi": dwi, "adc": adc, "mask": half, "flair": np.zeros_like(dwi)}, ras)
    assert masked.probability[dwi.shape[0] // 2 :].max() == 0  # a brain mask, and a constant extra is not read
    plain = seg.predict_arrays({"dwi": torch.from_numpy(dwi).requires_grad_(), "adc": adc}, ras)
    assert np.array_equal(plain.mask, seg.predict_arrays({"dwi": dwi, "adc": adc}, ras).mask)
    with pytest.raises(InputError, match="no 'adc' image"):  # not the extra's shape, which is never read
        seg.predict_arrays({"dwi": dwi, "flair": np.zeros((4, 4, 4))}, ras)
    with pytest.raises(InputError, match="brain mask holds <U1 values"):
        seg.predict_arrays({"dwi": dwi, "adc": adc, "mask": np.full(dwi.shape, "a")}, ras)
    las = np.diag([-2.0, 2.0, 3.0, 1.0])
    one = seg.predict_arrays({"dwi": dwi[3:4], "adc": adc[3:4]}, las)  # an x axis of length 1, flipped to RAS+
    assert one.mask.shape == (1, *dwi.shape[1:])
    for bad, message in (
        (ras[:3], r"4x4 voxel-to-world matrix; got shape \(3, 4\)"),
        (None, r"4x4 voxel-to-world matrix; got shape \(\)"),
    ):
        with pytest.raises(InputError, match=message):
            seg.predict_arrays({"dwi": dwi, "adc": adc}, bad)
