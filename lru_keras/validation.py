"""Argument checks used across the package: each error names the argument and the value.

NumPy scalars are accepted like the Python numbers they hold (`reuse=np.int64(2)`), and the
checks return plain Python numbers, so configs and names stay JSON-friendly.
"""

import math
import numbers


def require_positive_int(name, value):
    """Returns `value` as an int if it is an integer >= 1, else a ValueError naming `name`."""
    return require_int(name, value, 1)


def require_int(name, value, low=0):
    """Returns `value` as an int if it is an integer >= `low` (bool is refused), else a
    ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        wanted = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"`{name}` must be {wanted}, got {value!r}.")
    return int(value)


def require_dropout(value, name="dropout"):
    """Returns `value` as a float if it is a rate in [0, 1), else a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"`{name}` must be a number in [0, 1), got {value!r}.")
    return float(value)


def require_finite_positive(name, value):
    """Returns `value` as a float if it is a finite number > 0, else a ValueError naming
    `name`."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}.")
    return float(value)


def require_range(name, value):
    """Returns `value` as a (low, high) pair of floats if it is one, finite, with high > low,
    else a ValueError naming `name`."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be (low, high), got {value!r}.") from None
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(f"`{name}` must be finite (low, high) with high > low, got "
                         f"{value!r}.")
    return low, high


def require_choice(name, value, allowed):
    """Returns `value` if it is one of `allowed`, else raises a ValueError listing them."""
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}.")
    return value
