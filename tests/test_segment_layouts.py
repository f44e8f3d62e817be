"""``mdanet-sdk segment`` on each dataset layout users have (nnU-Net raw, flat folders, BIDS sessions, image
formats other than NIfTI), each holding one broken case among good ones: every good case is written under its
own name, each broken one gives exactly one ``error:`` line naming it, and the command exits 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mdanet_sdk.cli import app
from tests.test_segment_cli import bundled, cli_weights, error_lines, files_in, volumes, write  # noqa: F401

pytestmark = pytest.mark.usefixtures("bundled")


def _run(args: list[str]) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, ["segment", *args, "-q"])
    return result.exit_code, error_lines(result)


def _nnunet(root: Path) -> Path:
    for n, channels in ((1, 2), (2, 1), (3, 2)):  # case 2 lacks channel 0001 (ADC)
        data = volumes(2, seed=n)
        for c in range(channels):
            write(root / "imagesTs" / f"stroke_{n:03d}_{c:04d}.nii.gz", data[..., c])
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "DWI", "1": "ADC"}}))
    return root


def _flat(root: Path) -> Path:
    for n in (1, 2, 3):
        data = volumes(2, seed=n)
        write(root / f"sub0{n}_dwi.nii.gz", data[..., 0])
        if n != 2:
            write(root / f"sub0{n}_adc.nii.gz", data[..., 1])
    write(root / "sub01_mask.nii.gz", (volumes(1)[..., 0] > 0).astype("uint8"))  # a brain mask, not a label
    return root


def _sessions(root: Path) -> Path:
    for sub, ses, modalities in (("01", "01", "both"), ("01", "02", "both"), ("02", "01", "dwi")):
        data = volumes(2, seed=int(sub + ses))
        folder = root / "rawdata" / f"sub-{sub}" / f"ses-{ses}" / "dwi"
        for i, modality in enumerate(("dwi", "adc") if modalities == "both" else ("dwi",)):
            write(folder / f"sub-{sub}_ses-{ses}_{modality}.nii.gz", data[..., i])
    return root


@pytest.mark.parametrize(
    ("make", "written", "broken"),
    [
        (_nnunet, ["stroke_001_seg.nii.gz", "stroke_003_seg.nii.gz"], "stroke_002"),
        (_flat, ["sub01_seg.nii.gz", "sub03_seg.nii.gz"], "sub02"),
        (_sessions, ["sub-01_ses-01_seg.nii.gz", "sub-01_ses-02_seg.nii.gz"], "sub-02"),
    ],
    ids=["nnunet", "flat", "bids-sessions"],
)
def test_each_layout_with_one_broken_case(make, written, broken, tmp_path) -> None:
    root = make(tmp_path / "data")
    code, errors = _run([str(root), "-o", str(tmp_path / "out")])
    assert code == 1
    assert len(errors) == 1 and broken in errors[0] and "adc" in errors[0]
    assert files_in(tmp_path / "out") == written


def test_metaimage_and_nrrd_cases(tmp_path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    for n, ext in ((1, "mha"), (2, "nrrd")):
        data = volumes(2, seed=n)
        (tmp_path / "data" / f"case{n}").mkdir(parents=True)
        for i, modality in enumerate(("dwi", "adc")):
            image = sitk.GetImageFromArray(data[..., i].transpose(2, 1, 0))  # SimpleITK arrays are (z, y, x)
            image.SetSpacing((1.0, 1.0, 3.0))
            sitk.WriteImage(image, str(tmp_path / "data" / f"case{n}" / f"{modality}.{ext}"), True)
    (tmp_path / "data" / "case3").mkdir()
    (tmp_path / "data" / "case3" / "dwi.mha").write_bytes(b"ObjectType = Image\nNDims = 3\n")  # a cut header
    (tmp_path / "data" / "case3" / "adc.mha").write_bytes(b"")
    code, errors = _run([str(tmp_path / "data"), "-o", str(tmp_path / "out")])
    assert code == 1 and len(errors) == 1 and "case3" in errors[0]
    assert files_in(tmp_path / "out") == ["case1_seg.nii.gz", "case2_seg.nii.gz"]
