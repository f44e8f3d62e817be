"""Which predicted mask and which ground-truth label belong to each case id.

Predictions are found in a **prediction folder** under any of these names (``.nii`` or ``.nii.gz``):

- ``<case>_seg.nii.gz``, as ``mdanet-sdk segment`` writes them;
- ``<case>.nii.gz``, as nnU-Net (``nnUNetv2_predict``) writes them, or ``<case>_msk``, ``_mask``,
  ``_pred``, ``_lesion``, ``_label`` when that names a ground-truth case;
- ``<case>/lesion_msk.nii.gz`` or ``<case>/results/lesion_msk.nii.gz``, as DeepISLES writes them, one
  folder per case; without a ``lesion_msk`` file, the one ``*_msk`` or ``*_seg`` file of the case folder
  (or of a subfolder of it);
- the names of a ``pred_pattern``: a path relative to the prediction folder in which ``{case}`` stands for
  the case id and ``*`` for any characters of one path component, e.g. ``"{case}/output/lesion.nii.gz"``
  or ``"pred_{case}.nii.gz"``; only those names are then read.

A probability map (``*_prob``) is never taken as a mask, nor is a hidden file. Two files that name the same
case are an :class:`~mdanet_sdk.errors.InputError` naming both. A **run folder** of ``mdanet-sdk train``
holds one prediction folder per fold, ``fold_K/predictions/``; each is read as above.

Ground truth is a dataset folder read with :func:`~mdanet_sdk.data.layouts.find_cases`, or a flat folder of
label files ``<case>.nii.gz`` (nnU-Net's ``labelsTr``; ``_msk``, ``_seg``, ``_label``, ``_mask``,
``_lesion`` endings are stripped).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection
from pathlib import Path

from mdanet_sdk.data.layouts import find_cases
from mdanet_sdk.data.layouts.orphans import orphan_case_id, orphan_labels
from mdanet_sdk.data.nifti import NIFTI_SUFFIXES, OUTPUT_SUFFIXES, is_prediction, nifti_stem
from mdanet_sdk.errors import InputError

__all__ = ["PRED_SUFFIX", "find_predictions", "find_ground_truth", "find_labels", "fold_of_cases", "check_pred_pattern"]

#: What ends the name of a predicted mask before its NIfTI suffix (:func:`mdanet_sdk.data.nifti.output_name`).
PRED_SUFFIX = OUTPUT_SUFFIXES["mask"]
#: Endings of files that are never masks: our probability maps (and any other non-mask output).
_NOT_MASKS = tuple(s for kind, s in OUTPUT_SUFFIXES.items() if kind != "mask")
#: The mask DeepISLES writes for each case.
_DEEPISLES_MASK = "lesion_msk"
#: Endings of a mask file inside a case folder, when it holds no ``lesion_msk``.
_FOLDER_MASK_SUFFIXES = ("_msk", PRED_SUFFIX)
_LABEL_SUFFIXES = ("_msk", "_seg", "_label", "_mask", "_lesion")
#: Endings of a mask file at the top of a prediction folder that may follow the case id (ours first).
_TOP_MASK_SUFFIXES = (PRED_SUFFIX, "_msk", "_mask", "_pred", "_lesion", "_label")
_FOLD_DIR = re.compile(r"^fold_(\d+)$")
_CASE = "{case}"


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _is_mask_file(path: Path) -> bool:
    """A regular, visible NIfTI file that is not a probability map."""
    name = path.name
    return not name.startswith(".") and _is_nifti(path) and not nifti_stem(name).endswith(_NOT_MASKS) and path.is_file()


def _claim(found: dict[str, Path], case_id: str, path: Path, folder: Path) -> None:
    if case_id in found and found[case_id] != path:
        first, second = sorted((found[case_id], path))
        raise InputError(
            f"{folder} holds two predictions of case {case_id}: {first.relative_to(folder)} and "
            f"{second.relative_to(folder)}; remove one, or choose with --pred-pattern."
        )
    found[case_id] = path


def _top_level_id(stem: str, case_ids: Collection[str] | None) -> str:
    """The case of a file ``<stem>.nii.gz`` at the top of a prediction folder.

    ``<case>_seg`` (ours) names ``<case>``, any other stem names itself (nnU-Net). Given the ground truth's
    case ids, the stem wins when it is a case id itself (a case whose id ends in ``_seg``), and another
    mask ending (``_msk``, ``_mask``, ``_pred``, ``_lesion``, ``_label``) is stripped when that names a case.
    """
    stripped = [stem[: -len(s)] for s in _TOP_MASK_SUFFIXES if stem.endswith(s) and len(stem) > len(s)]
    if case_ids is not None:
        return next((c for c in (stem, *stripped) if c in case_ids), _top_level_id(stem, None))
    return stem[: -len(PRED_SUFFIX)] if stripped and stem.endswith(PRED_SUFFIX) else stem


def _folder_mask(case_dir: Path) -> list[Path]:
    """The mask files of one case folder (DeepISLES' ``lesion_msk`` first), looking one subfolder deep."""
    files = [p for p in sorted(case_dir.iterdir()) if _is_mask_file(p)]
    for sub in sorted(case_dir.iterdir()):
        if sub.is_dir() and not sub.name.startswith("."):
            files += [p for p in sorted(sub.iterdir()) if _is_mask_file(p)]
    deepisles = [p for p in files if nifti_stem(p) == _DEEPISLES_MASK]
    return deepisles or [p for p in files if nifti_stem(p).endswith(_FOLDER_MASK_SUFFIXES)]


def _by_name(folder: Path, case_ids: Collection[str] | None) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            for mask in _folder_mask(path):
                _claim(found, path.name, mask, folder)
        elif _is_mask_file(path):
            _claim(found, _top_level_id(nifti_stem(path), case_ids), path, folder)
    return found


def _translate(pattern: str, named: bool) -> str:
    """Regular expression of a pattern or of one of its components: ``{case}`` as group ``case`` (its later
    occurrences must repeat it) when ``named``, else as any characters; ``*`` as any characters but ``/``."""
    regex, first = [], True
    for piece in re.split(r"(\{case\}|\*)", pattern):
        if piece == _CASE:
            regex.append(("(?P<case>[^/]+)" if first else "(?P=case)") if named else "[^/]+")
            first = False
        elif piece == "*":
            regex.append("[^/]*")
        elif "{" in piece or "}" in piece:
            raise InputError(f"--pred-pattern {pattern!r} may hold {_CASE} and * only; remove the other braces.")
        else:
            regex.append(re.escape(piece))
    return "".join(regex)


def check_pred_pattern(pattern: str) -> re.Pattern[str]:
    """The regular expression of a ``pred_pattern`` (module docstring), matched against a path relative to
    the prediction folder, with the case id as group ``case``.

    Raises:
        InputError: no ``{case}``, another ``{...}``, an absolute path or a ``.``/``..``/empty component.
    """
    parts = pattern.split("/")
    if _CASE not in pattern or any(part in ("", ".", "..") for part in parts):
        raise InputError(
            f"--pred-pattern {pattern!r} must be a relative path holding {_CASE}, e.g. '{{case}}/lesion.nii.gz'."
        )
    return re.compile(_translate(pattern, named=True))


def _by_pattern(folder: Path, pattern: str) -> dict[str, Path]:
    """The files of ``pattern``, found one path component at a time (no glob: ``[``, ``?`` are literal)."""
    regex = check_pred_pattern(pattern)
    parts = [re.compile(_translate(part, named=False)) for part in pattern.split("/")]
    level = [folder]
    for part in parts[:-1]:
        level = [p for d in level for p in sorted(d.iterdir()) if part.fullmatch(p.name) and p.is_dir()]
    found: dict[str, Path] = {}
    for path in (p for d in level for p in sorted(d.iterdir()) if parts[-1].fullmatch(p.name)):
        match = regex.fullmatch(path.relative_to(folder).as_posix())
        if match and _is_mask_file(path) and not match.group("case").startswith("."):
            _claim(found, match.group("case"), path, folder)
    return found


def _prediction_files(folder: Path, pattern: str | None, case_ids: Collection[str] | None) -> dict[str, Path]:
    return _by_pattern(folder, pattern) if pattern is not None else _by_name(folder, case_ids)


def find_predictions(
    pred: str | os.PathLike[str],
    *,
    pattern: str | None = None,
    case_ids: Collection[str] | None = None,
) -> dict[int | None, dict[str, Path]]:
    """The predicted masks of a prediction folder or a run folder (module docstring).

    Args:
        pred: prediction folder, or run folder holding ``fold_K/predictions/``.
        pattern: read only the files of this ``pred_pattern``, relative to each prediction folder.
        case_ids: the ground truth's case ids, to read ``X_seg.nii.gz`` as case ``X_seg`` (not ``X``) when
            only ``X_seg`` is a case.

    Returns:
        ``{fold: {case_id: path}}``; the only key is ``None`` for a prediction folder.

    Raises:
        InputError: the folder does not exist, holds no prediction, or holds two of one case.
    """
    root = Path(pred)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; give a folder of predicted masks or a run folder.")
    if pattern is not None:
        check_pred_pattern(pattern)
    folds = {}
    for sub in sorted(root.iterdir()):
        match = _FOLD_DIR.match(sub.name)
        if match and (sub / "predictions").is_dir():
            folds[int(match.group(1))] = _prediction_files(sub / "predictions", pattern, case_ids)
    found: dict[int | None, dict[str, Path]]
    if folds:
        found = {k: v for k, v in sorted(folds.items()) if v}
    else:
        found = {None: _prediction_files(root, pattern, case_ids)}
    if not any(found.values()):
        expected = (
            f"files named {pattern!r}"
            if pattern
            else "<case>_seg.nii.gz, <case>.nii.gz or <case>/lesion_msk.nii.gz files"
        )
        raise InputError(
            f"{root} holds no predictions; expected {expected}, or fold_K/predictions/ folders of an mdanet-sdk "
            "train run (or give --pred-pattern)."
        )
    return found


def fold_of_cases(pred: str | os.PathLike[str]) -> dict[str, int]:
    """Case id → fold of the validation cases a run folder's ``fold_K/val_metrics.json`` lists (written by
    ``mdanet-sdk train``); empty for a prediction folder. Unreadable files are skipped: they only help to
    place a missing prediction in its fold."""
    folds: dict[str, int] = {}
    root = Path(pred)
    for path in sorted(root.glob("fold_*/val_metrics.json")):
        match = _FOLD_DIR.match(path.parent.name)
        try:
            cases = json.loads(path.read_text())["cases"]
            ids = [str(c["case_id"]) for c in cases]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if match:
            folds.update({case_id: int(match.group(1)) for case_id in ids})
    return folds


def find_ground_truth(
    gt: str | os.PathLike[str], layout: str = "auto", label_pattern: str | None = None
) -> dict[str, Path]:
    """Label file of every labelled case of a dataset folder, or of a flat folder of label files.

    ``label_pattern`` (``find_cases``'): where each case's label is, relative to its case folder.

    Returns:
        ``{case_id: label path}`` (:func:`find_labels` also says which cases' labels cannot be chosen).

    Raises:
        InputError: no labelled case found.
    """
    return find_labels(gt, layout, label_pattern)[0]


def _orphans_by_case(paths: list[Path]) -> tuple[dict[str, Path], dict[str, str]]:
    """``({case id: label}, {case id: why it cannot be scored})`` of labels found without their images
    (:func:`orphan_case_id`); two labels of one case fail that case alone."""
    found: dict[str, Path] = {}
    problems: dict[str, str] = {}
    for path in paths:
        case_id = orphan_case_id(path)
        if case_id in found:
            problems[case_id] = f"{found[case_id]} and {path} are both labels of case {case_id}; keep one of them."
        found[case_id] = path
    return {k: v for k, v in found.items() if k not in problems}, problems


def find_labels(
    gt: str | os.PathLike[str], layout: str = "auto", label_pattern: str | None = None
) -> tuple[dict[str, Path], dict[str, str]]:
    """:func:`find_ground_truth`, and ``{case_id: why}`` for each case whose label cannot be chosen (several
    candidates), so that evaluation fails that case alone."""
    root = Path(gt)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; give the dataset folder holding the ground-truth labels.")
    try:
        sources = find_cases(root, layout, label_pattern=label_pattern)
        labels = {s.case_id: s.label_path for s in sources if s.label_path}
        problems = {s.case_id: s.label_problem for s in sources if s.label_problem}
        if label_pattern is None:  # scoring needs no image: a label whose case has none is scored too
            orphans, clashes = _orphans_by_case(orphan_labels(root, sources))
            labels, problems = {**orphans, **labels}, {**clashes, **problems}
    except InputError:
        # Without any case found, only a BIDS derivatives tree names its cases by itself (derivatives/sub-X/...):
        # elsewhere a label's folder may be a rater's subfolder, not a case.
        nested = (
            [p for p in orphan_labels(root, []) if "derivatives" in p.parts]
            if layout == "auto" and label_pattern is None
            else []
        )
        flat = [p for p in root.iterdir() if p.is_file() and _is_nifti(p) and not is_prediction(p)]  # never our masks
        if nested and not flat:  # labels only, in a dataset's folders (e.g. an ISLES'22 derivatives/ tree)
            return _orphans_by_case(nested)
        if not flat or layout not in ("auto", "generic") or label_pattern is not None:
            raise
        labels, problems = {}, {}
        for path in sorted(flat):
            stem = nifti_stem(path)
            case_id = next((stem[: -len(s)] for s in _LABEL_SUFFIXES if stem.endswith(s)), stem)
            if case_id in labels:
                raise InputError(f"{root} holds two labels of case {case_id}; keep one of them.")
            labels[case_id] = path
    if not labels and not problems:
        raise InputError(f"{root} holds no labelled case; give the folder with the ground-truth masks.")
    return labels, problems
