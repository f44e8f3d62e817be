"""This process's place in a ``torchrun`` job: rank, world size, the collective operations the trainer uses.

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) every operation is a no-op on rank 0 of 1, so the trainer
runs the same code either way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mdanet_sdk._env import env_int
from mdanet_sdk.errors import InputError

__all__ = ["Dist", "per_rank_batch"]


def per_rank_batch(batch_size: int, world: int) -> int:
    """The slices each of ``world`` ranks draws per optimizer step when ``batch_size`` is the global batch.

    DDP averages the ranks' gradients, so ``world`` ranks of ``batch_size / world`` slices take the step one
    process would take with ``batch_size`` slices (up to batch-norm statistics, which stay per rank).

    Raises:
        InputError: ``batch_size`` does not divide among the ranks.
    """
    if batch_size % world:
        raise InputError(
            f"--batch-size {batch_size} is the global batch, split evenly among the {world} processes; choose a "
            f"multiple of {world} (e.g. {max(world, batch_size - batch_size % world)})."
        )
    return batch_size // world


class Dist:
    """Rank, world size and local rank from the ``torchrun`` environment (rank 0 of 1 without one)."""

    def __init__(self) -> None:
        self.world = env_int("WORLD_SIZE", 1)
        self.rank = env_int("RANK", 0)
        self.local_rank = env_int("LOCAL_RANK", 0)
        self.owned = False  # whether we created the process group (and must destroy it)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes logs and checkpoints and reports progress."""
        return self.rank == 0

    def pin(self, device: torch.device) -> torch.device:
        """``device`` with a GPU index: a bare ``cuda`` is this process's local GPU (``cuda:LOCAL_RANK``)."""
        if device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank if self.enabled else 0)
        return device

    def setup(self, device: torch.device) -> None:
        """Join the process group (NCCL on GPU, Gloo on CPU) unless one is running or the job is one process."""
        import torch.distributed as dist

        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.owned = True

    def teardown(self) -> None:
        if self.owned:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owned = False

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, items: list[Any]) -> list[Any]:
        """Every rank's ``items`` concatenated in rank order (on every rank)."""
        if not self.enabled:
            return list(items)
        import torch.distributed as dist

        parts: list[list[Any]] = [[] for _ in range(self.world)]
        dist.all_gather_object(parts, items)
        return [item for part in parts for item in part]

    def sum(self, values: Tensor) -> Tensor:
        """``values`` summed over the ranks, in place (every rank gets the sum)."""
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(values)
        return values

    def wrap(self, net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``net`` inside :class:`~torch.nn.parallel.DistributedDataParallel` when the job has several ranks."""
        if not self.enabled:
            return net
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
