"""keras.applications' helper functions for the zoo's models: `preprocess_input` and
`decode_predictions`, so code written for keras.applications (or kimm) runs unchanged.

Every zoo model built with include_preprocessing=True (the default) takes raw pixels in
[0, 255] and rescales them itself, so `preprocess_input` passes them through, as
keras.applications' EfficientNet and ConvNeXt do, after checking they are such pixels. The
zoo's datasets share class counts (CIFAR-10 and Fashion-MNIST both have 10), so
`decode_predictions` is told the dataset.
"""

import numpy as np

from lru_keras import data
from lru_keras.data.pipeline import check_pixels
from lru_keras.validation import require_choice, require_positive_int


def preprocess_input(x, data_format=None):
    """Returns `x` unchanged (as float32 if it is an array): the zoo's models preprocess
    their input themselves. `data_format` is accepted for keras.applications' signature;
    only "channels_last" (or None) is supported.

    An array (or list) must be one image (height, width, channels) or a batch of them, of
    finite pixels in [0, 255] (`lru_keras.data.pipeline.check_pixels`; images that all lie in
    [0, 1] get a warning: already scaled?); else a ValueError naming `x`. Tensors pass
    unchecked (their values may not exist yet, e.g. in a tf.data map).
    """
    require_choice("data_format", data_format, (None, "channels_last"))
    if not isinstance(x, (np.ndarray, list)):
        return x
    array = np.asarray(x)
    if array.ndim not in (3, 4):
        raise ValueError(f"`x` must be an image (height, width, channels) or a batch of them "
                         f"(batch, height, width, channels), got shape {array.shape}.")
    check_pixels(array, "`x`")
    return array.astype(np.float32)


def decode_predictions(predictions, dataset, top=5):
    """The `top` classes of each row of `predictions` (batch, classes), best first, as
    [(class index, class name, score), ...] per row (keras.applications returns
    (class id, name, score) too).

    Args:
        predictions: the model's outputs, one row per image (probabilities or scores),
            finite numbers.
        dataset: the dataset the model classifies ("cifar10", "cifar100", "fashion_mnist"),
            which names the classes.
        top: how many classes per row, 1 to the number of classes.
    """
    names = data.class_names(require_choice("dataset", dataset, sorted(data.DATASETS)))
    predictions = np.asarray(predictions)
    if predictions.ndim != 2 or predictions.shape[1] != len(names):
        raise ValueError(
            f"`predictions` must have shape (batch, {len(names)}) for {dataset!r}, got "
            f"{predictions.shape}.")
    if predictions.dtype.kind not in "iuf":
        raise ValueError(f"`predictions` must be numbers, got dtype {predictions.dtype}.")
    finite = np.isfinite(predictions).all(axis=1)
    if not finite.all():
        rows = np.flatnonzero(~finite)
        raise ValueError(
            f"`predictions` has NaN or infinite scores in {len(rows)} row(s) (first: row "
            f"{rows[0]}): the model's output is broken there, it has no best class.")
    top = require_positive_int("top", top, high=len(names), unit=f"classes of {dataset!r}")
    # As float: negating unsigned integers would wrap around.
    order = np.argsort(-predictions.astype(np.float64), axis=1, kind="stable")[:, :top]
    return [[(int(i), names[i], float(row[i])) for i in best]
            for row, best in zip(predictions, order)]
