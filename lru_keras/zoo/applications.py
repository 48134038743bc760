"""keras.applications' helper functions for the zoo's models: `preprocess_input` and
`decode_predictions`, so code written for keras.applications (or kimm) runs unchanged.

Every zoo model built with include_preprocessing=True (the default) takes raw pixels in
[0, 255] and rescales them itself, so `preprocess_input` passes them through, as
keras.applications' EfficientNet and ConvNeXt do. The zoo's datasets share class counts
(CIFAR-10 and Fashion-MNIST both have 10), so `decode_predictions` is told the dataset.
"""

import numpy as np

from lru_keras import data
from lru_keras.validation import require_choice, require_positive_int


def preprocess_input(x, data_format=None):
    """Returns `x` unchanged (as float32 if it is an array): the zoo's models preprocess
    their input themselves. `data_format` is accepted for keras.applications' signature;
    only "channels_last" (or None) is supported."""
    require_choice("data_format", data_format, (None, "channels_last"))
    return np.asarray(x, np.float32) if isinstance(x, (np.ndarray, list)) else x


def decode_predictions(predictions, dataset, top=5):
    """The `top` classes of each row of `predictions` (batch, classes), best first, as
    [(class index, class name, score), ...] per row (keras.applications returns
    (class id, name, score) too).

    Args:
        predictions: the model's outputs, one row per image (probabilities or scores).
        dataset: the dataset the model classifies ("cifar10", "cifar100", "fashion_mnist"),
            which names the classes.
        top: how many classes per row (at most the number of classes).
    """
    names = data.class_names(require_choice("dataset", dataset, sorted(data.DATASETS)))
    predictions = np.asarray(predictions)
    if predictions.ndim != 2 or predictions.shape[1] != len(names):
        raise ValueError(
            f"`predictions` must have shape (batch, {len(names)}) for {dataset!r}, got "
            f"{predictions.shape}.")
    top = require_positive_int("top", top)
    if top > len(names):
        raise ValueError(f"`top`={top} exceeds the {len(names)} classes of {dataset!r}.")
    order = np.argsort(-predictions, axis=1, kind="stable")[:, :top]
    return [[(int(i), names[i], float(row[i])) for i in best]
            for row, best in zip(predictions, order)]
