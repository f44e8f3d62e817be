"""The two MDANet operators, dispatched to the native kernels or the pure-PyTorch reference.

``impl`` is ``"auto"`` (native when the compiled library is loaded, else reference), ``"native"`` (error if
missing) or ``"reference"``.
"""

from __future__ import annotations

from torch import Tensor

from mdanet_sdk.errors import BackendUnavailableError
from mdanet_sdk.ops import reference

__all__ = ["dasc_gate", "graph_conv", "native_available", "implementation"]


def native_available() -> bool:
    """Whether the compiled ``mdanet`` op library is loaded."""
    return False


def implementation(impl: str = "auto") -> str:
    """The implementation ``impl`` resolves to: ``"native"`` or ``"reference"``."""
    if impl == "reference":
        return "reference"
    if native_available():
        return "native"
    if impl == "native":
        raise BackendUnavailableError(
            "The native mdanet ops are not built; reinstall with `pip install --no-build-isolation .` "
            "or use ops='reference'."
        )
    return "reference"


def dasc_gate(f_m1: Tensor, f_m2: Tensor, f_de: Tensor, w_d: Tensor, w_de: Tensor, b_in: Tensor,
              w_att: Tensor, b_att: Tensor, impl: str = "auto") -> Tensor:
    """DASC gate (Eq. 1-3); see :func:`mdanet_sdk.ops.reference.dasc_gate` for shapes."""
    implementation(impl)
    return reference.dasc_gate(f_m1, f_m2, f_de, w_d, w_de, b_in, w_att, b_att)


def graph_conv(g: Tensor, a: Tensor, a_bias: Tensor, w: Tensor, w_bias: Tensor, impl: str = "auto") -> Tensor:
    """Graph convolution (Eq. 6-7); see :func:`mdanet_sdk.ops.reference.graph_conv` for shapes."""
    implementation(impl)
    return reference.graph_conv(g, a, a_bias, w, w_bias)
