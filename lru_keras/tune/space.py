"""The search space of a tuning run: which N, widths, dropouts and shuffle settings to try.

`SearchSpace` holds, for each LruNet hyperparameter, the tuple of values a search may draw;
`declare(hp)` registers them with KerasTuner (`hp.Choice`, or `hp.Fixed` for a single value)
and returns the trial's values. Every value is checked where the space is made, so that a bad
space fails before the first trial instead of inside one. `parse_*` read the command line's
forms ("1-16", "1,2,4,8", "0.25,0.5", "both").
"""

from __future__ import annotations

import dataclasses
import numbers

from lru_keras.validation import TooLargeError
from lru_keras.zoo.lrunet import stage_widths

# The paper's Table 2 varies N from 1 to 16.
REUSE_RANGE = (1, 16)
SHUFFLE_CHOICES = {"both": (True, False), "on": (True,), "off": (False,)}
HYPERPARAMETERS = ("reuse", "width", "dropout", "shuffle")


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Values a search may draw for each LruNet hyperparameter (one value: it is fixed).

    reuse: N, reuses per LRU block, integers in 1..16 (default: all of them).
    width: width multipliers, positive multiples of 0.125.
    dropout: classifier dropout rates in [0, 1).
    shuffle: channel shuffle between reuses: (True, False), (True,) or (False,).

    Values are stored sorted and without repeats (shuffle: True first), so that two spaces
    holding the same values compare (and resume) as equal.
    """

    reuse: tuple = tuple(range(REUSE_RANGE[0], REUSE_RANGE[1] + 1))
    width: tuple = (0.25, 0.5, 1.0)
    dropout: tuple = (0.0, 0.2, 0.5)
    shuffle: tuple = (True, False)

    def __post_init__(self):
        object.__setattr__(self, "reuse", _checked("reuse", self.reuse, _reuse_value))
        object.__setattr__(self, "width", _checked("width", self.width, _width_value))
        object.__setattr__(self, "dropout", _checked("dropout", self.dropout, _dropout_value))
        shuffle = _checked("shuffle", self.shuffle, _shuffle_value)
        object.__setattr__(self, "shuffle", tuple(sorted(shuffle, reverse=True)))

    def declare(self, hp) -> dict:
        """Register the space with a `keras_tuner.HyperParameters`; the trial's values."""
        values = {}
        for name in HYPERPARAMETERS:
            choices = list(getattr(self, name))
            if len(choices) == 1:
                values[name] = hp.Fixed(name, choices[0])
            elif name == "shuffle":  # hp.Choice would turn True/False into 1/0
                values[name] = hp.Boolean(name, default=True)
            else:
                values[name] = hp.Choice(name, choices)
        return values

    def size(self) -> int:
        """Number of distinct configurations in the space."""
        count = 1
        for name in HYPERPARAMETERS:
            count *= len(getattr(self, name))
        return count

    def to_dict(self) -> dict:
        return {name: list(getattr(self, name)) for name in HYPERPARAMETERS}

    @classmethod
    def from_dict(cls, values: dict) -> "SearchSpace":
        unknown = sorted(set(values) - set(HYPERPARAMETERS))
        if unknown:
            raise ValueError(f"unknown search space entries {unknown}; known: "
                             f"{list(HYPERPARAMETERS)}")
        return cls(**{name: tuple(value) for name, value in values.items()})


def _checked(name, values, check) -> tuple:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        values = (values,)
    values = tuple(values)
    if not values:
        raise ValueError(f"{name}=(): the search space needs at least one {name} value")
    return tuple(sorted({check(value) for value in values}))


def _reuse_value(value) -> int:
    low, high = REUSE_RANGE
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not (
            low <= value <= high):
        raise ValueError(f"reuse={value!r}: N must be an integer in {low}..{high}")
    return int(value)


def _width_value(value) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        stage_widths(float(value))
    except TooLargeError:
        raise
    except (TypeError, ValueError):
        raise ValueError(f"width={value!r}: expected a positive multiple of 0.125 "
                         f"(0.25, 0.5, 1, 2, ...)") from None
    return float(value)


def _dropout_value(value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"dropout={value!r}: expected a number in [0, 1)")
    return float(value)


def _shuffle_value(value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"shuffle={value!r}: expected True or False")
    return value


def parse_reuse(text: str) -> tuple:
    """N values from "1-16", "1,2,4,8" or a mix ("1-4,8,16")."""
    values = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            values += (list(range(int(first), int(last) + 1)) if dash else [int(first)])
        except ValueError:
            raise ValueError(f"reuse={text!r}: expected integers and ranges such as "
                             f"'1-16' or '1,2,4,8'") from None
    if not values:
        raise ValueError(f"reuse={text!r}: the range is empty")
    return _checked("reuse", values, _reuse_value)


def parse_numbers(name: str, text: str) -> tuple:
    """Comma-separated numbers ("0.25,0.5,1"), checked as values of `name`."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"{name}={text!r}: expected comma-separated numbers such as "
                         f"'0.25,0.5'") from None
    check = {"width": _width_value, "dropout": _dropout_value}[name]
    return _checked(name, values, check)


def parse_shuffle(text: str) -> tuple:
    """"both", "on" or "off" as shuffle values."""
    if text not in SHUFFLE_CHOICES:
        raise ValueError(f"shuffle={text!r}: expected one of {list(SHUFFLE_CHOICES)}")
    return SHUFFLE_CHOICES[text]
