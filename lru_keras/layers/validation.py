"""Argument checks shared by the layers and builders: errors name the argument and the value."""


def require_positive_int(name, value):
    """Returns `value` if it is an int >= 1, else raises a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return value


def require_choice(name, value, allowed):
    """Returns `value` if it is one of `allowed`, else raises a ValueError listing them."""
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}.")
    return value
