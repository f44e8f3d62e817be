"""What counts as a whole number, a real number and a flag in a user's settings (Python, JSON or numpy values),
one rule for every config object: bools are flags, never numbers; text and complex values are neither."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = ["is_finite", "is_flag", "is_real", "is_whole"]


def is_whole(value: Any) -> bool:
    """An int of Python or numpy (not a bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    """An int or float of Python or numpy (not a bool, not complex); NaN and infinities included."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_finite(value: Any) -> bool:
    """A real number (:func:`is_real`) that is neither NaN nor infinite."""
    return is_real(value) and math.isfinite(value)


def is_flag(value: Any) -> bool:
    """True or False, of Python or numpy."""
    return isinstance(value, (bool, np.bool_))
