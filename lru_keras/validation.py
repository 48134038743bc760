"""Argument checks used across the package: each error names the argument and the value."""


def require_positive_int(name, value):
    """Returns `value` if it is an int >= 1, else raises a ValueError naming `name`."""
    return require_int(name, value, 1)


def require_int(name, value, low=0):
    """Returns `value` if it is an int >= `low` (bool is refused), else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        wanted = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"`{name}` must be {wanted}, got {value!r}.")
    return value


def require_choice(name, value, allowed):
    """Returns `value` if it is one of `allowed`, else raises a ValueError listing them."""
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}.")
    return value
