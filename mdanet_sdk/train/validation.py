"""Validation of a fold on its held-out cases, on the native grid, through the one prediction routine.

Each case is predicted by :class:`~mdanet_sdk.inference.Predictor` exactly as ``mdanet-sdk segment`` would
(slices on the model grid, probabilities restored to the case's voxel grid, 0 outside the head, mask =
probability > 0.5 with the default :class:`~mdanet_sdk.inference.PostprocessConfig`) and scored against
its label with :func:`mdanet_sdk.metrics.case_metrics`. Under DDP each rank predicts its share of the cases
and the scores are gathered back into the fold's case order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mdanet_sdk.data.cases import Case
from mdanet_sdk.data.nifti import output_name, save_like
from mdanet_sdk.data.preprocess import PreprocessConfig, SliceStack, slice_stack
from mdanet_sdk.inference import PostprocessConfig, Predictor
from mdanet_sdk.metrics import case_metrics
from mdanet_sdk.train.distributed import Dist

__all__ = ["Validation", "mean_scores"]


@dataclass
class _ValCase:
    """A validation case, normalised once per fold."""

    index: int  # position in the fold's validation cases
    case: Case
    stack: SliceStack  # lazy (Z, C, H, W) on the model grid


class Validation:
    """This rank's share of a fold's validation cases, and how to predict them.

    Args:
        fold: fold index (names the model in error messages).
        cases: the fold's validation cases, in the fold's order (every rank gets all of them).
        modalities: the model's input channels, e.g. ``("dwi", "adc")``.
        preprocess: the run's preprocessing.
        dist: this process's place in the job.
        device, precision: where and in which resolved precision the model runs
            (:mod:`mdanet_sdk.device`).
        batch_size: slices per forward pass.
    """

    def __init__(
        self,
        fold: int,
        cases: Sequence[Case],
        modalities: Sequence[str],
        preprocess: PreprocessConfig,
        dist: Dist,
        device: torch.device,
        precision: str,
        batch_size: int,
    ) -> None:
        self.fold, self.dist = fold, dist
        self.device, self.precision, self.batch_size = device, precision, batch_size
        self.cases = [
            _ValCase(i, cases[i], slice_stack(cases[i].images, modalities, preprocess, cases[i].brain_mask))
            for i in range(dist.rank, len(cases), dist.world)  # each rank validates its share
        ]

    def run(self, model: nn.Module, save_dir: Path | None = None) -> list[dict[str, Any]]:
        """Per-case metrics of ``model`` (``case_id`` plus :func:`~mdanet_sdk.metrics.case_metrics`), all ranks'
        cases in the fold's order; with ``save_dir`` the masks are written there as ``<case_id>_seg.nii.gz``
        in each case's own geometry. ``model`` is back in train mode afterwards."""
        predictor = Predictor(
            [model], [f"fold {self.fold}"], self.device, self.precision, PostprocessConfig(), self.batch_size
        )
        mine = []
        model.eval()
        try:
            for item in self.cases:
                case = item.case
                probability = predictor.case_probability(item.stack, source=f"case {case.case_id}")
                geometry = item.stack.geometry
                mask = predictor.mask(probability, case.images, geometry.head, geometry.parenchyma)
                if save_dir is not None:
                    save_like(mask, case.reference, save_dir / output_name(case.case_id), output="mask")
                scores = case_metrics(mask, case.label, case.reference.voxel_volume_ml)
                mine.append((item.index, {"case_id": case.case_id, **scores}))
        finally:
            model.train()
        return [scores for _, scores in sorted(self.dist.gather(mine), key=lambda pair: pair[0])]


def mean_scores(cases: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean over cases of the per-case ``dsc``, ``precision`` and ``recall`` (the paper's validation Dice)."""
    return {k: float(np.mean([m[k] for m in cases])) for k in ("dsc", "precision", "recall")}
