"""Score predicted lesion masks against ground truth: per case, per fold, and mean ± std as in the paper.

Predictions are matched to ground-truth cases by case id, whatever tool wrote them
(:mod:`~mdanet_sdk.evaluate.matching`): ``<case>_seg.nii.gz`` (``mdanet-sdk segment``), nnU-Net's
``<case>.nii.gz``, DeepISLES' ``<case>/lesion_msk.nii.gz``, or a ``pred_pattern`` such as
``"{case}/output/lesion.nii.gz"``; probability maps (``*_prob``) are never read as masks.

- a **prediction folder**: the summary is the mean ± std over cases;
- a **run folder** of ``mdanet-sdk train`` holds ``fold_K/predictions/`` (each fold's validation cases,
  predicted with its best weights); the summary is then the mean ± std over the fold means
  (:func:`~mdanet_sdk.metrics.summarize_folds`), as the paper reports 5-fold cross-validation.

A ground-truth case without prediction is never dropped silently: by default it is scored as an empty mask
(``missing="empty"``), or left out of the means (``"skip"``), or refused (``"fail"``); it is listed in
every case.

Both masks are compared on the ground truth's voxel grid after reorientation to RAS+ (so a prediction written
in another axis order still matches); the voxel volume (mL) and spacing (mm) come from the ground truth's
header. Metrics: DSC, precision, recall, F1 (Eq. 13-16), the ISLES'22 absolute volume difference (mL),
absolute lesion-count difference and lesion-wise F1 (:func:`mdanet_sdk.metrics.case_metrics`), and the
95th-percentile Hausdorff distance and average symmetric surface distance in mm
(:mod:`mdanet_sdk.surface`; NaN, JSON ``null``, when exactly one mask is empty, and left out of the means).
"""

from mdanet_sdk.evaluate.matching import PRED_SUFFIX, check_pred_pattern, find_ground_truth, find_predictions
from mdanet_sdk.evaluate.result import (
    METRIC_NAMES,
    MISSING_POLICIES,
    EvaluationResult,
    check_report_paths,
    summary_rows,
)
from mdanet_sdk.evaluate.run import check_threshold, evaluate

__all__ = [
    "check_report_paths",
    "EvaluationResult",
    "evaluate",
    "find_predictions",
    "find_ground_truth",
    "check_pred_pattern",
    "check_threshold",
    "METRIC_NAMES",
    "MISSING_POLICIES",
    "PRED_SUFFIX",
    "summary_rows",
]
