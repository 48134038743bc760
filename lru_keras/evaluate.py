"""Accuracy of a zoo classifier on a dataset split or on the bundled sample.

Models take raw pixels in [0, 255], as the zoo's builders do by default and as
`lru_keras.data` delivers them.
"""

import os
import time

import numpy as np
from tqdm import tqdm

from lru_keras import data
from lru_keras.validation import require_positive_int

SAMPLE_SPLIT = "sample"  # the split name reported for the bundled CIFAR-10 sample


def load_model_file(path):
    """A whole saved Keras model (`.keras`). TFLite files run with LiteRT instead
    (`lru_keras.tflite.evaluate`), so they are refused here with a pointer to it."""
    path = str(path)
    if path.endswith(".tflite"):
        raise ValueError(
            f"model {path!r} is a .tflite file, not a Keras model: evaluate it with "
            f"lru_keras.tflite.evaluate(path, dataset) or `lru-keras evaluate {path} --dataset "
            f"NAME`."
        )
    if not path.endswith(".keras"):
        raise ValueError(
            f"model {path!r} must be a .keras file (a .weights.h5 file goes with "
            f"--weights-file and the model arguments)."
        )
    if not os.path.isfile(path):
        raise ValueError(f"model file {path!r} does not exist.")
    import keras

    import lru_keras.layers  # noqa: F401  (registers the custom layers for deserialization)

    return keras.saving.load_model(path)


def check_compatible(model, dataset):
    """Raises ValueError unless `model` takes `dataset`'s images and predicts its classes."""
    spec = data.info(dataset)
    takes = tuple(model.input_shape[1:])
    if len(takes) != len(spec.image_shape) or any(
            t is not None and t != d for t, d in zip(takes, spec.image_shape)):
        raise ValueError(
            f"model {model.name!r} takes inputs of shape {takes}, but {dataset} images have "
            f"shape {spec.image_shape}."
        )
    outputs = model.output_shape[-1]
    if outputs != spec.num_classes:
        raise ValueError(
            f"model {model.name!r} predicts {outputs} classes, but {dataset} has "
            f"{spec.num_classes}."
        )


def evaluate_dataset(model, dataset, split="test", *, batch_size=256, limit=None,
                     data_dir=None, progress=True, model_name=None):
    """Top-1 accuracy of `model` on a prepared TFDS split (the first `limit` images if given).

    Raises `lru_keras.data.DatasetNotAvailableError` (saying how to import it) if the dataset
    is not prepared, ValueError if the model does not fit the dataset. Returns the dict of
    `evaluate_batches`.
    """
    check_compatible(model, dataset)
    total = data.split_size(dataset, split, data_dir)
    batches = data.load(dataset, split, batch_size=batch_size, data_dir=data_dir)
    return evaluate_batches(
        model, batches.as_numpy_iterator(), _limited(total, limit), dataset=dataset,
        split=split, progress=progress, model_name=model_name,
    )


def evaluate_sample(model, *, batch_size=256, limit=None, progress=True, model_name=None):
    """Top-1 accuracy on the bundled 500 CIFAR-10 test images (rows are sorted by class)."""
    check_compatible(model, "cifar10")
    images, labels = data.load_sample()
    require_positive_int("batch_size", batch_size)
    batches = (
        (images[i:i + batch_size].astype("float32"), labels[i:i + batch_size])
        for i in range(0, len(labels), batch_size)
    )
    return evaluate_batches(
        model, batches, _limited(len(labels), limit), dataset="cifar10", split=SAMPLE_SPLIT,
        progress=progress, model_name=model_name,
    )


def evaluate_batches(model, batches, total, *, dataset, split, progress=True, model_name=None):
    """Runs `model` over (images, labels) batches until `total` images, with a progress bar.

    Returns {model, dataset, split, images, correct, accuracy (percent), seconds,
    images_per_second}; the time is the wall time of the whole pass, data loading and the
    first call's tracing included.
    """
    correct = seen = 0
    start = time.perf_counter()
    with tqdm(total=total, unit="img", desc=f"{dataset}/{split}", disable=not progress) as bar:
        for images, labels in batches:
            take = min(len(labels), total - seen)
            scores = model.predict_on_batch(images[:take])
            correct += int(np.sum(np.argmax(scores, axis=-1) == labels[:take]))
            seen += take
            bar.update(take)
            if seen >= total:
                break
    seconds = time.perf_counter() - start
    return {
        "model": model_name or model.name,
        "dataset": dataset,
        "split": split,
        "images": seen,
        "correct": correct,
        "accuracy": 100 * correct / seen,
        "seconds": seconds,
        "images_per_second": seen / seconds,
    }


def format_result(result):
    """The one-line summary, e.g. "accuracy: 89.34% on 10000 images of cifar10/test"."""
    line = (f"accuracy: {result['accuracy']:.2f}% on {result['images']} images of "
            f"{result['dataset']}/{result['split']}")
    if result["split"] == SAMPLE_SPLIT:
        line += " (the bundled sample of CIFAR-10 test images)"
    return line


def _limited(total, limit):
    if limit is None:
        return total
    return min(total, require_positive_int("limit", limit))
