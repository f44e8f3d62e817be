"""Training on datasets as users hand them over: cases whose images are missing or linked twice, folders with
undecodable names or moved between calls, and runs that diverge."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from mdanet_sdk.data.cases import find_cases
from mdanet_sdk.data.phantom import write_dataset
from mdanet_sdk.errors import InputError
from mdanet_sdk.train.trainer import TrainConfig, TrainEvent, train

#: Tiny budget: 32×32 slices, a few steps per epoch.
TINY = dict(preset="small", size=32, batch_size=4, steps_per_epoch=2, workers=0, quiet=True)


@pytest.fixture(scope="module")
def tiny_mri(tmp_path_factory) -> Path:
    """10 ISLES'22-like phantoms of 32×32×6 voxels."""
    return write_dataset(tmp_path_factory.mktemp("tiny") / "isles22", "isles22", 10, seed=3, shape=(32, 32, 6))


class _Stop(Exception):
    """Raised by the progress callback to interrupt training as a crash would."""


def test_a_labelled_case_whose_images_are_not_found_is_refused(tmp_path: Path) -> None:
    """A case folder whose images are named in a way no layout reads (``trace_b1000``, ``ADCmap``) but whose
    label is there used to leave the dataset without a word: the folds changed silently."""
    isles22 = write_dataset(tmp_path / "isles22", "isles22", 4, seed=3, shape=(32, 32, 6))
    root = tmp_path / "data"
    for n in range(1, 5):  # case folders: dwi, adc and lesion by name
        (root / f"case{n}").mkdir(parents=True)
        for path in isles22.rglob(f"sub-strokecase000{n}_*.nii.gz"):
            name = {"dwi": "dwi", "adc": "adc", "msk": "lesion"}[path.name.split("_")[-1].split(".")[0]]
            path.rename(root / f"case{n}" / f"{name}.nii.gz")
    (root / "case2" / "dwi.nii.gz").rename(root / "case2" / "trace_b1000.nii.gz")
    (root / "case2" / "adc.nii.gz").rename(root / "case2" / "ADCmap.nii.gz")
    with pytest.raises(InputError, match=r"1 lesion label\(s\) .* belong to no case found \(e\.g\. .*case2/lesion"):
        train(TrainConfig(root, tmp_path / "run", kind="mri", epochs=1, fold=0, folds=2, **TINY))
    assert not (tmp_path / "run").exists()
    # A second label in a case's own subfolder (an earlier rater's) is that case's business, not a case.
    (root / "case2" / "trace_b1000.nii.gz").rename(root / "case2" / "dwi.nii.gz")
    (root / "case2" / "ADCmap.nii.gz").rename(root / "case2" / "adc.nii.gz")
    (root / "case3" / "manual_v1").mkdir()
    (root / "case3" / "manual_v1" / "lesion.nii.gz").write_bytes((root / "case3" / "lesion.nii.gz").read_bytes())
    assert train(TrainConfig(root, tmp_path / "run", kind="mri", epochs=1, fold=0, folds=2, **TINY)).folds


def test_a_case_linked_under_another_name_is_refused(tmp_path: Path) -> None:
    """A case folder symlinked under a second name was read as two cases: fold 0 validated on the copy of a
    case it trained on."""
    root = write_dataset(tmp_path / "data", "isles22", 4, seed=3, shape=(32, 32, 6))
    (root / "rawdata" / "sub-strokecase0009").symlink_to(root / "rawdata" / "sub-strokecase0001")
    (root / "derivatives" / "sub-strokecase0009").symlink_to(root / "derivatives" / "sub-strokecase0001")
    assert len(find_cases(root)) == 5
    with pytest.raises(InputError, match=r"cases sub-strokecase0001 and sub-strokecase0009 .* read the same file"):
        train(TrainConfig(root, tmp_path / "run", epochs=1, fold=0, folds=2, **TINY))


def test_a_diverging_training_says_so_instead_of_blaming_the_weights_file(tiny_mri: Path, tmp_path: Path) -> None:
    """lr 1e12 made the weights NaN in the first epoch, and validation then said the weights file was damaged
    ("re-download them")."""
    cfg = dict(TINY, steps_per_epoch=3)
    with pytest.raises(InputError, match=r"training of fold 0 diverged in epoch 0 .*lower --lr \(now 1e\+12\)"):
        train(TrainConfig(tiny_mri, tmp_path / "run", epochs=2, fold=0, lr=1e12, **cfg))


def test_a_dataset_folder_with_an_undecodable_name_keeps_its_run(tiny_mri: Path, tmp_path: Path) -> None:
    """The run's config.json must give back the exact folder name: a name with a byte that is no UTF-8, written as
    text, made every later fold "a run with other settings"."""
    data = Path(os.fsdecode(bytes(tmp_path) + b"/dat\xff"))
    shutil.copytree(tiny_mri, data)
    cfg = dict(epochs=1, folds=2, **TINY)
    train(TrainConfig(data, tmp_path / "run", fold=0, **cfg))
    assert [f.fold for f in train(TrainConfig(data, tmp_path / "run", fold=1, **cfg)).folds] == [1]


def test_resume_finds_its_data_moved_elsewhere(tiny_mri: Path, tmp_path: Path) -> None:
    """A dataset staged to another disk (a cluster node's scratch) could not resume its run once resuming was
    held to the run's settings: the data's folder is not one of them there (the checkpoint checks the split)."""

    def stop(event: TrainEvent) -> None:
        if event.what == "validated":
            raise _Stop

    cfg = dict(epochs=2, fold=0, seed=5, **TINY)
    with pytest.raises(_Stop):
        train(TrainConfig(tiny_mri, tmp_path / "run", **cfg), stop)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data_dir"] == str(tiny_mri.resolve())
    moved = shutil.copytree(tiny_mri, tmp_path / "scratch" / "data")
    with pytest.raises(InputError, match="data_dir .* there"):  # fold 1 has not started: it would split the new data
        train(TrainConfig(moved, tmp_path / "run", resume=True, **{**cfg, "fold": "0,1"}))
    assert train(TrainConfig(moved, tmp_path / "run", resume=True, **cfg)).folds[0].epochs_run == 2


def test_a_groups_table_edited_in_place_is_another_setting(tiny_mri: Path, tmp_path: Path) -> None:
    """--groups was compared by its file name only: a table edited between two calls gave folds whose validation
    cases overlap. The run keeps the table's content; the same table under another name is the same setting."""
    ids = [source.case_id for source in find_cases(tiny_mri)]
    table = "".join(f"{case},p{i // 2}\n" for i, case in enumerate(ids))
    groups = tmp_path / "groups.csv"
    groups.write_text(table)
    cfg = dict(epochs=1, folds=2, **TINY)
    train(TrainConfig(tiny_mri, tmp_path / "run", fold=0, groups=str(groups), **cfg))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["groups_table"][ids[2]] == "p1"
    groups.write_text("".join(f"{case},p{i % 3}\n" for i, case in enumerate(ids)))
    with pytest.raises(InputError, match=r"other settings \(groups \{.*\} there, \{.*\} now\)"):
        train(TrainConfig(tiny_mri, tmp_path / "run", fold=1, groups=str(groups), **cfg))
    (tmp_path / "elsewhere.csv").write_text(table)
    result = train(TrainConfig(tiny_mri, tmp_path / "run", fold=1, groups=str(tmp_path / "elsewhere.csv"), **cfg))
    assert [f.fold for f in result.folds] == [1]
