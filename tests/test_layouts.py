"""Tests of the dataset layouts beyond ISLES'22/'18 (mdanet_sdk.data.layouts): nnU-Net folders, flat folders, BIDS
sessions, which names are labels and brain masks, label patterns, broken cases among good ones (images from
:mod:`layout_images`)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mdanet_sdk.data.cases import read_case
from mdanet_sdk.data.layouts import LAYOUTS, detect_layout, find_cases
from mdanet_sdk.data.layouts.nnunet import channel_name
from mdanet_sdk.data.nifti import load_volume, nifti_stem, output_name, save_like
from mdanet_sdk.errors import InputError
from layout_images import MRI, SHAPE
from layout_images import holds as _holds
from layout_images import image as _image
from layout_images import label as _label
from layout_images import write as _write


# --------------------------------------------------------------------------------------------- flat folders


def _flat(root: Path) -> Path:
    """sub01 (label, BET brain mask), sub02 (a *_mask brain mask), sub03 (no ADC: broken), and clutter."""
    for n in (1, 2, 3):
        for i, modality in enumerate(MRI):
            if (n, modality) != (3, "adc"):
                _write(root / f"sub0{n}_{modality}.nii.gz", _image(10 * n + i + 1))
    _write(root / "sub01_lesion.nii.gz", _label(1))
    _write(root / "sub01_dwi_brain_mask.nii.gz", np.ones(SHAPE, np.uint8))
    _write(root / "sub02_mask.nii.gz", np.ones(SHAPE, np.uint8))
    (root / "._sub01_dwi.nii.gz").write_bytes(b"")  # a macOS resource fork
    (root / "notes [v2].txt").write_text("not an image")
    (root / "empty").mkdir()
    (root / "loop").symlink_to(root, target_is_directory=True)
    return root


def test_flat_folder_is_one_case_per_prefix(tmp_path) -> None:
    root = _flat(tmp_path / "flat")
    assert detect_layout(root) == "flat"
    sources = find_cases(root)
    assert [s.case_id for s in sources] == ["sub01", "sub02", "sub03"]
    one, two, three = sources
    assert one.paths == {m: root / f"sub01_{m}.nii.gz" for m in MRI} and one.modalities == MRI
    assert one.label_path == root / "sub01_lesion.nii.gz"
    assert one.brain_mask_path == root / "sub01_dwi_brain_mask.nii.gz"
    assert two.label_path is None and two.brain_mask_path == root / "sub02_mask.nii.gz"
    assert one.problem is None and two.problem is None
    assert three.problem is not None and "no adc image" in three.problem
    case = one.load()
    assert _holds(case.images["dwi"], 11) and _holds(case.images["adc"], 12)
    assert case.label is not None and int(case.label.sum()) == 2 and case.brain_mask is not None
    assert _holds(two.load().images["adc"], 22)
    with pytest.raises(InputError, match="case sub03: no adc image"):
        three.load()
    assert find_cases(root, layout="flat") == sources and find_cases(root, layout="generic") == sources


def test_one_prefix_folder_stays_one_case(tmp_path) -> None:
    folder = tmp_path / "patient7"
    for i, m in enumerate(MRI):
        _write(folder / f"p7_{m}.nii.gz", _image(i + 1))
    _write(folder / "label.nii.gz", _label(7))
    assert detect_layout(folder) == "generic"
    (source,) = find_cases(folder)
    assert source.case_id == "patient7" and source.label_path == folder / "label.nii.gz"
    (explicit,) = find_cases(folder, layout="flat")  # asked for: one case per prefix, named by it
    assert explicit.case_id == "p7" and explicit.label_path is None  # "label" has no prefix p7


def test_flat_folder_outputs_are_not_cases_or_labels(tmp_path) -> None:
    root = _flat(tmp_path)
    reference = load_volume(root / "sub01_dwi.nii.gz")
    save_like(np.ones(SHAPE, np.uint8), reference, root / output_name("sub01"))
    save_like(np.ones(SHAPE, np.uint8), reference, root / "sub02_lesion.nii.gz")  # a renamed prediction
    sources = find_cases(root)
    assert [s.case_id for s in sources] == ["sub01", "sub02", "sub03"]
    assert sources[1].label_path is None


# ------------------------------------------------------------------------------ labels and brain masks


@pytest.mark.parametrize(
    ("name", "meaning"),
    [
        ("label.nii.gz", "label"),
        ("Lesion.nii", "label"),
        ("case7_label.nii.gz", "label"),
        ("case7_lesion_mask.nii.gz", "label"),
        ("case7_mask.nii.gz", "brain_mask"),
        ("case7_brain_mask.nii.gz", "brain_mask"),
        ("dwi_brainmask.nii.gz", "brain_mask"),
        ("brainmask.nii.gz", "brain_mask"),
        ("case7_bet_mask.nii.gz", "brain_mask"),
        ("mask.nii.gz", None),
        ("seg.nii.gz", None),
        ("case7_msk.nii.gz", None),
        ("case7_seg.nii.gz", None),
    ],
)
def test_what_a_name_means_in_a_case_folder(name, meaning, tmp_path) -> None:
    folder = tmp_path / "case7"
    for i, m in enumerate(MRI):
        _write(folder / f"{m}.nii.gz", _image(i + 1))
    _write(folder / name, _label(1))
    (source,) = find_cases(folder)
    assert source.problem is None and set(source.paths) == set(MRI)
    assert source.label_path == (folder / name if meaning == "label" else None)
    assert source.brain_mask_path == (folder / name if meaning == "brain_mask" else None)


def test_two_brain_masks_make_a_broken_case(tmp_path) -> None:
    for i, m in enumerate(MRI):
        _write(tmp_path / "c" / f"{m}.nii.gz", _image(i + 1))
        _write(tmp_path / "c" / f"{m}_brain_mask.nii.gz", np.ones(SHAPE, np.uint8))
    (source,) = find_cases(tmp_path / "c")
    assert source.problem is not None and "several brain mask files" in source.problem


def test_load_without_label_reads_no_label_file(tmp_path) -> None:
    folder = tmp_path / "c"
    for i, m in enumerate(MRI):
        _write(folder / f"{m}.nii.gz", _image(i + 1))
    (folder / "label.nii.gz").write_bytes(b"not a nifti")
    (source,) = find_cases(folder)
    case = source.load(label=False)
    assert case.label is None and _holds(case.images["adc"], 2)
    with pytest.raises(InputError, match="label.nii.gz is not a readable NIfTI"):
        source.load()


def test_label_pattern(tmp_path) -> None:
    root = tmp_path / "ds"
    for n in (1, 2):
        for i, m in enumerate(MRI):
            _write(root / "cases" / f"c{n}" / f"{m}.nii.gz", _image(10 * n + i + 1))
        _write(root / "cases" / f"c{n}" / f"c{n}_seg.nii.gz", _label(n))
        _write(root / "cases" / f"c{n}" / "label.nii.gz", _label(5))  # the default name, ignored with a pattern
        _write(root / "labels" / f"c{n}.nii.gz", _label(n + 2))
    sources = find_cases(root / "cases", label_pattern="*_seg.nii.gz")
    assert [s.label_path for s in sources] == [root / "cases" / f"c{n}" / f"c{n}_seg.nii.gz" for n in (1, 2)]
    np.testing.assert_array_equal(sources[1].load().label, _label(2))
    by_id = find_cases(root / "cases", label_pattern="../../labels/{case}.nii.gz")
    assert [s.label_path.name for s in by_id] == ["c1.nii.gz", "c2.nii.gz"]
    case = read_case(root / "cases" / "c2", label_pattern="../../labels/{case}.nii.gz")
    np.testing.assert_array_equal(case.label, _label(4))
    assert [s.label_path for s in find_cases(root / "cases", label_pattern="nothing*.nii")] == [None, None]
    several = find_cases(root / "cases", label_pattern="*l*.nii.gz")  # label.nii.gz and ... none else: one
    assert [s.label_path.name for s in several if s.label_path] == ["label.nii.gz"] * 2
    assert all(s.label_problem is None for s in several)
    broken = find_cases(root / "cases", label_pattern="*.nii.gz")  # matches the seg and the label file
    assert all(s.label_problem is not None and "matches several files" in s.label_problem for s in broken)
    assert all(s.problem is None for s in broken)  # the images can still be segmented
    with pytest.raises(InputError, match="matches several files"):
        broken[0].load()
    assert broken[0].load(label=False).label is None
    # A prediction of ours never becomes ground truth, whatever the pattern.
    reference = load_volume(root / "cases/c1/dwi.nii.gz")
    save_like(_label(1), reference, root / "cases/c1/c1_pred.nii.gz")
    assert find_cases(root / "cases", label_pattern="*_pred.nii.gz")[0].label_path is None


# ------------------------------------------------------------------------------------------------- nnU-Net


def _nnunet(root: Path, meta: dict | None) -> Path:
    if meta is not None:
        root.mkdir(parents=True, exist_ok=True)
        (root / "dataset.json").write_text(json.dumps(meta))
    for split, n in (("imagesTr", 1), ("imagesTr", 2), ("imagesTs", 3), ("imagesTr", 4)):
        for i in range(2):
            if (n, i) != (4, 1):  # case 4 lacks its second channel
                _write(root / split / f"stroke_{n:03d}_{i:04d}.nii.gz", _image(10 * n + i + 1))
    for n in (1, 2):
        _write(root / "labelsTr" / f"stroke_{n:03d}.nii.gz", _label(n))
    return root


@pytest.mark.parametrize(
    "meta",
    [
        {"channel_names": {"0": "DWI", "1": "ADC"}, "labels": {"background": 0, "lesion": 1}},
        {"modality": {"0": "b1000", "1": "adc"}},
    ],
    ids=["v2", "v1"],
)
def test_nnunet_dataset(meta, tmp_path) -> None:
    root = _nnunet(tmp_path / "Dataset501_Stroke", meta)
    assert detect_layout(root) == "nnunet" and "nnunet" in LAYOUTS
    sources = find_cases(root)
    assert [s.case_id for s in sources] == ["stroke_001", "stroke_002", "stroke_003", "stroke_004"]
    first, second, test, broken = sources
    assert first.modalities == MRI and first.paths == {
        "dwi": root / "imagesTr/stroke_001_0000.nii.gz",
        "adc": root / "imagesTr/stroke_001_0001.nii.gz",
    }
    assert first.label_path == root / "labelsTr/stroke_001.nii.gz" and test.label_path is None
    assert broken.problem is not None and "stroke_004_0001.nii.gz" in broken.problem
    case = second.load()
    assert _holds(case.images["dwi"], 21) and _holds(case.images["adc"], 22) and int(case.label.sum()) == 2
    assert [s.case_id for s in find_cases(root / "imagesTs")] == ["stroke_003"]
    (adc_only,) = find_cases(root / "imagesTs", modalities=["ADC"])  # channels chosen by name
    assert adc_only.paths == {"adc": root / "imagesTs/stroke_003_0001.nii.gz"}
    with pytest.raises(InputError, match="names the channels dwi, adc, not cbf"):
        find_cases(root, modalities=["cbf"])


def test_nnunet_without_dataset_json_needs_the_channel_order(tmp_path) -> None:
    images = _nnunet(tmp_path, None) / "imagesTr"
    assert detect_layout(images) == "nnunet"
    with pytest.raises(InputError, match="without dataset.json.*--modalities"):
        find_cases(images)
    sources = find_cases(images, modalities=["adc", "dwi"])  # channel 0 is read as adc, as asked
    assert sources[0].paths["adc"].name == "stroke_001_0000.nii.gz" and sources[0].modalities == ("adc", "dwi")
    (one,) = [s for s in find_cases(images, modalities=["dwi"]) if s.case_id == "stroke_001"]
    assert one.problem is not None and "holds channel 0001 but 1 modalities" in one.problem


def test_nnunet_broken_dataset_json(tmp_path) -> None:
    root = _nnunet(tmp_path, None)
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(InputError, match="not a readable nnU-Net dataset.json"):
        find_cases(root)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "DWI", "1": "dwi"}}))
    with pytest.raises(InputError, match="names one channel twice"):
        find_cases(root)


def test_channel_names() -> None:
    names = ["DWI", "b1000", "ADC", "CBF", "CBV", "MTT", "Tmax", "TMAX", "T-max", "FLAIR", "T1 post"]
    assert [channel_name(n) for n in names] == [
        *("dwi", "dwi", "adc", "cbf", "cbv", "mtt", "tmax", "tmax", "tmax", "flair"),
        "t1 post",
    ]


# -------------------------------------------------------------------------------------------- BIDS sessions


def _bids(root: Path) -> Path:
    """sub-01 with two sessions (labels in each), sub-02 with one, sub-03 lacking its ADC (broken)."""
    sessions = {"sub-01": ("ses-01", "ses-02"), "sub-02": ("ses-01",), "sub-03": ("ses-01",)}
    for n, (sub, names) in enumerate(sessions.items(), 1):
        for k, ses in enumerate(names):
            for i, m in enumerate(MRI):
                if (sub, m) != ("sub-03", "adc"):
                    _write(root / "rawdata" / sub / ses / "dwi" / f"{sub}_{ses}_{m}.nii.gz", _image(n * 10 + k * 3 + i))
            _write(root / "derivatives" / sub / ses / f"{sub}_{ses}_msk.nii.gz", _label(n + k))
    _write(root / "rawdata/sub-02/ses-01/anat/sub-02_ses-01_desc-brain_mask.nii.gz", np.ones(SHAPE, np.uint8))
    return root


def test_bids_sessions_are_separate_cases(tmp_path) -> None:
    root = _bids(tmp_path)
    sources = find_cases(root)
    assert [s.case_id for s in sources] == ["sub-01_ses-01", "sub-01_ses-02", "sub-02", "sub-03"]
    ses1, ses2, single, broken = sources
    assert ses2.paths["adc"] == root / "rawdata/sub-01/ses-02/dwi/sub-01_ses-02_adc.nii.gz"
    assert ses2.label_path == root / "derivatives/sub-01/ses-02/sub-01_ses-02_msk.nii.gz"
    np.testing.assert_array_equal(ses1.load().label, _label(1))
    np.testing.assert_array_equal(ses2.load().label, _label(2))
    assert single.brain_mask_path is not None and single.brain_mask_path.name.endswith("desc-brain_mask.nii.gz")
    assert single.load().brain_mask.all()
    assert broken.problem is not None and "no adc image" in broken.problem
    assert len({output_name(s.case_id) for s in sources}) == 4
    (one,) = find_cases(root / "rawdata/sub-01/ses-02")  # a session folder is an entry point
    assert one.case_id == "sub-01_ses-02" and one.label_path == ses2.label_path
    assert [s.case_id for s in find_cases(root / "rawdata/sub-01")] == ["sub-01_ses-01", "sub-01_ses-02"]


def test_msk_in_rawdata_is_not_a_label_where_derivatives_has_one(tmp_path) -> None:
    root = _bids(tmp_path)
    _write(root / "rawdata/sub-02/ses-01/dwi/sub-02_ses-01_msk.nii.gz", _label(3))
    assert [s.label_path for s in find_cases(root / "rawdata/sub-02")] == [
        root / "derivatives/sub-02/ses-01/sub-02_ses-01_msk.nii.gz"
    ]


def test_sub_folders_without_derivatives_take_the_label_beside_their_images(tmp_path) -> None:
    """``sub-*`` case folders that are not a BIDS dataset (no derivatives/) keep the label with the images."""
    root = tmp_path / "cases"
    for n, label_name in ((1, "label"), (2, "sub-02_msk"), (3, "sub-03_lesion_mask"), (4, None)):
        for i, m in enumerate(MRI):
            _write(root / f"sub-0{n}" / f"{m}.nii.gz", _image(10 * n + i))
        if label_name is not None:
            _write(root / f"sub-0{n}" / f"{label_name}.nii.gz", _label(n))
    _write(root / "sub-01" / "sub-01_seg.nii.gz", _label(9))  # a prediction of ours, never a label
    assert detect_layout(root) == "isles22"
    sources = find_cases(root)
    assert [s.label_path.name if s.label_path else None for s in sources] == [
        "label.nii.gz",
        "sub-02_msk.nii.gz",
        "sub-03_lesion_mask.nii.gz",
        None,
    ]
    assert all(s.problem is None and s.label_problem is None and s.paths.keys() == set(MRI) for s in sources)
    np.testing.assert_array_equal(sources[1].load().label, _label(2))
    _write(root / "derivatives/sub-01/sub-01_msk.nii.gz", _label(5))  # a BIDS label wins over one beside
    assert find_cases(root / "sub-01")[0].label_path == root / "derivatives/sub-01/sub-01_msk.nii.gz"
    for i, m in enumerate(MRI):  # a subject whose one session is ses-02 never takes ses-01's label
        _write(root / "sub-05/ses-02" / f"sub-05_ses-02_{m}.nii.gz", _image(60 + i))
    _write(root / "sub-05" / "sub-05_ses-01_msk.nii.gz", _label(5))
    (other,) = find_cases(root / "sub-05")
    assert other.label_path is None and other.paths.keys() == set(MRI)
    _write(root / "sub-05/ses-02" / "sub-05_ses-02_msk.nii.gz", _label(6))
    assert find_cases(root / "sub-05")[0].label_path == root / "sub-05/ses-02/sub-05_ses-02_msk.nii.gz"


def test_a_single_session_subject_takes_its_own_session_label_only(tmp_path) -> None:
    root = _bids(tmp_path)
    _write(root / "derivatives/sub-02/ses-02/sub-02_ses-02_msk.nii.gz", _label(5))  # a session not in rawdata
    _write(root / "derivatives/sub-02/sub-02_ses-03_msk.nii.gz", _label(6))  # named for another session
    (single,) = find_cases(root / "rawdata/sub-02")
    assert single.label_path == root / "derivatives/sub-02/ses-01/sub-02_ses-01_msk.nii.gz"
    (root / "derivatives/sub-02/ses-01/sub-02_ses-01_msk.nii.gz").unlink()
    (orphan,) = find_cases(root / "rawdata/sub-02")  # only other sessions' labels: none of them is its label
    assert orphan.label_path is None and orphan.label_problem is None
    _write(root / "derivatives/sub-02/ses-01/a_msk.nii.gz", _label(1))
    _write(root / "derivatives/sub-02/ses-01/b_msk.nii.gz", _label(2))
    (twice,) = find_cases(root / "rawdata/sub-02")  # two labels of its session: the label is refused, not the case
    assert twice.problem is None and "several msk files" in twice.label_problem
    assert twice.load(label=False).images["dwi"].shape == SHAPE
    _write(root / "derivatives/sub-01/sub-01_msk.nii.gz", _label(4))  # names no session: not one of several
    ses1, ses2 = find_cases(root / "rawdata/sub-01")
    assert ses1.label_path == root / "derivatives/sub-01/ses-01/sub-01_ses-01_msk.nii.gz" and ses1.label_problem is None
    assert ses2.label_path == root / "derivatives/sub-01/ses-02/sub-01_ses-02_msk.nii.gz" and ses2.label_problem is None


def test_case_ids_of_dot_dotdot_and_datatype_folders(tmp_path, monkeypatch) -> None:
    """``segment .`` inside a case named its outputs ``_seg.nii.gz``, ``sub-01/ses-01/dwi`` named every subject
    ``dwi`` (so runs into one folder replaced each other's masks), and an Analyze pair kept its ``.hdr``."""
    root = _bids(tmp_path / "data")
    (by_datatype,) = find_cases(root / "rawdata/sub-02/ses-01/dwi")
    assert by_datatype.case_id == "sub-02" and by_datatype.label_path is not None
    assert [s.case_id for s in find_cases(root / "rawdata/sub-01/ses-02/dwi")] == ["sub-01_ses-02"]
    monkeypatch.chdir(root / "rawdata/sub-02")
    assert [s.case_id for s in find_cases(".")] == ["sub-02"]
    monkeypatch.chdir(root / "rawdata/sub-02/ses-01/dwi")
    assert [s.case_id for s in find_cases("../..")] == ["sub-02"]
    folder = tmp_path / "patient7"
    _write(folder / "dwi.nii.gz", _image(1))
    _write(folder / "adc.nii.gz", _image(2))
    monkeypatch.chdir(folder)
    assert [s.case_id for s in find_cases(".")] == ["patient7"]
    assert nifti_stem("pair_dwi.hdr") == nifti_stem("pair_dwi.IMG") == "pair_dwi"


def test_geometry_in_metres_or_with_a_zero_voxel_size_is_refused(tmp_path) -> None:
    """nibabel reads an affine in metres as millimetres (volumes off by 1e9) and a qform-only zero voxel size as
    1 mm (volumes halved for 2 mm slices), without a word."""
    image = nib.Nifti1Image(_image(1.0), np.diag([0.002, 0.002, 0.002, 1.0]))
    image.header.set_xyzt_units("meter")
    nib.save(image, tmp_path / "metres.nii.gz")
    with pytest.raises(InputError, match="in meters"):
        load_volume(tmp_path / "metres.nii.gz")
    image = nib.Nifti1Image(_image(1.0), np.diag([2.0, 2.0, 2.0, 1.0]))
    image.header["xyzt_units"] = 7  # no NIfTI unit code: read as millimetres, as before (nibabel raises on it)
    nib.save(image, tmp_path / "odd.nii.gz")
    assert load_volume(tmp_path / "odd.nii.gz").voxel_volume_ml == pytest.approx(0.008)
    image = nib.Nifti1Image(_image(1.0), None)
    image.header.set_qform(np.diag([2.0, 2.0, 2.0, 1.0]), code=1)
    image.header.set_sform(None, code=0)
    nib.save(image, tmp_path / "ok.nii")
    assert load_volume(tmp_path / "ok.nii").voxel_volume_ml == pytest.approx(0.008)
    stored = bytearray((tmp_path / "ok.nii").read_bytes())
    stored[88:92] = struct.pack("<f", 0.0)  # pixdim[3]: nibabel itself never writes a 0 there
    (tmp_path / "flat.nii").write_bytes(bytes(stored))
    with pytest.raises(InputError, match="voxel size of 0"):
        load_volume(tmp_path / "flat.nii")


def test_a_lesion_mask_is_never_taken_for_the_brain_mask(tmp_path) -> None:
    """``infarct_mask.nii.gz`` beside the images used to become the brain mask: 0 lesions, no warning."""
    folder = tmp_path / "p1"
    _write(folder / "dwi.nii.gz", _image(1))
    _write(folder / "adc.nii.gz", _image(2))
    _write(folder / "infarct_mask.nii.gz", _label(1))
    (source,) = find_cases(folder)
    assert source.label_path == folder / "infarct_mask.nii.gz" and source.brain_mask_path is None
    (folder / "infarct_mask.nii.gz").rename(folder / "p1_mask.nii.gz")  # still a brain mask by its name
    (masked,) = find_cases(folder)
    assert masked.brain_mask_path == folder / "p1_mask.nii.gz"
    (warning,) = [w for w in masked.load().warnings if "brain mask" in w]
    assert "covers only 1 %" in warning and "give it as the label" in warning


def test_a_linked_session_folder_is_followed(tmp_path) -> None:
    root = _bids(tmp_path / "data")
    elsewhere = tmp_path / "store" / "ses-01"
    (root / "rawdata/sub-02/ses-01").rename(elsewhere.parent.mkdir() or elsewhere)
    (root / "rawdata/sub-02/ses-01").symlink_to(elsewhere, target_is_directory=True)
    (linked,) = find_cases(root / "rawdata/sub-02")
    assert linked.problem is None and linked.paths["dwi"] == root / "rawdata/sub-02/ses-01/dwi/sub-02_ses-01_dwi.nii.gz"
    (elsewhere / "to_root").symlink_to("/", target_is_directory=True)  # never a walk of the whole file system
    (elsewhere / "up").symlink_to(root / "rawdata", target_is_directory=True)
    (again,) = find_cases(root / "rawdata/sub-02")
    assert again.problem is None and again.paths == linked.paths


# --------------------------------------------------------------------------------------- robust detection


def test_odd_folders_do_not_crash_detection(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no generic cases found"):
        find_cases(tmp_path / "empty")
    odd = tmp_path / "odd"
    (odd / ".hidden").mkdir(parents=True)
    _write(odd / ".hidden" / "dwi.nii.gz", _image(1))
    (odd / "dangling_dwi.nii.gz").symlink_to(odd / "missing.nii.gz")
    (odd / "x.nii.gz").mkdir()  # a folder named like an image
    (odd / "loop").symlink_to(odd, target_is_directory=True)
    (odd / "名前 [1]_adc.nii.gz").write_bytes(b"")
    # found without crashing: two cases, each lacking a modality; nothing from the hidden folder or the loop
    sources = find_cases(odd)
    assert sorted(s.case_id for s in sources) == ["dangling", "名前 [1]"] and all(s.problem for s in sources)
    with pytest.raises(InputError):
        for source in sources:
            source.load()
    os.mkfifo(tmp_path / "fifo_dwi.nii.gz")
    with pytest.raises(InputError, match="not a regular file"):
        load_volume(tmp_path / "fifo_dwi.nii.gz")


def test_one_broken_subject_among_good_ones(tmp_path) -> None:
    root = _bids(tmp_path)
    sources = find_cases(root)
    loaded = {}
    for source in sources:
        try:
            loaded[source.case_id] = source.load()
        except InputError as exc:
            loaded[source.case_id] = str(exc)
    assert [k for k, v in loaded.items() if isinstance(v, str)] == ["sub-03"]
    assert "case sub-03: no adc image" in loaded["sub-03"]


def test_symlink_loops_and_flipped_storage(tmp_path) -> None:
    root = _bids(tmp_path)
    (root / "rawdata/sub-02/ses-01/loop").symlink_to(root / "rawdata", target_is_directory=True)
    assert [s.case_id for s in find_cases(root)] == ["sub-01_ses-01", "sub-01_ses-02", "sub-02", "sub-03"]
    # One grid stored in two voxel orders (x flipped in the file and in its affine) is one grid.
    folder = tmp_path / "flipped"
    data = np.random.default_rng(2).integers(1, 99, SHAPE).astype(np.float32)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = SHAPE[0] - 1
    _write(folder / "dwi.nii.gz", data)
    _write(folder / "adc.nii.gz", 2 * data[::-1], flip)  # another image: one file for both is refused
    case = read_case(folder)
    np.testing.assert_array_equal(case.images["adc"], 2 * case.images["dwi"])
