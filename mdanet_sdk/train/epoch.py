"""The pieces of one training epoch: seeding, the data loader, the training forward pass and the epoch's sums.

Reproducibility: every epoch re-seeds Python, NumPy and torch (:func:`seed_everything`) and its loader's
generator from ``(seed, fold, epoch)``, and data-loader workers derive their NumPy and Python seeds from
torch's, so an epoch does not depend on what ran before it in the process.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from mdanet_sdk.train.events import EpochStats

__all__ = ["EpochTotals", "TrainForward", "seed_everything", "epoch_seed", "epoch_loader"]


@dataclass(frozen=True)
class EpochTotals:
    """Sums over an epoch's batches (on one rank, or over all of them), from which :class:`EpochStats` follow.

    During the epoch the sums live in one float64 tensor in field order (:meth:`of_batch` adds to it on the
    device, without a sync per step), which is also what DDP sums across ranks in one ``all_reduce``.

    Attributes:
        loss, dice, ce, sim: each loss term times the batch size, summed over the batches.
        samples: slices seen.
        tp, fp, fn: pixels predicted (argmax) and labelled lesion, predicted only, labelled only.
    """

    loss: float = 0.0
    dice: float = 0.0
    ce: float = 0.0
    sim: float = 0.0
    samples: float = 0.0
    tp: float = 0.0
    fp: float = 0.0
    fn: float = 0.0

    @classmethod
    def zeros(cls, device: torch.device) -> Tensor:
        """The empty sums: float64 ``(8,)`` on ``device``."""
        return torch.zeros(len(fields(cls)), dtype=torch.float64, device=device)

    @staticmethod
    @torch.no_grad()
    def of_batch(logits: Tensor, y: Tensor, parts: dict[str, Tensor]) -> Tensor:
        """What one batch adds to the sums: float64 ``(8,)`` on the batch's device.

        Args:
            logits: ``(B, 2, H, W)``; y: int64 ``(B, H, W)`` labels; parts: the loss terms
                (:class:`~mdanet_sdk.train.losses.MDANetLoss`: ``total``, ``dice``, ``ce``, optionally ``sim``).
        """
        pred = logits.argmax(1) == 1
        truth = y == 1
        n = y.shape[0]
        sim = parts.get("sim", torch.zeros((), device=logits.device))
        return torch.stack(
            [
                parts["total"].double() * n,
                parts["dice"].double() * n,
                parts["ce"].double() * n,
                sim.double() * n,
                torch.tensor(n, dtype=torch.float64, device=logits.device),
                (pred & truth).sum().double(),
                (pred & ~truth).sum().double(),
                (~pred & truth).sum().double(),
            ]
        )

    @classmethod
    def from_tensor(cls, sums: Tensor) -> "EpochTotals":
        """The record of float64 ``(8,)`` sums (one device sync)."""
        return cls(*sums.tolist())

    def stats(self) -> EpochStats:
        """Mean losses per slice and the hard Dice of the sums."""
        n = max(self.samples, 1.0)
        denom = 2 * self.tp + self.fp + self.fn
        return EpochStats(
            loss=self.loss / n,
            dice_loss=self.dice / n,
            ce=self.ce / n,
            sim=self.sim / n,
            train_dsc=1.0 if denom == 0 else 2 * self.tp / denom,
        )


class TrainForward(nn.Module):
    """``forward = model.forward_train``, so DDP's gradient hooks see the training forward pass.

    Returns ``(logits (B, 2, H, W), stems)`` of ``x (B, C, H, W)``; ``stems`` feed the similarity loss.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        return self.model.forward_train(x)  # type: ignore[operator]  # nn.Module attributes are typed as Tensor


def seed_everything(seed: int | Sequence[int]) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA) from one seed or tuple."""
    value = int(np.random.SeedSequence(seed).generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def epoch_seed(seed: int, fold: int, epoch: int) -> int:
    """The seed of one epoch of one fold: everything random in it follows from this number."""
    return int(np.random.SeedSequence((seed, fold, epoch)).generate_state(1)[0])


def _worker_init(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; derive NumPy's and Python's from it.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def epoch_loader(
    dataset: Dataset, sampler: Sampler[int], batch_size: int, workers: int, device: torch.device, seed: int
) -> DataLoader:
    """The loader of one epoch: ``batch_size`` slices per batch from ``sampler``, incomplete batches dropped,
    workers seeded from ``seed`` (:func:`epoch_seed`)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        worker_init_fn=_worker_init,
        generator=torch.Generator().manual_seed(seed),
    )
