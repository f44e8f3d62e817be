"""Score each case's prediction against its ground truth, and summarise, missing cases included."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mdanet_sdk._files import file_key
from mdanet_sdk.data.cases import AFFINE_TOL_MM
from mdanet_sdk.data.nifti import Volume, load_volume
from mdanet_sdk._values import is_real
from mdanet_sdk.errors import InputError
from mdanet_sdk.evaluate.matching import find_labels, find_predictions, fold_of_cases
from mdanet_sdk.evaluate.result import MISSING_POLICIES, EvaluationResult
from mdanet_sdk.metrics import aggregate, case_metrics, count_nan, summarize_folds
from mdanet_sdk.surface import surface_metrics

__all__ = ["check_threshold", "evaluate"]


def _score(pred_path: Path | None, gt_path: Path, case_id: str, threshold: float | None) -> dict[str, float]:
    """Every metric of one case; ``pred_path`` None scores an empty mask (a missing prediction)."""
    gt = load_volume(gt_path, allow_empty=True)
    if gt.data.ndim != 3:
        raise InputError(f"label {gt_path} of case {case_id} is not a 3D volume ({gt.data.shape}); give a 3D mask.")
    if gt.warnings:  # NaN/Inf voxels, read as 0: a lesion stored as NaN would score as background
        raise InputError(f"label {gt_path} of case {case_id}: {gt.warnings[0]} Give a label of 0 and 1 only.")
    if pred_path is None:
        mask = np.zeros(gt.shape, dtype=bool)
    elif file_key(pred_path) == file_key(gt_path):
        raise InputError(
            f"the prediction of case {case_id} is its label file {gt_path}; give the folder of predictions as PRED."
        )
    else:
        pred = load_volume(pred_path, allow_empty=True)
        if pred.data.ndim != 3 or pred.shape != gt.shape or not np.allclose(pred.affine, gt.affine, atol=AFFINE_TOL_MM):
            raise InputError(
                f"prediction {pred_path} of case {case_id} is not on its ground truth's voxel grid "
                f"({pred.data.shape} vs {gt.shape}, or another affine); predict on the original image."
            )
        if pred.warnings:  # NaN/Inf voxels, set to 0: a lesion the prediction marked NaN would score as missed
            raise InputError(f"prediction {pred_path} of case {case_id}: {pred.warnings[0]} Give a finite mask.")
        mask = pred.data > threshold if threshold is not None else _as_mask(pred)
    label = _as_mask(gt)
    try:
        scores = case_metrics(mask, label, gt.voxel_volume_ml)
    except InputError as exc:
        raise InputError(f"case {case_id} ({pred_path} against {gt_path}): {exc}") from None
    scores.update(surface_metrics(mask, label, gt.zooms))  # canonical (X, Y, Z) data, so its zooms
    return scores


def _as_mask(volume: Volume) -> np.ndarray:
    """A mask stored as integers counts any non-zero value as lesion (0/255 and 0/2 masks are common); a
    floating-point file must hold 0 and 1 (or be a probability map scored with a threshold)."""
    get_dtype = getattr(volume.header, "get_data_dtype", None)
    if get_dtype is not None and np.dtype(get_dtype()).kind in "iub":
        return volume.data != 0
    return volume.data


def _summarise(
    cases: list[dict[str, Any]], run_folder: bool
) -> tuple[dict[str, tuple[float, float]], str, dict[int, dict[str, tuple[float, float]]]]:
    """(summary, over, per_fold): over cases for a prediction folder, over fold means for a run folder."""
    if not run_folder:
        summary = aggregate(cases)
        return {k: v for k, v in summary.items() if k != "fold"}, "cases", {}
    # Folds from the scored cases: a fold whose every prediction is missing is still a fold of the run.
    groups = {f: [c for c in cases if c["fold"] == f] for f in sorted({c["fold"] for c in cases})}
    per_fold = {f: {k: v for k, v in aggregate(g).items() if k != "fold"} for f, g in groups.items()}
    summary = summarize_folds(list(groups.values()))
    return {k: v for k, v in summary.items() if k != "fold"}, "folds", per_fold


def _missing_folds(
    pred: str | os.PathLike[str], missing: list[str], predictions: Mapping[int | None, object]
) -> dict[str, int | None]:
    """The fold of each missing case: None for a prediction folder; for a run folder, the fold whose
    ``val_metrics.json`` lists it, or None when no fold does (it then belongs to no fold's mean)."""
    if None in predictions:
        return dict.fromkeys(missing)
    listed = fold_of_cases(pred)
    return {case_id: listed.get(case_id) for case_id in missing}


def _check_missing(missing: list[str], policy: str, pred: object) -> None:
    if policy not in MISSING_POLICIES:
        raise InputError(f"missing={policy!r} is not a policy; choose one of {', '.join(MISSING_POLICIES)}.")
    if policy == "fail" and missing:
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise InputError(
            f"{len(missing)} ground-truth case(s) have no prediction in {pred}: {', '.join(missing[:10])}{more}; "
            "predict them, or pass --missing empty (score as empty masks) or --missing skip."
        )


def check_threshold(threshold: float | None) -> None:
    """Refuse a probability threshold outside ``[0, 1)`` (NaN too): it would empty or fill every prediction."""
    if threshold is not None and not is_real(threshold):
        raise InputError(f"threshold must be a number (a probability), got {threshold!r:.40}.")
    if threshold is not None and not 0.0 <= threshold < 1.0:
        raise InputError(f"threshold must be at least 0 and below 1 (a probability), got {threshold}.")


def evaluate(
    pred: str | os.PathLike[str],
    gt: str | os.PathLike[str],
    *,
    layout: str = "auto",
    label_pattern: str | None = None,
    threshold: float | None = None,
    pred_pattern: str | None = None,
    missing: str = "empty",
    progress: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Score the predictions of a prediction folder or run folder against a ground-truth folder.

    Args:
        pred: prediction folder (``<case>_seg.nii.gz``, nnU-Net ``<case>.nii.gz``, DeepISLES
            ``<case>/lesion_msk.nii.gz``: :mod:`~mdanet_sdk.evaluate.matching`) or an ``mdanet-sdk train`` run
            folder.
        gt: dataset folder (any layout of :func:`~mdanet_sdk.data.layouts.find_cases`) or flat label folder.
        layout: layout of ``gt`` (``"auto"`` detects it).
        label_pattern: where each case's label is in ``gt``, relative to its case folder, ``{case}`` standing for
            the case id (default: the layout's lesion-label names; :func:`~mdanet_sdk.data.layouts.find_cases`).
        threshold: binarise predictions as ``value > threshold`` (for probability maps); default: the
            predictions must hold 0 and 1 only (any non-zero integer counts as lesion).
        pred_pattern: read only files of this name, ``{case}`` standing for the case id, relative to the
            prediction folder (e.g. ``"{case}/output/lesion.nii.gz"``).
        missing: a ground-truth case without prediction is ``"empty"``: scored as an empty mask (DSC 0 for
            a real lesion) and counted in every mean; ``"skip"``: left out of the means; ``"fail"``: an
            InputError. Listed in :attr:`EvaluationResult.missing` under every policy. In a run folder, a
            case that no fold's ``val_metrics.json`` lists belongs to no fold and is skipped.
        progress: called with each case id before it is scored.

    Returns:
        the :class:`~mdanet_sdk.evaluate.result.EvaluationResult`.

    A case that cannot be scored (an unreadable file, a prediction on another grid, non-binary values without
    ``threshold``, several labels) is listed in :attr:`EvaluationResult.failed` and left out of every mean;
    the others are scored.

    Raises:
        InputError: nothing to match, two predictions of one case, no case that can be scored, or a missing
            case under ``missing="fail"``.
    """
    check_threshold(threshold)
    labels, failed = find_labels(gt, layout, label_pattern)
    predictions = find_predictions(pred, pattern=pred_pattern, case_ids={*labels, *failed})
    predicted = {case_id for fold in predictions.values() for case_id in fold}
    missing_ids = sorted(set(labels) - predicted)
    _check_missing(missing_ids, missing, pred)
    if not predicted & {*labels, *failed}:
        raise InputError(
            f"no prediction in {pred} matches a case of {gt} (predictions: {sorted(predicted)[:3]}..., "
            f"ground truth: {sorted(labels)[:3]}...); name them <case_id>_seg.nii.gz or give --pred-pattern."
        )
    todo: list[tuple[str, int | None, Path | None]] = [
        (case_id, fold, path)
        for fold, files in predictions.items()
        for case_id, path in files.items()
        if case_id in labels
    ]
    skipped = []
    for case_id, fold in _missing_folds(pred, missing_ids, predictions).items():
        if missing == "skip" or (fold is None and None not in predictions):
            skipped.append(case_id)
        else:
            todo.append((case_id, fold, None))
    cases: list[dict[str, Any]] = []
    for case_id, fold, path in sorted(todo, key=lambda t: (-1 if t[1] is None else t[1], t[0])):
        if progress is not None:
            progress(case_id)
        try:
            scores = _score(path, labels[case_id], case_id, threshold)
        except InputError as exc:  # one unreadable or misaligned case never stops the others
            failed[case_id] = str(exc)
            continue
        record = {"case_id": case_id, "fold": fold, **scores, "missing": path is None}
        cases.append({**record, "prediction": None if path is None else str(path)})
    if not cases:  # nothing to average: the first reason, and which others failed
        others = sorted(failed)[1:]
        more = f" (and {len(others)} more: {', '.join(others[:10])})" if others else ""
        raise InputError(f"no case could be scored{more}: {failed[sorted(failed)[0]]}")
    summary, over, per_fold = _summarise(cases, run_folder=None not in predictions)
    return EvaluationResult(
        cases=cases,
        summary=summary,
        over=over,
        per_fold=per_fold,
        missing=missing_ids,
        unmatched=sorted(predicted - set(labels) - set(failed)),
        skipped=skipped,
        missing_policy=missing,
        excluded=count_nan(cases),
        failed=dict(sorted(failed.items())),
    )
