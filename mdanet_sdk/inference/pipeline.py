"""Cases streamed through the model in bounded memory: the core of :class:`~mdanet_sdk.inference.Segmenter`.

1. A background thread prepares each case (reads it and normalises it into a lazy
   :class:`~mdanet_sdk.data.preprocess.SliceStack`) and hands it over through a bounded queue, so at most
   ``prefetch`` cases wait and loading the next case overlaps with the model's work.
2. The calling thread cuts the slices of consecutive cases into batches of ``batch_size`` (slices of several
   cases share a batch when their model grid agrees); slices without head are skipped, their probability is 0
   (:meth:`SliceStack.runs`). A batch's slices are resampled and padded to the model
   grid only when it runs (:meth:`SliceStack.chunk`), and its lesion probabilities are restored to each
   case's native grid right away (:func:`~mdanet_sdk.data.preprocess.restore_probability_into`).
3. A case whose slices are all done is finished (mask, report) and yielded, in input order.

So a case costs O(native volume) (its images, normalised volumes and native probability) plus one batch on the
model grid, however many slices it has; nothing of size Z × model grid is ever allocated.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mdanet_sdk.data.cases import Case
from mdanet_sdk.data.preprocess import SliceGeometry, SliceStack, restore_probability_into

__all__ = ["CaseStream", "Loaded", "Pending"]

#: ``notify(event, case_id, n)``: see :meth:`mdanet_sdk.inference.Segmenter.predict_many`.
Notify = Callable[[str, str, int], None]


@dataclass
class Loaded:
    """A case read and normalised by the background thread; its slices reach the model grid batch by batch."""

    case: Case
    stack: SliceStack  # (Z, C, H, W) on demand
    started: float  # time.perf_counter() when its loading began

    @property
    def geometry(self) -> SliceGeometry:
        return self.stack.geometry


@dataclass
class Pending:
    """A case whose slices are (partly) with the model."""

    loaded: Loaded
    probability: np.ndarray  # float32 (X, Y, Z) on the native grid, filled batch by batch
    remaining: int  # slices not predicted yet

    @property
    def done(self) -> bool:
        return self.remaining == 0


@dataclass
class _Raised:
    """An unexpected exception in the background thread, re-raised in the caller's thread."""

    exception: BaseException


_END = object()
# The open batch: (case, first slice, end slice) ranges, at most batch_size slices in all.
_Batch = list[tuple[Pending, int, int]]


class CaseStream:
    """One pass of cases through the model (module docstring).

    Args:
        prepare: input → :class:`Loaded`, or a failure (an object with ``case_id`` and ``exception``, e.g.
            :class:`~mdanet_sdk.inference.FailedCase`) for an input that cannot be read; runs in the
            background thread.
        predict: ``(x (B, C, H, W) float32, source) → (B, H, W)`` lesion probabilities on the CPU; ``source``
            names the cases in the batch (for error messages).
        finish: a :class:`Pending` whose slices are all predicted → its result.
        batch_size: slices per forward pass, or a function of the model grid ``(H, W)`` that gives it.
        prefetch: prepared cases waiting at most.
    """

    def __init__(
        self,
        prepare: Callable[[Any], Any],
        predict: Callable[[torch.Tensor, str], torch.Tensor],
        finish: Callable[[Pending], Any],
        batch_size: int | Callable[[tuple[int, int]], int],
        prefetch: int,
    ) -> None:
        self.prepare, self.predict, self.finish = prepare, predict, finish
        self.batch_for = batch_size if callable(batch_size) else (lambda grid: batch_size)
        self.prefetch = prefetch

    def run(self, cases: Iterable[Any], errors: str, notify: Notify) -> Iterator[Any]:
        """Yield each case's result (or failure, with ``errors="yield"``) in input order.

        Errors of the model (``predict``) are raised whatever ``errors`` says: they would fail every case.
        The background thread is stopped when the caller stops iterating.
        """
        handoff: queue.Queue[Any] = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        loader = threading.Thread(
            target=self._load_all, args=(cases, handoff, stop), name="mdanet-sdk-loader", daemon=True
        )
        loader.start()
        try:
            yield from self._run(handoff, errors, notify)
        finally:
            stop.set()
            loader.join()

    def _load_all(self, cases: Iterable[Any], handoff: queue.Queue, stop: threading.Event) -> None:
        """Background thread: prepare each case, hand it over; stop early when asked."""

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    handoff.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            for item in cases:
                if stop.is_set() or not put(self.prepare(item)):
                    return
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, which re-raises it
            put(_Raised(exc))

    def _run(self, handoff: queue.Queue, errors: str, notify: Notify) -> Iterator[Any]:
        """Batch the slices of the cases coming from ``handoff`` and yield finished cases in order."""
        waiting: deque[Any] = deque()  # Pending or failures, in input order; yielded from the left when finished
        batch: _Batch = []
        while (item := handoff.get()) is not _END:
            if isinstance(item, _Raised):
                raise item.exception
            if not isinstance(item, Loaded):
                if errors == "raise":
                    raise item.exception
                waiting.append(item)
            else:
                # Slices without head are never predicted: their probability is 0 (SliceStack.runs).
                pending = Pending(item, np.zeros(item.geometry.native_shape, np.float32), len(item.stack))
                waiting.append(pending)
                notify("loaded", item.case.case_id, len(item.stack))
                batch = self._schedule(pending, batch, notify)
            yield from self._finished(waiting, notify)
        if batch:
            self._forward(batch, notify)
        yield from self._finished(waiting, notify)

    def _schedule(self, pending: Pending, batch: _Batch, notify: Notify) -> _Batch:
        """Add a case's slice ranges to the open batch, running each batch that fills up; return the open batch.

        Only ranges are recorded: the slices themselves are made when the batch runs (:meth:`_forward`).
        """
        if batch and batch[0][0].loaded.stack.shape[1:] != pending.loaded.stack.shape[1:]:
            self._forward(batch, notify)  # slices of another model grid cannot share a batch
            batch = []
        stack = pending.loaded.stack
        grid = (stack.shape[2], stack.shape[3])
        filled = sum(end - start for _, start, end in batch)
        runs = stack.runs()
        skipped = len(stack) - sum(last - first for first, last in runs)
        if skipped:
            pending.remaining -= skipped
            notify("slices", pending.loaded.case.case_id, skipped)
        for start, last in runs:
            while start < last:
                # Asked per batch: a batch that ran out of memory lowers the size for the batches after it.
                size = self.batch_for(grid)
                if filled >= size:
                    self._forward(batch, notify)
                    batch, filled = [], 0
                end = min(last, start + size - filled)
                batch.append((pending, start, end))
                filled += end - start
                start = end
                if filled >= size:
                    self._forward(batch, notify)
                    batch, filled = [], 0
        return batch

    def _finished(self, waiting: deque[Any], notify: Notify) -> Iterator[Any]:
        while waiting and (not isinstance(waiting[0], Pending) or waiting[0].done):
            item = waiting.popleft()
            if not isinstance(item, Pending):
                notify("failed", item.case_id, 0)
                yield item
            else:
                result = self.finish(item)
                notify("done", item.loaded.case.case_id, 0)
                yield result

    def _forward(self, batch: _Batch, notify: Notify) -> None:
        """Run the model on one batch and restore each slice's lesion probability into its case's native grid.

        This batch's ``(B, C, H, W)`` input and ``(B, H, W)`` output are the only model-grid arrays alive.
        """
        x = np.concatenate([pending.loaded.stack.chunk(a, b) for pending, a, b in batch])
        ids = list(dict.fromkeys(pending.loaded.case.case_id for pending, _, _ in batch))
        source = f"case{'s' if len(ids) > 1 else ''} {', '.join(ids)}"
        probability = self.predict(torch.from_numpy(x), source).numpy()
        offset = 0
        for pending, a, b in batch:
            geometry = pending.loaded.geometry
            restore_probability_into(pending.probability, probability[offset : offset + b - a], geometry, a)
            pending.remaining -= b - a
            offset += b - a
            notify("slices", pending.loaded.case.case_id, b - a)
