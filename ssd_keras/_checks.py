"""Argument checks shared by the modules that take sizes and counts."""

from __future__ import annotations

import math
import numbers

import numpy as np


def is_whole(value) -> bool:
    """True for an integer however it is typed: an int, a numpy integer or a float with an
    integral value (4.0, as a JSON config may hold). False for a bool (`True` is not one grid
    cell), a fraction such as 4.7 (which `int()` would cut to 4 without a word), NaN, infinity
    and non-numbers ("4")."""
    if isinstance(value, np.ndarray) and value.ndim == 0:  # np.array(64), as int() takes it
        value = value.item()
    return (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
            and math.isfinite(value) and value == int(value))
