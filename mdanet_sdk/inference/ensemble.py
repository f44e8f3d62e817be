"""Which checkpoints make one :class:`~mdanet_sdk.inference.Segmenter`: folds of one run (same modalities and
preprocessing, two classes), and the name each is shown under."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mdanet_sdk.errors import CheckpointError, InputError
from mdanet_sdk.inference.postprocess import PostprocessConfig
from mdanet_sdk.train.checkpoint import Checkpoint

__all__ = ["check_ensemble", "checkpoint_name", "ensemble_postprocessing"]


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


#: The command-line option of each post-processing setting (Python: the Segmenter argument of the same name).
_OPTION = {
    "tta": "--tta/--no-tta",
    "threshold": "--threshold",
    "min_size": "--min-size",
    "max_adc_ratio": "--max-adc-ratio",
}


def ensemble_postprocessing(checkpoints: Sequence[Checkpoint], given: dict[str, Any]) -> PostprocessConfig:
    """The post-processing of an ensemble: what its checkpoints recommend (``meta["inference"]``), with the
    caller's settings (``given``, ``None`` = not set) applied.

    Raises:
        InputError: the checkpoints recommend different settings that the caller did not set (which one won
            used to depend on the order of the checkpoints).
    """
    settings = [PostprocessConfig.from_dict(c.meta.get("inference", {})).updated(**given) for c in checkpoints]
    first = settings[0].to_dict()
    for checkpoint, other in zip(checkpoints[1:], settings[1:]):
        differ = {k: (first[k], v) for k, v in other.to_dict().items() if v != first[k]}
        if differ:
            shown = "; ".join(f"{k} {a} vs {b}" for k, (a, b) in differ.items())
            options = ", ".join(_OPTION[k] for k in differ)
            raise InputError(
                f"{checkpoints[0].path or checkpoint_name(checkpoints[0])} and {checkpoint.path or checkpoint_name(checkpoint)} "
                f"recommend different post-processing ({shown}); set it for the ensemble with {options}."
            )
    return settings[0]


def checkpoint_name(ckpt: Checkpoint) -> str:
    """``"default-mri"`` for a bundled checkpoint, else the file name without ``.pt``."""
    return Path(ckpt.path).name.removesuffix(".pt") if ckpt.path is not None else "checkpoint"
