"""Hostile or wrong input files: each is refused (or repaired) for its own case, never for the whole batch.

Huge declared sizes, FIFOs and devices, complex or RGB voxels, infinite or absurdly large values, constant
images, and the SDK's own outputs lying where a label is looked for. Every file is written under tmp_path.
"""

from __future__ import annotations

import gzip
import os
import re
import signal
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mdanet_sdk.data.cases import find_cases, read_case
from mdanet_sdk.data.nifti import PREDICTION_MARK, is_prediction, load_volume, save_like
from mdanet_sdk.data.validate import MAX_VOXELS, check_image, check_label
from mdanet_sdk.errors import InputError
from mdanet_sdk.inference.inputs import case_from_arrays

SHAPE = (32, 32, 8)


@pytest.fixture(autouse=True)
def _no_temporary_files_left(tmp_path):
    """No test may leave a hidden temporary file (an interrupted atomic write) behind."""
    yield
    assert [p for p in tmp_path.rglob(".*")] == []


@contextmanager
def _deadline(seconds: int = 10):
    """Fail instead of hanging forever if a FIFO is ever opened (a blocked open() is interrupted)."""

    def expire(*_):
        raise TimeoutError("blocked: the FIFO was opened")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _image(seed: int = 0) -> np.ndarray:
    """A small non-constant float32 image: a bright block on a noisy background."""
    image = np.random.default_rng(seed).uniform(10, 20, SHAPE).astype(np.float32)
    image[8:16, 8:16, 2:5] += 100
    return image


def _write(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0])), path)
    return path


def _header_only(path: Path, shape: tuple[int, ...], dtype=np.int16) -> Path:
    """A NIfTI-1 header declaring ``shape`` voxels with no voxel data after it (gzip for .nii.gz)."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(np.eye(4), code=1)
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0" * 4
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def _generic_cases(root: Path, n: int = 3) -> Path:
    """``root/case{1..n}/{dwi,adc}.nii.gz``, every image readable."""
    for i in range(1, n + 1):
        _write(root / f"case{i}" / "dwi.nii.gz", _image(i))
        _write(root / f"case{i}" / "adc.nii.gz", _image(10 + i))
    return root


def _load_all(root: Path) -> dict[str, object]:
    """case id -> Case, or the InputError its loading raised."""
    results = {}
    for source in find_cases(root):
        try:
            results[source.case_id] = source.load()
        except InputError as exc:
            results[source.case_id] = exc
    return results


# ------------------------------------------------------------------------------------------ declared size


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_huge_declared_dims_fail_only_their_case(suffix, tmp_path) -> None:
    root = _generic_cases(tmp_path / "ds")
    (root / "case2" / "dwi.nii.gz").unlink()
    huge = _header_only(root / "case2" / f"dwi{suffix}", (4000, 4000, 2000))
    assert huge.stat().st_size < 400
    results = _load_all(root)
    assert sorted(results) == ["case1", "case2", "case3"]
    assert isinstance(results["case2"], InputError)
    assert f"more than the {MAX_VOXELS:,}" in str(results["case2"])
    assert results["case1"].shape == SHAPE and results["case3"].shape == SHAPE


@pytest.mark.parametrize(
    ("name", "shape", "message"),
    [
        ("cut.nii", (64, 64, 64), r"is truncated: its header declares \(64, 64, 64\)"),
        ("long.nii.gz", (5000, 2, 2), "declares an axis of 5000 voxels"),
        ("series.nii.gz", (32, 32, 8, 300), "declares 300 volumes"),
        ("five.nii", (8, 8, 8, 20, 20), "declares 400 volumes"),
    ],
)
def test_absurd_or_truncated_headers_are_refused_before_reading(name, shape, message, tmp_path) -> None:
    with pytest.raises(InputError, match=message):
        load_volume(_header_only(tmp_path / name, shape))


def test_truncated_gzip_stream_is_an_input_error(tmp_path) -> None:
    # Within every limit, so only nibabel's own truncation error can tell.
    full = _write(tmp_path / "full.nii.gz", np.random.default_rng(0).random(SHAPE).astype(np.float32))
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(InputError, match="not a readable NIfTI"):
        load_volume(cut)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_voxels_declared_inside_the_header_are_refused(suffix, tmp_path) -> None:
    """vox_offset 0 in a single-file NIfTI: nibabel read the header's bytes as voxels and shifted the image (the
    real case then gave no lesion, with only a NaN warning)."""
    image = nib.Nifti1Image(_image(), np.diag([2.0, 2.0, 3.0, 1.0]))
    raw = bytearray(image.header.binaryblock + b"\0" * 4 + _image().tobytes(order="F"))
    raw[108:112] = np.float32(0).tobytes()  # vox_offset
    path = tmp_path / f"dwi{suffix}"
    path.write_bytes(gzip.compress(bytes(raw)) if suffix.endswith(".gz") else bytes(raw))
    with pytest.raises(InputError, match="inside its 352-byte header"):
        load_volume(path)
    assert load_volume(_write(tmp_path / f"ok{suffix}", _image())).shape == SHAPE


def test_data_appended_to_a_gzip_stream_is_refused(tmp_path) -> None:
    """A valid image followed by gigabytes of gzipped zeros took ~3 s per GiB to read; over 1 MiB past the
    voxels the file is refused. A few bytes past them still read."""
    path = _write(tmp_path / "dwi.nii.gz", _image())
    voxels = path.read_bytes()
    path.write_bytes(voxels + gzip.compress(b"\0" * 256))
    assert load_volume(path).shape == SHAPE
    path.write_bytes(voxels + gzip.compress(b"\0" * (2 << 20)))
    with pytest.raises(InputError, match="holds more data than its header declares"):
        load_volume(path)
    image = nib.Nifti1Image(_image(), np.diag([2.0, 2.0, 3.0, 1.0]))  # 2 MiB of header extension count as header
    image.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"x" * (2 << 20)))
    nib.save(image, tmp_path / "ext.nii.gz")
    assert load_volume(tmp_path / "ext.nii.gz").shape == SHAPE


def test_running_out_of_memory_is_an_input_error(tmp_path, monkeypatch) -> None:
    path = _write(tmp_path / "dwi.nii.gz", _image())

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(nib.Nifti1Image, "get_fdata", exhausted)
    with pytest.raises(InputError, match="does not fit in memory"):
        load_volume(path)


def test_a_grid_too_large_for_the_free_memory_fails_its_case_before_reading(tmp_path, monkeypatch) -> None:
    """4096 x 4096 x 16 voxels in 5 MB of gzip peaked at 13.5 GB; where that is more than the machine has, the
    kernel killed the whole batch. Such a file now fails alone, before a voxel is read."""
    from mdanet_sdk.data import validate

    root = _generic_cases(tmp_path / "ds")
    big = np.zeros((256, 256, 8), np.float32)
    big[100:150, 100:150] = 5.0
    _write(root / "case2" / "dwi.nii.gz", big)
    _write(root / "case2" / "adc.nii.gz", big + 1.0)
    # 256 x 256 x 8 voxels need ~42 MB by the estimate; the small cases ~0.7 MB
    monkeypatch.setattr(validate, "available_memory", lambda: 8 * 2**20)
    results = _load_all(root)
    assert isinstance(results["case2"], InputError)
    assert re.search(
        r"needs about [\d.]+ GiB of memory and [\d.]+ GiB are free: crop or resample", str(results["case2"])
    )
    assert results["case1"].shape == SHAPE and results["case3"].shape == SHAPE
    monkeypatch.setattr(validate, "available_memory", lambda: None)  # unknown (not Linux): not checked
    assert not isinstance(_load_all(root)["case2"], InputError)


# ------------------------------------------------------------------------------------- FIFOs and devices


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifo_is_refused_without_opening_it(tmp_path) -> None:
    fifo = tmp_path / "case.nii.gz"
    os.mkfifo(fifo)
    link = tmp_path / "link.nii.gz"
    link.symlink_to(fifo)
    with _deadline():
        for path in (fifo, link):
            with pytest.raises(InputError, match=r"is not a regular file \(it is a FIFO"):
                load_volume(path)
        assert not is_prediction(fifo)
        (source,) = find_cases(fifo, modalities=("dwi", "adc"))
        with pytest.raises(InputError, match="not a regular file"):
            source.load()
    fifo.unlink()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifo_named_like_a_modality_fails_only_its_case(tmp_path) -> None:
    root = _generic_cases(tmp_path / "ds")
    (root / "case2" / "adc.nii.gz").unlink()
    os.mkfifo(root / "case2" / "adc.nii.gz")
    with _deadline():
        results = _load_all(root)
    assert sorted(results) == ["case1", "case2", "case3"]
    assert "adc.nii.gz is not a regular file (it is a FIFO" in str(results["case2"])
    assert results["case1"].shape == SHAPE and results["case3"].shape == SHAPE


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_device_is_refused() -> None:
    with _deadline(), pytest.raises(InputError, match=r"/dev/zero is not a regular file \(it is a character device"):
        load_volume("/dev/zero")


# ---------------------------------------------------------------------------------------------- data types


def test_complex_and_rgb_images_are_refused(tmp_path) -> None:
    complex_image = (_image() + 1j * _image(1)).astype(np.complex64)
    with pytest.raises(InputError, match="complex voxels of type complex64"):
        load_volume(_write(tmp_path / "dwi.nii.gz", complex_image))
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = 7
    with pytest.raises(InputError, match=r"structured \(e\.g\. RGB\) voxels"):
        load_volume(_write(tmp_path / "rgb.nii", rgb))
    with pytest.raises(InputError, match="complex voxels of type complex128"):
        check_image(complex_image.astype(np.complex128), "dwi")


def test_bool_label_is_fine_but_a_bool_image_is_refused() -> None:
    label = np.zeros(SHAPE, bool)
    label[3, 3, 3] = True
    data, warnings = check_label(label, "label")
    assert data.dtype == np.float32 and data.sum() == 1.0 and warnings == []
    with pytest.raises(InputError, match=r"dwi is a yes/no \(bool\) array, not an image"):
        case_from_arrays({"dwi": label, "adc": _image()}, np.eye(4), "arrays")  # gave an all-zero mask silently


def test_an_affine_whose_last_row_is_not_0_0_0_1_is_refused() -> None:
    affine = np.eye(4)
    affine[3] = [5.0, -3.0, 2.0, 7.0]  # was ignored without a word
    with pytest.raises(InputError, match="last row is 5 -3 2 7, not 0 0 0 1"):
        case_from_arrays({"dwi": _image(), "adc": _image(1)}, affine, "arrays")


# ------------------------------------------------------------------------------------------------- values


def test_mostly_infinite_dwi_is_refused(tmp_path) -> None:
    root = _generic_cases(tmp_path / "ds", n=1)
    dwi = _image()
    dwi.reshape(-1)[: dwi.size * 3 // 4] = np.inf
    _write(root / "case1" / "dwi.nii.gz", dwi)
    with pytest.raises(InputError, match=r"75\.0% of dwi \(.*dwi\.nii\.gz\) is infinite: the file is damaged"):
        read_case(root / "case1")


def test_few_infinite_voxels_are_repaired_with_a_warning_on_the_case(tmp_path) -> None:
    root = _generic_cases(tmp_path / "ds", n=1)
    dwi = _image()
    bad = np.random.default_rng(3).choice(dwi.size, size=dwi.size // 200, replace=False)  # 0.5 %
    dwi.reshape(-1)[bad[: len(bad) // 2]] = np.inf
    dwi.reshape(-1)[bad[len(bad) // 2 :]] = -np.inf
    _write(root / "case1" / "dwi.nii.gz", dwi)
    case = read_case(root / "case1")
    assert np.isfinite(case.images["dwi"]).all() and np.count_nonzero(case.images["dwi"] == 0) == len(bad)
    assert len(case.warnings) == 1
    assert "dwi (" in case.warnings[0] and f"{len(bad)} NaN/Inf voxels were set to 0 (0 NaN" in case.warnings[0]


def test_mostly_nan_adc_is_repaired_not_refused(tmp_path) -> None:
    # A masked ADC map: NaN outside the brain, often most of the volume.
    adc = _image()
    adc[:, :, :6] = np.nan
    data, warnings = check_image(adc, "adc")
    assert np.isfinite(data).all() and data[:, :, :6].max() == 0.0
    assert np.isnan(adc).sum() == 32 * 32 * 6  # the caller's array is never modified
    assert "(6144 NaN, 0 infinite; 75.0% of the image)" in warnings[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_absurdly_large_values_are_refused_with_a_clear_message(dtype, tmp_path) -> None:
    image = (_image() * 1e36).astype(dtype)  # ~1e38: float32 statistics would overflow
    message = r"holds values up to 1\.\d+e\+38, but no MRI or CTP map has values above 1e\+20"
    with pytest.raises(InputError, match=message):
        load_volume(_write(tmp_path / "big.nii.gz", image))
    with pytest.raises(InputError, match="no MRI or CTP map"):
        check_image(image.astype(np.float64) * 1e200, "dwi")  # beyond float32: checked before any cast


def test_empty_message_tells_the_truth_about_undefined_voxels() -> None:
    zeros = np.zeros(SHAPE, np.float32)
    with pytest.raises(InputError, match=r"dwi is empty \(every voxel is 0\)"):
        check_image(zeros, "dwi")
    zeros[0] = np.nan
    with pytest.raises(InputError, match=r"dwi is empty \(every finite voxel is 0; 256 NaN and 0 infinite"):
        check_image(zeros, "dwi")
    with pytest.raises(InputError, match=r"dwi holds no finite value \(8192 NaN and 0 infinite voxels\)"):
        check_image(np.full(SHAPE, np.nan, np.float32), "dwi")


def test_constant_image_is_refused_but_a_constant_mask_is_not(tmp_path) -> None:
    root = _generic_cases(tmp_path / "ds", n=1)
    _write(root / "case1" / "dwi.nii.gz", np.full(SHAPE, 5.0, np.float32))
    with pytest.raises(InputError, match=r"dwi \(.*\) is constant \(every voxel is 5\): it holds no image"):
        read_case(root / "case1")
    brain = _write(tmp_path / "brain.nii.gz", np.ones(SHAPE, np.uint8))  # a brain mask may cover everything
    case = read_case({"dwi": _write(tmp_path / "dwi.nii.gz", _image()), "brain_mask": brain})
    assert case.brain_mask is not None and case.brain_mask.all()


# ------------------------------------------------------------------------------------------- own outputs


def _segment_into(folder: Path, name: str, kind: str = "mask") -> Path:
    """Write an SDK output into ``folder`` as ``segment -o folder`` would (a full-brain "lesion")."""
    ref = load_volume(folder / "dwi.nii.gz")
    values = np.ones(ref.shape, np.uint8) if kind == "mask" else np.full(ref.shape, 0.9, np.float32)
    return save_like(values, ref, folder / name, output=kind)


@pytest.mark.parametrize("kind", ["mask", "prob"])
def test_save_like_marks_its_files(kind, tmp_path) -> None:
    source = _write(tmp_path / "dwi.nii.gz", _image())
    out = _segment_into(tmp_path, f"x_{kind}.nii.gz", kind)
    assert nib.load(out).header["descrip"].item().decode() == PREDICTION_MARK
    assert is_prediction(out) and not is_prediction(source)


@pytest.mark.parametrize("name", ["case1_seg.nii.gz", "case1_prob.nii.gz", "label.nii.gz", "seg.nii"])
def test_own_output_in_a_case_folder_is_never_the_label(name, tmp_path) -> None:
    root = _generic_cases(tmp_path / "ds", n=2)
    _segment_into(root / "case1", name, "prob" if "prob" in name else "mask")
    sources = {s.case_id: s for s in find_cases(root)}
    assert sources["case1"].label_path is None and sources["case1"].load().label is None
    # A real label (not ours) beside it is still found.
    label = np.zeros(SHAPE, np.uint8)
    label[4:6, 4:6, 3] = 1
    _write(root / "case2" / "lesion.nii.gz", label)
    assert {s.case_id: s for s in find_cases(root)}["case2"].label_path.name == "lesion.nii.gz"


def test_output_named_after_the_file_prefix_is_not_the_label(tmp_path) -> None:
    # segment -m dwi=p1/sub7_dwi.nii.gz ... names the case "sub7", whatever the folder is called.
    folder = tmp_path / "p1"
    _write(folder / "sub7_dwi.nii.gz", _image())
    _write(folder / "sub7_adc.nii.gz", _image(1))
    _write(folder / "sub7_seg.nii.gz", (_image() > 100).astype(np.uint8))  # unmarked: caught by its name
    (source,) = find_cases(folder)
    assert source.label_path is None


def test_marked_output_is_never_taken_as_a_modality(tmp_path) -> None:
    root = _generic_cases(tmp_path / "ds", n=1)
    _segment_into(root / "case1", "case1_adc.nii.gz")  # by its name alone, a second adc image
    (source,) = find_cases(root)
    assert source.paths["adc"].name == "adc.nii.gz"


def test_isles_readers_skip_marked_labels(tmp_path) -> None:
    subject = tmp_path / "isles22" / "rawdata" / "sub-strokecase0001" / "ses-0001" / "dwi"
    _write(subject / "sub-strokecase0001_ses-0001_dwi.nii.gz", _image())
    _write(subject / "sub-strokecase0001_ses-0001_adc.nii.gz", _image(1))
    derivatives = tmp_path / "isles22" / "derivatives" / "sub-strokecase0001" / "ses-0001"
    derivatives.mkdir(parents=True)
    ref = load_volume(subject / "sub-strokecase0001_ses-0001_dwi.nii.gz")
    save_like(np.ones(ref.shape, np.uint8), ref, derivatives / "sub-strokecase0001_ses-0001_msk.nii.gz")
    (source,) = find_cases(tmp_path / "isles22")
    assert source.case_id == "sub-strokecase0001" and source.label_path is None

    case = tmp_path / "isles18" / "TRAINING" / "case_1"
    for i, token in enumerate(("CT_CBF", "CT_CBV", "CT_MTT", "CT_Tmax")):
        name = f"SMIR.Brain.XX.O.{token}.{100 + i}"
        _write(case / name / f"{name}.nii", _image(i))
    ref = load_volume(case / "SMIR.Brain.XX.O.CT_CBF.100" / "SMIR.Brain.XX.O.CT_CBF.100.nii")
    (case / "SMIR.Brain.XX.O.OT.104").mkdir()
    save_like(np.ones(ref.shape, np.uint8), ref, case / "SMIR.Brain.XX.O.OT.104" / "SMIR.Brain.XX.O.OT.104.nii")
    (source,) = find_cases(tmp_path / "isles18")
    assert source.case_id == "case_1" and source.label_path is None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_itk_headers_that_name_data_files_this_check_cannot_see_are_refused(tmp_path) -> None:
    """A file list, a pattern, a name with spaces or a data-file line beyond the first MiB made ITK open a FIFO
    that the regular-file check never saw: the read blocked forever (SIGTERM did not end it). A name with spaces
    is one file: checked like any other."""
    pytest.importorskip("SimpleITK")
    header = "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_FLOAT\n"
    for name in ("fi fo.raw", "fifo1", "fifo2"):
        os.mkfifo(tmp_path / name)
    cases = {  # header -> (its data-file lines, the reason it is refused for)
        "space.mhd": ("ElementDataFile = fi fo.raw\n", "fi fo.raw is not a regular file"),
        "list.mhd": ("ElementDataFile = LIST 2D\nfifo1\n", "list or pattern of files"),
        "pattern.mhd": ("ElementDataFile = fifo%d 1 4 1\n", "list or pattern of files"),
        "long.mhd": ("Comment = " + "x" * (1 << 20) + "\nElementDataFile = fifo2\n", "no data-file line"),
    }
    for name, (tail, reason) in cases.items():
        (tmp_path / name).write_text(header + tail)
        with pytest.raises(InputError, match=reason):
            load_volume(tmp_path / name)
    sitk = pytest.importorskip("SimpleITK")  # a legitimate name with a space is one file: it loads
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(64, dtype=np.float32).reshape(4, 4, 4)), str(tmp_path / "a b.mhd"))
    assert "a b.raw" in (tmp_path / "a b.mhd").read_text()
    assert load_volume(tmp_path / "a b.mhd").shape == (4, 4, 4)


def test_a_brain_mask_that_is_no_brain_mask_is_said_or_refused(tmp_path) -> None:
    """The DWI itself, a probabilistic mask, or a mask of the whole field were taken without a word."""
    dwi = _write(tmp_path / "dwi.nii.gz", _image(1))
    adc = _write(tmp_path / "adc.nii.gz", _image(2))

    def warnings(mask: np.ndarray | Path) -> list[str]:
        path = mask if isinstance(mask, Path) else _write(tmp_path / "mask.nii.gz", mask)
        case = read_case({"dwi": dwi, "adc": adc, "brain_mask": path}, label=False)
        return [w for w in case.warnings if "brain mask" in w]

    with pytest.raises(InputError, match="is the dwi image itself; give a skull-stripping mask"):
        warnings(dwi)
    inner = np.zeros(SHAPE, np.float32)
    inner[1:-1, 1:-1] = 1.0
    assert warnings(inner) == []
    probabilistic = inner * np.linspace(0.2, 1.0, SHAPE[0])[:, None, None]
    assert ["holds several non-zero values" in w for w in warnings(probabilistic)] == [True]
    assert warnings(inner * 255) == warnings(-inner) == []  # one non-zero value: a mask
    assert ["covers the whole field of view" in w for w in warnings(np.ones(SHAPE, np.uint8))] == [True]
    with pytest.raises(InputError, match=r"brain mask .* is 4D \(.*, 2\); give one 3D mask"):  # was carried as 4D
        warnings(np.stack([inner, inner], axis=-1))


# ------------------------------------------------------------------------------------------ shifted intensities


def test_a_diffusion_map_shifted_off_zero_is_reported(tmp_path, ckpt_random) -> None:
    """DWI + 1000 (no signal stored as 1000) squashed the lesion contrast without a word (10 lesion voxels of 310
    on the real case); the report now says so. Zero, noisy or tissue borders and fill values near 0 do not warn
    (none of 121 own, OOD and real cases does)."""
    from mdanet_sdk import Segmenter
    from mdanet_sdk.data.normalize import head_region

    rng = np.random.default_rng(0)
    brain = np.zeros((40, 40, 6), np.float32)
    brain[8:32, 8:32] = rng.uniform(250.0, 350.0, (24, 24, 6))
    adc = np.where(brain > 0, 800.0, 0.0).astype(np.float32)
    for dwi, warned in (
        (brain + 1000.0, True),
        (brain, False),
        (brain + 5.0, False),
        (brain + rng.random(brain.shape), False),
    ):
        _, warnings = head_region([dwi, adc], None, ["dwi", "adc"])
        assert any("dwi image's background is a constant" in w for w in warnings) == warned, (warned, warnings)
    seg = Segmenter.from_checkpoint(ckpt_random(tmp_path / "m.pt", preprocess=None), tta=False)
    report = seg.predict_arrays({"dwi": brain + 1000.0, "adc": adc}, np.eye(4)).report
    assert [w for w in report.warnings if "constant 1000, not 0" in w]
