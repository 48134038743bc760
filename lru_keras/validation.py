"""Argument checks used across the package: each error names the argument and the value.

NumPy scalars are accepted like the Python numbers they hold (`reuse=np.int64(2)`), and the
checks return plain Python numbers, so configs and names stay JSON-friendly.

Sizes that set how much a call builds or computes take an upper bound (`high`), one no real
use reaches, so that a typo (an extra zero, 10**6) is refused at once with the limit in the
message, instead of running for minutes or exhausting memory.
"""

import math
import numbers

import numpy as np


def require_positive_int(name, value, high=None, unit=None):
    """Returns `value` as an int if it is an integer >= 1 (and <= `high`), else a ValueError
    naming `name` (see `require_int`)."""
    return require_int(name, value, 1, high=high, unit=unit)


def require_int(name, value, low=0, high=None, unit=None):
    """Returns `value` as an int if it is an integer >= `low` (bool is refused) and, with
    `high`, <= `high`, else a ValueError naming `name` and the allowed range; `unit` says
    what is counted ("reuses per block")."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        if high is not None:
            wanted = f"an integer in [{low}, {high}]"
        else:
            wanted = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"`{name}` must be {wanted}, got {value!r}.")
    value = int(value)
    if high is not None:
        require_at_most(name, value, high, unit, allowed=f"{low} to {high}")
    return value


class TooLargeError(ValueError):
    """A value above a bound that keeps work finite: the message names the bound, and callers
    that rephrase other errors (the command line's argument types) pass it on as it is."""


def require_at_most(name, value, high, unit=None, allowed=None):
    """Returns `value` if it is <= `high`, else a ValueError "`name`=value is too large: at
    most `high` `unit`", with the `allowed` range (e.g. "1 to 64") if given."""
    if value > high:
        raise TooLargeError(
            f"`{name}`={_number(value)} is too large: at most {_number(high)}"
            + (f" {unit}" if unit else "") + (f"; allowed: {allowed}" if allowed else "") + "."
        )
    return value


def _number(value):
    """A number for a message: integers in full (1000000, not np.int64(1000000)), others
    as %g (0.5, 2.66667)."""
    return str(int(value)) if isinstance(value, numbers.Integral) else f"{float(value):g}"


def require_bool(name, value):
    """Returns `value` as a bool if it is one (NumPy's too), else a ValueError naming `name`:
    a string such as "no" would otherwise count as True."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


def require_dropout(value, name="dropout"):
    """Returns `value` as a float if it is a rate in [0, 1), else a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"`{name}` must be a number in [0, 1), got {value!r}.")
    return float(value)


def require_finite_positive(name, value, high=None, unit=None):
    """Returns `value` as a float if it is a finite number > 0 (and, with `high`, <= `high`),
    else a ValueError naming `name` and the allowed range."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value <= 0):
        wanted = "a finite number > 0" + ("" if high is None else f" and <= {_number(high)}")
        raise ValueError(f"`{name}` must be {wanted}, got {value!r}.")
    value = float(value)
    if high is not None:
        require_at_most(name, value, high, unit, allowed=f"0 < {name} <= {_number(high)}")
    return value


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
