"""Score predicted lesion masks against ground truth: per case, per fold, and mean ± std as in the paper.

Predictions are matched to ground-truth cases by case id:

- a **prediction folder** holds ``<case_id>_seg.nii.gz`` (or ``.nii``) files, as ``mdanet-sdk segment`` writes
  them; other files (``*_prob.nii.gz``, overlays) are ignored;
- a **run folder** of ``mdanet-sdk train`` holds ``fold_K/predictions/<case_id>_seg.nii.gz`` (each fold's
  validation cases, predicted with its best weights); the summary is then the mean ± std over the fold means
  (:func:`~mdanet_sdk.metrics.summarize_folds`), as the paper reports 5-fold cross-validation. For a plain
  prediction folder it is the mean ± std over cases.

Ground truth is a dataset folder read with :func:`~mdanet_sdk.data.cases.find_cases` (ISLES'22, ISLES'18,
generic; case ids as that function gives them, e.g. ``sub-strokecase0001`` or ``case_5``), or a flat folder of
label files ``<case_id>.nii.gz`` (``_msk``, ``_seg``, ``_label``, ``_mask`` suffixes are stripped).

Both masks are compared on the ground truth's voxel grid after reorientation to RAS+ (so a prediction written
in another axis order still matches); the voxel volume for the mL metrics comes from the ground truth's
header. Metrics: DSC, precision, recall, F1 (Eq. 13-16) and the ISLES'22 absolute volume difference (mL),
absolute lesion-count difference and lesion-wise F1 (:func:`mdanet_sdk.metrics.case_metrics`).
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mdanet_sdk._files import atomic_write, write_json
from mdanet_sdk.data.cases import AFFINE_TOL_MM
from mdanet_sdk.data.layouts import find_cases
from mdanet_sdk.data.nifti import NIFTI_SUFFIXES, OUTPUT_SUFFIXES, is_prediction, load_volume, nifti_stem
from mdanet_sdk.errors import InputError
from mdanet_sdk.metrics import aggregate, case_metrics, f1_score, summarize_folds

__all__ = [
    "EvaluationResult",
    "evaluate",
    "find_predictions",
    "find_ground_truth",
    "METRIC_NAMES",
    "PRED_SUFFIX",
    "summary_rows",
]

#: What ends the name of a predicted mask before its NIfTI suffix (:func:`mdanet_sdk.data.nifti.output_name`).
PRED_SUFFIX = OUTPUT_SUFFIXES["mask"]
#: The metrics of a case, in report order.
METRIC_NAMES = (
    "dsc",
    "precision",
    "recall",
    "f1",
    "abs_volume_diff_ml",
    "abs_lesion_count_diff",
    "lesion_f1",
    "volume_gt_ml",
    "volume_pred_ml",
    "n_lesions_gt",
    "n_lesions_pred",
)
_LABEL_SUFFIXES = ("_msk", "_seg", "_label", "_mask", "_lesion")
_FOLD_DIR = re.compile(r"^fold_(\d+)$")


def _is_nifti(path: Path) -> bool:
    return path.name.endswith(NIFTI_SUFFIXES)


def _prediction_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not _is_nifti(path) or not nifti_stem(path).endswith(PRED_SUFFIX) or not path.is_file():
            continue
        case_id = nifti_stem(path)[: -len(PRED_SUFFIX)]
        if case_id in found:
            raise InputError(f"{folder} holds two predictions of case {case_id}; keep one of them.")
        found[case_id] = path
    return found


def find_predictions(pred: str | os.PathLike[str]) -> dict[int | None, dict[str, Path]]:
    """The predicted masks of a prediction folder or a run folder.

    Returns:
        ``{fold: {case_id: path}}``; the only key is ``None`` for a prediction folder.

    Raises:
        InputError: the folder does not exist or holds no ``*_seg.nii(.gz)`` file.
    """
    root = Path(pred)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; give a folder of <case_id>_seg.nii.gz files or a run folder.")
    folds = {}
    for sub in sorted(root.iterdir()):
        match = _FOLD_DIR.match(sub.name)
        if match and (sub / "predictions").is_dir():
            folds[int(match.group(1))] = _prediction_files(sub / "predictions")
    found: dict[int | None, dict[str, Path]]
    found = {k: v for k, v in sorted(folds.items()) if v} if folds else {None: _prediction_files(root)}
    if not any(found.values()):
        raise InputError(
            f"{root} holds no predictions; expected <case_id>_seg.nii.gz files, or fold_K/predictions/ folders "
            "of an mdanet-sdk train run."
        )
    return found


def find_ground_truth(gt: str | os.PathLike[str], layout: str = "auto") -> dict[str, Path]:
    """Label file of every labelled case of a dataset folder, or of a flat folder of label files.

    Returns:
        ``{case_id: label path}``.

    Raises:
        InputError: no labelled case found.
    """
    root = Path(gt)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; give the dataset folder holding the ground-truth labels.")
    try:
        labels = {s.case_id: s.label_path for s in find_cases(root, layout) if s.label_path is not None}
    except InputError:
        flat = [p for p in root.iterdir() if p.is_file() and _is_nifti(p) and not is_prediction(p)]  # never our masks
        if not flat or layout not in ("auto", "generic"):
            raise
        labels = {}
        for path in sorted(flat):
            stem = nifti_stem(path)
            case_id = next((stem[: -len(s)] for s in _LABEL_SUFFIXES if stem.endswith(s)), stem)
            if case_id in labels:
                raise InputError(f"{root} holds two labels of case {case_id}; keep one of them.")
            labels[case_id] = path
    if not labels:
        raise InputError(f"{root} holds no labelled case; give the folder with the ground-truth masks.")
    return labels


@dataclass
class EvaluationResult:
    """Scores of a set of predictions.

    Attributes:
        cases: one dict per evaluated case: ``case_id``, ``fold`` (None for a prediction folder) and the
            metrics of :data:`METRIC_NAMES` (fractions and mL, as :func:`~mdanet_sdk.metrics.case_metrics`).
        summary: metric → (mean, std); over the fold means for a run folder, over cases otherwise.
        over: ``"folds"`` or ``"cases"``: what ``summary``'s std runs over.
        per_fold: fold → metric → (mean, std over its cases); empty for a prediction folder.
        missing: ground-truth case ids without a prediction (not scored).
        unmatched: predicted case ids without ground truth (not scored).
    """

    cases: list[dict[str, Any]]
    summary: dict[str, tuple[float, float]]
    over: str
    per_fold: dict[int, dict[str, tuple[float, float]]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)

    @property
    def f1_of_means(self) -> float:
        """F1 (Eq. 16) of the mean precision and mean recall: the paper's F1 column (its tables give no std)."""
        return f1_score(self.summary["precision"][0], self.summary["recall"][0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "over": self.over,
            "summary": {k: list(v) for k, v in self.summary.items()},
            "f1_of_means": self.f1_of_means,
            "per_fold": {str(k): {m: list(v) for m, v in s.items()} for k, s in self.per_fold.items()},
            "cases": self.cases,
            "missing": self.missing,
            "unmatched": self.unmatched,
        }

    def to_csv(self) -> str:
        """One row per case: ``case_id, fold`` and every metric."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=("case_id", "fold", *METRIC_NAMES), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.cases)
        return buf.getvalue()

    def save(self, json_path: str | os.PathLike[str], csv_path: str | os.PathLike[str] | None = None) -> list[Path]:
        """Write the JSON report (and the per-case CSV), each atomically; returns the paths written."""
        written = [write_json(json_path, self.to_dict())]
        if csv_path is not None:
            text = self.to_csv()
            written.append(atomic_write(csv_path, lambda tmp: tmp.write_text(text)))
        return written


def _score(pred_path: Path, gt_path: Path, case_id: str, threshold: float | None) -> dict[str, float]:
    gt = load_volume(gt_path, allow_empty=True)
    pred = load_volume(pred_path, allow_empty=True)
    if pred.data.ndim != 3 or pred.shape != gt.shape or not np.allclose(pred.affine, gt.affine, atol=AFFINE_TOL_MM):
        raise InputError(
            f"prediction {pred_path.name} of case {case_id} is not on its ground truth's voxel grid "
            f"({pred.data.shape} vs {gt.shape}, or another affine); predict on the original image."
        )
    mask = pred.data > threshold if threshold is not None else pred.data
    return case_metrics(mask, gt.data, gt.voxel_volume_ml)


def evaluate(
    pred: str | os.PathLike[str],
    gt: str | os.PathLike[str],
    *,
    layout: str = "auto",
    threshold: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Score the predictions of a prediction folder or run folder against a ground-truth folder.

    Args:
        pred: folder of ``<case_id>_seg.nii.gz`` masks, or an ``mdanet-sdk train`` run folder.
        gt: dataset folder (any layout of :func:`~mdanet_sdk.data.cases.find_cases`) or flat label folder.
        layout: layout of ``gt`` (``"auto"`` detects it).
        threshold: binarise predictions as ``value > threshold`` (for probability maps); default: the
            predictions must hold 0 and 1 only (any non-zero integer counts as lesion).
        progress: called with each case id before it is scored.

    Returns:
        the :class:`EvaluationResult`.

    Raises:
        InputError: nothing to match, a prediction on another grid, or non-binary predictions without
            ``threshold``.
    """
    predictions = find_predictions(pred)
    labels = find_ground_truth(gt, layout)
    predicted = {case_id for fold in predictions.values() for case_id in fold}
    cases: list[dict[str, Any]] = []
    for fold, files in predictions.items():
        for case_id, path in files.items():
            if case_id not in labels:
                continue
            if progress is not None:
                progress(case_id)
            cases.append({"case_id": case_id, "fold": fold, **_score(path, labels[case_id], case_id, threshold)})
    if not cases:
        raise InputError(
            f"no prediction in {pred} matches a case of {gt} (predictions: {sorted(predicted)[:3]}..., "
            f"ground truth: {sorted(labels)[:3]}...); name them <case_id>_seg.nii.gz."
        )
    per_fold: dict[int, dict[str, tuple[float, float]]] = {}
    if None in predictions:
        summary, over = aggregate(cases), "cases"
    else:
        # A run folder: every key is a fold number (None is a prediction folder's only key).
        groups = {fold: [c for c in cases if c["fold"] == fold] for fold in predictions if fold is not None}
        groups = {fold: group for fold, group in groups.items() if group}
        per_fold = {fold: aggregate(group) for fold, group in groups.items()}
        summary, over = summarize_folds(list(groups.values())), "folds"
    summary = {k: v for k, v in summary.items() if k != "fold"}
    per_fold = {f: {k: v for k, v in s.items() if k != "fold"} for f, s in per_fold.items()}
    return EvaluationResult(
        cases=cases,
        summary=summary,
        over=over,
        per_fold=per_fold,
        missing=sorted(set(labels) - predicted),
        unmatched=sorted(predicted - set(labels)),
    )


def summary_rows(result: EvaluationResult) -> list[tuple[str, str]]:
    """``(metric, "mean ± std")`` rows for display: fractions as percentages, as the paper prints them."""
    rows = []
    for name in METRIC_NAMES:
        if name not in result.summary:
            continue
        mean, std = result.summary[name]
        scale = 100.0 if name in ("dsc", "precision", "recall", "f1", "lesion_f1") else 1.0
        rows.append((name, f"{mean * scale:.2f} ± {std * scale:.2f}"))
    rows.append(("f1_of_means", f"{result.f1_of_means:.4f}"))
    return rows
