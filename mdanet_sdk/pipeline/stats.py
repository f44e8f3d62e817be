"""Order statistics of voxel values, as numpy computes them (``percentile`` with linear interpolation).

TorchScript-compatible: the same functions run eagerly in Python and inside exported artefacts.
"""

from __future__ import annotations

from typing import List, Tuple

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
    many = len(qs) > 2  # many order statistics: one sort; a few: selection, O(n) each
    ordered = torch.sort(flat).values if many else flat
    out: List[float] = []
    for q in qs:
        low = int(q * (n - 1))
        fraction = q * (n - 1) - low
        high = min(low + 1, n - 1)
        if many:
            a, b = float(ordered[low].item()), float(ordered[high].item())
        else:
            a, b = _order_statistics(flat, low, high, fraction == 0.0)
        out.append(a if fraction == 0.0 else a + (b - a) * fraction)
    return out


def _order_statistics(flat: Tensor, low: int, high: int, low_only: bool) -> Tuple[float, float]:
    """The ``low``-th and ``high``-th smallest values (0-based, ``high`` = ``low`` or ``low + 1``) by selection.

    Near the top (the head mask's 99.9th percentile of a whole volume) one ``topk`` keeps the few values from
    ``low`` up and both come from them; elsewhere a ``kthvalue`` each (one when ``low_only``).
    """
    n = flat.numel()
    above = n - low
    if above * 20 <= n:  # at most 5 % of the values from ``low`` up
        top = torch.topk(flat, above, largest=True, sorted=False).values
        two = torch.topk(top, min(2, above), largest=False, sorted=True).values
        return float(two[0].item()), float(two[-1].item())
    a = float(torch.kthvalue(flat, low + 1).values.item())
    if low_only or high == low:
        return a, a
    return a, float(torch.kthvalue(flat, high + 1).values.item())


def median(values: Tensor) -> float:
    """The median of ``values`` (the mean of the two middle values of an even count), as ``numpy.median``."""
    return quantiles(values, [0.5])[0]
