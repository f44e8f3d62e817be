"""Tests of ``mdanet-sdk segment`` and ``mdanet-sdk demo`` through Typer's CliRunner.

The bundled weights are replaced by randomly initialised ``small`` checkpoints (``BUNDLED`` is patched), so
these tests check files, geometry, messages and exit codes, not segmentation quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mdanet_sdk.cli import app
from mdanet_sdk.data.preprocess import PreprocessConfig
from mdanet_sdk.train import checkpoint as checkpoint_module

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ISLES22_EXAMPLE = SHARED_DATA / "isles22-example"
LPS = np.array([[-1.5, 0, 0, 30.0], [0, -1.5, 0, 20.0], [0, 0, 3.0, -10.0], [0, 0, 0, 1]])

runner = CliRunner()


@pytest.fixture(scope="module")
def cli_weights(tmp_path_factory, ckpt_random) -> dict[str, Path]:
    """Random ``small`` checkpoints for both kinds; MRI resamples slices to 64x64 (keeps the real case fast)."""
    folder = tmp_path_factory.mktemp("weights")
    return {
        kind: ckpt_random(folder / f"default-{kind}.pt", kind, preprocess=preprocess)
        for kind, preprocess in (("mri", PreprocessConfig(size=64)), ("ctp", PreprocessConfig()))
    }


@pytest.fixture
def bundled(cli_weights, monkeypatch) -> dict[str, Path]:
    """Point the bundled names default-mri / default-ctp at the random checkpoints."""
    for kind, path in cli_weights.items():
        monkeypatch.setitem(checkpoint_module.BUNDLED, f"default-{kind}", path)
    return cli_weights


def volumes(n: int, shape=(37, 29, 5), seed: int = 0) -> np.ndarray:
    """``(X, Y, Z, n)`` float32: a head ellipsoid with noise in each volume."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    head = (sum(g**2 for g in grid) < 0.8).astype(np.float32)
    return np.stack([head * (100 + 10 * i) + rng.normal(0, 3, shape) * head for i in range(n)], -1).astype(np.float32)


def write(path: Path, data: np.ndarray, affine: np.ndarray = LPS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_4d_file_gives_mask_prob_report_and_overlay_with_the_input_geometry(cli_weights, tmp_path) -> None:
    src = write(tmp_path / "in" / "case7.nii.gz", volumes(2))
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "segment",
            str(src),
            "-o",
            str(out),
            "--checkpoint",
            str(cli_weights["mri"]),
            "--prob",
            "--report",
            str(tmp_path / "report.json"),
            "--overlay",
            str(out),
            "--batch-size",
            "3",
            "--max-adc-ratio",
            "0.8",
        ],
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    assert files_in(out) == ["case7_overlay.png", "case7_prob.nii.gz", "case7_seg.nii.gz"]
    mask, prob = nib.load(out / "case7_seg.nii.gz"), nib.load(out / "case7_prob.nii.gz")
    assert mask.shape == prob.shape == (37, 29, 5)
    np.testing.assert_allclose(mask.affine, LPS)
    assert mask.get_data_dtype() == np.uint8 and prob.get_data_dtype() == np.float32
    assert (out / "case7_overlay.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((tmp_path / "report.json").read_text())
    (case,) = report["cases"]
    assert case["case_id"] == "case7" and case["shape"] == [37, 29, 5] and case["device"] == "cpu"
    assert case["model"] == "default-mri" and report["failed"] == []
    assert case["voxel_size_mm"] == [1.5, 1.5, 3.0] and case["max_adc_ratio"] == 0.8
    assert "case7: reading dwi, adc" in result.stdout and "lesion mL" in result.stdout
    assert "lesion ADC <= 0.8x tissue" in " ".join(result.stdout.split())  # the caption may wrap


def test_bundled_weights_follow_the_volume_count_and_modalities_override(bundled, tmp_path) -> None:
    mri = write(tmp_path / "mri.nii.gz", volumes(2))
    ctp = write(tmp_path / "ctp.nii.gz", volumes(4))
    result = runner.invoke(app, ["segment", str(mri), str(ctp), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "model default-mri" in result.stdout and "model default-ctp" in result.stdout
    assert "mri: reading dwi, adc" in result.stdout and "ctp: reading cbf, cbv, mtt, tmax" in result.stdout
    assert files_in(tmp_path / "out") == ["ctp_seg.nii.gz", "mri_seg.nii.gz"]
    swapped = runner.invoke(app, ["segment", str(mri), "--modalities", "adc,dwi", "-o", str(tmp_path / "sw")])
    assert swapped.exit_code == 0 and "mri: reading adc, dwi" in swapped.stdout
    odd = runner.invoke(app, ["segment", str(write(tmp_path / "three.nii.gz", volumes(3))), "-o", str(tmp_path)])
    assert odd.exit_code == 1 and "holds 3 volumes" in odd.stderr and "--modalities" in odd.stderr


def test_a_3d_file_alone_is_refused_with_how_to_pass_modalities(bundled, tmp_path) -> None:
    dwi = write(tmp_path / "dwi.nii.gz", volumes(1)[..., 0])
    result = runner.invoke(app, ["segment", str(dwi), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert "single 3D volume" in line and "dwi, adc" in line and "-m dwi=dwi.nii.gz -m adc=adc.nii.gz" in line
    assert not (tmp_path / "out").exists()


def test_modality_files_and_default_output_in_the_current_folder(bundled, tmp_path, monkeypatch) -> None:
    data = volumes(2)
    dwi = write(tmp_path / "in" / "sub-9_dwi.nii.gz", data[..., 0])
    adc = write(tmp_path / "in" / "sub-9_adc.nii.gz", data[..., 1])
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["segment", "-m", f"dwi={dwi}", "-m", f"adc={adc}", "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert nib.load(tmp_path / "sub-9_seg.nii.gz").shape == (37, 29, 5)


def test_failed_cases_get_one_line_each_and_the_others_are_written(bundled, tmp_path) -> None:
    good = write(tmp_path / "in" / "good.nii.gz", volumes(2))
    broken = tmp_path / "in" / "broken.nii.gz"
    broken.write_bytes(good.read_bytes()[:600])  # truncated gzip stream
    moved = tmp_path / "in" / "moved"
    shifted = LPS.copy()
    shifted[0, 3] += 4.0
    write(moved / "dwi.nii.gz", volumes(2)[..., 0])
    write(moved / "adc.nii.gz", volumes(2)[..., 1], shifted)
    half = tmp_path / "in" / "half"
    write(half / "dwi.nii.gz", volumes(2)[..., 0])  # no adc
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "segment",
            str(good),
            str(broken),
            str(moved),
            str(half),
            "-o",
            str(out),
            "--prob",
            "--report",
            str(out / "report.json"),
        ],
    )
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 3, result.stderr
    assert "broken" in lines[0] and "not a readable NIfTI" in lines[0]
    assert "moved" in lines[1] and "affine" in lines[1]
    assert "half" in lines[2]
    # The good case is complete; the failed ones left nothing, not even temporary files.
    assert files_in(out) == ["good_prob.nii.gz", "good_seg.nii.gz", "report.json"]
    report = json.loads((out / "report.json").read_text())
    assert [c["case_id"] for c in report["cases"]] == ["good"]
    assert sorted(f["case"] for f in report["failed"]) == ["broken", "half", "moved"]


def test_usage_errors_exit_2(bundled, tmp_path) -> None:
    a, b = write(tmp_path / "a.nii.gz", volumes(2)), write(tmp_path / "b.nii.gz", volumes(2))
    result = runner.invoke(app, ["segment", str(a), str(b), "-o", str(tmp_path / "one.nii.gz")])
    assert result.exit_code == 2 and "names one file but 2 cases" in result.stderr
    assert runner.invoke(app, ["segment"]).exit_code == 2
    bad = runner.invoke(app, ["segment", str(a), "--checkpoint", str(tmp_path / "missing.pt")])
    assert bad.exit_code == 2 and "does not exist" in bad.stderr


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["-o", "MASK.NII.GZ"], "ending in .nii.gz (lower case)"),  # used to become a folder of that name
        (["-o", "mask.mha"], "ending in .nii.gz (lower case)"),
        (["-o", "mask.img"], "ending in .nii.gz (lower case)"),  # an Analyze image, not a folder name
        (["-o", "out", "--overlay", "out/o.HDR"], "give a .png name or a folder"),
        (["-o", "out/m.nii.gz", "--overlay", "out/m.nii.gz"], "give a .png name or a folder"),
        (["-o", "out", "--overlay", "ov.jpg"], "overlays are PNG"),  # used to become a folder ov.jpg/
        (["-o", "out", "--overlay", "ov.PDF"], "overlays are PNG"),
    ],
)
def test_output_names_that_cannot_be_folders_are_refused(bundled, tmp_path, option, message) -> None:
    a = write(tmp_path / "a.nii.gz", volumes(2))
    result = runner.invoke(app, ["segment", str(a), *[str(tmp_path / o) if "." in o else o for o in option]])
    assert result.exit_code == 2 and message in result.stderr
    assert files_in(tmp_path) == ["a.nii.gz"]


@pytest.mark.skipif(not ISLES22_EXAMPLE.is_dir(), reason="shared ISLES'22 example case not available")
def test_real_isles22_case_end_to_end(bundled, tmp_path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "segment",
            str(ISLES22_EXAMPLE),
            "-o",
            str(out),
            "--overlay",
            str(out / "overlay.png"),
            "--report",
            str(out / "report.json"),
        ],
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    dwi = nib.load(next(ISLES22_EXAMPLE.rglob("*_dwi.nii.gz")))
    mask = nib.load(out / "sub-strokecase0001_seg.nii.gz")
    assert mask.shape == dwi.shape == (112, 112, 73)
    np.testing.assert_allclose(mask.affine, dwi.affine, atol=1e-5)
    assert nib.aff2axcodes(mask.affine) == nib.aff2axcodes(dwi.affine)
    assert int(mask.header["qform_code"]) == int(dwi.header["qform_code"])
    assert (out / "overlay.png").stat().st_size > 10_000
    (case,) = json.loads((out / "report.json").read_text())["cases"]
    assert case["model"] == "default-mri" and case["voxel_size_mm"] == pytest.approx([2.0, 2.0, 2.0])


def test_demo_segments_a_phantom(bundled, tmp_path) -> None:
    result = runner.invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.stdout + result.stderr
    masks = list(tmp_path.glob("*_seg.nii.gz"))
    assert len(masks) == 1 and list(tmp_path.glob("*_overlay.png"))
    assert "Dice with the phantom's true lesion" in result.stdout and str(masks[0]) in result.stdout.replace("\n", "")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_demo_on_a_device_that_is_not_there_writes_nothing(bundled, tmp_path) -> None:
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--device", "cuda"])
    assert result.exit_code == 2 and "CUDA" in result.stderr
    assert not (tmp_path / "demo").exists()  # the phantom used to be written before the refusal


def test_demo_without_bundled_weights_says_so(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(checkpoint_module.BUNDLED, "default-mri", tmp_path / "absent.pt")
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 2
    assert "bundled demo weights default-mri are not in this installation" in result.stderr


def test_missing_bundled_weights_fail_only_their_cases(bundled, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(checkpoint_module.BUNDLED, "default-ctp", tmp_path / "absent.pt")
    mri = write(tmp_path / "mri.nii.gz", volumes(2))
    ctp = write(tmp_path / "ctp.nii.gz", volumes(4))
    result = runner.invoke(app, ["segment", str(ctp), str(mri), "-o", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert line.startswith("error: ctp:") and "default-ctp" in line and "missing" in line
    assert files_in(tmp_path / "out") == ["mri_seg.nii.gz"]
