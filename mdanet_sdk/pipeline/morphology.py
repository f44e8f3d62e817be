"""Binary morphology on voxel masks: connected components, hole filling, dilation, bounding boxes.

TorchScript-compatible (the same functions run eagerly in Python and inside exported artefacts), and without
SciPy: components come from the op ``mdanet::label_components`` (a native union-find, or its pure-PyTorch
reference in :mod:`mdanet_sdk.ops.reference`), which TorchScript artefacts call too.

Connectivity as SciPy names it: 1 (faces: 6 in 3D, 4 in 2D), or ``ndim`` (full: 26 in 3D, 8 in 2D). 2D
operations on a 3D ``(X, Y, Z)`` volume act on each axial slice (``planar=True``: neighbours in X and Y only).
"""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor

import mdanet_sdk.ops  # noqa: F401  (registers mdanet::label_components: native, or the reference when not built)
from mdanet_sdk.ops.reference import neighbour_min

__all__ = ["label", "component_sizes", "keep_components", "fill_holes_planar", "dilate", "bounding_box"]


def label(mask: Tensor, full: bool = False, planar: bool = False) -> Tensor:
    """Connected components of ``mask``: ``mdanet::label_components`` (the native union-find when the op
    library is built, else :func:`mdanet_sdk.ops.reference.label_components`, the same labels).

    Args:
        mask: bool ``(X, Y, Z)``.
        full: full connectivity (26 in 3D) instead of faces (6 in 3D).
        planar: components within each axial slice (neighbours along the first two axes only).

    Returns:
        int64 labels of ``mask``'s shape: 0 outside, and one positive label per component (its smallest flat
        voxel index + 1: not consecutive; :func:`component_sizes` counts them).
    """
    return torch.ops.mdanet.label_components(mask.to(torch.bool).contiguous(), full, planar)


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
        out = neighbour_min(out, dims, False)
    return out == 0


def bounding_box(mask: Tensor) -> List[int]:
    """The box ``[x0, x1, y0, y1, z0, z1]`` (ends exclusive) around the True voxels of a non-empty bool
    ``(X, Y, Z)`` mask."""
    box: List[int] = []
    for profile in (mask.any(dim=2).any(dim=1), mask.any(dim=2).any(dim=0), mask.any(dim=1).any(dim=0)):
        found = torch.nonzero(profile).flatten()
        box += [int(found[0]), int(found[-1]) + 1]
    return box
