"""Binary morphology on voxel masks: connected components, hole filling, dilation.

TorchScript-compatible (the same functions run eagerly in Python and inside exported artefacts), and without
SciPy: components are found by hooking and pointer jumping (a union-find made of whole-array steps). Every
voxel starts as its own root (its parent is its own index); each round, every voxel's root is hooked under the
smallest root among its neighbours in the mask, then parents are shortcut to their roots. Roots only decrease
and stay inside one component, so the rounds end with one root per component, in about log(size) rounds.

Connectivity as SciPy names it: 1 (faces: 6 in 3D, 4 in 2D), or ``ndim`` (full: 26 in 3D, 8 in 2D). 2D
operations on a 3D ``(X, Y, Z)`` volume act on each axial slice (``planar=True``: neighbours in X and Y only).
"""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor

__all__ = ["label", "component_sizes", "keep_components", "fill_holes_planar", "dilate"]


def _neighbour_min(x: Tensor, dims: List[int], full: bool) -> Tensor:
    """The smallest value among each voxel of 3D ``x`` and its neighbours along ``dims``: the faces only, or
    (``full``) the whole 3^k cube, which is separable (one pass per axis). Max-pooling of the negated values in
    float64, exact for integers below 2^53 (any voxel index); beyond the edges nothing comes in."""
    v = -x.to(torch.float64).unsqueeze(0).unsqueeze(0)
    out = v
    for d in dims:
        kernel = [1, 1, 1]
        kernel[d] = 3
        padding = [k // 2 for k in kernel]
        if full:
            out = torch.nn.functional.max_pool3d(out, kernel, [1, 1, 1], padding)
        else:
            out = torch.maximum(out, torch.nn.functional.max_pool3d(v, kernel, [1, 1, 1], padding))
    return (-out).squeeze(0).squeeze(0).to(x.dtype)


def _dims(ndim: int, planar: bool) -> List[int]:
    return [0, 1] if planar else list(range(ndim))


def _roots(parent: Tensor) -> Tensor:
    """Follow parents to their roots (pointer jumping: halves every path per step)."""
    jumped = parent[parent]
    while not bool(torch.equal(jumped, parent)):
        parent = jumped
        jumped = parent[parent]
    return parent


def label(mask: Tensor, full: bool = False, planar: bool = False) -> Tensor:
    """Connected components of ``mask``.

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
        smallest = torch.where(inside, _neighbour_min(roots, dims, full), n).reshape(-1)
        # Hook each root under the smallest root next to any of its voxels.
        hooked = _roots(parent.scatter_reduce(0, parent[:n][flat_inside], smallest[flat_inside], "amin"))
        changed = not bool(torch.equal(hooked, parent))
        parent = hooked
    return torch.where(inside, parent[:n].reshape(inside.shape) + 1, 0)


def component_sizes(labels: Tensor) -> Tensor:
    """Voxel count per label value (index 0: outside), as ``bincount``."""
    return torch.bincount(labels.reshape(-1), minlength=1)


def keep_components(labels: Tensor, keep: Tensor) -> Tensor:
    """bool mask of the voxels whose label is marked in ``keep`` (indexed by label value; ``keep[0]`` is
    ignored: outside stays outside)."""
    chosen = keep.clone()
    chosen[0] = False
    return chosen[labels]


def fill_holes_planar(mask: Tensor) -> Tensor:
    """Fill the holes of each axial slice of ``(X, Y, Z)`` ``mask``: background not connected (by faces,
    within the slice) to the slice's border becomes foreground, as ``scipy.ndimage.binary_fill_holes`` per
    slice."""
    background = ~mask.to(torch.bool)
    components = label(background, full=False, planar=True)
    border = torch.zeros_like(background)
    border[0] = True
    border[-1] = True
    border[:, 0] = True
    border[:, -1] = True
    outside = torch.zeros(background.numel() + 1, dtype=torch.bool)
    outside[components[border & background]] = True
    return ~keep_components(components, outside)


def dilate(mask: Tensor, iterations: int = 1) -> Tensor:
    """Binary dilation by the face-connected cross (6 neighbours in 3D), ``iterations`` times; outside the
    array counts as background (``scipy.ndimage.binary_dilation``'s defaults)."""
    # As the complement: a voxel stays background when it and its face neighbours are all background.
    out = (~mask.to(torch.bool)).to(torch.uint8)
    dims = list(range(mask.dim()))
    for _ in range(iterations):
        out = _neighbour_min(out, dims, False)
    return out == 0
