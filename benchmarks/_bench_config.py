"""Shared configuration of the benchmarks/ suites: the MDANET_BENCH_* environment (benchmarks/README.md)."""

from __future__ import annotations

from mdanet_sdk.bench import BenchSettings

__all__ = ["SETTINGS", "DEVICE", "sync"]

#: What the suites measure; MDANET_BENCH_QUICK=1 gives the ``--quick`` sizes.
SETTINGS = BenchSettings.from_env()
DEVICE = SETTINGS.resolved_device()


def sync() -> None:
    """Wait for queued GPU work, so a timed round covers the kernels it launched (a no-op on CPU)."""
    if DEVICE.type == "cuda":
        import torch

        torch.cuda.synchronize(DEVICE)
