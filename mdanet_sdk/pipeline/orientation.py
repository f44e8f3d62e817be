"""Voxel order: an image's stored axes to canonical RAS+ order and back, from its affine.

:func:`io_orientation` computes what ``nibabel.orientations.io_orientation`` does (the closest
permutation-and-flip of the affine's rotation, by polar decomposition); :mod:`mdanet_sdk.data.nifti` uses it
for every image it reads, and exported artefacts carry it scripted, so that the C API's volumes, given in
their stored order with their affine, are turned the way ``mdanet-sdk segment`` turns files. TorchScript-compatible.
"""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor

__all__ = ["io_orientation", "to_canonical", "from_canonical"]


def io_orientation(affine: Tensor) -> List[List[int]]:
    """For each voxel axis of a ``(4, 4)`` affine, the world axis (0 = R, 1 = A, 2 = S) it runs along most
    and the direction (``1``: towards R/A/S, ``-1``: away).

    Axes are matched strongest first (stable on ties), each world axis used once, as nibabel does.

    Returns:
        ``[[world_axis, direction]] * 3``.

    Raises:
        RuntimeError: the affine's rotation is degenerate (a voxel axis along no world axis).
    """
    rzs = affine[:3, :3].to(torch.float64)
    zooms = torch.sqrt((rzs * rzs).sum(dim=0))
    zooms = torch.where(zooms == 0, torch.ones_like(zooms), zooms)
    rs = rzs / zooms
    p, s, qh = torch.linalg.svd(rs, full_matrices=False)
    keep = s > s.max() * 3 * 2.220446049250313e-16
    r = (p[:, keep] @ qh[keep]).clone()
    order = torch.argsort((-(r * r)).min(dim=0).values, stable=True)
    ornt = [[-1, 0], [-1, 0], [-1, 0]]
    for i in range(3):
        in_ax = int(order[i].item())
        column = r[:, in_ax]
        if bool((column.abs() <= 1e-8).all().item()):
            continue
        out_ax = int(torch.argmax(column.abs()).item())
        ornt[in_ax] = [out_ax, -1 if float(column[out_ax].item()) < 0 else 1]
        r[out_ax, :] = 0.0
    for axis in ornt:
        if axis[0] < 0:
            raise RuntimeError("the affine is degenerate (a voxel axis along no world axis); fix its qform/sform")
    return ornt


def _reversed_axes(ornt: List[List[int]]) -> List[int]:
    flips: List[int] = []
    for axis in range(3):
        if ornt[axis][1] < 0:
            flips.append(axis)
    return flips


def _tail(ndim: int) -> List[int]:
    return list(range(3, ndim))


def to_canonical(volume: Tensor, ornt: List[List[int]]) -> Tensor:
    """``(X, Y, Z, ...)`` in stored order → canonical RAS+ order (flip the reversed axes, then permute)."""
    flips = _reversed_axes(ornt)
    if len(flips) > 0:
        volume = volume.flip(flips)
    perm = [0, 0, 0]
    for axis in range(3):
        perm[ornt[axis][0]] = axis
    return volume.permute(perm + _tail(volume.dim()))


def from_canonical(volume: Tensor, ornt: List[List[int]]) -> Tensor:
    """Inverse of :func:`to_canonical`: canonical ``(X, Y, Z, ...)`` back to the stored voxel order."""
    volume = volume.permute([ornt[0][0], ornt[1][0], ornt[2][0]] + _tail(volume.dim()))
    flips = _reversed_axes(ornt)
    if len(flips) > 0:
        volume = volume.flip(flips)
    return volume
