"""What the trainer reports while it runs: :class:`TrainEvent`, passed to the ``progress`` callback.

The library draws nothing; the CLI turns these events into progress bars
(:func:`mdanet_sdk.cli._progress.train_bars`), and a Python caller may log them, or raise from the callback
to stop training as an interruption would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["EpochStats", "TrainEvent", "ProgressFn", "EventName", "SplitName", "SPLIT_LABELS"]


#: What a :class:`TrainEvent` reports.
EventName = Literal["epoch", "step", "validated", "stopped"]
#: The cases an epoch's Dice was scored on: the inner split (``select="inner"``) or the validation cases.
SplitName = Literal["inner", "val"]
#: How a split is named to a reader: a short label (progress bar) and a phrase (messages). ``None``: a
#: producer that does not say which split it scored.
SPLIT_LABELS: dict[SplitName | None, tuple[str, str]] = {
    "inner": ("inner DSC", "inner-split Dice"),
    "val": ("val DSC", "validation Dice"),
    None: ("DSC", "Dice on the selection split"),
}


@dataclass(frozen=True)
class EpochStats:
    """Mean training losses of an epoch (so far) and the hard Dice of its predictions.

    Attributes:
        loss: mean total loss per slice.
        dice_loss, ce, sim: mean of each loss term per slice (``sim`` 0 without the similarity loss).
        train_dsc: Dice of the argmax predictions over every training pixel seen (1.0 when neither the
            predictions nor the labels hold lesion).
    """

    loss: float
    dice_loss: float
    ce: float
    sim: float
    train_dsc: float


@dataclass(frozen=True)
class TrainEvent:
    """One report of the trainer (made by rank 0 only under ``torchrun``).

    Attributes:
        what: ``"epoch"`` (an epoch starts; ``steps`` steps follow), ``"step"`` (optimizer step ``step``
            finished; ``stats`` are this rank's running means), ``"validated"`` (the epoch ended: ``stats``
            over all ranks, ``val_dsc``, ``best_val_dsc``, ``best_epoch``, ``split``) or ``"stopped"`` (early
            stopping ends the fold after ``epoch``; ``split``: the cases whose Dice stopped improving).
        fold: fold index.
        epoch: epoch index, 0-based.
        epochs: the run's maximum number of epochs.
        steps: optimizer steps per epoch.
        step: steps done in this epoch (counts from 1; 0 before the first).
        stats: the epoch's training statistics (``"step"`` and ``"validated"``).
        val_dsc: mean per-case Dice of this epoch on the selection split, the cases ``split`` names
            (``"validated"``); the name is that of earlier versions, which always scored the validation cases.
        best_val_dsc, best_epoch: the best Dice of the fold so far on that split and its epoch (``"validated"``).
        split: ``"inner"`` (the inner split of the training cases, ``select="inner"``) or ``"val"`` (the
            validation cases, ``select="val"`` or ``"last"``) for ``"validated"`` and ``"stopped"``; ``None``
            for the other events, or from a producer that does not say.
    """

    what: EventName
    fold: int
    epoch: int
    epochs: int
    steps: int
    step: int = 0
    stats: EpochStats | None = None
    val_dsc: float | None = None
    best_val_dsc: float | None = None
    best_epoch: int | None = None
    split: SplitName | None = None


#: The ``progress`` callback of :func:`~mdanet_sdk.train.trainer.train`.
ProgressFn = Callable[[TrainEvent], None]
