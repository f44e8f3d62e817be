"""Pure-PyTorch reference of the MDANet operators: the executable specification.

The native kernels (``torch.ops.mdanet.*``, built from ``csrc/``) are held to these functions in the tests.
"""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor

__all__ = ["dasc_gate", "graph_conv", "label_components", "neighbour_min"]


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


def _shift_min(source: Tensor, out: Tensor, dim: int) -> None:
    """``out = min(out, source shifted by +1 and by -1 along dim)`` in place; nothing comes in beyond the edges."""
    n = source.shape[dim]
    if n > 1:
        ahead = out.narrow(dim, 1, n - 1)
        torch.minimum(ahead, source.narrow(dim, 0, n - 1), out=ahead)
        behind = out.narrow(dim, 0, n - 1)
        torch.minimum(behind, source.narrow(dim, 1, n - 1), out=behind)


def neighbour_min(x: Tensor, dims: List[int], full: bool) -> Tensor:
    """The smallest value among each voxel of ``x`` and its neighbours along ``dims``: the faces only, or
    (``full``) the whole 3^k cube, which is separable (one pass per axis, each on the previous result)."""
    out = x.clone()
    for d in dims:
        # A full pass reads what the previous axes already reduced; a face pass reads the voxel values only.
        source = out.clone() if full else x
        _shift_min(source, out, d)
    return out


def _dims(ndim: int, planar: bool) -> List[int]:
    return [0, 1] if planar else list(range(ndim))


def _roots(parent: Tensor) -> Tensor:
    """Follow parents to their roots (pointer jumping: halves every path per step)."""
    jumped = parent[parent]
    while not bool(torch.equal(jumped, parent)):
        parent = jumped
        jumped = parent[parent]
    return parent


def label_components(mask: Tensor, full: bool = False, planar: bool = False) -> Tensor:
    """Connected components of ``mask`` (the reference of ``mdanet::label_components``).

    Hooking and pointer jumping, a union-find made of whole-array steps: every voxel starts as its own root
    (its parent is its own flat index); each round every root is hooked under the smallest root among its
    voxels' neighbours in the mask, then parents are shortcut to their roots. Roots only decrease and stay
    inside one component, so the rounds end with one root per component.

    Args:
        mask: bool ``(X, Y, Z)``.
        full: full connectivity (26 in 3D) instead of faces (6 in 3D).
        planar: components within each axial slice (neighbours along the first two axes only).

    Returns:
        int64 labels of ``mask``'s shape: 0 outside, and one positive label per component (its smallest voxel
        index + 1: not consecutive; :func:`component_sizes` counts them).
    """
    dims = _dims(mask.dim(), planar)
    inside = mask.to(torch.bool)
    n = inside.numel()
    flat_inside = inside.reshape(-1)
    # Parents as flat voxel indices; the outside points at the sentinel n, larger than any voxel.
    parent = torch.where(flat_inside, torch.arange(n, dtype=torch.int64), n)
    parent = torch.cat([parent, torch.full([1], n, dtype=torch.int64)])
    changed = True
    while changed:
        roots = parent[:n].reshape(inside.shape)
        smallest = torch.where(inside, neighbour_min(roots, dims, full), n).reshape(-1)
        # Hook each root under the smallest root next to any of its voxels.
        hooked = _roots(parent.scatter_reduce(0, parent[:n][flat_inside], smallest[flat_inside], "amin"))
        changed = not bool(torch.equal(hooked, parent))
        parent = hooked
    return torch.where(inside, parent[:n].reshape(inside.shape) + 1, 0)
