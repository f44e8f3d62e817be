"""Tests of mdanet_sdk.data.nifti: canonical orientation and back, header-keeping atomic saves, validation."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mdanet_sdk.data.nifti import Volume, atomic_save, load_volume, save_like, to_original
from mdanet_sdk.errors import InputError

SHAPE = (8, 6, 4)  # unequal sides, so a wrong permutation cannot go unnoticed
ZOOMS = (2.0, 3.0, 1.5)


def _rotation(ax: float, az: float) -> np.ndarray:
    cx, sx, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
    return np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])


def _affine(linear: np.ndarray) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = (-7.5, 12.25, 30.0)
    return affine


# Stored voxel axes -> world: plain RAS, LPS (DICOM order), and an oblique volume (rotated 20°/10°) whose
# stored axes are also permuted and flipped (axis 0 ~ -S, axis 1 ~ R, axis 2 ~ -A).
AFFINES = {
    "RAS": _affine(np.diag(ZOOMS)),
    "LPS": _affine(np.diag([-ZOOMS[0], -ZOOMS[1], ZOOMS[2]])),
    "oblique": _affine(
        _rotation(np.radians(10), np.radians(20)) @ np.array([[0, 1, 0], [0, 0, -1], [-1, 0, 0]]) @ np.diag(ZOOMS)
    ),
}
ORIENTATIONS = {"RAS": ("R", "A", "S"), "LPS": ("L", "P", "S"), "oblique": ("I", "R", "P")}


@pytest.fixture
def io_voxels() -> np.ndarray:
    """(8, 6, 4) float32 holding each voxel's flat index, so every voxel can be traced after reorienting."""
    return np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)


@pytest.mark.parametrize("name", list(AFFINES))
def test_canonical_keeps_every_voxel_at_its_world_point(name, tmp_path, io_write_nifti, io_voxels) -> None:
    vol = load_volume(io_write_nifti(tmp_path / "v.nii.gz", io_voxels, AFFINES[name]))
    assert vol.orientation == ORIENTATIONS[name]
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    assert vol.data.dtype == np.float32 and vol.data.flags.c_contiguous
    assert sorted(vol.shape) == sorted(SHAPE) and vol.original_shape == SHAPE
    # Each canonical voxel holds the flat index of the stored voxel it came from: both must sit at one point.
    canon_ijk = np.indices(vol.shape).reshape(3, -1)
    orig_ijk = np.array(np.unravel_index(vol.data.reshape(-1).astype(int), SHAPE))
    world_canon = vol.affine[:3, :3] @ canon_ijk + vol.affine[:3, 3:]
    world_orig = AFFINES[name][:3, :3] @ orig_ijk + AFFINES[name][:3, 3:]
    np.testing.assert_allclose(world_canon, world_orig, atol=1e-4)
    assert sorted(vol.zooms) == pytest.approx(sorted(ZOOMS), abs=1e-5)
    assert vol.voxel_volume_ml == pytest.approx(np.prod(ZOOMS) / 1000, rel=1e-5)


@pytest.mark.parametrize("name", list(AFFINES))
@pytest.mark.parametrize(("kind", "suffix"), [("prob", ".nii.gz"), ("mask", ".nii")])
def test_round_trip_load_canonical_back_save(name, kind, suffix, tmp_path, io_write_nifti, io_voxels) -> None:
    values = io_voxels / io_voxels.max() if kind == "prob" else (io_voxels % 3 == 0).astype(np.float32)
    src = io_write_nifti(tmp_path / "in.nii.gz", values, AFFINES[name], qform_code=2, sform_code=1)
    vol = load_volume(src)
    np.testing.assert_array_equal(to_original(vol.data, vol), values)
    out = save_like(vol.data, vol, tmp_path / f"out{suffix}", output=kind)
    saved, original = nib.load(out), nib.load(src)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), values)
    np.testing.assert_array_equal(saved.affine, original.affine)
    assert saved.get_data_dtype() == (np.float32 if kind == "prob" else np.uint8)
    assert int(saved.header["qform_code"]) == 2 and int(saved.header["sform_code"]) == 1
    assert out.read_bytes()[:2] == b"\x1f\x8b" if suffix == ".nii.gz" else out.read_bytes()[:2] != b"\x1f\x8b"


def test_save_like_keeps_codes_and_units_but_not_scaling(tmp_path) -> None:
    # An int16 input with a slope of 2, only a qform (sform_code 0), units mm/s, a display window.
    stored = np.full(SHAPE, 5, np.int16)
    stored[0, 0, 0] = 1  # not constant: a constant modality image is refused
    img = nib.Nifti1Image(stored, AFFINES["LPS"])
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_slope_inter(2.0, 0.0)
    img.header.set_qform(AFFINES["LPS"], code=1)
    img.header.set_sform(None, code=0)
    img.header["cal_max"] = 1000
    nib.save(img, tmp_path / "in.nii")
    vol = load_volume(tmp_path / "in.nii")
    assert vol.data.max() == 10.0  # slope applied on reading
    mask = np.zeros(vol.shape, np.uint8)
    mask[1, 2, 3] = 1
    saved = nib.load(save_like(mask, vol, tmp_path / "m.nii.gz"))
    assert saved.get_fdata().sum() == 1.0  # not rescaled by the input's slope of 2
    assert int(saved.header["qform_code"]) == 1 and int(saved.header["sform_code"]) == 0
    assert float(saved.header["cal_max"]) == 0.0
    assert saved.header.get_xyzt_units() == ("mm", "sec")
    np.testing.assert_allclose(saved.affine, AFFINES["LPS"], atol=1e-5)
    assert nib.load(tmp_path / "m.nii.gz").get_fdata()[to_original(mask, vol) == 1].tolist() == [1.0]


def test_4d_keeps_modalities_last_and_drops_singleton_axes_after_the_third(tmp_path, io_write_nifti, io_voxels) -> None:
    stacked = np.stack([io_voxels, -io_voxels - 1], axis=-1)
    vol = load_volume(io_write_nifti(tmp_path / "4d.nii.gz", stacked, AFFINES["LPS"]))
    assert vol.data.shape == (*SHAPE, 2)
    np.testing.assert_array_equal(vol.data[..., 1], -vol.data[..., 0] - 1)
    np.testing.assert_array_equal(to_original(vol.data, vol), stacked)
    for extra in ((1,), (1, 1)):  # (X, Y, Z, 1) and (X, Y, Z, 1, 1) are 3D volumes
        single = io_write_nifti(tmp_path / "1.nii.gz", (io_voxels + 1).reshape(SHAPE + extra), AFFINES["RAS"])
        assert load_volume(single).data.shape == SHAPE and load_volume(single).original_shape == SHAPE
    vector = load_volume(io_write_nifti(tmp_path / "v.nii.gz", stacked[..., None, :], AFFINES["LPS"]))
    np.testing.assert_array_equal(vector.data, vol.data)  # (X, Y, Z, 1, C): NIfTI's components axis


def test_nan_and_inf_are_zeroed_with_a_warning(tmp_path, io_write_nifti, io_voxels) -> None:
    values = io_voxels + 1
    # One infinite voxel of 192 (0.5 %): repaired; more than 1 % would refuse the file.
    values[0, 0, 0], values[1, 0, 0], values[2, 0, 0] = np.nan, np.nan, -np.inf
    vol = load_volume(io_write_nifti(tmp_path / "nan.nii.gz", values))
    assert np.isfinite(vol.data).all() and vol.data[:3, 0, 0].tolist() == [0.0, 0.0, 0.0]
    finite = np.isfinite(values)  # identity affine: canonical order is the stored order
    np.testing.assert_array_equal(vol.data[finite], values[finite])
    assert len(vol.warnings) == 1 and "3 NaN/Inf voxels were set to 0 (2 NaN, 1 infinite" in vol.warnings[0]


NOISE = np.random.default_rng(0).random((16, 16, 16))  # compresses badly: 600 bytes is a truncated stream


def _file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _bad_checksum(path: Path) -> Path:
    """A .nii.gz whose voxels decompress fine but whose gzip CRC does not match them (one flipped byte)."""
    raw = bytearray(path.read_bytes())
    raw[-6] ^= 0xFF
    path.write_bytes(bytes(raw))
    return path


def _singular_affine(path: Path) -> Path:
    img = nib.Nifti1Image(np.ones((4, 4, 3), np.float32), None)  # no affine: nibabel keeps the header's
    img.header.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)  # a flattened Z axis
    nib.save(img, path)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p, w: p / "missing.nii.gz", "does not exist"),
        (lambda p, w: _file(p / "notes.nii", b"hello " * 100), "not a readable NIfTI"),
        (lambda p, w: _file(p / "bad.nii.gz", b"not gzip at all" * 40), "not a gzip"),
        (lambda p, w: _file(p / "cut.nii.gz", w(p / "a.nii.gz", NOISE).read_bytes()[:600]), "not a readable"),
        (lambda p, w: _bad_checksum(w(p / "crc.nii.gz", NOISE)), "CRC check failed"),
        (lambda p, w: w(p / "2d.nii.gz", np.ones((8, 8), np.float32)), "has 2 dimensions"),
        (lambda p, w: w(p / "5d.nii.gz", np.ones((4, 4, 3, 2, 2), np.float32)), "has 5 dimensions"),
        (lambda p, w: w(p / "empty.nii.gz", np.zeros((4, 4, 3), np.float32)), "is empty"),
        (lambda p, w: w(p / "nosize.nii.gz", np.ones((4, 0, 3), np.float32)), "zero-length axis"),
        (lambda p, w: _singular_affine(p / "flat.nii"), "degenerate affine"),
        # voxel sizes no head scan has (an affine in metres or microns): volumes were reported as 0.000 or 2.5e15 mL
        (lambda p, w: w(p / "m.nii.gz", NOISE, np.diag([0.002, 0.002, 0.002, 1])), r"voxels of 0\.002 x 0\.002"),
        (lambda p, w: w(p / "um.nii.gz", NOISE, np.diag([2e3, 2e3, 5e3, 1])), r"2e\+03 x 2e\+03 x 5e\+03 mm"),
    ],
    ids=[
        "missing",
        "not-nifti",
        "not-gzip",
        "truncated",
        "checksum",
        "2d",
        "5d",
        "all-zero",
        "zero-size",
        "singular",
        "metres",
        "microns",
    ],
)
def test_invalid_inputs_raise_input_error(make, message, tmp_path, io_write_nifti) -> None:
    with pytest.raises(InputError, match=message):
        load_volume(make(tmp_path, io_write_nifti))


def test_other_image_formats_are_refused(tmp_path) -> None:
    nib.save(nib.MGHImage(np.ones((4, 4, 3), np.float32), np.eye(4)), tmp_path / "brain.mgz")
    with pytest.raises(InputError, match="MGHImage, not a NIfTI image"):
        load_volume(tmp_path / "brain.mgz")


def test_allow_empty_accepts_an_all_zero_label(tmp_path, io_write_nifti) -> None:
    vol = load_volume(io_write_nifti(tmp_path / "l.nii.gz", np.zeros((4, 4, 3), np.uint8)), allow_empty=True)
    assert vol.data.shape == (4, 4, 3) and not vol.data.any()


@pytest.fixture
def io_ref(tmp_path, io_write_nifti, io_voxels) -> Volume:
    return load_volume(io_write_nifti(tmp_path / "ref.nii.gz", io_voxels + 1, AFFINES["oblique"]))


@pytest.mark.parametrize(
    ("array", "kwargs", "message"),
    [
        (np.zeros((3, 3, 3)), {}, "does not match the reference grid"),
        (None, {"kind": "label"}, "output must be 'mask' or 'prob'"),
        (None, {"name": "out.png"}, r"must end in \.nii or \.nii\.gz"),
        ("half", {}, "integer labels 0..255"),
        ("nan", {"kind": "prob"}, "NaN or Inf"),
    ],
    ids=["shape", "kind", "suffix", "non-integer-mask", "nan-prob"],
)
def test_failed_save_raises_and_writes_nothing(array, kwargs, message, io_ref, tmp_path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if array is None or isinstance(array, str):
        values = np.ones(io_ref.shape, np.float32)
        values[0, 0, 0] = {None: 1.0, "half": 0.5, "nan": np.nan}[array]
        array = values
    kind = kwargs.get("kind", "mask")
    with pytest.raises(InputError, match=message):
        save_like(array, io_ref, out_dir / kwargs.get("name", "out.nii.gz"), output=kind)
    assert list(out_dir.iterdir()) == []


def test_failure_while_writing_leaves_no_file(io_ref, tmp_path, monkeypatch) -> None:
    def broken_save(img, filename):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_like(np.zeros(io_ref.shape, np.uint8), io_ref, tmp_path / "out" / "mask.nii.gz")
    assert list((tmp_path / "out").iterdir()) == []


def test_atomic_save_replaces_an_existing_file_whole(tmp_path) -> None:
    target = tmp_path / "x.nii.gz"
    target.write_bytes(b"old")
    atomic_save(nib.Nifti1Image(np.ones((2, 2, 2), np.float32), np.eye(4)), target)
    with gzip.open(target) as fh:
        assert len(fh.read()) == 352 + 8 * 4
    assert [p.name for p in tmp_path.iterdir()] == ["x.nii.gz"]
