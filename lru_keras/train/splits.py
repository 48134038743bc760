"""Which images train, which validate, which test: TFDS split strings for a run.

The validation images are held out of the training split (default: 5,000 of them, or a
tenth of a smaller training split), so that checkpoint selection and early stopping never see
the test split, which is evaluated once at the end.

The imported CIFAR training splits are sorted by class, so "train[-5000:]" would hold out
trucks only. Every subset here is therefore spread over the whole split: the split is cut
into `CHUNKS` equal consecutive chunks and each chunk gives its share, validation images from
the end of each chunk, training images from its start. On a class-sorted split whose classes
each cover a whole number of chunks (CIFAR-10: 10 chunks of 500 per class; the CIFAR-100
subset: one chunk of 50 per class) every class gets the same share; on a split in random
order (Fashion-MNIST) it is a plain fixed subset. The
result is a TFDS split string such as "train[0:450]+train[500:950]+...", which
`lru_keras.data.load` reads directly.
"""

from __future__ import annotations

import dataclasses
import os

from lru_keras import data

CHUNKS = 100
DEFAULT_VALIDATION = 5000
DEFAULT_VALIDATION_FRACTION = 10  # a smaller training split gives a tenth to validation


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    """TFDS split strings of a run and the number of images each selects."""

    train: str
    validation: str | None
    test: str
    train_images: int
    validation_images: int
    test_images: int
    train_split_size: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def default_validation(train_split_size: int) -> int:
    """5,000 images, or a tenth of a training split smaller than 50,000 images."""
    return min(DEFAULT_VALIDATION, train_split_size // DEFAULT_VALIDATION_FRACTION)


def plan_splits(dataset: str, *, validation: int | None = None, train_images: int | None = None,
                test_images: int | None = None,
                data_dir: str | os.PathLike | None = None) -> SplitPlan:
    """Split strings for training, validation and test on a prepared dataset.

    Args:
        validation: images held out of "train" for validation (None: `default_validation`;
            0: no validation split).
        train_images: use only this many of the remaining training images (None: all).
        test_images: evaluate on only this many test images, spread over the split (None: all).
    """
    train_size = data.split_size(dataset, "train", data_dir)
    test_size = data.split_size(dataset, "test", data_dir)
    validation = default_validation(train_size) if validation is None else validation
    if validation >= train_size:
        raise ValueError(f"validation={validation} images cannot be held out of the "
                         f"{train_size} training images of {dataset}")
    pool = train_size - validation
    train_images = pool if train_images is None else train_images
    if train_images > pool:
        raise ValueError(f"train_images={train_images} is more than the {pool} training images "
                         f"of {dataset} left after holding out {validation} for validation")
    test_images = test_size if test_images is None else test_images
    if test_images > test_size:
        raise ValueError(f"test_images={test_images} is more than the {test_size} images of "
                         f"{dataset}'s test split")
    chunks = _chunks(train_size)
    held_out = _shares(validation, len(chunks))
    room = [end - start - n_val for (start, end), n_val in zip(chunks, held_out)]
    train_pieces, validation_pieces = [], []
    for (start, end), n_val, n_train in zip(chunks, held_out, _fill(train_images, room)):
        train_pieces.append((start, start + n_train))
        validation_pieces.append((end - n_val, end))
    test_pieces = [(start, start + n) for (start, _), n in
                   zip(_chunks(test_size), _shares(test_images, len(_chunks(test_size))))]
    return SplitPlan(
        train=_split_string("train", train_pieces, train_size),
        validation=_split_string("train", validation_pieces, train_size) if validation else None,
        test=_split_string("test", test_pieces, test_size),
        train_images=train_images, validation_images=validation, test_images=test_images,
        train_split_size=train_size,
    )


def _chunks(size: int) -> list[tuple[int, int]]:
    count = min(CHUNKS, size)
    bounds = [i * size // count for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _shares(total: int, parts: int) -> list[int]:
    """`total` spread over `parts` as evenly as integers allow (sizes differ by at most 1)."""
    return [(i + 1) * total // parts - i * total // parts for i in range(parts)]


def _fill(total: int, room: list[int]) -> list[int]:
    """`total` (at most `sum(room)`) spread over the parts in proportion to the room each has
    left after the validation images, so that none gets more than its room (the floors of
    consecutive cumulative shares differ by at most the room between them); with equal room
    the same as `_shares`."""
    capacity, bounds, filled = sum(room), [0], 0
    for size in room:
        filled += size
        bounds.append(total * filled // capacity)
    return [b - a for a, b in zip(bounds[:-1], bounds[1:])]


def _split_string(split: str, pieces, size: int) -> str:
    """TFDS split string of the non-empty [start:end) pieces; plain `split` if they cover it."""
    pieces = [(a, b) for a, b in pieces if b > a]
    merged = []
    for a, b in pieces:
        if merged and merged[-1][1] == a:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    if merged == [(0, size)]:
        return split
    return "+".join(f"{split}[{a}:{b}]" for a, b in merged)
