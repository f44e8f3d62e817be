"""The scores of an evaluation, and how they are written (JSON, CSV) and shown (summary rows)."""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdanet_sdk._files import atomic_write, write_json
from mdanet_sdk._text import without_surrogates
from mdanet_sdk.data.targets import check_report_file
from mdanet_sdk.errors import InputError
from mdanet_sdk.metrics import f1_score, mean_std_text

__all__ = ["EvaluationResult", "METRIC_NAMES", "MISSING_POLICIES", "check_report_paths", "summary_rows"]

#: The metrics of a case, in report order.
METRIC_NAMES = (
    "dsc",
    "precision",
    "recall",
    "f1",
    "abs_volume_diff_ml",
    "abs_lesion_count_diff",
    "lesion_f1",
    "hd95_mm",
    "asd_mm",
    "volume_gt_ml",
    "volume_pred_ml",
    "n_lesions_gt",
    "n_lesions_pred",
)
#: What ``evaluate(missing=...)`` does with a ground-truth case that has no prediction.
MISSING_POLICIES = ("empty", "skip", "fail")
_PERCENT = ("dsc", "precision", "recall", "f1", "lesion_f1")


def _json_safe(obj: Any) -> Any:
    """``obj`` with every NaN float replaced by ``None`` (JSON ``null``): NaN is not valid JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


@dataclass
class EvaluationResult:
    """Scores of a set of predictions.

    Attributes:
        cases: one dict per scored case: ``case_id``, ``fold`` (None for a prediction folder), the metrics
            of :data:`METRIC_NAMES` (fractions, mL and mm; :func:`~mdanet_sdk.metrics.case_metrics`,
            :func:`~mdanet_sdk.surface.surface_metrics`; NaN where a surface distance is undefined),
            ``missing`` (True: no prediction, scored as an empty mask) and ``prediction`` (the file read,
            or None).
        summary: metric → (mean, std); over the fold means for a run folder, over cases otherwise. NaN
            values are left out of each mean (:attr:`excluded` counts them).
        over: ``"folds"`` or ``"cases"``: what ``summary``'s std runs over.
        per_fold: fold → metric → (mean, std over its cases); empty for a prediction folder.
        missing: every ground-truth case id without a prediction, whatever the policy.
        skipped: the missing case ids left out of every mean (``missing_policy="skip"``, or a run folder's
            case that no fold lists).
        unmatched: predicted case ids without ground truth (not scored).
        missing_policy: ``"empty"``, ``"skip"`` or ``"fail"``: how missing cases were treated.
        excluded: metric → how many scored cases hold NaN for it and were left out of its mean.
        failed: case id → why it could not be scored (left out of every mean).
    """

    cases: list[dict[str, Any]]
    summary: dict[str, tuple[float, float]]
    over: str
    per_fold: dict[int, dict[str, tuple[float, float]]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing_policy: str = "empty"
    excluded: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def f1_of_means(self) -> float:
        """F1 (Eq. 16) of the mean precision and mean recall: the paper's F1 column (its tables give no std)."""
        return f1_score(self.summary["precision"][0], self.summary["recall"][0])

    def to_dict(self) -> dict[str, Any]:
        """The whole result as JSON-ready data (NaN as ``None``)."""
        return _json_safe(
            {
                "over": self.over,
                "missing_policy": self.missing_policy,
                "summary": {k: list(v) for k, v in self.summary.items()},
                "excluded_from_means": self.excluded,
                "f1_of_means": self.f1_of_means,
                "per_fold": {str(k): {m: list(v) for m, v in s.items()} for k, s in self.per_fold.items()},
                "cases": self.cases,
                "missing": self.missing,
                "skipped": self.skipped,
                "unmatched": self.unmatched,
                "failed": self.failed,
            }
        )

    def to_csv(self) -> str:
        """One row per scored case: ``case_id, fold``, every metric (an undefined one is an empty cell) and
        ``missing``; then one row per skipped case with its metrics empty, and one per failed case with its
        ``error``."""
        buf = io.StringIO()
        writer = csv.DictWriter(
            buf, fieldnames=("case_id", "fold", *METRIC_NAMES, "missing", "error"), extrasaction="ignore", restval=""
        )
        writer.writeheader()
        for case in self.cases:
            writer.writerow(
                {k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v for k, v in case.items()}
            )
        writer.writerows({"case_id": case_id, "missing": True} for case_id in self.skipped)
        writer.writerows({"case_id": case_id, "error": error} for case_id, error in self.failed.items())
        return buf.getvalue()

    def save(self, json_path: str | os.PathLike[str], csv_path: str | os.PathLike[str] | None = None) -> list[Path]:
        """Write the JSON report (and the per-case CSV), each atomically; returns the paths written.

        Raises:
            InputError: a path where a report may not go (:func:`check_report_paths`); nothing is written then.
        """
        check_report_paths(json_path, csv_path)
        written = [write_json(json_path, self.to_dict(), names_as_text=True)]
        if csv_path is not None:
            text = without_surrogates(self.to_csv())
            written.append(atomic_write(csv_path, lambda tmp: tmp.write_text(text, encoding="utf-8")))
        return written


def check_report_paths(json_path: str | os.PathLike[str], csv_path: str | os.PathLike[str] | None = None) -> None:
    """Refuse report files that would replace a prediction, a label, an image's sidecar, a model, a training
    run's records or any other file than an earlier report (:func:`~mdanet_sdk.data.targets.check_report_file`),
    or a CSV that is the JSON file itself.

    Raises:
        InputError: which path, and what to do.
    """
    if csv_path is not None and Path(csv_path) == Path(json_path):
        raise InputError(f"{json_path} would be overwritten by the CSV written beside it; name the JSON report .json.")
    check_report_file(json_path)
    if csv_path is not None:
        check_report_file(csv_path, "csv")


def summary_rows(result: EvaluationResult) -> list[tuple[str, str]]:
    """``(metric, "mean ± std")`` rows for display: fractions as percentages, as the paper prints them;
    distances in mm, with how many cases were left out of the mean (``n/a`` when all were)."""
    rows = []
    for name in METRIC_NAMES:
        if name not in result.summary:
            continue
        mean, std = result.summary[name]
        scale = 100.0 if name in _PERCENT else 1.0
        n = len(result.per_fold) if result.over == "folds" else len(result.cases) - result.excluded.get(name, 0)
        text = mean_std_text(mean, std, n, scale)
        if result.excluded.get(name):
            text += f" ({result.excluded[name]} left out: one mask empty)"
        rows.append((name, text))
    rows.append(("f1_of_means", f"{result.f1_of_means:.4f}"))
    return rows
