"""Tests of mdanet_sdk.data.cases and mdanet_sdk.data.layouts: ISLES'22 / ISLES'18 / generic readers on tiny
datasets written here.

Every image of the fake datasets holds ``10 * case number + modality index + 1`` in every voxel but one (0, as
a constant image is refused), so a test can tell which case and which modality each loaded array came from.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mdanet_sdk.config import MODALITY_GROUPS
from mdanet_sdk.data import cases, layouts
from mdanet_sdk.data.cases import FOURD_KEY, Case, CaseSource, read_case
from mdanet_sdk.data.layouts import LAYOUT_GROUPS, LAYOUT_MODALITIES, detect_layout, find_cases
from mdanet_sdk.data.nifti import save_like
from mdanet_sdk.errors import InputError

SHAPE = (8, 8, 3)
ISLES18_TOKENS = ("CT_CBF", "CT_CBV", "CT_MTT", "CT_Tmax", "CT")  # cbf, cbv, mtt, tmax, ct
EXAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "isles22-example"


def _value(case: int, index: int) -> float:
    return 10.0 * case + index + 1


def _image(value: float, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """``value`` everywhere but in the last voxel, which is 0: a constant modality image would be refused."""
    image = np.full(shape, value, np.float32)
    image[(-1,) * len(shape)] = 0.0
    return image


def _holds(image: np.ndarray, value: float) -> bool:
    """Whether a loaded image is ``_image(value)``, in any voxel order."""
    return image.max() == value and np.count_nonzero(image == value) == image.size - 1


def _ramp(shape: tuple[int, ...]) -> np.ndarray:
    return np.arange(1, np.prod(shape) + 1, dtype=np.float32).reshape(shape)


def _label(case: int) -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    label[case % SHAPE[0], 1:3, 1] = 1  # where the lesion sits tells the cases apart
    return label


def _isles22(root: Path, write, cases=(1, 2, 10), *, flat=False, rawdata=True, affine=None) -> Path:
    """ISLES'22 BIDS layout; ``flat`` puts images in ses-0001/ directly, ``rawdata=False`` drops rawdata/."""
    base = root / "rawdata" if rawdata else root
    for n in cases:
        sub = f"sub-strokecase{n:04d}"
        session = base / sub / "ses-0001"
        for i, modality in enumerate(("dwi", "adc")):
            image = _image(_value(n, i))
            write((session if flat else session / "dwi") / f"{sub}_ses-0001_{modality}.nii.gz", image, affine)
        write(session / "anat" / f"{sub}_ses-0001_FLAIR.nii.gz", _ramp((5, 6, 7)))  # ignored
        write(root / "derivatives" / sub / "ses-0001" / f"{sub}_ses-0001_msk.nii.gz", _label(n), affine)
    return root


def _isles18(root: Path, write, split="TRAINING", cases=(1, 2, 10), *, labels=True) -> Path:
    """ISLES'18 SMIR layout: case_N/SMIR.Brain.XX.O.<token>.<id>/SMIR.Brain.XX.O.<token>.<id>.nii."""
    for n in cases:
        folder = root / split / f"case_{n}"
        tokens = {token: _image(_value(n, i)) for i, token in enumerate(ISLES18_TOKENS)}
        tokens["CT_4DPWI"] = _ramp((*SHAPE, 5))
        if labels:
            tokens["OT"] = _label(n)
        for i, (token, image) in enumerate(tokens.items()):
            name = f"SMIR.Brain.XX.O.{token}.{1000 * n + i}"
            write(folder / name / f"{name}.nii", image)
    return root


# ------------------------------------------------------------------------------------------------ ISLES'22


@pytest.mark.parametrize("entry", ["root", "rawdata", "subject"])
def test_isles22_entry_points_find_the_cases(entry, tmp_path, io_write_nifti) -> None:
    root = _isles22(tmp_path / "ISLES-2022", io_write_nifti)
    # A macOS resource fork beside a real image must not count as a second DWI.
    (root / "rawdata/sub-strokecase0002/ses-0001/dwi/._sub-strokecase0002_dwi.nii.gz").write_bytes(b"")
    path = {"root": root, "rawdata": root / "rawdata", "subject": root / "rawdata/sub-strokecase0010"}[entry]
    assert detect_layout(path) == "isles22"
    sources = find_cases(path)
    numbers = (10,) if entry == "subject" else (1, 2, 10)
    assert [s.case_id for s in sources] == [f"sub-strokecase{n:04d}" for n in numbers]
    for source in sources:
        assert source.paths["dwi"].name == f"{source.case_id}_ses-0001_dwi.nii.gz"
        assert source.paths["adc"].name == f"{source.case_id}_ses-0001_adc.nii.gz"
        assert source.label_path == root / "derivatives" / source.case_id / "ses-0001" / (
            f"{source.case_id}_ses-0001_msk.nii.gz"
        )


@pytest.mark.parametrize(("flat", "rawdata"), [(False, True), (True, True), (True, False)])
def test_isles22_reads_the_right_file_for_each_modality(flat, rawdata, tmp_path, io_write_nifti) -> None:
    root = _isles22(tmp_path, io_write_nifti, flat=flat, rawdata=rawdata)
    cases = [s.load() for s in find_cases(root, layout="isles22")]
    assert [c.case_id for c in cases] == ["sub-strokecase0001", "sub-strokecase0002", "sub-strokecase0010"]
    for n, case in zip((1, 2, 10), cases):
        assert case.modalities == ("dwi", "adc") and case.shape == SHAPE
        assert _holds(case.images["dwi"], _value(n, 0)) and _holds(case.images["adc"], _value(n, 1))
        assert case.images["dwi"].dtype == np.float32
        assert case.label is not None and case.label.dtype == np.uint8
        np.testing.assert_array_equal(case.label, _label(n))
        assert case.warnings == []


def test_isles22_flair_on_request_is_checked_against_the_grid(tmp_path, io_write_nifti) -> None:
    root = _isles22(tmp_path, io_write_nifti, cases=(3,))
    with pytest.raises(InputError, match=r"flair image .* has shape \(5, 6, 7\)"):
        read_case(root, modalities=("dwi", "flair"))


def test_lps_case_writes_results_back_voxel_for_voxel(tmp_path, io_write_nifti) -> None:
    lps = np.diag([-1.0, -1.0, 2.0, 1.0])
    lps[:3, 3] = (40.0, 30.0, -10.0)
    root = _isles22(tmp_path / "ds", io_write_nifti, cases=(5,), affine=lps)
    case = read_case(root / "rawdata" / "sub-strokecase0005")
    assert case.reference.orientation == ("L", "P", "S")
    assert nib.aff2axcodes(case.reference.affine) == ("R", "A", "S")
    np.testing.assert_array_equal(case.label, _label(5)[::-1, ::-1, :])  # canonical: X and Y flipped
    out = save_like(case.label, case.reference, tmp_path / "pred.nii.gz")
    written = nib.load(out)
    np.testing.assert_array_equal(np.asarray(written.dataobj), _label(5))
    np.testing.assert_array_equal(written.affine, lps)


# ------------------------------------------------------------------------------------------------ ISLES'18


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("root", ["testing_case_1", "training_case_1", "training_case_2", "training_case_10"]),
        ("TRAINING", ["case_1", "case_2", "case_10"]),
        ("TRAINING/case_2", ["case_2"]),
        ("TESTING", ["case_1"]),
    ],
)
def test_isles18_entry_points_find_the_cases(entry, expected, tmp_path, io_write_nifti) -> None:
    root = _isles18(tmp_path / "ISLES2018", io_write_nifti)
    _isles18(root, io_write_nifti, split="TESTING", cases=(1,), labels=False)
    path = root if entry == "root" else root / entry
    assert detect_layout(path) == "isles18"
    sources = find_cases(path)
    assert [s.case_id for s in sources] == expected
    for source in sources:
        assert source.paths["tmax"].name.startswith("SMIR.Brain.XX.O.CT_Tmax.")
        has_label = entry != "TESTING" and not source.case_id.startswith("testing")
        assert (source.label_path is not None) == has_label


def test_isles18_reads_the_right_file_for_each_modality(tmp_path, io_write_nifti) -> None:
    root = _isles18(tmp_path, io_write_nifti)
    cases = [s.load() for s in find_cases(root / "TRAINING", layout="isles18")]
    for n, case in zip((1, 2, 10), cases):
        assert case.modalities == ("cbf", "cbv", "mtt", "tmax")
        for i, modality in enumerate(case.modalities):
            assert _holds(case.images[modality], _value(n, i)), modality
        np.testing.assert_array_equal(case.label, _label(n))
        assert case.stack(LAYOUT_GROUPS["isles18"][1]).shape == (2, *SHAPE)
    ct = read_case(root / "TRAINING" / "case_2", modalities=("ct", "cbf"))
    assert ct.modalities == ("ct", "cbf") and _holds(ct.images["ct"], _value(2, 4))


def test_isles18_4d_perfusion_on_request_is_refused(tmp_path, io_write_nifti) -> None:
    root = _isles18(tmp_path, io_write_nifti, cases=(1,))
    with pytest.raises(InputError, match=r"the pwi file .* is 4D \(8, 8, 3, 5\)"):
        read_case(root, modalities=("pwi",))


# ------------------------------------------------------------------------------------------------- generic


def test_generic_4d_file_in_declared_order(tmp_path, io_write_nifti) -> None:
    data = np.stack([_image(3), _image(4)], axis=-1)
    path = io_write_nifti(tmp_path / "case7.nii.gz", data)
    assert detect_layout(path) == "generic"
    case = read_case(path, modalities=("adc", "dwi"))
    assert case.case_id == "case7" and case.modalities == ("adc", "dwi") and case.label is None
    assert _holds(case.images["adc"], 3) and _holds(case.images["dwi"], 4)
    assert case.reference.original_shape == SHAPE and case.reference.data.shape == SHAPE
    stacked = case.stack(["dwi", "adc"])
    assert stacked.shape == (2, *SHAPE) and stacked.dtype == np.float32
    assert stacked[:, 0, 0, 0].tolist() == [4.0, 3.0]


def test_generic_mapping_and_named_files(tmp_path, io_write_nifti) -> None:
    for i, name in enumerate(("cbf", "cbv", "mtt", "tmax")):
        io_write_nifti(tmp_path / "p1" / f"p1_{name}.nii.gz", _image(_value(1, i)))
        io_write_nifti(tmp_path / "p2" / f"{name.upper()}.nii", _image(_value(2, i)))
    io_write_nifti(tmp_path / "p2" / "Lesion.nii.gz", _label(2))  # "mask"/"seg" would not be a label
    (tmp_path / "notes").mkdir()
    sources = find_cases(tmp_path, layout="generic")
    assert [(s.case_id, s.modalities, s.label_path is not None) for s in sources] == [
        ("p1", LAYOUT_MODALITIES["isles18"], False),
        ("p2", LAYOUT_MODALITIES["isles18"], True),
    ]
    assert _holds(sources[1].load().images["tmax"], _value(2, 3))
    mapping = {"adc": tmp_path / "p1" / "p1_cbv.nii.gz", "dwi": tmp_path / "p1" / "p1_cbf.nii.gz"}
    case = read_case({**mapping, "label": tmp_path / "p2" / "Lesion.nii.gz"}, case_id="mine")
    assert case.case_id == "mine" and case.modalities == ("adc", "dwi")
    assert _holds(case.images["adc"], _value(1, 1)) and case.label.sum() == 2


def test_layout_modalities_follow_the_model_groups() -> None:
    assert LAYOUT_MODALITIES == {"isles22": ("dwi", "adc"), "isles18": ("cbf", "cbv", "mtt", "tmax")}
    assert LAYOUT_GROUPS == {"isles22": MODALITY_GROUPS["mri"], "isles18": MODALITY_GROUPS["ctp"]}


def test_layout_finders_stay_importable_from_cases() -> None:
    for name in ("find_cases", "detect_layout", "LAYOUTS", "LAYOUT_GROUPS", "LAYOUT_MODALITIES"):
        assert getattr(cases, name) is getattr(layouts, name)
    with pytest.raises(AttributeError):
        cases.no_such_name  # noqa: B018


def test_mapping_case_id_drops_any_nifti_suffix_and_the_modality(tmp_path, io_write_nifti) -> None:
    io_write_nifti(tmp_path / "Scan7_DWI.NII.GZ", _image(_value(1, 0)))
    assert read_case({"dwi": tmp_path / "Scan7_DWI.NII.GZ"}).case_id == "Scan7"


def test_a_mapping_is_one_case_however_it_is_given(tmp_path, io_write_nifti) -> None:
    """segment, Segmenter.predict and read_case read a mapping alike (they named one case three ways, and segment
    took ``label`` for an image)."""
    from mdanet_sdk.data.cases import mapping_source
    from mdanet_sdk.inference.planning import plan_jobs

    for name, i in (("dwi", 0), ("adc", 1)):
        io_write_nifti(tmp_path / "sub-7" / f"sub-7_{name}.nii.gz", _image(_value(7, i)))
    io_write_nifti(tmp_path / "sub-7" / "brain.nii.gz", np.ones(SHAPE, np.uint8))
    io_write_nifti(tmp_path / "sub-7" / "lesion.nii.gz", _label(7))
    files = {m: tmp_path / "sub-7" / f"sub-7_{m}.nii.gz" for m in ("dwi", "adc")}
    mapping = {"DWI": files["dwi"], "adc": files["adc"], "Mask": tmp_path / "sub-7" / "brain.nii.gz"}
    mapping["label"] = tmp_path / "sub-7" / "lesion.nii.gz"
    source = mapping_source(mapping)
    assert (source.case_id, tuple(source.paths), source.brain_mask_path) == ("sub-7", ("dwi", "adc"), mapping["Mask"])
    assert source.label_path == mapping["label"]
    (job,) = plan_jobs([mapping], None, ("dwi", "adc"))
    assert job.error is None and job.case_id == "sub-7" and tuple(job.source.paths) == ("dwi", "adc")
    case = read_case(mapping, label=False)
    assert case.case_id == "sub-7" and case.label is None and case.brain_mask is not None
    named_by_folder = {"dwi": tmp_path / "sub-8" / "dwi.nii.gz"}
    assert mapping_source(named_by_folder).case_id == "sub-8"
    with pytest.raises(InputError, match="names brain_mask twice"):
        mapping_source({**files, "mask": mapping["Mask"], "brain_mask": mapping["Mask"]})
    # A mapping of a brain mask alone fails its case, not the run (it stopped every case before).
    bad, good = plan_jobs([{"mask": mapping["Mask"]}, files], None, ("dwi", "adc"))
    assert "names no image" in str(bad.error) and good.error is None and good.case_id == "sub-7"


# ---------------------------------------------------------------------------------------------- validation


def _drop(path: Path) -> None:
    path.unlink()


SUBJECT = "rawdata/sub-strokecase0001/ses-0001"
ADC = f"{SUBJECT}/dwi/sub-strokecase0001_ses-0001_adc.nii.gz"


def _with_adc(root: Path, write, data: np.ndarray, affine=None) -> None:
    write(root / ADC, data, affine)


def _with_label(root: Path, write, data: np.ndarray) -> None:
    label = root / "derivatives/sub-strokecase0001/ses-0001/sub-strokecase0001_ses-0001_msk.nii.gz"
    write(label, data)


SHIFTED = np.diag([1.0, 1.0, 1.0, 1.0])
SHIFTED[0, 3] = 2e-3  # beyond the 1e-3 mm tolerance


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda r, w: _drop(r / ADC), r"no adc image .*_adc\.nii"),
        (lambda r, w: w(r / SUBJECT / "x/sub-strokecase0001_run-2_dwi.nii", np.ones(SHAPE)), "several dwi"),
        (lambda r, w: _with_adc(r, w, _ramp((8, 8, 4))), r"adc image .* has shape \(8, 8, 4\)"),
        (lambda r, w: _with_adc(r, w, _ramp(SHAPE), SHIFTED), r"affine .* by 0\.002 mm"),
        (lambda r, w: _with_adc(r, w, np.zeros(SHAPE, np.float32)), "is empty"),
        (lambda r, w: _with_adc(r, w, _ramp((*SHAPE, 2))), r"adc file .* is 4D"),
        (lambda r, w: (r / ADC).write_bytes(b"x"), "not a gzip"),
        (lambda r, w: _with_label(r, w, _label(1) * 2), r"values other than 0 and 1 \(0, 2\)"),
        (lambda r, w: _with_label(r, w, np.ones((*SHAPE, 2))), r"label .* is 4D"),
        (lambda r, w: _with_label(r, w, np.ones((8, 8, 5))), r"label .* has shape \(8, 8, 5\)"),
    ],
    ids=[
        "missing-modality",
        "ambiguous-modality",
        "shape-mismatch",
        "affine-mismatch",
        "empty-image",
        "4d-modality-file",
        "corrupt-gzip",
        "label-values",
        "label-4d",
        "label-shape",
    ],
)
def test_invalid_cases_raise_input_error(spoil, message, tmp_path, io_write_nifti) -> None:
    root = _isles22(tmp_path, io_write_nifti, cases=(1,))
    spoil(root, io_write_nifti)
    with pytest.raises(InputError, match=message):
        read_case(root)


def test_affines_within_tolerance_are_accepted(tmp_path, io_write_nifti) -> None:
    root = _isles22(tmp_path, io_write_nifti, cases=(1,))
    nearly = np.eye(4)
    nearly[:3, 3] = 5e-4
    _with_adc(root, io_write_nifti, _ramp(SHAPE), nearly)
    assert read_case(root).shape == SHAPE


def test_nan_voxels_are_zeroed_and_reported_on_the_case(tmp_path, io_write_nifti) -> None:
    root = _isles22(tmp_path, io_write_nifti, cases=(1,))
    adc = _image(2.0)
    adc[0, 0, :] = np.nan
    adc[1, 1, 1] = np.inf
    _with_adc(root, io_write_nifti, adc)
    case = read_case(root)
    assert case.images["adc"][0, 0].tolist() == [0.0, 0.0, 0.0] and case.images["adc"][1, 1, 1] == 0.0
    assert case.images["adc"].sum() == pytest.approx(2.0 * (np.prod(SHAPE) - 5))
    assert len(case.warnings) == 1 and "4 NaN/Inf voxels were set to 0" in case.warnings[0]


def test_a_label_with_nan_voxels_is_refused(tmp_path, io_write_nifti) -> None:
    """NaN in a label (a float mask written by a tool that marks "unknown") used to be read as background,
    while evaluate refused NaN in a prediction."""
    root = _isles22(tmp_path, io_write_nifti, cases=(1,))
    label = np.zeros(SHAPE, np.float32)
    label[2:4, 2:4, 1] = 1.0
    label[0, 0, :] = np.nan
    _with_label(root, io_write_nifti, label)
    with pytest.raises(InputError, match=r"msk\.nii\.gz: 3 NaN/Inf voxels were set to 0 .*Give a label of 0 and 1"):
        read_case(root)


def test_missing_isles18_map_names_its_file_token(tmp_path, io_write_nifti) -> None:
    root = _isles18(tmp_path, io_write_nifti, cases=(4,))
    for path in (root / "TRAINING" / "case_4").glob("*CT_Tmax*/*.nii"):
        path.unlink()
    (source,) = find_cases(root)  # found, and broken: loading it says why (the others of a dataset go on)
    assert source.problem is not None
    with pytest.raises(InputError, match=r"case case_4: no tmax image .*SMIR\.\*\.CT_Tmax\.\*\.nii"):
        source.load()


@pytest.mark.parametrize(
    ("modalities", "data", "message"),
    [
        (None, np.ones((*SHAPE, 2)), r"say which is on each volume .* modalities=\("),
        (("dwi", "adc", "flair"), _ramp((*SHAPE, 2)), "holds 2 volumes on its last axis but 3 modalities"),
        (("dwi", "adc"), np.stack([_ramp(SHAPE), np.zeros(SHAPE)], -1), "the adc volume of .* is empty"),
        (("dwi", "adc"), np.stack([_ramp(SHAPE), np.full(SHAPE, 7)], -1), r"adc volume .* constant \(every voxel is 7"),
        (("dwi", "dwi"), np.ones((*SHAPE, 2)), "modalities must be distinct"),
    ],
    ids=["no-modalities", "count-mismatch", "empty-channel", "constant-channel", "duplicate-names"],
)
def test_invalid_4d_inputs(modalities, data, message, tmp_path, io_write_nifti) -> None:
    path = io_write_nifti(tmp_path / "x.nii.gz", data.astype(np.float32))
    with pytest.raises(InputError, match=message):
        read_case(path, modalities=modalities)


def test_wrong_paths_and_arguments(tmp_path, io_write_nifti) -> None:
    _isles22(tmp_path / "ds", io_write_nifti)
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    subject = tmp_path / "ds/rawdata/sub-strokecase0002"
    checks = [
        (lambda: find_cases(tmp_path / "ds", layout="bids"), "unknown layout 'bids'"),
        (lambda: find_cases(tmp_path / "nowhere"), "does not exist"),
        (lambda: find_cases(tmp_path / "nowhere", layout="isles18"), "does not exist"),
        (lambda: find_cases(tmp_path / "empty"), "no generic cases found in"),
        (lambda: find_cases(tmp_path / "empty", modalities=("cbf", "tmax")), r"no case with cbf, tmax found in"),
        (lambda: find_cases(tmp_path / "empty", layout="isles18"), "no isles18 cases found"),
        (lambda: find_cases(tmp_path / "notes.txt", layout="isles22"), "is not a folder"),
        (lambda: find_cases(tmp_path / "notes.txt"), r"not a \.nii, \.nii\.gz, \.mha"),
        (lambda: read_case(tmp_path / "ds"), "holds 3 cases"),
        (lambda: read_case({"label": tmp_path / "x.nii"}), "the mapping names no image"),
        (lambda: read_case({"dwi": tmp_path / "missing.nii.gz"}), "does not exist"),
        (lambda: read_case(subject).stack(["cbf"]), "has no 'cbf' image"),
        (lambda: read_case(subject).stack([]), "no modalities requested"),
        (lambda: CaseSource("c", {"dwi": subject}, modalities=("dwi", "adc")).load(), "no adc image"),
    ]
    for call, message in checks:
        with pytest.raises(InputError, match=message):
            call()


def test_finding_reads_no_voxels(tmp_path, io_write_nifti) -> None:
    root = _isles22(tmp_path, io_write_nifti, cases=(1,))
    adc = root / ADC
    adc.write_bytes(b"corrupt")  # only load() may notice
    (source,) = find_cases(root)
    assert source.paths["adc"] == adc and FOURD_KEY not in source.paths
    with pytest.raises(InputError, match="not a gzip"):
        source.load()


# ------------------------------------------------------------------------------------- the real ISLES'22 case


@pytest.mark.skipif(not EXAMPLE.is_dir(), reason="shared/data/isles22-example is not available")
@pytest.mark.parametrize("entry", ["", "rawdata", "rawdata/sub-strokecase0001"])
def test_real_isles22_example_reads_from_every_entry_point(entry, tmp_path) -> None:
    case: Case = read_case(EXAMPLE / entry)
    assert case.case_id == "sub-strokecase0001" and case.modalities == ("dwi", "adc")
    assert case.shape == (112, 112, 73) and case.warnings == []
    # The expert mask under derivatives/ is found from every entry point (beside rawdata/ or one level up).
    assert case.label is not None and case.label.dtype == np.uint8
    assert set(np.unique(case.label).tolist()) == {0, 1} and int(case.label.sum()) == 835
    assert case.reference.orientation == ("L", "A", "S")
    assert case.reference.zooms == pytest.approx((2.0, 2.0, 2.0), abs=1e-4)
    assert 1.0 < float(case.images["adc"].max()) < 10.0  # ADC in 1e-3 mm²/s: units are kept as stored
    assert float(case.images["dwi"].max()) > 100.0
    mask = (case.images["dwi"] > 200).astype(np.uint8)
    written = nib.load(save_like(mask, case.reference, tmp_path / "m.nii.gz"))
    source = nib.load(case.reference.path)
    assert int(written.header["qform_code"]) == 2 and int(written.header["sform_code"]) == 1
    np.testing.assert_array_equal(written.affine, source.affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj), (source.get_fdata() > 200).astype(np.uint8))
