"""What produced a segmentation (issue 16, item 5): the weights' SHA-256, the package version, the post-processing
and, for weights trained on synthetic phantoms, the notice, in the report JSON and the terminal table; and
inference that never reads a label."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import mdanet_sdk
from mdanet_sdk import Segmenter
from mdanet_sdk.errors import CheckpointError
from mdanet_sdk.inference import provenance
from mdanet_sdk.inference.provenance import SYNTHETIC_NOTICE, file_sha256, trained_on_synthetic
from mdanet_sdk.report import REPORT_SCHEMA_VERSION, report_document, report_table, write_json_report
from mdanet_sdk.train import checkpoint as checkpoint_module
from mdanet_sdk.train.checkpoint import BUNDLED
from tests.test_inference import brain

AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])
HAS_BUNDLED = BUNDLED["default-mri"].is_file()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_images(folder: Path, images: dict[str, np.ndarray]) -> dict[str, Path]:
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for modality, data in images.items():
        paths[modality] = folder / f"case_{modality}.nii.gz"
        nib.save(nib.Nifti1Image(data, AFFINE), paths[modality])
    return paths


@pytest.fixture(scope="module")
def folds(tmp_path_factory, ckpt_random) -> list[Path]:
    """Two random MRI checkpoints with no record of their training data (a user's own)."""
    folder = tmp_path_factory.mktemp("folds")
    return [ckpt_random(folder / f"fold{i}.pt", seed=i) for i in range(2)]


# -- the digest ------------------------------------------------------------------------------------------------
def test_file_sha256_streams_files_larger_than_its_chunk(tmp_path) -> None:
    data = np.random.default_rng(0).bytes(3 * 2**20 + 5)  # three full 1 MiB chunks and a short one
    (tmp_path / "w.pt").write_bytes(data)
    assert file_sha256(tmp_path / "w.pt") == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty.pt").write_bytes(b"")
    assert file_sha256(tmp_path / "empty.pt") == hashlib.sha256(b"").hexdigest()


def test_file_sha256_of_a_vanished_file_names_it(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="gone.pt could not be read"):
        file_sha256(tmp_path / "gone.pt")


def test_each_case_of_an_ensemble_names_each_fold_file_by_its_digest(folds, monkeypatch) -> None:
    calls: list[Path] = []

    def counting(path):
        calls.append(Path(path))
        return file_sha256(path)

    monkeypatch.setattr(provenance, "file_sha256", counting)
    seg = Segmenter.from_checkpoint(folds, device="cpu", threshold=0.4, min_size=3)
    results = [seg.predict_arrays(brain((32, 32, 6), seed), AFFINE, case_id=f"c{seed}") for seed in range(3)]
    assert calls == folds  # once per model at load, never per case
    expected = [sha256_of(p) for p in folds]
    assert expected[0] != expected[1]
    for r in results:
        d = r.report.to_dict()
        assert d["weights_sha256"] == expected
        assert d["model"] == "fold0+fold1"
        assert d["package_version"] == mdanet_sdk.__version__
        assert d["postprocess"] == {"tta": False, "threshold": 0.4, "min_size": 3, "max_adc_ratio": 0.0}
        assert d["postprocess"] == seg.settings.to_dict()
        assert (d["device"], d["precision"]) == ("cpu", seg.precision)
        assert d["notice"] == ""


def test_a_changed_setting_is_what_the_next_report_says(folds) -> None:
    seg = Segmenter.from_checkpoint(folds[0], device="cpu")
    seg.threshold = 0.35
    seg.tta = True
    assert seg.predict_arrays(brain((32, 32, 6)), AFFINE).report.to_dict()["postprocess"] == {
        "tta": True,
        "threshold": 0.35,
        "min_size": 0,
        "max_adc_ratio": 0.0,
    }


# -- the synthetic notice --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("training_data", "synthetic"),
    [
        ("72 synthetic classic isles22 phantoms (dataset seed 103, grid 128)", True),
        ("Synthetic phantoms written by mdanet-sdk synth", True),
        ("ISLES'22 training set, 250 subjects", False),
        ("nonsynthetic-archive", False),  # the word, not a part of one
        (None, False),
        (7, False),  # not a string: free-form metadata is never trusted to say so
    ],
)
def test_trained_on_synthetic_reads_the_training_data_record(training_data, synthetic, tmp_path) -> None:
    meta = {} if training_data is None else {"training_data": training_data}
    assert trained_on_synthetic(meta, tmp_path / "user.pt") is synthetic


def test_a_user_checkpoint_marked_synthetic_carries_the_notice(tmp_path, ckpt_random) -> None:
    marked = ckpt_random(tmp_path / "phantoms.pt", meta={"training_data": "64 synthetic isles22 phantoms"})
    result = Segmenter.from_checkpoint(marked, device="cpu").predict_arrays(brain((32, 32, 6)), AFFINE)
    assert result.report.notice == SYNTHETIC_NOTICE
    assert result.report.weights_sha256 == [sha256_of(marked)]


def test_an_ensemble_with_one_synthetic_fold_carries_the_notice(folds, tmp_path, ckpt_random) -> None:
    marked = ckpt_random(tmp_path / "fold2.pt", seed=2, meta={"training_data": "synthetic phantoms"})
    seg = Segmenter.from_checkpoint([folds[0], marked], device="cpu")
    assert seg.notice == SYNTHETIC_NOTICE
    assert seg.weights_sha256 == [sha256_of(folds[0]), sha256_of(marked)]


def test_weights_served_under_a_bundled_name_carry_the_notice(folds, monkeypatch) -> None:
    # The file behind the name decides, not its metadata: these random weights record no training data.
    monkeypatch.setitem(checkpoint_module.BUNDLED, "default-mri", folds[1])
    seg = Segmenter.default("mri", device="cpu")
    assert seg.notice == SYNTHETIC_NOTICE and seg.weights_sha256 == [sha256_of(folds[1])]
    # ... and the same file loaded by its path is the same weights.
    assert Segmenter.from_checkpoint(folds[1], device="cpu").notice == SYNTHETIC_NOTICE
    assert Segmenter.from_checkpoint(folds[0], device="cpu").notice == ""


def test_the_notice_and_digest_reach_the_json_and_the_table(folds, tmp_path, ckpt_random) -> None:
    marked = ckpt_random(tmp_path / "phantoms.pt", meta={"training_data": "synthetic phantoms"})
    synthetic = Segmenter.from_checkpoint(marked, device="cpu").predict_arrays(brain((32, 32, 6)), AFFINE, case_id="s")
    user = Segmenter.from_checkpoint(folds[0], device="cpu").predict_arrays(brain((32, 32, 6)), AFFINE, case_id="u")

    doc = json.loads(write_json_report([synthetic.report], tmp_path / "s.json").read_text())
    assert doc["schema_version"] == REPORT_SCHEMA_VERSION == 4
    assert doc["mdanet_sdk_version"] == mdanet_sdk.__version__
    assert doc["notices"] == [SYNTHETIC_NOTICE]
    assert doc["cases"][0]["notice"] == "trained on synthetic phantoms, not for clinical use"
    assert doc["cases"][0]["weights_sha256"] == [sha256_of(marked)]

    doc = json.loads(write_json_report([user.report], tmp_path / "u.json").read_text())
    assert doc["notices"] == [] and doc["cases"][0]["notice"] == ""
    assert "synthetic" not in json.dumps(doc)

    def table(reports) -> str:
        console = Console(record=True, width=200)
        console.print(report_table(reports))
        return console.export_text()

    shown = table([synthetic.report])
    assert "trained on synthetic phantoms, not for clinical use" in shown
    assert sha256_of(marked)[:12] in shown and f"mdanet-sdk {mdanet_sdk.__version__}" in shown
    plain = table([user.report])
    assert "synthetic" not in plain and sha256_of(folds[0])[:12] in plain
    # one notice line however many cases carry it
    assert table([synthetic.report, synthetic.report]).count("not for clinical use") == 1


def test_run_level_extras_join_the_header_and_cannot_replace_it(folds) -> None:
    report = Segmenter.from_checkpoint(folds[0], device="cpu").predict_arrays(brain((32, 32, 6)), AFFINE).report
    doc = report_document([report], {"bad": "no adc image"}, run={"skipped": ["done_1"], "shards": 2})
    assert doc["skipped"] == ["done_1"] and doc["shards"] == 2
    assert doc["failed"] == [{"case": "bad", "error": "no adc image"}] and len(doc["cases"]) == 1
    for key in ("cases", "failed", "notices", "schema_version", "mdanet_sdk_version"):
        with pytest.raises(ValueError, match=key):
            report_document([report], run={key: []})


@pytest.mark.filterwarnings(r"ignore:.*torch\.jit:DeprecationWarning")
def test_an_export_artefact_is_named_by_its_own_digest(tmp_path, ckpt_random) -> None:
    from mdanet_sdk.export import export_model
    from mdanet_sdk.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(ckpt_random(tmp_path / "src.pt", meta={"training_data": "synthetic phantoms"}))
    artefact = export_model(
        ckpt.build_model(),
        "torchscript",
        tmp_path / "m.ts",
        preprocess={"size": 32, "multiple": 16, "normalization": "relative"},
        meta=ckpt.meta,
    ).path
    seg = Segmenter.from_exported(artefact, device="cpu")
    report = seg.predict_arrays(brain((32, 32, 6)), AFFINE).report
    assert report.weights_sha256 == [sha256_of(artefact)] != [sha256_of(tmp_path / "src.pt")]
    assert report.notice == SYNTHETIC_NOTICE  # the artefact keeps its checkpoint's training-data record


# -- the bundled weights ---------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAS_BUNDLED, reason="bundled weights not generated")
def test_bundled_weights_are_named_by_their_file_and_say_they_are_synthetic(tmp_path) -> None:
    seg = Segmenter.default("mri", device="cpu")
    report = seg.predict_arrays(brain((48, 48, 8)), AFFINE).report
    assert report.weights_sha256 == [sha256_of(BUNDLED["default-mri"])]
    assert report.notice == SYNTHETIC_NOTICE
    # A copy elsewhere is recognised by the training-data record the bundled checkpoint carries.
    copy = shutil.copy(BUNDLED["default-mri"], tmp_path / "mine.pt")
    assert provenance.trained_on_synthetic(checkpoint_module.load_checkpoint(copy).meta, copy)
    assert Segmenter.from_checkpoint(copy, device="cpu").notice == SYNTHETIC_NOTICE


# -- labels are not inference's business ---------------------------------------------------------------------
def test_a_label_in_a_mapping_is_never_read(folds, tmp_path) -> None:
    paths = write_images(tmp_path, brain((32, 32, 6)))
    broken = tmp_path / "case_label.nii.gz"
    broken.write_bytes(b"not a NIfTI file at all")
    # Would fail to load if read: the label is for evaluate, not for the Segmenter.
    seg = Segmenter.from_checkpoint(folds[0], device="cpu")
    result = seg.predict({**paths, "label": broken})
    assert result.case.label is None and result.case_id == "case"
    result = seg.predict({"Label": broken, **paths})  # any case, any position: not its id either
    assert result.case.label is None and result.case_id == "case"


def test_a_case_source_is_segmented_without_its_label(folds, tmp_path) -> None:
    from mdanet_sdk.data.cases import CaseSource

    paths = write_images(tmp_path, brain((32, 32, 6)))
    broken = tmp_path / "case_msk.nii.gz"
    broken.write_bytes(b"\x1f\x8b truncated gzip")
    source = CaseSource("sub-1", paths, label_path=broken, modalities=("dwi", "adc"))
    seg = Segmenter.from_checkpoint(folds[0], device="cpu")
    (result,) = seg.predict_many([source], errors="yield")
    assert result.ok and result.case.label is None and result.case_id == "sub-1"
