"""pytest-benchmark: the native ops against the eager composite (``mdanet_sdk.ops.reference``), same run.

Shapes are the paper preset's: ``dasc_gate`` at the four skip levels (C×H×W = 64×128², 128×64², 256×32²,
512×16²; C_i = C/2, C_de = C) and ``graph_conv`` at the bottleneck graphs (channel embedding M = 2·256, E = 512; space
embedding M = 2·16², E = 1024), batch 1 and 8. ``forward`` runs under ``torch.inference_mode``; ``train`` is
forward + backward (``torch.autograd.grad`` for every input). Each group holds one shape and mode, so
pytest-benchmark's table shows native next to reference; ``extra_info`` names the op, shape, mode and impl.

    pytest benchmarks/test_ops_bench.py --benchmark-json=ops.json
"""

from __future__ import annotations

import math
from typing import Callable

import pytest
import torch
from torch import Tensor

from _bench_config import DEVICE, sync
from mdanet_sdk import ops

IMPLS = ("reference", "native")
DASC_LEVELS = [(64, 128), (128, 64), (256, 32), (512, 16)]
GRAPHS = [(512, 512), (512, 1024)]


def _uniform(*shape: int, fan_in: int) -> Tensor:
    bound = 1 / math.sqrt(fan_in)
    return torch.empty(*shape, device=DEVICE).uniform_(-bound, bound)


def _dasc_args(batch: int, c: int, size: int) -> list[Tensor]:
    torch.manual_seed(0)
    f = [torch.randn(batch, c, size, size, device=DEVICE) for _ in range(3)]
    ci = c // 2
    return [
        *f,
        _uniform(ci, c, fan_in=c),
        _uniform(ci, c, fan_in=c),
        _uniform(ci, fan_in=c),
        _uniform(ci, fan_in=ci),
        _uniform(1, fan_in=ci),
    ]


def _graph_args(batch: int, m: int, e: int) -> list[Tensor]:
    torch.manual_seed(0)
    return [
        torch.randn(batch, m, e, device=DEVICE),
        _uniform(m, m, fan_in=m),
        _uniform(m, fan_in=m),
        _uniform(e, e, fan_in=e),
        _uniform(e, fan_in=e),
    ]


def _bench(benchmark, op: str, args: list[Tensor], impl: str, mode: str) -> None:
    if impl == "native" and ops.implementation("auto", DEVICE) != "native":
        pytest.skip("native ops not available on this device")
    fn: Callable[..., Tensor] = getattr(ops, op)
    shape = "x".join(map(str, args[0].shape))
    benchmark.group = f"{op}[{shape}] {mode}"
    benchmark.extra_info.update(op=op, shape=list(args[0].shape), mode=mode, impl=impl, device=str(DEVICE))
    if mode == "forward":

        def call() -> None:
            with torch.inference_mode():
                fn(*args, impl=impl)
            sync()
    else:
        leaves = [a.detach().requires_grad_() for a in args]
        grad = torch.randn_like(args[0])

        def call() -> None:
            torch.autograd.grad(fn(*leaves, impl=impl), leaves, grad)
            sync()

    call()  # warm-up outside the timing (first-call allocations, library loading)
    benchmark(call)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize(("channels", "size"), DASC_LEVELS)
def test_dasc_gate_forward(benchmark, channels, size, batch, impl):
    _bench(benchmark, "dasc_gate", _dasc_args(batch, channels, size), impl, "forward")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("channels", "size"), DASC_LEVELS)
def test_dasc_gate_train(benchmark, channels, size, impl):
    _bench(benchmark, "dasc_gate", _dasc_args(8, channels, size), impl, "train")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize(("nodes", "features"), GRAPHS)
def test_graph_conv_forward(benchmark, nodes, features, batch, impl):
    _bench(benchmark, "graph_conv", _graph_args(batch, nodes, features), impl, "forward")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("nodes", "features"), GRAPHS)
def test_graph_conv_train(benchmark, nodes, features, impl):
    _bench(benchmark, "graph_conv", _graph_args(8, nodes, features), impl, "train")
