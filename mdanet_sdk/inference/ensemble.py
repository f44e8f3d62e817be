"""Which checkpoints make one :class:`~mdanet_sdk.inference.Segmenter`: folds of one run (same modalities and
preprocessing, two classes), and the name each is shown under."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mdanet_sdk.errors import CheckpointError
from mdanet_sdk.train.checkpoint import Checkpoint

__all__ = ["check_ensemble", "checkpoint_name"]


def check_ensemble(checkpoints: Sequence[Checkpoint]) -> None:
    """Raise :class:`CheckpointError` unless the checkpoints share the first one's modalities and preprocessing
    (folds of one training run) and it is a two-class (background, lesion) model."""
    first = checkpoints[0]
    for ckpt in checkpoints[1:]:
        if ckpt.model_config.modalities != first.model_config.modalities or ckpt.preprocess != first.preprocess:
            raise CheckpointError(
                f"{ckpt.path} does not match {first.path} (modalities or preprocessing differ); an ensemble "
                "needs folds of one training run."
            )
    if first.model_config.num_classes != 2:
        raise CheckpointError(
            f"{first.path} predicts {first.model_config.num_classes} classes; the Segmenter needs a "
            "two-class (background, lesion) model."
        )


def checkpoint_name(ckpt: Checkpoint) -> str:
    """``"default-mri"`` for a bundled checkpoint, else the file name without ``.pt``."""
    return Path(ckpt.path).name.removesuffix(".pt") if ckpt.path is not None else "checkpoint"
