"""2D slice dataset over many cases, the paper's augmentations, and k-fold splits by case.

:class:`SliceDataset` preprocesses every case once (:func:`~mdanet_sdk.data.preprocess.preprocess_case`) and
serves its axial slices. With ``augment=True`` each item gets the augmentations of the paper (section 4.2):
a random flip of each in-plane axis (probability 1/2 each), a rotation by an angle uniform in −90°..90° and
a scaling by a factor uniform in 0.8..1.2, as one affine transform applied to all channels and the label
with :func:`torch.nn.functional.grid_sample` (bilinear for images, nearest for the label; outside the slice
images repeat their border, i.e. the background, and the label is 0). It costs well under a millisecond per
256×256 slice on one CPU core.

Randomness: each process (the main one, or a ``DataLoader`` worker) draws its transforms from
``numpy.random.default_rng([seed, epoch, worker_id + 1])`` (``0`` in the main process), re-created when
:meth:`SliceDataset.set_epoch` changes the epoch, so an epoch's augmentations depend only on the seed, the
epoch and the order of indices, never on what ran before.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from mdanet_sdk.data.augment import IntensityAugmentation
from mdanet_sdk.data.preprocess import PreprocessConfig, preprocess_case
from mdanet_sdk.errors import InputError

__all__ = [
    "SliceDataset",
    "kfold_split",
    "inner_split",
    "read_groups",
    "Augmentation",
    "apply_affine",
    "ROTATION_DEG",
    "SCALE_RANGE",
]

#: Largest rotation of the augmentation, degrees (either direction).
ROTATION_DEG = 90.0
#: Range of the augmentation's scaling factor.
SCALE_RANGE = (0.8, 1.2)


@dataclass(frozen=True)
class Augmentation:
    """One draw of the paper's augmentation.

    Attributes:
        flips: ``(rows, cols)``: whether each in-plane axis is mirrored.
        angle_deg: rotation, in −90..90 degrees.
        scale: magnification of the slice content, in 0.8..1.2.
    """

    flips: tuple[bool, bool]
    angle_deg: float
    scale: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "Augmentation":
        """Flip each axis with probability 1/2, angle uniform in ±:data:`ROTATION_DEG`, scale in :data:`SCALE_RANGE`."""
        flips = rng.random(2) < 0.5
        return cls(
            (bool(flips[0]), bool(flips[1])),
            float(rng.uniform(-ROTATION_DEG, ROTATION_DEG)),
            float(rng.uniform(*SCALE_RANGE)),
        )

    def matrix(self) -> np.ndarray:
        """float64 ``(2, 2)`` mapping output pixel offsets from the slice centre, ``(row, col)``, to input
        offsets: ``rotation @ flips / scale``."""
        angle = math.radians(self.angle_deg)
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        return rotation @ np.diag([-1.0 if f else 1.0 for f in self.flips]) / self.scale


def apply_affine(
    image: torch.Tensor, label: torch.Tensor | None, matrix: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resample a slice and its label with the same pixel-space affine about the slice centre.

    Args:
        image: float ``(C, H, W)``.
        label: integer ``(H, W)`` or None.
        matrix: ``(2, 2)``, e.g. :meth:`Augmentation.matrix` (output → input offsets, ``(row, col)`` order).

    Returns:
        ``(image (C, H, W) bilinear, border-padded; label (H, W) nearest, 0-padded, same dtype)``.
    """
    height, width = image.shape[-2:]
    # affine_grid works in normalised (x=col, y=row) coordinates: convert the pixel-space matrix.
    swap = np.array([[0.0, 1.0], [1.0, 0.0]])
    pixel = swap @ matrix @ swap
    to_norm = np.diag([2.0 / width, 2.0 / height])
    theta = np.zeros((1, 2, 3), dtype=np.float32)
    theta[0, :, :2] = to_norm @ pixel @ np.linalg.inv(to_norm)
    grid = F.affine_grid(torch.from_numpy(theta), [1, 1, height, width], align_corners=False)
    out = F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    if label is None:
        return out, None
    lab = F.grid_sample(label[None, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out, lab[0, 0].to(label.dtype)


class SliceDataset(Dataset):
    """Axial slices of many labelled cases, preprocessed once, optionally augmented.

    Args:
        cases: objects with ``case_id``, ``images`` (modality → ``(X, Y, Z)``) and ``label`` (``(X, Y, Z)``),
            e.g. :class:`~mdanet_sdk.data.cases.Case` or :class:`~mdanet_sdk.data.phantom.Phantom`.
        modalities: channel order, e.g. ``("dwi", "adc")``.
        cfg: preprocessing (set ``size`` to batch slices of cases with different in-plane sizes).
        augment: apply the random flip / rotation / scaling to every item.
        seed: seed of the augmentations.
        intensity: with ``augment``, also the intensity augmentation
            (:class:`~mdanet_sdk.data.augment.IntensityAugmentation`: bias, gamma, contrast, blur, resolution,
            noise).

    Items are ``(image, label)``: float32 ``(C, H, W)`` and int64 ``(H, W)`` with values {0, 1}.

    Raises:
        InputError: no cases, a case without label, or a missing modality.
    """

    def __init__(
        self,
        cases: Sequence[Any],
        modalities: Sequence[str],
        cfg: PreprocessConfig,
        augment: bool = False,
        seed: int = 0,
        *,
        intensity: bool = False,
    ) -> None:
        if not cases:
            raise InputError("the slice dataset needs at least one case.")
        self.modalities = tuple(modalities)
        self.cfg, self.augment, self.seed = cfg, bool(augment), int(seed)
        self.intensity = bool(intensity)
        self.case_ids: list[str] = []
        self._images: list[np.ndarray] = []  # per case (Z, C, H, W) float32
        self._labels: list[np.ndarray] = []  # per case (Z, H, W) uint8
        for case in cases:
            if case.label is None:
                raise InputError(f"case {case.case_id} has no label; training slices need one for every case.")
            images, label, _ = preprocess_case(case, self.modalities, cfg)
            assert label is not None  # the case has a label (checked above)
            self.case_ids.append(case.case_id)
            self._images.append(images)
            self._labels.append(label)
        self._index = np.array(
            [(c, z) for c, images in enumerate(self._images) for z in range(len(images))], dtype=np.int64
        )
        self._epoch = 0
        self._rng: np.random.Generator | None = None
        self._rng_key: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self._index)

    def locate(self, index: int) -> tuple[str, int]:
        """``(case_id, z)`` of item ``index``."""
        case, z = self._index[index]
        return self.case_ids[case], int(z)

    def has_lesion(self) -> np.ndarray:
        """bool ``(N,)``: whether each slice's (unaugmented) label holds lesion."""
        return np.concatenate([label.reshape(len(label), -1).any(axis=1) for label in self._labels])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: augmentations restart from ``(seed, epoch)``."""
        self._epoch = int(epoch)
        self._rng_key = None

    def _generator(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        key = (self._epoch, -1 if info is None else info.id)
        if self._rng is None or key != self._rng_key:
            self._rng = np.random.default_rng([self.seed, self._epoch, key[1] + 1])
            self._rng_key = key
        return self._rng

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        case, z = self._index[index]
        image = torch.from_numpy(self._images[case][z])
        label = torch.from_numpy(self._labels[case][z].astype(np.int64))
        if self.augment:
            rng = self._generator()
            image, moved = apply_affine(image, label, Augmentation.draw(rng).matrix())
            assert moved is not None  # a label in, a label out
            label = moved
            if self.intensity:
                image = IntensityAugmentation.draw(rng, image.shape[0])(image)
        return image, label


def kfold_split(
    case_ids: Sequence[str], k: int = 5, seed: int = 0, groups: Mapping[str, str] | None = None
) -> list[tuple[list[str], list[str]]]:
    """Split cases (never slices) into ``k`` folds for cross-validation, optionally keeping groups together.

    Without ``groups`` the ids are shuffled with ``numpy.random.default_rng(seed)`` and cut into ``k`` folds
    whose sizes differ by at most one. With ``groups`` (case id → patient) the folds are GroupKFold folds: no
    patient's cases are split between training and validation. The patients are shuffled with the same
    generator, then placed largest first (ties in shuffled order) into the fold holding the fewest cases so far,
    so fold sizes differ by at most the largest patient's number of cases. Every case is in exactly one
    validation fold either way.

    Args:
        case_ids: distinct case ids.
        k: number of folds (>= 2).
        seed: shuffling seed.
        groups: case id → group (patient) id for every case of ``case_ids``; other entries are ignored
            (a table may cover more cases than are trained on).

    Returns:
        ``k`` pairs ``(train_ids, val_ids)``, each list in the order of ``case_ids``.

    Raises:
        InputError: ``k < 2``, fewer cases (or patients) than folds, repeated ids, or a case without a group.
    """
    ids = list(case_ids)
    if k < 2:
        raise InputError(f"k must be at least 2 folds, got {k}.")
    if len(set(ids)) != len(ids):
        raise InputError("case ids must be distinct to split by case; rename the duplicated cases.")
    if len(ids) < k:
        raise InputError(f"{len(ids)} cases cannot fill {k} folds; use fewer folds or more cases.")
    rng = np.random.default_rng(seed)
    if groups is None:
        folds = [{ids[i] for i in part.tolist()} for part in np.array_split(rng.permutation(len(ids)), k)]
    else:
        members = _group_members(ids, groups)
        if len(members) < k:
            raise InputError(_too_few_groups(len(ids), members, k, "folds", "lower --folds"))
        folds = [set(fold) for fold in _balance(list(members.values()), k, rng)]
    return [([c for c in ids if c not in fold], [c for c in ids if c in fold]) for fold in folds]


def inner_split(
    case_ids: Sequence[str],
    fraction: float,
    seed: int | Sequence[int] = 0,
    groups: Mapping[str, str] | None = None,
) -> tuple[list[str], list[str]]:
    """Hold out a share of a fold's training cases (whole patients with ``groups``) to choose its checkpoint.

    Patients (each case its own without ``groups``) are shuffled with ``numpy.random.default_rng(seed)`` and
    taken in that order while the held-out cases stay within ``round(fraction × cases)`` (at least one case);
    when even the first patient is larger than that, the smallest patient is held out. At least one patient is
    always left for training.

    Args:
        case_ids: the fold's training cases (distinct).
        fraction: share of the cases to hold out, in (0, 1).
        seed: seed (or seed tuple, e.g. ``(seed, fold)``) of the shuffle.
        groups: case id → patient, as for :func:`kfold_split`.

    Returns:
        ``(fit_ids, inner_ids)``, each in the order of ``case_ids``.

    Raises:
        InputError: fewer than two patients (or cases) to divide, or a case without a group.
    """
    ids = list(case_ids)
    fix = "use --select last or val, fewer --folds or more cases"
    if groups is None and len(ids) < 2:
        raise InputError(f"{len(ids)} training case(s) cannot be divided into training and inner validation; {fix}.")
    members = _group_members(ids, groups if groups is not None else {c: c for c in ids})
    if len(members) < 2:
        raise InputError(_too_few_groups(len(ids), members, 2, "parts (training and inner validation)", fix))
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    order = [list(members.values())[i] for i in rng.permutation(len(members))]
    target = max(1, round(fraction * len(ids)))
    held: list[str] = []
    for group in order[:-1]:  # the last patient always trains
        if len(held) + len(group) <= target:
            held += group
    if not held:
        held = min(order, key=len)
    inner = set(held)
    return [c for c in ids if c not in inner], [c for c in ids if c in inner]


def _group_members(ids: Sequence[str], groups: Mapping[str, str]) -> dict[str, list[str]]:
    """Group id → its cases among ``ids`` (in the order of ``ids``); every id must have a group."""
    missing = [c for c in ids if c not in groups]
    if missing:
        raise InputError(
            f"{len(missing)} case(s) have no patient in the groups table (e.g. {missing[0]!r}); add a line "
            f"'{missing[0]},<patient>' for each case of the dataset."
        )
    members: dict[str, list[str]] = {}
    for c in ids:
        members.setdefault(str(groups[c]), []).append(c)
    return members


def _too_few_groups(n_cases: int, members: Mapping[str, list[str]], k: int, parts: str, fix: str) -> str:
    """The sentence refusing to split ``members`` into ``k`` parts."""
    if len(members) == 1:
        (patient,) = members
        return f"all {n_cases} cases belong to one patient ({patient!r}), which cannot be split into {k} {parts}; {fix}, or check the groups table."
    return f"the {n_cases} cases belong to {len(members)} patients, fewer than the {k} {parts}; {fix}, or check the groups table."


def _balance(groups: list[list[str]], k: int, rng: np.random.Generator) -> list[list[str]]:
    """``groups`` dealt into ``k`` folds: shuffled, then largest first into the fold with the fewest cases."""
    shuffled = [groups[i] for i in rng.permutation(len(groups))]
    folds: list[list[str]] = [[] for _ in range(k)]
    for group in sorted(shuffled, key=len, reverse=True):  # stable: equal sizes keep the shuffled order
        min(folds, key=len).extend(group)
    return folds


#: Largest groups table read (a case → patient table of thousands of cases is well under 1 MB).
MAX_GROUPS_BYTES = 16 << 20
_HEADER_CASE = ("case", "case_id", "caseid", "case id")
_HEADER_GROUP = ("patient", "patient_id", "patientid", "patient id", "group", "subject")


def read_groups(path: str | Path) -> dict[str, str]:
    """Case id → patient id from a groups table: CSV ``case,patient`` rows (an optional header row, blank lines
    and ``#`` comments skipped; tab- or semicolon-separated also read) or a JSON object ``{case: patient}``
    (patient ids as strings or integers). A ``.json`` name, or text starting with ``{``, is read as JSON.

    Raises:
        InputError: a missing, unreadable, empty or malformed file, or a case given two patients.
    """
    path = Path(path)
    fix = f"give --groups a CSV of 'case,patient' lines or a JSON object {{case: patient}} ({path})"
    if not path.is_file():
        raise InputError(f"the groups table {path} does not exist or is not a file; {fix}.")
    size = path.stat().st_size
    if size > MAX_GROUPS_BYTES:
        raise InputError(f"the groups table {path} is {size >> 20} MB, far more than a case → patient table; {fix}.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"the groups table {path} cannot be read as UTF-8 text ({exc.__class__.__name__}); {fix}."
        ) from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        pairs = _json_pairs(text, fix)
    else:
        pairs = _csv_pairs(text, fix)
    if not pairs:
        raise InputError(f"the groups table {path} lists no case; {fix}.")
    groups: dict[str, str] = {}
    for case, patient in pairs:
        if groups.setdefault(case, patient) != patient:
            raise InputError(
                f"case {case!r} is given two patients ({groups[case]!r} and {patient!r}) in {path}; keep one line per case."
            )
    return groups


def _json_pairs(text: str, fix: str) -> list[tuple[str, str]]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise InputError(f"the groups table is not valid JSON; {fix}.") from None
    if not isinstance(data, dict):
        raise InputError(f"the groups table holds JSON {type(data).__name__}, not an object {{case: patient}}; {fix}.")
    pairs = []
    for case, patient in data.items():
        if isinstance(patient, bool) or not isinstance(patient, (str, int)) or not str(patient).strip():
            raise InputError(
                f"case {case!r} has patient {patient!r:.40} in the groups table, not a string or an integer; {fix}."
            )
        pairs.append((case.strip(), str(patient).strip()))
    return pairs


def _csv_pairs(text: str, fix: str) -> list[tuple[str, str]]:
    lines = [
        (n, line)
        for n, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        return []
    sample = lines[0][1]
    delimiter = "," if "," in sample else "\t" if "\t" in sample else ";" if ";" in sample else ","
    rows = csv.reader([line for _, line in lines], delimiter=delimiter)
    pairs = []
    try:
        for (n, line), row in zip(lines, rows):
            cells = [cell.strip() for cell in row]
            if len(cells) != 2 or not all(cells):
                raise InputError(f"line {n} of the groups table ({line.strip()[:60]!r}) is not 'case,patient'; {fix}.")
            pairs.append((cells[0], cells[1]))
    except csv.Error as exc:  # e.g. a field over the csv module's size limit
        raise InputError(f"the groups table is not a CSV table ({exc}); {fix}.") from None
    if pairs[0][0].lower() in _HEADER_CASE and pairs[0][1].lower() in _HEADER_GROUP:
        pairs = pairs[1:]
    return pairs
