"""The compiled ``mdanet`` op library: loading it, and its Python-side registrations.

Importing :mod:`mdanet_sdk._C` loads ``mdanet_sdk/lib/libmdanet_ops.so``, whose ``TORCH_LIBRARY(mdanet)``
defines ``torch.ops.mdanet.dasc_gate`` / ``graph_conv`` (and their ``*_backward`` ops) with CPU and, when built
with CUDA, CUDA kernels. This module adds what torch needs beyond the kernels:

* fake (meta) implementations, so ``torch.export``, ``torch.compile`` and FakeTensor tracing see output
  shapes without running a kernel;
* autograd formulas (``torch.library.register_autograd``) that call the native backward ops, so a model
  trains with the native ops on. The backward ops are not differentiable themselves: double backward through
  the native ops is not supported (use ``impl="reference"`` for that);
* FLOP formulas for ``torch.utils.flop_counter``, equal to the reference's count.

The C++ library names this module (``set_python_module``), so torch imports it whenever the ops are traced,
even when the library was loaded with ``torch.ops.load_library``.
"""

from __future__ import annotations

import importlib
from typing import Any, Sequence

import torch
from torch import Tensor
from torch._prims_common import suggest_memory_format
from torch.utils.flop_counter import register_flop_formula

__all__ = ["load", "available", "cuda_built", "load_error", "library_path", "build_info"]

_loaded: bool | None = None
_registered = False
_error: str | None = None
_info: dict[str, Any] | None = None


def load() -> bool:
    """Load the op library once (later calls return the first answer).

    Returns:
        Whether ``torch.ops.mdanet.*`` are available; :func:`load_error` says why not.
    """
    global _loaded, _error, _info
    if _loaded is None:
        try:
            # torch is imported above, so the library's libtorch/libc10 dependencies resolve to it.
            c_module = importlib.import_module("mdanet_sdk._C")
            _info = dict(c_module.build_info())
        except ImportError as exc:
            _loaded, _error = False, f"{type(exc).__name__}: {exc}"
        else:
            _register()
            _loaded = True
    return _loaded


def available() -> bool:
    """Whether the native op library is loaded (loading it on first call)."""
    return load()


def cuda_built() -> bool:
    """Whether the loaded op library has CUDA kernels."""
    return load() and bool(_info and _info["cuda"])


def load_error() -> str | None:
    """Why the op library could not be loaded (None when it is loaded)."""
    load()
    return _error


def library_path() -> str | None:
    """Path of the op library, for ``torch.ops.load_library`` or a C++ program (None when not built)."""
    return _info["library_path"] if load() and _info else None


def build_info() -> dict[str, Any] | None:
    """How the op library was built (see ``mdanet_sdk._C.build_info``), or None when it is not built.

    ``num_threads`` is the ATen intra-op thread count now.
    """
    if not load():
        return None
    return dict(importlib.import_module("mdanet_sdk._C").build_info())


# ---------------------------------------------------------------------------------------------------------------
# Fake kernels and autograd
# ---------------------------------------------------------------------------------------------------------------
def _dasc_gate_fake(
    f_m1: Tensor, f_m2: Tensor, f_de: Tensor, w_d: Tensor, w_de: Tensor, b_in: Tensor, w_att: Tensor, b_att: Tensor
) -> Tensor:
    torch._check(f_m1.dim() == 4 and f_m2.shape == f_m1.shape, lambda: "f_m1, f_m2 must be equal (B, C, H, W)")
    torch._check(
        f_de.dim() == 4 and f_de.shape[0] == f_m1.shape[0] and f_de.shape[2:] == f_m1.shape[2:],
        lambda: "f_de must be (B, C_de, H, W) with B, H, W of f_m1",
    )
    torch._check(
        w_d.shape[1] == f_m1.shape[1] and w_de.shape[1] == f_de.shape[1],
        lambda: "w_d must be (C_i, C) and w_de (C_i, C_de)",
    )
    # The kernels' output has f_m1's memory format (csrc/common.cpp, dasc_gate_forward).
    return torch.empty_like(f_m1, memory_format=suggest_memory_format(f_m1))


def _dasc_gate_backward_fake(
    grad: Tensor,
    f_m1: Tensor,
    f_m2: Tensor,
    f_de: Tensor,
    w_d: Tensor,
    w_de: Tensor,
    b_in: Tensor,
    w_att: Tensor,
    b_att: Tensor,
) -> tuple[Tensor, ...]:
    return tuple(t.new_empty(t.shape) for t in (f_m1, f_m2, f_de, w_d, w_de, b_in, w_att, b_att))


def _graph_conv_fake(g: Tensor, a: Tensor, a_bias: Tensor, w: Tensor, w_bias: Tensor) -> Tensor:
    torch._check(g.dim() == 3, lambda: "g must be (B, M, E)")
    torch._check(a.shape[0] == g.shape[1] and w.shape[0] == g.shape[2], lambda: "a must be (M, M) and w (E, E)")
    return g.new_empty(g.shape)


def _graph_conv_backward_fake(
    grad: Tensor, out: Tensor, g: Tensor, a: Tensor, a_bias: Tensor, w: Tensor, w_bias: Tensor
) -> tuple[Tensor, ...]:
    return tuple(t.new_empty(t.shape) for t in (g, a, a_bias, w, w_bias))


def _label_components_fake(mask: Tensor, full: bool, planar: bool) -> Tensor:
    return mask.new_empty(mask.shape, dtype=torch.int64)


def _dasc_gate_setup(ctx: Any, inputs: tuple[Tensor, ...], output: Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _dasc_gate_grad(ctx: Any, grad: Tensor) -> tuple[Tensor, ...]:
    return tuple(torch.ops.mdanet.dasc_gate_backward(grad, *ctx.saved_tensors))


def _graph_conv_setup(ctx: Any, inputs: tuple[Tensor, ...], output: Tensor) -> None:
    # The output carries the ReLU mask; w_bias is needed for its dtype only.
    ctx.save_for_backward(output, *inputs)


def _graph_conv_grad(ctx: Any, grad: Tensor) -> tuple[Tensor, ...]:
    return tuple(torch.ops.mdanet.graph_conv_backward(grad, *ctx.saved_tensors))


# FLOPs of the math the ops stand for, counted as FlopCounterMode counts the reference (its matrix products:
# θ2, θ3, θ1 as 1×1 convolutions; A·G and H·Wᵀ), so a model's FLOPs do not depend on the implementation.
# Backward: twice the forward, as for the products it replaces.
def _dasc_gate_flops(
    f_m1: Sequence[int], f_m2: Sequence[int], f_de: Sequence[int], w_d: Sequence[int], *args: Any, **kwargs: Any
) -> int:
    batch, channels, height, width = f_m1
    return 2 * batch * height * width * w_d[0] * (channels + f_de[1] + 1)


def _dasc_gate_backward_flops(grad: Sequence[int], *args: Any, **kwargs: Any) -> int:
    return 2 * _dasc_gate_flops(*args)


def _graph_conv_flops(g: Sequence[int], *args: Any, **kwargs: Any) -> int:
    batch, nodes, features = g
    return 2 * batch * nodes * features * (nodes + features)


def _graph_conv_backward_flops(
    grad: Sequence[int], out: Sequence[int], g: Sequence[int], *args: Any, **kwargs: Any
) -> int:
    return 2 * _graph_conv_flops(g)


#: The forward operators of the ``mdanet`` torch library (``csrc/ops.cpp``), and their registered names.
OPS = ("dasc_gate", "graph_conv")
QUALIFIED_OPS = tuple(f"mdanet::{op}" for op in OPS)


def _register() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    mdanet = torch.ops.mdanet
    for op, formula in (
        (mdanet.dasc_gate, _dasc_gate_flops),
        (mdanet.dasc_gate_backward, _dasc_gate_backward_flops),
        (mdanet.graph_conv, _graph_conv_flops),
        (mdanet.graph_conv_backward, _graph_conv_backward_flops),
    ):
        register_flop_formula(op)(formula)
    torch.library.register_fake("mdanet::dasc_gate", _dasc_gate_fake)
    torch.library.register_fake("mdanet::dasc_gate_backward", _dasc_gate_backward_fake)
    torch.library.register_fake("mdanet::graph_conv", _graph_conv_fake)
    torch.library.register_fake("mdanet::graph_conv_backward", _graph_conv_backward_fake)
    torch.library.register_fake("mdanet::label_components", _label_components_fake)
    torch.library.register_autograd("mdanet::dasc_gate", _dasc_gate_grad, setup_context=_dasc_gate_setup)
    torch.library.register_autograd("mdanet::graph_conv", _graph_conv_grad, setup_context=_graph_conv_setup)
    # Under autocast (mixed-precision training) the inputs arrive in mixed dtypes: run the kernels in float32.
    for qualified in QUALIFIED_OPS:
        for device_type in ("cpu", "cuda"):
            torch.library.register_autocast(qualified, device_type, torch.float32)


# The library may have been loaded without this module (torch.ops.load_library, a C++ host): torch then imports
# this module for the fake kernels, which must be registered by the time the import returns.
if hasattr(torch.ops.mdanet, "dasc_gate"):
    _register()
