"""Timing primitives of the benchmark: medians with their spread, round-robin timing of contenders, and a
per-stage wall-clock timer. Nothing here knows about networks or sections."""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from typing import Callable, Hashable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
import torch

__all__ = ["Stats", "measure_interleaved", "measure", "calls_per_sample", "StageTimer", "sync_for"]

#: The key type of the contenders in :func:`measure_interleaved` (a name, an index, …).
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Stats:
    """Median and spread of repeated measurements (linear-interpolated quartiles, extremes, count)."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> "Stats":
        """Summarise ``samples`` (at least one value)."""
        values = np.asarray(samples, dtype=np.float64)
        if values.size == 0:
            raise ValueError("Stats.of needs at least one sample")
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        return cls(float(median), float(q1), float(q3), float(values.min()), float(values.max()), int(values.size))

    @property
    def iqr(self) -> float:
        """Interquartile range ``q3 - q1``."""
        return self.q3 - self.q1

    def to_dict(self) -> dict[str, float | int]:
        return {k: (v if isinstance(v, int) else float(f"{v:.6g}")) for k, v in asdict(self).items()}


def measure_interleaved(
    fns: Mapping[K, Callable[[], object]],
    *,
    warmup: int = 1,
    repeats: int = 5,
    sync: Callable[[], None] | None = None,
) -> dict[K, list[float]]:
    """Wall time in seconds of each callable, ``repeats`` times each after ``warmup`` untimed rounds.

    The contenders run round-robin and the order rotates every round, so a neighbour's load or a thermal
    drift falls on all of them alike rather than on whichever ran last.

    Args:
        fns: name (any hashable key) → a callable taking no argument.
        warmup: untimed rounds first (allocator, oneDNN/cuDNN algorithm caches, lazy initialisation).
        repeats: timed calls of each callable.
        sync: called before and after each timed call (``torch.cuda.synchronize`` on a GPU).

    Returns:
        name → ``repeats`` durations in seconds.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[K, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        k = round_ % max(1, len(names))
        for name in names[k:] + names[:k]:
            if sync is not None:
                sync()
            start = time.perf_counter()
            fns[name]()
            if sync is not None:
                sync()
            times[name].append(time.perf_counter() - start)
    return times


def measure(
    fn: Callable[[], object], *, warmup: int = 1, repeats: int = 5, sync: Callable[[], None] | None = None
) -> list[float]:
    """Wall time in seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    return measure_interleaved({"fn": fn}, warmup=warmup, repeats=repeats, sync=sync)["fn"]


class StageTimer:
    """Accumulates wall time per named stage: ``with timer.stage("load"): ...``.

    Args:
        sync: called at each stage boundary (``torch.cuda.synchronize`` on a GPU, so asynchronous kernels are
            charged to the stage that launched them).
    """

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self._sync = sync

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self._sync is not None:
            self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self._sync is not None:
                self._sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def calls_per_sample(
    fns: Mapping[str, Callable[[], object]], target_s: float = 0.02, sync: Callable[[], None] | None = None
) -> dict[str, int]:
    """Calls per timed sample so that one sample lasts about ``target_s``: a kernel of microseconds timed
    alone would measure the timer and the scheduler instead (as ``timeit`` autoranges)."""
    once = {name: min(measure(fn, warmup=1, repeats=2, sync=sync)) for name, fn in fns.items()}
    return {name: max(1, min(1000, round(target_s / max(t, 1e-7)))) for name, t in once.items()}


def sync_for(device: torch.device) -> Callable[[], None] | None:
    """What to call at each timing boundary on ``device``: ``torch.cuda.synchronize`` on a GPU (kernels run
    asynchronously, so without it a timer would stop before they finish), nothing on the CPU."""
    return torch.cuda.synchronize if device.type == "cuda" else None
