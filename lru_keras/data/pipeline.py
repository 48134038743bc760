"""Input pipelines: prepared TFDS splits as batched (image, label) datasets, with augmentation.

Images come out as float32 in [0, 255], NHWC, labels as int32; any scaling to [0, 1] or
normalisation belongs to the model. `check_pixels` holds the images a user gives (to predict,
evaluate, calibrate or fine-tune on) to the same contract. The augmentation is the paper's:
random crop back to the original size after 4-pixel zero padding, random rotation within +-10
degrees (zero fill, bilinear) and random horizontal flip, the same for all three datasets. It
runs on whole batches with per-image random parameters drawn by stateless ops from a
per-batch seed.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings

import keras
import numpy as np
import tensorflow as tf
from lru_keras import extras
from lru_keras.data.catalog import info
from lru_keras.data.store import not_available_error, prepared_counts, resolve_data_dir
from lru_keras.validation import require_positive_int

tfds = extras.lazy("tensorflow_datasets")  # the [data] extra

PAD_PIXELS = 4
MAX_ROTATION_DEGREES = 10.0
# `augment_batch` in a few words, for model cards and summaries.
AUGMENTATION = (f"random crop pad {PAD_PIXELS}, rotation ±{MAX_ROTATION_DEGREES:g}°, "
                "horizontal flip")
# The pixels `load` delivers, and what every entry point of the package that takes images
# expects (models rescale them themselves; a LiteRT classifier maps them to its input).
PIXEL_RANGE = (0.0, 255.0)


def load(name: str, split: str = "test", *, batch_size: int = 256, training: bool = False,
         shuffle: bool | None = None, augment: bool | None = None,
         data_dir: str | os.PathLike | None = None, seed: int | None = None,
         drop_remainder: bool = False) -> tf.data.Dataset:
    """Batched, prefetched `(image float32 [0, 255] NHWC, label int32)` dataset of a split.

    `split` may use TFDS slicing ("train[:-5000]", "test[:10%]"). `training` switches the
    defaults of `shuffle` and `augment` on. Shuffling uses a buffer of the whole split
    because the imported CIFAR rows are sorted by class. `seed` makes shuffling and
    augmentation reproducible. Never downloads: a dataset that is not prepared raises
    DatasetNotAvailableError saying how to import it.
    """
    _check_load_args(name, split, batch_size, training, shuffle, augment, seed, drop_remainder)
    shuffle = training if shuffle is None else shuffle
    augment = training if augment is None else augment
    target = resolve_data_dir(data_dir)
    num_examples = split_size(name, split, target)
    ds = tfds.load(info(name).tfds_name, split=split, data_dir=str(target), download=False,
                   as_supervised=True)  # imports are ordered, so no file shuffling
    if shuffle:
        ds = ds.shuffle(num_examples, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(_to_model_dtypes, num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda batch, batch_seed: (augment_batch(batch[0], batch_seed), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def split_size(name: str, split: str, data_dir: str | os.PathLike | None = None) -> int:
    """Number of examples `split` (TFDS slicing allowed) selects from the prepared `name`.

    Raises DatasetNotAvailableError if `name` is not prepared, ValueError if the split is
    unknown, malformed or selects nothing.
    """
    target = resolve_data_dir(data_dir)
    counts = prepared_counts(name, target)
    if counts is None:
        raise not_available_error(name, target)
    try:
        n = tfds.builder(info(name).tfds_name, data_dir=str(target)).info.splits[split].num_examples
    except ValueError as error:
        raise ValueError(f"split={split!r} is not valid for {name} in {target} (prepared "
                         f"splits and sizes: {counts}): {error}") from None
    if n <= 0:
        raise ValueError(f"split={split!r} selects no examples of {name} (prepared splits and "
                         f"sizes: {counts})")
    return n


def check_pixels(images, what, pixel_range=PIXEL_RANGE, *, refuse_scaled=False):
    """`images` unchanged if a model can take them as pixels, else a ValueError naming `what`
    (the argument or file they came from) and the allowed range.

    Refused: arrays that are not numbers; NaN or infinite values (a Keras model turns them
    into a confident class, a LiteRT file into NaN scores); values outside `pixel_range` by
    more than half an 8-bit level (None: any finite value goes). With a range that reaches
    above 1 (the default [0, 255]), images that all lie in [0, 1] look scaled already, which
    is ambiguous (a dark image does too): a warning, or with `refuse_scaled` (calibration,
    where such images would spoil the file) an error.
    """
    array = np.asarray(images)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{what} must be an array of pixel numbers, got dtype {array.dtype}.")
    if array.size == 0:
        return images
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{what} contains {bad} NaN or infinite values: pixels must be finite"
                         + ("." if pixel_range is None else
                            f" numbers in [{pixel_range[0]:g}, {pixel_range[1]:g}]."))
    if pixel_range is None:
        return images
    lowest, highest = pixel_range
    low, high = float(array.min()), float(array.max())
    half_level = (highest - lowest) / 510
    if low < lowest - half_level or high > highest + half_level:
        raise ValueError(f"{what} must be pixels in [{lowest:g}, {highest:g}]; these span "
                         f"[{low:g}, {high:g}].")
    if highest > 1 >= high:
        remedy = (f"multiply them by {highest:g}" if lowest == 0 else
                  f"map them there (x * {highest - lowest:g} + {lowest:g})")
        message = (f"{what} spans [{low:g}, {high:g}]: pixels already scaled to [0, 1]? The "
                   f"model takes pixels in [{lowest:g}, {highest:g}]: {remedy}.")
        if refuse_scaled:
            raise ValueError(message)
        warnings.warn(message, stacklevel=2)
    return images


def _check_load_args(name, split, batch_size, training, shuffle, augment, seed,
                     drop_remainder) -> None:
    """Raise ValueError naming the argument, its value and what is allowed."""
    info(name)
    if not isinstance(split, str) or not split:
        raise ValueError(f"split={split!r} must be a non-empty TFDS split string such as "
                         f"'train', 'test' or 'train[:-5000]'")
    require_positive_int("batch_size", batch_size)
    flags = {"training": training, "drop_remainder": drop_remainder}
    optional_flags = {"shuffle": shuffle, "augment": augment}
    for arg, value in flags.items():
        if not isinstance(value, bool):
            raise ValueError(f"{arg}={value!r} must be True or False")
    for arg, value in optional_flags.items():
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{arg}={value!r} must be True, False or None (follow `training`)")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ValueError(f"seed={seed!r} must be an integer or None")


def _to_model_dtypes(images, labels):
    """Cast a batch to what the models take: float32 pixels in [0, 255], int32 labels."""
    return keras.ops.cast(images, "float32"), keras.ops.cast(labels, "int32")


def augment_batch(images, seed):
    """The paper's augmentation of a float NHWC batch: crop, then rotate, then flip.

    `seed` is a shape-(2,) integer tensor; the same seed gives the same result, and every
    image of the batch gets its own random crop offset, angle and flip.
    """
    crop_seed, rotation_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(
        tf.cast(seed, tf.int64), 3))
    images = random_crop(images, crop_seed)
    images = random_rotation(images, rotation_seed)
    return random_flip(images, flip_seed)


def random_crop(images, seed):
    """Random crop back to the original size after PAD_PIXELS of zero padding on each side.

    Implemented as an integer translation by up to PAD_PIXELS in x and y with zero fill,
    which gives exactly the pixels of pad-then-crop without building the padded batch.
    """
    batch = tf.shape(images)[0]
    shifts = tf.random.stateless_uniform([batch, 2], seed, minval=-PAD_PIXELS,
                                         maxval=PAD_PIXELS + 1, dtype=tf.int32)
    shifts = keras.ops.cast(shifts, "float32")
    ones, zeros = keras.ops.ones([batch]), keras.ops.zeros([batch])
    transforms = keras.ops.stack(
        [ones, zeros, shifts[:, 0], zeros, ones, shifts[:, 1], zeros, zeros], axis=1)
    return keras.ops.image.affine_transform(
        images, transforms, interpolation="nearest", fill_mode="constant", fill_value=0,
        data_format="channels_last")


def random_rotation(images, seed):
    """Rotate each image about its centre by a uniform angle in +-MAX_ROTATION_DEGREES.

    Bilinear interpolation; corners that come from outside the image are zero. The result is
    clipped to [0, 255], the pixel range `load` promises.
    """
    shape = tf.shape(images)
    max_angle = math.radians(MAX_ROTATION_DEGREES)
    angles = tf.random.stateless_uniform([shape[0]], seed, minval=-max_angle, maxval=max_angle)
    cos, sin = keras.ops.cos(angles), keras.ops.sin(angles)
    center_y = (keras.ops.cast(shape[1], "float32") - 1.0) / 2.0
    center_x = (keras.ops.cast(shape[2], "float32") - 1.0) / 2.0
    zeros = keras.ops.zeros_like(angles)
    # Output pixel p samples the input at R(angle) (p - centre) + centre.
    transforms = keras.ops.stack([
        cos, -sin, center_x - cos * center_x + sin * center_y,
        sin, cos, center_y - sin * center_x - cos * center_y,
        zeros, zeros], axis=1)
    rotated = keras.ops.image.affine_transform(
        images, transforms, interpolation="bilinear", fill_mode="constant", fill_value=0,
        data_format="channels_last")
    return keras.ops.clip(rotated, 0.0, 255.0)  # bilinear rounding can overshoot 255 by ~1e-5


def random_flip(images, seed):
    """Mirror each image left-right with probability 1/2."""
    flip = tf.random.stateless_uniform([tf.shape(images)[0]], seed) < 0.5
    return keras.ops.where(flip[:, None, None, None], keras.ops.flip(images, axis=2), images)
