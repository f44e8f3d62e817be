"""Tests of the image formats besides NIfTI (mdanet_sdk.data.formats): .mha/.mhd/.nrrd/.nhdr and DICOM series load
like the NIfTI they came from, keep every entry of an oblique affine, pass the same validation, and say which extra
to install when it is missing (images from :mod:`layout_images`)."""

from __future__ import annotations

import locale
import os
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mdanet_sdk.data.layouts import find_cases
from mdanet_sdk.data.nifti import header_shape, load_volume, save_like
from mdanet_sdk.errors import InputError
from layout_images import MRI, OBLIQUE, SHAPE
from layout_images import holds as _holds
from layout_images import image as _image
from layout_images import write as _write

ITK = ("mha", "mhd", "nrrd", "nhdr")


@pytest.mark.parametrize("ext", ITK)
def test_itk_formats_load_like_nifti(ext, tmp_path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    data = np.random.default_rng(0).integers(1, 900, SHAPE).astype(np.int16)
    nifti = _write(tmp_path / "dwi.nii.gz", data, OBLIQUE)
    other = tmp_path / f"dwi.{ext}"
    sitk.WriteImage(sitk.ReadImage(str(nifti)), str(other))
    a, b = load_volume(nifti), load_volume(other)
    np.testing.assert_array_equal(b.data, a.data)
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-5)
    np.testing.assert_allclose(b.original_affine, OBLIQUE, atol=1e-5)
    assert b.orientation == a.orientation and b.original_shape == a.original_shape and b.path == other
    assert b.zooms == pytest.approx((1.5, 2.0, 3.0), abs=1e-5)
    assert header_shape(other) == header_shape(nifti) == SHAPE and header_shape(tmp_path / "none.mha") is None
    # A result written against it lands on the NIfTI's voxels.
    mask = (a.data > 450).astype(np.uint8)
    written = nib.load(save_like(mask, b, tmp_path / "out.nii.gz"))
    np.testing.assert_array_equal(np.asarray(written.dataobj), (data > 450).astype(np.uint8))


def test_itk_images_in_a_case_folder(tmp_path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    (tmp_path / "case1").mkdir()
    for i, (m, ext) in enumerate(zip(MRI, ("mha", "nrrd"))):
        image = sitk.GetImageFromArray(_image(i + 1).transpose(2, 1, 0).copy())
        sitk.WriteImage(image, str(tmp_path / "case1" / f"case1_{m}.{ext}"))
    (source,) = find_cases(tmp_path / "case1")
    assert source.case_id == "case1" and source.paths["adc"].name == "case1_adc.nrrd"
    case = source.load()
    assert _holds(case.images["dwi"], 1) and _holds(case.images["adc"], 2)


def test_itk_validation_applies(tmp_path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    values = _image(5)
    values[0, 0, 0] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(values.transpose(2, 1, 0).copy()), str(tmp_path / "nan.mha"))
    assert "1 NaN/Inf voxels were set to 0" in load_volume(tmp_path / "nan.mha").warnings[0]
    header = "ObjectType = Image\nNDims = 3\nDimSize = 4000 4000 4000\nElementType = MET_FLOAT\n"
    (tmp_path / "huge.mha").write_text(header + "ElementDataFile = LOCAL\n")
    with pytest.raises(InputError, match="declares"):
        load_volume(tmp_path / "huge.mha")
    os.mkfifo(tmp_path / "data.raw")
    (tmp_path / "fifo.mhd").write_text(header.replace("4000", "4") + "ElementDataFile = data.raw\n")
    with pytest.raises(InputError, match="not a regular file"):
        load_volume(tmp_path / "fifo.mhd")
    flat = "ObjectType = Image\nNDims = 2\nDimSize = 4 4\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n"
    (tmp_path / "flat.mha").write_bytes(flat.encode() + bytes(range(1, 17)))
    with pytest.raises(InputError, match="2D image"):
        load_volume(tmp_path / "flat.mha")
    (tmp_path / "junk.nrrd").write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="junk.nrrd is not a readable image"):
        load_volume(tmp_path / "junk.nrrd")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 8, 8), np.float32)), str(tmp_path / "empty.nrrd"))
    with pytest.raises(InputError, match="is empty"):
        load_volume(tmp_path / "empty.nrrd")


def test_missing_extras_are_one_line_errors(monkeypatch, tmp_path) -> None:
    (tmp_path / "a.mha").write_text("ObjectType = Image\n")
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # import SimpleITK now raises ImportError
    with pytest.raises(InputError, match=r"pip install 'mdanet-sdk\[formats\]'") as info:
        load_volume(tmp_path / "a.mha")
    assert "\n" not in str(info.value)
    dicom = tmp_path / "dwi"
    dicom.mkdir()
    (dicom / "1.dcm").write_bytes(b"\x00" * 128 + b"DICM")
    monkeypatch.setitem(sys.modules, "dcm2niix", None)
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(InputError, match=r"pip install 'mdanet-sdk\[dicom\]'") as info:
        load_volume(dicom)
    assert "\n" not in str(info.value)


def _dicom_series(sitk, image, folder: Path, series: str, *, suffix: str = ".dcm") -> None:
    """Write a 3D SimpleITK image as a DICOM series (one file per slice, the tags dcm2niix stacks by)."""
    folder.mkdir(parents=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    d = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")  # also for files without the .dcm ending
    uid = f"1.2.826.0.1.3680043.2.1125.{series}"
    common = {
        "0008|0020": "20240101",
        "0008|0030": "120000",
        "0008|0021": "20240101",
        "0008|0031": "120000",
        "0008|0060": "MR",
        "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
        "0020|000d": uid + ".1",
        "0020|000e": uid + ".2",
        "0020|0011": series,
        "0020|0037": "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
        "0028|0030": "\\".join(str(v) for v in image.GetSpacing()[1::-1]),
        "0018|0050": str(image.GetSpacing()[2]),
    }
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        for tag, value in common.items():
            slice_.SetMetaData(tag, value)
        slice_.SetMetaData("0020|0032", "\\".join(str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k))))
        slice_.SetMetaData("0020|0013", str(k + 1))
        slice_.SetMetaData("0008|0018", f"{uid}.3.{k}")
        writer.SetFileName(str(folder / f"IM{k:04d}{suffix}"))
        saved = locale.setlocale(locale.LC_ALL)
        try:
            writer.Execute(slice_)
        finally:  # GDCM's writer sets the C locale, which would turn later text reads of this process to ASCII
            locale.setlocale(locale.LC_ALL, saved)


def test_dicom_series_folder_loads_like_nifti(tmp_path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    pytest.importorskip("dcm2niix")
    data = np.random.default_rng(1).integers(1, 900, SHAPE).astype(np.int16)
    affine = np.diag([-1.0, 1.5, 2.0, 1.0])
    affine[:3, 3] = [40.0, -20.0, 10.0]
    nifti = _write(tmp_path / "ref" / "dwi.nii.gz", data, affine)
    before = set(Path(tempfile.gettempdir()).glob(".mdanet-dicom-*"))
    case = tmp_path / "case9"
    _dicom_series(sitk, sitk.ReadImage(str(nifti)), case / "DWI", "7", suffix="")  # files found by magic
    _write(case / "case9_adc.nii.gz", _image(3), affine)
    (source,) = find_cases(case)
    assert source.paths == {"dwi": case / "DWI", "adc": case / "case9_adc.nii.gz"}
    loaded = source.load()
    reference = load_volume(nifti)
    np.testing.assert_array_equal(loaded.images["dwi"], reference.data)
    np.testing.assert_allclose(loaded.reference.affine, reference.affine, atol=1e-4)
    assert loaded.reference.path == case / "DWI" and _holds(loaded.images["adc"], 3)
    assert set(Path(tempfile.gettempdir()).glob(".mdanet-dicom-*")) == before  # the conversion was removed
    _dicom_series(sitk, sitk.ReadImage(str(nifti)), tmp_path / "two", "8")
    _dicom_series(sitk, sitk.ReadImage(str(nifti))[:, :, :2], tmp_path / "two" / "more", "9")
    with pytest.raises(InputError, match="holds several series"):
        load_volume(tmp_path / "two")
