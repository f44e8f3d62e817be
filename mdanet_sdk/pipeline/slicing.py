"""Volumes to model slices and back (steps 3-5 of preprocessing and their exact inverse).

An in-plane box around the head (:func:`head_box`: the whole slice unless the head fills too little of it),
axial slicing along Z (``(C, X, Y, Z)`` → ``(Z, C, X, Y)``: a slice ``(X, Y)`` is ``(H, W)``), in-plane
resampling so that the longer side becomes ``size`` (aspect kept; bilinear with pixel areas mapped onto pixel
areas, as ``scipy.ndimage.zoom(grid_mode=True)``, nearest for labels), and centred padding to multiples of
``multiple`` with each channel's lowest value. TorchScript-compatible: :mod:`mdanet_sdk.data.preprocess` calls
these functions in Python and exported artefacts carry them scripted.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mdanet_sdk.pipeline.morphology import bounding_box, dilate

__all__ = [
    "LESION_MARGIN",
    "head_box",
    "box_shape",
    "model_grid",
    "zoom",
    "lowest_values",
    "to_model_grid",
    "restore_range",
    "restore_probability_range",
    "lesion_support",
    "slice_runs",
]

#: Lesions are kept within this many voxels of the automatic head mask: its edge may miss dark tissue.
LESION_MARGIN = 2


def head_box(head: Tensor, fill: float, least: int = 0) -> List[int]:
    """The in-plane box ``[x0, x1, y0, y1]`` of an ``(X, Y, Z)`` case that goes onto the model grid.

    The whole slice, unless the head's longer in-plane extent (over all slices) is less than ``fill`` of the
    slice's longer side: then a box of side ``max(ceil(extent / fill), least)`` (at most the slice's side on each
    axis), centred on the head and moved inside the slice. The network then sees the head at the scale it was
    trained on whatever the field of view (a head in a 2x wider, zero-filled field of view would otherwise shrink
    to half its size on the grid and its small lesions vanish); ``least`` (the model grid's side) keeps the box
    from being magnified beyond the stored voxels. ``fill`` 0, or an empty head: the whole slice.
    """
    x, y = head.shape[0], head.shape[1]
    whole = [0, x, 0, y]
    if fill <= 0.0 or not bool(head.any()):
        return whole
    bounds = bounding_box(head)
    lows, highs = [bounds[0], bounds[2]], [bounds[1], bounds[3]]
    extent = float(max(highs[0] - lows[0], highs[1] - lows[1]))
    if extent >= fill * float(max(x, y)):  # fills enough already (and no huge quotient for a tiny fill)
        return whole
    side = max(int(math.ceil(extent / fill)), least)
    if side >= max(x, y):
        return whole
    box: List[int] = []
    for axis, n in enumerate([x, y]):
        width = min(n, side)
        start = min(max((lows[axis] + highs[axis] - width) // 2, 0), n - width)
        box += [start, start + width]
    return box


def box_shape(box: List[int]) -> List[int]:
    """In-plane ``[X, Y]`` of a :func:`head_box`."""
    return [box[1] - box[0], box[3] - box[2]]


def model_grid(shape: List[int], size: Optional[int], multiple: int) -> Tuple[List[int], List[int], List[int]]:
    """Where the slices of an ``(X, Y, Z)`` volume go on the model grid.

    Returns:
        ``(resampled, padded, offset)``: the in-plane size after resampling ``[h, w]`` (the native ``[X, Y]``
        when ``size`` is None), the padded grid ``[H, W]`` (multiples of ``multiple``, at least ``size``), and
        the top-left corner ``[top, left]`` of the resampled slice in it.
    """
    x, y = shape[0], shape[1]
    if size is None:
        h, w = x, y
    else:
        factor = float(size) / float(max(x, y))
        # Python's round (half to even), as torch.round.
        h = max(1, int(torch.round(torch.tensor(x * factor, dtype=torch.float64)).item()))
        w = max(1, int(torch.round(torch.tensor(y * factor, dtype=torch.float64)).item()))
    least = 0 if size is None else size
    big_h = (max(h, least) + multiple - 1) // multiple * multiple
    big_w = (max(w, least) + multiple - 1) // multiple * multiple
    return [h, w], [big_h, big_w], [(big_h - h) // 2, (big_w - w) // 2]


def zoom(stack: Tensor, shape: List[int], labels: bool = False) -> Tensor:
    """Resample the last two axes of ``(N, A, B)`` to ``shape``: bilinear (nearest for ``labels``), pixel
    areas onto pixel areas, edges extended. Keeps the dtype."""
    if stack.shape[1] == shape[0] and stack.shape[2] == shape[1]:
        return stack
    # One plane per batch entry: a plane's result then never depends on how many planes come with it.
    x = stack.to(torch.float32).unsqueeze(1)
    if labels:
        out = F.interpolate(x, size=shape, mode="nearest-exact")
    else:
        out = F.interpolate(x, size=shape, mode="bilinear", align_corners=False)
    return out.squeeze(1).to(stack.dtype)


def lowest_values(normalised: Tensor) -> Tensor:
    """Each channel's lowest value over the whole ``(C, X, Y, Z)`` volume: the padding (the background). Taken
    once per case, so that chunks of slices equal the same slices of the whole stack."""
    return normalised.reshape(normalised.shape[0], -1).min(dim=1).values


def _pad(stack: Tensor, padded: List[int], offset: List[int], values: Tensor) -> Tensor:
    """Place ``(n, C, h, w)`` (or ``(n, h, w)`` with scalar ``values``) at ``offset`` in ``padded`` filled
    with ``values`` per channel."""
    shape = list(stack.shape[:-2]) + padded
    if stack.dim() == 4:
        out = values.to(stack.dtype).reshape(1, -1, 1, 1).expand(shape).clone()
    else:
        out = torch.zeros(shape, dtype=stack.dtype).fill_(values)
    out[..., offset[0] : offset[0] + stack.shape[-2], offset[1] : offset[1] + stack.shape[-1]] = stack
    return out


def to_model_grid(
    normalised: Tensor,
    lowest: Tensor,
    start: int,
    end: int,
    box: List[int],
    resampled: List[int],
    padded: List[int],
    offset: List[int],
) -> Tensor:
    """Slices ``start..end-1`` of a normalised ``(C, X, Y, Z)`` volume's ``box`` on the model grid: float32
    ``(n, C, H, W)``."""
    inside = normalised[:, box[0] : box[1], box[2] : box[3], start:end]
    slices = inside.permute(3, 0, 1, 2).contiguous()  # (n, C, x, y)
    n, c = slices.shape[0], slices.shape[1]
    flat = zoom(slices.reshape(n * c, slices.shape[2], slices.shape[3]), resampled)
    return _pad(flat.reshape(n, c, resampled[0], resampled[1]), padded, offset, lowest)


def label_to_model_grid(
    label: Tensor, box: List[int], resampled: List[int], padded: List[int], offset: List[int]
) -> Tensor:
    """An integer ``(X, Y, Z)`` label's ``box`` on the model grid, nearest neighbour: uint8 ``(Z, H, W)``."""
    slices = label[box[0] : box[1], box[2] : box[3]].to(torch.uint8).permute(2, 0, 1).contiguous()
    return _pad(zoom(slices, resampled, labels=True), padded, offset, torch.zeros([], dtype=torch.uint8))


def restore_range(slices: Tensor, native: List[int], box: List[int], resampled: List[int], offset: List[int]) -> Tensor:
    """Model-grid ``(n, H, W)`` slices back onto the native in-plane grid ``native = [X, Y]``: crop the
    padding, resample back onto ``box`` (bilinear for floating point, nearest for integers), 0 outside it, Z
    last: ``(X, Y, n)``."""
    labels = not slices.is_floating_point()
    crop = slices[:, offset[0] : offset[0] + resampled[0], offset[1] : offset[1] + resampled[1]]
    inner = zoom(crop.contiguous(), box_shape(box), labels=labels)
    if box_shape(box) != native:
        out = torch.zeros([inner.shape[0], native[0], native[1]], dtype=inner.dtype)
        out[:, box[0] : box[1], box[2] : box[3]] = inner
        inner = out
    return inner.permute(1, 2, 0).contiguous()


def restore_probability_range(
    slices: Tensor,
    native: List[int],
    box: List[int],
    resampled: List[int],
    offset: List[int],
    support: Optional[Tensor],
) -> Tensor:
    """Lesion probabilities of ``(n, H, W)`` model-grid slices on the native grid ``(X, Y, n)``: restored,
    clipped to 0..1, and 0 outside ``support`` (bool ``(X, Y, n)``) when given."""
    part = restore_range(slices.to(torch.float32), native, box, resampled, offset).clamp(0.0, 1.0)
    if support is not None:
        part = torch.where(support, part, torch.zeros_like(part))
    return part


def lesion_support(head: Tensor, given: bool, margin: int = LESION_MARGIN) -> Tensor:
    """Where lesions may lie: a brain mask the caller gave, or the automatic head mask grown by
    :data:`LESION_MARGIN` voxels (its edge may miss dark tissue)."""
    return head if given else dilate(head, margin)


def slice_runs(support: Optional[Tensor], depth: int, step: Optional[int] = None) -> List[Tuple[int, int]]:
    """The slices the network must see: maximal runs ``(start, end)`` of consecutive slices (last axis) that
    hold any voxel of ``support`` (bool ``(X, Y, Z)``), each cut into ranges of at most ``step`` slices when
    given (one forward pass each). A slice outside them has probability 0 whatever the network says
    (:func:`restore_probability_range` zeroes it), so skipping it changes nothing but the time. All ``depth``
    slices when ``support`` is None."""
    runs: List[Tuple[int, int]] = []
    if support is None:
        if depth > 0:
            runs.append((0, depth))
    else:
        needed = support.flatten(0, 1).any(0)
        start = -1
        for z in range(depth):
            if bool(needed[z]):
                if start < 0:
                    start = z
            elif start >= 0:
                runs.append((start, z))
                start = -1
        if start >= 0:
            runs.append((start, depth))
    if step is None:
        return runs
    cut: List[Tuple[int, int]] = []
    for first, last in runs:
        for start in range(first, last, max(1, step)):
            cut.append((start, min(last, start + max(1, step))))
    return cut
