"""Forward passes replayed from CUDA graphs, one per input shape (GPU inference).

A forward pass of these networks launches hundreds of small kernels; on a GPU the host's launch overhead is
then a large share of a batch's time. A CUDA graph records the launches once and replays them with one call
(PyTorch's CUDA-graph notes: static input and output buffers, warm-up on a side stream, capture, replay).
Graphs need fixed shapes, so a batch is padded up to the next power of two (1, 2, 4, ... slices): a case's
shorter last batch reuses a recorded graph instead of recording one more. Padding rows are zero and never
returned; the networks here treat every slice of a batch independently in eval mode, so they change nothing.

On any other device, with gradients, past :data:`MAX_GRAPHS` shapes, or once a capture failed (an op that
cannot be captured), the network simply runs eagerly; a failed capture is logged once as a warning.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import torch

from mdanet_sdk.device import is_out_of_memory

__all__ = ["MAX_GRAPHS", "WARMUP", "GraphedNetwork", "capture_cuda_graph"]

logger = logging.getLogger(__name__)

Network = Callable[[torch.Tensor], torch.Tensor]
#: ``capture(network, static_input)`` records ``network`` on ``static_input`` and returns ``replay``, which runs
#: the recording on the input buffer's current values and returns the (static) output buffer.
Capture = Callable[[Network, torch.Tensor], Callable[[], torch.Tensor]]

#: Graphs kept per network (input shape × dtype × memory format × autocast); further shapes run eagerly.
MAX_GRAPHS = 8
#: Eager passes on a side stream before a capture (lazy initialisation, cuDNN's algorithm choice).
WARMUP = 3


def _autocast_without_cache(device_type: str) -> contextlib.AbstractContextManager[Any]:
    """The current autocast state with its weight-cast cache off: casts cached during a capture would live in
    the graph's memory pool and be freed when autocast exits (PyTorch requires ``cache_enabled=False``)."""
    if not torch.is_autocast_enabled(device_type):
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.get_autocast_dtype(device_type), cache_enabled=False)


def capture_cuda_graph(network: Network, static_input: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Record ``network(static_input)`` as a CUDA graph (:data:`Capture`)."""
    device = static_input.device
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side), _autocast_without_cache("cuda"):
        for _ in range(WARMUP):
            network(static_input)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), _autocast_without_cache("cuda"):
        static_output = network(static_input)

    def replay() -> torch.Tensor:
        graph.replay()
        return static_output

    return replay


def _padded_rows(rows: int) -> int:
    """The next power of two at or above ``rows`` (at most twice the work, for the last batch of a case)."""
    return 1 << max(0, rows - 1).bit_length()


class GraphedNetwork:
    """``network`` with each batch shape on ``device_type`` replayed from a recorded graph.

    Args:
        network: ``(B, C, H, W) -> (B, K, H, W)`` in eval mode, each slice independent of the others.
        capture: records a graph (:func:`capture_cuda_graph`; tests pass another).
        device_type: inputs on this device type use graphs; others run eagerly.
        max_graphs: graphs kept; inputs of further shapes run eagerly.

    Attributes:
        failed: why graphs were given up (the capture's error), else ``""``; from then on it runs eagerly.
    """

    def __init__(
        self,
        network: Network,
        capture: Capture = capture_cuda_graph,
        device_type: str = "cuda",
        max_graphs: int = MAX_GRAPHS,
    ) -> None:
        self.network = network
        self.capture = capture
        self.device_type = device_type
        self.max_graphs = max_graphs
        self.failed = ""
        self._graphs: dict[tuple[Any, ...], tuple[torch.Tensor, Callable[[], torch.Tensor]]] = {}

    @property
    def graphs(self) -> int:
        """How many graphs are recorded."""
        return len(self._graphs)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``network(x)``, replayed from the graph of ``x``'s padded shape where one is (or can be) recorded."""
        if x.device.type != self.device_type or self.failed or torch.is_grad_enabled() or x.dim() != 4:
            return self.network(x)
        rows = x.shape[0]
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        autocast = torch.is_autocast_enabled(x.device.type)
        dtype = torch.get_autocast_dtype(x.device.type) if autocast else None
        key = (_padded_rows(rows), *x.shape[1:], x.dtype, x.device, channels_last, dtype)
        entry = self._graphs.get(key) or self._record(key, x, channels_last)
        if entry is None:
            return self.network(x)
        static_input, replay = entry
        static_input[:rows].copy_(x)
        if rows < static_input.shape[0]:
            static_input[rows:].zero_()
        # The output buffer is overwritten by the next replay: hand out a copy.
        return replay()[:rows].clone()

    def _record(
        self, key: tuple[Any, ...], x: torch.Tensor, channels_last: bool
    ) -> tuple[torch.Tensor, Callable[[], torch.Tensor]] | None:
        """Record the graph of ``key``; ``None`` when no more are kept or the capture fails (then never again)."""
        if len(self._graphs) >= self.max_graphs:
            return None
        static_input = torch.zeros((key[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
        if channels_last:
            static_input = static_input.contiguous(memory_format=torch.channels_last)
        try:
            replay = self.capture(self.network, static_input)
        except RuntimeError as err:  # an op that cannot be captured, or the driver's refusal
            if is_out_of_memory(err):  # not the network's fault: the caller halves the batch and comes back
                self._graphs.clear()  # their private memory pools hold memory the smaller batches need
                raise
            self.failed = f"{type(err).__name__}: {err}".splitlines()[0]
            logger.warning("CUDA graphs disabled for this network, it runs eagerly: %s", self.failed)
            return None
        self._graphs[key] = (static_input, replay)
        return self._graphs[key]
