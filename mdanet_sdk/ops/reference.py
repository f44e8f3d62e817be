"""Pure-PyTorch reference of the two MDANet operators: the executable specification.

The native kernels (``torch.ops.mdanet.*``, built from ``csrc/``) are held to these functions in the tests.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["dasc_gate", "graph_conv"]


def dasc_gate(
    f_m1: Tensor,
    f_m2: Tensor,
    f_de: Tensor,
    w_d: Tensor,
    w_de: Tensor,
    b_in: Tensor,
    w_att: Tensor,
    b_att: Tensor,
) -> Tensor:
    """Difference-aware skip gate, paper Eq. 1-3.

    ``F_D = F_m1 - F_m2``; ``W = σ(θ1(θ2(F_D) + θ3(F_de)))``; returns ``F_D + W · F_D``.

    Args:
        f_m1, f_m2: the two modality groups' encoder features, ``(B, C, H, W)``.
        f_de: the decoder's feature at the same scale, ``(B, C_de, H, W)``.
        w_d: θ2 weight, point-wise conv ``C → C_i``, shape ``(C_i, C)``.
        w_de: θ3 weight, point-wise conv ``C_de → C_i``, shape ``(C_i, C_de)``.
        b_in: the summed biases of θ2 and θ3, ``(C_i,)``.
        w_att: θ1 weight, point-wise conv ``C_i → 1``, shape ``(C_i,)``.
        b_att: θ1 bias, shape ``(1,)``.

    Returns:
        ``(B, C, H, W)``, the refined difference map F̂_D.
    """
    f_d = f_m1 - f_m2
    z = torch.einsum("bchw,ic->bihw", f_d, w_d) + torch.einsum("bchw,ic->bihw", f_de, w_de)
    z = z + b_in.view(1, -1, 1, 1)
    att = torch.sigmoid(torch.einsum("bihw,i->bhw", z, w_att).unsqueeze(1) + b_att.view(1, 1, 1, 1))
    return f_d + att * f_d


def graph_conv(g: Tensor, a: Tensor, a_bias: Tensor, w: Tensor, w_bias: Tensor) -> Tensor:
    """Graph convolution, paper Eq. 6-7: ``GCN(G) = ReLU(Conv1d((G - Conv1d(G))ᵀ)ᵀ)``.

    Equivalently ``ReLU(((I - A) G - b_A) Wᵀ + b_W)`` with the two 1-D convolutions as matrix products.

    Args:
        g: a batch of graphs, ``(B, M, E)``: M nodes (2N for two groups) of E features.
        a: adjacency (node-mixing Conv1d weight), ``(M, M)``.
        a_bias: node-mixing bias, ``(M,)``.
        w: feature-mixing (Conv1d over features) weight, ``(E, E)``; ``out = h @ wᵀ``.
        w_bias: feature-mixing bias, ``(E,)``.

    Returns:
        ``(B, M, E)``, the updated graph Ĝ.
    """
    h = g - (torch.matmul(a, g) + a_bias.view(1, -1, 1))
    return torch.relu(torch.matmul(h, w.t()) + w_bias)
