"""The two MDANet operators, dispatched to the native kernels or the pure-PyTorch reference.

``impl`` is ``"auto"`` (native when the compiled library is loaded and has kernels for the tensors' device,
else reference), ``"native"`` (error if it cannot run there) or ``"reference"``. The native ops are
``torch.ops.mdanet.dasc_gate`` / ``graph_conv`` (built from ``csrc/``, loaded by :mod:`mdanet_sdk.ops.native`);
:mod:`mdanet_sdk.ops.reference` is their specification.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from mdanet_sdk.errors import BackendUnavailableError, InputError
from mdanet_sdk.ops import native, reference
from mdanet_sdk.ops.native import OPS, QUALIFIED_OPS

__all__ = [
    "dasc_gate",
    "graph_conv",
    "native_available",
    "implementation",
    "op_backends",
    "OPS",
    "QUALIFIED_OPS",
    "IMPLEMENTATIONS",
]

#: How the ops compute: native kernels when built (``auto``), ``native`` (error if unavailable), ``reference``.
IMPLEMENTATIONS = ("auto", "native", "reference")


def native_available() -> bool:
    """Whether the compiled ``mdanet`` op library is loaded."""
    return native.available()


def _native_unavailable_reason(device_type: str) -> str | None:
    if not native.available():
        return (
            f"The native mdanet ops are not built ({native.load_error()}); reinstall with "
            "`pip install --no-build-isolation -e .` or use ops='reference'."
        )
    if device_type == "cuda" and not native.cuda_built():
        return (
            "The native mdanet ops were built without CUDA kernels; rebuild against a CUDA torch "
            "or use ops='reference'."
        )
    if device_type not in ("cpu", "cuda", "meta"):
        return f"The native mdanet ops have no kernels for {device_type} tensors; use ops='reference'."
    return None


def implementation(impl: str = "auto", device: torch.device | str | None = None) -> str:
    """The implementation ``impl`` resolves to for tensors on ``device``: ``"native"`` or ``"reference"``.

    Args:
        impl: ``"auto"``, ``"native"`` or ``"reference"``.
        device: where the op's tensors live (default CPU).

    Raises:
        InputError: ``impl`` is none of the three.
        BackendUnavailableError: ``impl="native"`` and the native ops cannot run on ``device``.
    """
    if impl not in IMPLEMENTATIONS:
        raise InputError(f"ops implementation must be one of {', '.join(IMPLEMENTATIONS)}; got {impl!r}.")
    if impl == "reference":
        return "reference"
    reason = _native_unavailable_reason(torch.device(device or "cpu").type)
    if reason is None:
        return "native"
    if impl == "native":
        raise BackendUnavailableError(reason)
    return "reference"


def op_backends(device: torch.device | str | None = None, impl: str = "auto") -> dict[str, str]:
    """Which kernel each op runs on ``device``: ``"native-cpu"``, ``"native-cuda"`` or ``"reference"``.

    Args:
        device: the tensors' device (default CPU).
        impl: as for :func:`implementation`.
    """
    dev = torch.device(device or "cpu")
    chosen = implementation(impl, dev)
    label = f"native-{dev.type}" if chosen == "native" else "reference"
    return {name: label for name in OPS}


def dasc_gate(
    f_m1: Tensor,
    f_m2: Tensor,
    f_de: Tensor,
    w_d: Tensor,
    w_de: Tensor,
    b_in: Tensor,
    w_att: Tensor,
    b_att: Tensor,
    impl: str = "auto",
) -> Tensor:
    """DASC gate (Eq. 1-3): ``(f_m1 - f_m2) · (1 + σ(θ1(θ2(f_m1 - f_m2) + θ3(f_de))))``.

    Args:
        f_m1, f_m2: ``(B, C, H, W)``; f_de: ``(B, C_de, H, W)``; w_d: ``(C_i, C)``; w_de: ``(C_i, C_de)``;
            b_in, w_att: ``(C_i,)``; b_att: ``(1,)`` (see :func:`mdanet_sdk.ops.reference.dasc_gate`).
        impl: ``"auto"``, ``"native"`` or ``"reference"``.

    Returns:
        ``(B, C, H, W)``.
    """
    if implementation(impl, f_m1.device) == "native":
        # The kernel wants one feature dtype; under autocast the three maps can come out of different layers
        # in different precisions (the weights may differ: they are folded in the accumulation type).
        dtype = torch.promote_types(torch.promote_types(f_m1.dtype, f_m2.dtype), f_de.dtype)
        features = [f.to(dtype) for f in (f_m1, f_m2, f_de)]
        # The output keeps f_m1's layout. The CPU kernel reads channels_last maps as they are (no copy); the
        # CUDA kernel reads NCHW, so there the op copies channels_last maps to NCHW and its output back.
        with _own_dtype():
            return torch.ops.mdanet.dasc_gate(*features, w_d, w_de, b_in, w_att, b_att)
    return reference.dasc_gate(f_m1, f_m2, f_de, w_d, w_de, b_in, w_att, b_att)


def graph_conv(g: Tensor, a: Tensor, a_bias: Tensor, w: Tensor, w_bias: Tensor, impl: str = "auto") -> Tensor:
    """Graph convolution (Eq. 6-7): ``ReLU(((I - A) g - a_bias) wᵀ + w_bias)``.

    Args:
        g: ``(B, M, E)``; a: ``(M, M)``; a_bias: ``(M,)``; w: ``(E, E)``; w_bias: ``(E,)``
            (see :func:`mdanet_sdk.ops.reference.graph_conv`).
        impl: ``"auto"``, ``"native"`` or ``"reference"``.

    Returns:
        ``(B, M, E)``.
    """
    if implementation(impl, g.device) == "native":
        with _own_dtype():
            return torch.ops.mdanet.graph_conv(g, a, a_bias, w, w_bias)
    return reference.graph_conv(g, a, a_bias, w, w_bias)


def _own_dtype() -> contextlib.AbstractContextManager[object]:
    """In inference under autocast, the native ops run in the features' own dtype (bf16 features stay bf16;
    the kernels accumulate in fp32): autocast's fp32 rule for them (:mod:`mdanet_sdk.ops.native`, kept for
    training, whose backward kernels want one dtype) would copy every bf16 map to fp32 and back."""
    if torch.is_grad_enabled() or not torch.is_autocast_enabled("cpu"):
        return contextlib.nullcontext()
    return torch.autocast("cpu", enabled=False)


# mdanet::label_components (the volume pipeline's connected components, mdanet_sdk.pipeline.morphology) exists
# whether or not the op library is built: without it, the reference is registered under the same name, so eager
# Python, scripted artefacts and libmdanet all call one operator.
_LABEL_FALLBACK: torch.library.Library | None = None
if not native.available() and not hasattr(torch.ops.mdanet, "label_components"):
    _LABEL_FALLBACK = torch.library.Library("mdanet", "FRAGMENT")
    _LABEL_FALLBACK.define("label_components(Tensor mask, bool full, bool planar) -> Tensor")
    _LABEL_FALLBACK.impl("label_components", reference.label_components, "CPU")
