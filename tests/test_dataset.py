"""Tests of mdanet_sdk.data.dataset: slice items, aligned augmentations, k-fold by case."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch.utils.data import DataLoader

from mdanet_sdk.data.dataset import (
    ROTATION_DEG,
    SCALE_RANGE,
    Augmentation,
    SliceDataset,
    apply_affine,
    inner_split,
    kfold_split,
    read_groups,
)
from mdanet_sdk.data.phantom import make_phantom
from mdanet_sdk.data.preprocess import PreprocessConfig, preprocess_case
from mdanet_sdk.errors import InputError

MRI = ("dwi", "adc")


@dataclass
class Plain:
    """The minimal case interface the dataset needs."""

    case_id: str
    images: dict
    label: np.ndarray | None


@pytest.fixture(scope="module")
def cases():
    # A large lesion (territorial) and different in-plane sizes, resampled to one grid by cfg.size.
    return [
        make_phantom("isles22", 3, shape=(48, 40, 12), pattern="territorial", case_id="a"),
        make_phantom("isles22", 4, shape=(40, 40, 8), pattern="multiple", case_id="b"),
    ]


def dice(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)


def test_items_follow_the_preprocessed_slices(cases) -> None:
    cfg = PreprocessConfig(size=48)
    ds = SliceDataset(cases, MRI, cfg)
    assert len(ds) == 20 and ds.case_ids == ["a", "b"]
    image, label = ds[13]
    assert image.shape == (2, 48, 48) and image.dtype == torch.float32
    assert label.shape == (48, 48) and label.dtype == torch.int64
    assert ds.locate(13) == ("b", 1)
    slices, labels, _ = preprocess_case(cases[1], MRI, cfg)
    assert np.array_equal(image.numpy(), slices[1]) and np.array_equal(label.numpy(), labels[1])
    expected = np.concatenate([(c.label.sum(axis=(0, 1)) > 0) for c in cases])
    assert np.array_equal(ds.has_lesion(), expected) and ds.has_lesion().any()


def test_augmentation_keeps_images_and_label_aligned(cases) -> None:
    ds = SliceDataset(cases[:1], MRI, PreprocessConfig(size=48), augment=True, seed=3)
    checked = 0
    for index in np.flatnonzero(ds.has_lesion()):
        for _ in range(3):
            image, label = ds[int(index)]
            lesion = label.numpy() == 1
            head = image[0].numpy() > image[0].min().item() + 1e-3
            if lesion.sum() < 10:
                continue
            assert set(np.unique(label.numpy())) <= {0, 1}
            # The lesion is bright in DWI and dark in ADC wherever the transform moved it.
            assert image[0].numpy()[lesion].mean() > image[0].numpy()[head & ~lesion].mean() + 0.3
            assert image[1].numpy()[lesion].mean() < image[1].numpy()[head & ~lesion].mean()
            checked += 1
    assert checked >= 6


def test_label_transform_equals_the_transform_of_its_indicator(cases) -> None:
    """The label (nearest) matches the label's own indicator carried as an image channel (bilinear)."""
    case = cases[0]
    indicator = Plain("ind", {"dwi": case.images["dwi"], "ind": case.label.astype(np.float32)}, case.label)
    cfg = PreprocessConfig(size=48, clip_percentiles=(0.0, 100.0))
    ds = SliceDataset([indicator], ("dwi", "ind"), cfg, augment=True, seed=1)
    compared = 0
    for index in np.flatnonzero(ds.has_lesion()):
        image, label = ds[int(index)]
        channel = image[1].numpy()
        threshold = (channel.min() + channel.max()) / 2
        moved, lab = channel > threshold, label.numpy() == 1
        if lab.sum() < 10:
            continue
        assert dice(moved, lab) >= 0.9
        # Any disagreement lies on the lesion boundary.
        boundary = ndimage.binary_dilation(lab) & ~ndimage.binary_erosion(lab)
        assert not ((moved != lab) & ~boundary).any()
        compared += 1
    assert compared >= 3


def test_apply_affine_identity_flip_and_rotation() -> None:
    image = torch.arange(16.0).reshape(1, 4, 4)
    label = (image[0] > 10).long()
    out, lab = apply_affine(image, label, np.eye(2))
    assert torch.equal(out, image) and torch.equal(lab, label)
    out, lab = apply_affine(image, label, np.diag([1.0, -1.0]))  # flip the columns
    assert torch.equal(out, image.flip(-1)) and torch.equal(lab, label.flip(-1))
    quarter = np.array([[0.0, -1.0], [1.0, 0.0]])  # 90°: output (r, c) reads input (-c, r) about the centre
    out, lab = apply_affine(image, label, quarter)
    assert torch.allclose(out, image.rot90(-1, dims=(1, 2)), atol=1e-5) and torch.equal(lab, label.rot90(-1))
    assert apply_affine(image, None, quarter)[1] is None


def test_augmentation_draws_stay_in_the_paper_ranges() -> None:
    rng = np.random.default_rng(0)
    draws = [Augmentation.draw(rng) for _ in range(2000)]
    assert {d.flips for d in draws} == {(False, False), (False, True), (True, False), (True, True)}
    angles, scales = np.array([d.angle_deg for d in draws]), np.array([d.scale for d in draws])
    assert -ROTATION_DEG <= angles.min() < -85 and 85 < angles.max() <= ROTATION_DEG
    assert SCALE_RANGE[0] <= scales.min() < 0.82 and 1.18 < scales.max() <= SCALE_RANGE[1]


def test_augmentation_matrix() -> None:
    assert np.allclose(Augmentation((False, False), 90.0, 1.0).matrix(), [[0, -1], [1, 0]])
    assert np.allclose(Augmentation((True, False), 0.0, 2.0).matrix(), [[-0.5, 0], [0, 0.5]])
    m = Augmentation((False, True), 30.0, 0.8).matrix()
    assert np.linalg.det(m) == pytest.approx(-1 / 0.8**2) and np.allclose(m.T @ m, np.eye(2) / 0.8**2)


def test_augmentations_are_reproducible_per_seed_and_epoch(cases) -> None:
    cfg = PreprocessConfig(size=48)
    a, b = (SliceDataset(cases, MRI, cfg, augment=True, seed=5) for _ in range(2))
    first = [a[i][0] for i in range(4)]
    assert all(torch.equal(x, b[i][0]) for i, x in enumerate(first))
    a.set_epoch(1)
    assert not torch.equal(a[0][0], first[0])
    a.set_epoch(0)
    assert torch.equal(a[0][0], first[0])
    plain = SliceDataset(cases, MRI, cfg)
    assert not torch.equal(plain[0][0], first[0])  # augmented items differ from the plain slices


def test_workers_draw_reproducible_augmentations(cases) -> None:
    ds = SliceDataset(cases, MRI, PreprocessConfig(size=48), augment=True, seed=2)

    def batches():
        loader = DataLoader(ds, batch_size=5, num_workers=2, shuffle=False)
        return [x for x, _ in loader]

    one, two = batches(), batches()
    assert all(torch.equal(x, y) for x, y in zip(one, two))
    assert not torch.equal(one[0], one[1][:5])  # the two workers draw different transforms


def test_dataset_errors(cases) -> None:
    with pytest.raises(InputError, match="no label"):
        SliceDataset([Plain("x", cases[0].images, None)], MRI, PreprocessConfig())
    with pytest.raises(InputError, match="at least one case"):
        SliceDataset([], MRI, PreprocessConfig())
    with pytest.raises(InputError, match="'cbf'"):
        SliceDataset(cases, ("cbf",), PreprocessConfig())


@pytest.mark.parametrize("n, k", [(5, 5), (12, 5), (23, 5), (7, 3)])
def test_kfold_puts_every_case_in_validation_once(n, k) -> None:
    ids = [f"case_{i}" for i in range(n)]
    splits = kfold_split(ids, k=k, seed=0)
    assert len(splits) == k
    validated = [c for _, val in splits for c in val]
    assert sorted(validated) == sorted(ids)  # every case exactly once
    for train, val in splits:
        assert not set(train) & set(val) and set(train) | set(val) == set(ids)
        assert train == [c for c in ids if c in set(train)]  # input order kept
    sizes = [len(val) for _, val in splits]
    assert max(sizes) - min(sizes) <= 1
    assert kfold_split(ids, k=k, seed=0) == splits
    if n > k:
        assert kfold_split(ids, k=k, seed=1) != splits


def test_kfold_errors() -> None:
    with pytest.raises(InputError, match="at least 2"):
        kfold_split(["a", "b"], k=1)
    with pytest.raises(InputError, match="cannot fill"):
        kfold_split(["a", "b"], k=5)
    with pytest.raises(InputError, match="distinct"):
        kfold_split(["a", "a", "b"], k=2)


# -- grouped folds, inner split, groups table ------------------------------------------------------


def _patients(n_patients: int, seed: int) -> dict[str, str]:
    """Case id → patient for ``n_patients`` patients with 1 to 4 cases each (ISLES'18: 94 cases of 63 patients)."""
    sizes = np.random.default_rng(seed).integers(1, 5, n_patients)
    return {f"p{p}_c{c}": f"p{p}" for p in range(n_patients) for c in range(sizes[p])}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k, n_patients", [(5, 63), (3, 7), (5, 5), (2, 30)])
def test_group_kfold_never_splits_a_patient_and_balances_sizes(seed: int, k: int, n_patients: int) -> None:
    groups = _patients(n_patients, seed)
    ids = list(groups)
    splits = kfold_split(ids, k=k, seed=seed, groups=groups)
    validated = [c for _, val in splits for c in val]
    assert sorted(validated) == sorted(ids)  # every case validated exactly once
    for train, val in splits:
        assert val and not {groups[c] for c in train} & {groups[c] for c in val}  # no patient on both sides
        assert train == [c for c in ids if c in set(train)]
    sizes = [len(val) for _, val in splits]
    largest = max(sum(1 for g in groups.values() if g == p) for p in set(groups.values()))
    assert max(sizes) - min(sizes) <= largest  # greedy by case count: within one patient
    assert kfold_split(ids, k=k, seed=seed, groups=groups) == splits  # deterministic with the seed


def test_group_kfold_follows_the_seed_and_balances_the_isles18_shape() -> None:
    groups = _patients(63, 0)
    ids = list(groups)
    a, b = kfold_split(ids, 5, seed=0, groups=groups), kfold_split(ids, 5, seed=1, groups=groups)
    assert a != b
    sizes = sorted(len(val) for _, val in a)
    assert sizes[-1] - sizes[0] <= 1, sizes  # 63 patients of 1-4 cases: the greedy fill balances to one case
    # One case per patient is the ungrouped problem: sizes differ by at most one.
    singles = {f"c{i}": f"c{i}" for i in range(23)}
    assert sorted(len(v) for _, v in kfold_split(list(singles), 5, groups=singles)) == [4, 4, 5, 5, 5]


def test_group_kfold_refusals() -> None:
    groups = {"a": "p1", "b": "p1", "c": "p2", "d": "p3"}
    with pytest.raises(InputError, match="no patient in the groups table .*'e'"):
        kfold_split([*groups, "e"], 2, groups=groups)
    with pytest.raises(InputError, match="3 patients, fewer than the 4 folds; lower --folds"):
        kfold_split(list(groups), 4, groups=groups)
    with pytest.raises(InputError, match="one patient"):
        kfold_split(["a", "b"], 2, groups={"a": "p", "b": "p"})
    # Entries for cases that are not trained are ignored.
    assert kfold_split(["a", "c"], 2, groups=groups)[0][1] in (["a"], ["c"])


@pytest.mark.parametrize("seed", range(5))
def test_inner_split_holds_out_whole_patients(seed: int) -> None:
    groups = _patients(40, seed)
    ids = list(groups)
    fit, inner = inner_split(ids, 0.15, seed=(seed, 2), groups=groups)
    assert sorted(fit + inner) == sorted(ids) and not set(fit) & set(inner)
    assert not {groups[c] for c in fit} & {groups[c] for c in inner}
    assert 1 <= len(inner) <= round(0.15 * len(ids))
    assert inner_split(ids, 0.15, seed=(seed, 2), groups=groups) == (fit, inner)
    plain_fit, plain_inner = inner_split([f"c{i}" for i in range(20)], 0.2, seed=seed)
    assert len(plain_inner) == 4 and len(plain_fit) == 16
    # Fewer cases than 1/fraction: still one inner case; a patient larger than the share: the smallest one.
    assert len(inner_split(["a", "b"], 0.15, seed=seed)[1]) == 1
    assert inner_split(["a", "b", "c"], 0.1, seed=seed, groups={"a": "p", "b": "p", "c": "q"})[1] == ["c"]


def test_inner_split_refusals() -> None:
    with pytest.raises(InputError, match="one patient .*--select last"):
        inner_split(["a", "b"], 0.2, groups={"a": "p", "b": "p"})
    with pytest.raises(InputError, match="1 training case.* cannot be divided"):
        inner_split(["a"], 0.2)


@pytest.mark.parametrize(
    "name, text",
    [
        ("g.csv", "case,patient\na,p1\nb,p1\nc,p2\n"),
        ("g.csv", "a,p1\nb , p1\n\n# comment\nc,p2"),
        ("g.tsv", "a\tp1\nb\tp1\nc\tp2\n"),
        ("g.txt", "\ufeffcase_id;patient_id\na;p1\nb;p1\nc;p2\n"),
        ("g.json", '{"a": "p1", "b": "p1", "c": "p2"}'),
        ("groups", '  {"a": "p1", "b": "p1", "c": "p2"}'),
    ],
)
def test_read_groups_formats(tmp_path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert read_groups(path) == {"a": "p1", "b": "p1", "c": "p2"}


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "lists no case"),
        ("case,patient\n", "lists no case"),
        ("a,p1,extra\n", "line 1 .* is not 'case,patient'"),
        ("a,p1\nb\n", "line 2"),
        ("a,\n", "line 1"),
        ("a,p1\na,p2\n", "two patients"),
        ('{"a": "p1", "b": null}', "patient None"),
        ('{"a": true}', "patient True"),
        ('{"a": 1.5}', "patient 1.5 .* not a string or an integer"),
        ("a," + "x" * 200_000 + "\n", "not a CSV table"),
        ('{"a": "p1",', "not valid JSON"),
        ('["a", "p1"]', "not an object"),
    ],
)
def test_read_groups_refuses_malformed_tables(tmp_path, text: str, match: str) -> None:
    path = tmp_path / ("g.json" if text.startswith("[") else "g.csv")
    path.write_text(text)
    with pytest.raises(InputError, match=match):
        read_groups(path)


def test_read_groups_refuses_missing_and_binary_files(tmp_path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_groups(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="does not exist"):
        read_groups(tmp_path)
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(InputError, match="UTF-8"):
        read_groups(tmp_path / "bin.csv")
    assert read_groups_ok(tmp_path) == {"7": "12"}


def read_groups_ok(tmp_path) -> dict[str, str]:
    """Integer patient ids in JSON are names too."""
    (tmp_path / "ints.json").write_text('{"7": 12}')
    return read_groups(tmp_path / "ints.json")
