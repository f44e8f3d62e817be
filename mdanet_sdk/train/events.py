"""What the trainer reports while it runs: :class:`TrainEvent`, passed to the ``progress`` callback.

The library draws nothing; the CLI turns these events into progress bars
(:func:`mdanet_sdk.cli._progress.train_bars`), and a Python caller may log them, or raise from the callback
to stop training as an interruption would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["EpochStats", "TrainEvent", "ProgressFn", "EventName"]


#: What a :class:`TrainEvent` reports.
EventName = Literal["epoch", "step", "validated", "stopped"]


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
            over all ranks, ``val_dsc``, ``best_val_dsc``, ``best_epoch``) or ``"stopped"`` (early stopping
            ends the fold after ``epoch``).
        fold: fold index.
        epoch: epoch index, 0-based.
        epochs: the run's maximum number of epochs.
        steps: optimizer steps per epoch.
        step: steps done in this epoch (counts from 1; 0 before the first).
        stats: the epoch's training statistics (``"step"`` and ``"validated"``).
        val_dsc: mean per-case validation Dice of this epoch (``"validated"``).
        best_val_dsc, best_epoch: the best validation Dice of the fold so far and its epoch (``"validated"``).
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


#: The ``progress`` callback of :func:`~mdanet_sdk.train.trainer.train`.
ProgressFn = Callable[[TrainEvent], None]
