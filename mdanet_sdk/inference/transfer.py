"""Host → device copies of the model's input batches that overlap with the host's work on CUDA.

A copy from pageable host memory to a GPU is synchronous: the host waits for it. From page-locked (pinned)
memory it is asynchronous (``non_blocking=True``), so the host goes on preparing the next batch while the
device copies and computes. :class:`HostStaging` keeps one pinned buffer per input shape (at most two per
model grid: the full batch and a case's last one) and copies each batch through it.

The buffer is reused, so a copy from it must be complete before the next batch is written into it: the
staging records a CUDA event after each copy and waits for it before the buffer is overwritten. On a CPU
device nothing is staged: the batch is returned as it is (no copy).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["HostStaging", "MAX_BUFFERS"]

#: Pinned buffers kept at most (least recently used dropped first); each is one batch of model input.
MAX_BUFFERS = 4


class HostStaging:
    """Copies of host batches to ``device`` through reused pinned buffers (module docstring).

    Args:
        device: where the batches go; staging is used only for CUDA devices.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.enabled = device.type == "cuda"
        self._buffers: dict[tuple[tuple[int, ...], torch.dtype], tuple[torch.Tensor, Any]] = {}

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the device: through a pinned buffer and a non-blocking copy for a CPU tensor bound for
        CUDA; otherwise ``x.to(device)`` (no copy when it is already there)."""
        if not (self.enabled and x.device.type == "cpu"):
            return x.to(self.device)
        key = (tuple(x.shape), x.dtype)
        pinned = self._buffer(key)
        pinned.copy_(x)
        out = pinned.to(self.device, non_blocking=True)
        self._buffers[key] = (pinned, self._event())
        return out

    def _buffer(self, key: tuple[tuple[int, ...], torch.dtype]) -> torch.Tensor:
        """The buffer for ``key`` (shape, dtype), made the most recently used, once the last copy out of it
        has finished; the least recently used buffer goes when :data:`MAX_BUFFERS` are held."""
        if key in self._buffers:
            pinned, done = self._buffers.pop(key)
        else:
            if len(self._buffers) >= MAX_BUFFERS:
                # A buffer may be freed only once its copy is complete.
                _, (_, done) = next(iter(self._buffers.items()))
                self._wait(done)
                del self._buffers[next(iter(self._buffers))]
            pinned, done = self._allocate(key), None
        self._wait(done)
        self._buffers[key] = (pinned, None)
        return pinned

    def _allocate(self, key: tuple[tuple[int, ...], torch.dtype]) -> torch.Tensor:
        """A new page-locked host buffer of ``key``'s shape and dtype."""
        return torch.empty(key[0], dtype=key[1], pin_memory=True)

    def _event(self) -> Any:
        """A CUDA event recorded on the current stream: it completes when the copy just queued is done."""
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        return event

    @staticmethod
    def _wait(done: Any) -> None:
        if done is not None:
            done.synchronize()
