"""Training-slice sampling: lesion oversampling, reproducible per epoch, sharded across DDP ranks.

Every epoch draws its indices from ``numpy.random.default_rng([seed, epoch, rank])`` and nothing else, so an
epoch is the same whether the run was interrupted before it or not (resume reproduces the uninterrupted
run), and ranks draw different slices.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from mdanet_sdk.errors import InputError

__all__ = ["LesionSampler"]


class LesionSampler(Sampler[int]):
    """Yields ``num_samples`` slice indices per epoch for one rank.

    With ``lesion_fraction = 0`` an epoch is one random permutation of all slices (the same on every rank),
    padded by wrapping around to ``num_samples * world_size`` and split ``perm[rank::world_size]``, as
    :class:`torch.utils.data.DistributedSampler` does. With ``lesion_fraction = p > 0`` each index is drawn
    with replacement: with probability ``p`` a slice holding lesion, else any slice. Lesion slices are rare
    in stroke volumes (most axial slices show none), and without oversampling the Dice term sees few of them.

    Args:
        has_lesion: ``(N,)`` booleans, one per slice of the dataset.
        num_samples: indices per epoch for this rank (the trainer uses ``steps × batch size``).
        lesion_fraction: ``p`` in ``[0, 1]``.
        seed: base seed of the run.
        rank: this process's rank; ``world_size``: the number of processes.
    """

    def __init__(
        self,
        has_lesion: Sequence[bool] | np.ndarray,
        num_samples: int,
        lesion_fraction: float = 0.0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.has_lesion = np.asarray(has_lesion, dtype=bool)
        if self.has_lesion.ndim != 1 or self.has_lesion.size == 0:
            raise InputError("the training set holds no slices; give cases with at least one slice.")
        if not 0.0 <= lesion_fraction <= 1.0:
            raise InputError(f"lesion_fraction must be in [0, 1], got {lesion_fraction}.")
        if num_samples < 1 or not 0 <= rank < world_size:
            raise InputError(
                f"need num_samples >= 1 and 0 <= rank < world_size, got {num_samples}, {rank}, {world_size}."
            )
        self.num_samples = int(num_samples)
        self.lesion_fraction = float(lesion_fraction)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose indices :meth:`__iter__` yields."""
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """This rank's ``(num_samples,)`` indices of the current epoch."""
        n = self.has_lesion.size
        lesion = np.flatnonzero(self.has_lesion)
        if self.lesion_fraction == 0.0 or lesion.size == 0:
            # One permutation shared by all ranks (seed without rank), then split.
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(n)
            total = self.num_samples * self.world_size
            perm = np.resize(perm, total)  # wraps around when the epoch is longer than the dataset
            return perm[self.rank :: self.world_size]
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        pick_lesion = rng.random(self.num_samples) < self.lesion_fraction
        out = rng.integers(0, n, self.num_samples)
        out[pick_lesion] = lesion[rng.integers(0, lesion.size, int(pick_lesion.sum()))]
        return out

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples
