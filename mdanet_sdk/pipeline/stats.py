"""Order statistics of voxel values, as numpy computes them (``percentile`` with linear interpolation).

TorchScript-compatible: the same functions run eagerly in Python and inside exported artefacts.
"""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor

__all__ = ["quantiles", "median"]


def quantiles(values: Tensor, qs: List[float]) -> List[float]:
    """Quantiles ``qs`` (fractions 0..1) of the values of ``values``, linearly interpolated.

    ``x[⌊i⌋] + (x[⌈i⌉] - x[⌊i⌋]) · (i - ⌊i⌋)`` with ``i = q (n - 1)`` on the sorted values: numpy's
    ``percentile(..., method="linear")`` (so ``median`` averages the two middle values of an even count).

    Args:
        values: any shape, at least one element; flattened.
        qs: fractions in [0, 1].

    Returns:
        one Python float per fraction (computed in float64).
    """
    flat = values.reshape(-1)
    n = flat.numel()
    if n == 0:
        raise ValueError("quantiles of an empty set of values")
    positions: List[int] = []
    for q in qs:
        position = q * (n - 1)
        positions.append(int(position))
        positions.append(min(int(position) + 1, n - 1))
    if len(qs) <= 2:  # a few order statistics: selection, O(n) each
        picked = [float(torch.kthvalue(flat, k + 1).values.item()) for k in positions]
    else:
        ordered = torch.sort(flat).values
        picked = [float(ordered[k].item()) for k in positions]
    out: List[float] = []
    for i, q in enumerate(qs):
        low, high = picked[2 * i], picked[2 * i + 1]
        fraction = q * (n - 1) - int(q * (n - 1))
        out.append(low + (high - low) * fraction)
    return out


def median(values: Tensor) -> float:
    """The median of ``values`` (the mean of the two middle values of an even count), as ``numpy.median``."""
    return quantiles(values, [0.5])[0]
