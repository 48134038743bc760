"""Accuracy of a zoo classifier on a dataset split or on the bundled sample.

Also builds the model a user names (registered weights, or architecture arguments plus an
optional weights file), so that the command line and the demo share one path from "these
arguments" to "this accuracy". Models take raw pixels in [0, 255], as the zoo's builders do by
default and as `lru_keras.data` delivers them.
"""

import os
import time

import numpy as np
from tqdm import tqdm

from lru_keras import data
from lru_keras.zoo import LruNet, get_builder, get_weights

SAMPLE_SPLIT = "sample"  # the split name reported for the bundled CIFAR-10 sample


def build_model(weights=None, *, reuse=None, width=None, dataset=None, classes=None,
                input_shape=None, shuffle=True, weights_file=None, load_weights=True):
    """The model for a registered weights name, or an LruNet for architecture arguments.

    Args:
        weights: a registered weights name (`lru_keras.zoo.list_weights()`), which fixes the
            architecture, classes and input shape; none of the other arguments may be given.
        reuse, width, shuffle: LruNet architecture (builder defaults when None).
        dataset: a dataset name whose classes and image shape the model gets.
        classes, input_shape: explicit alternatives to `dataset` (must agree with it if both).
        weights_file: a `.weights.h5` file saved from a model with these arguments.
        load_weights: False builds the architecture only (fast; enough for counting).
    """
    if weights is not None:
        entry = get_weights(weights)
        given = dict(reuse=reuse, width=width, dataset=dataset, classes=classes,
                     input_shape=input_shape, weights_file=weights_file)
        extra = sorted(k for k, v in given.items() if v is not None) + (
            [] if shuffle else ["shuffle"])
        if extra:
            raise ValueError(
                f"weights={weights!r} fixes the model ({entry.describe()}, {entry.classes} "
                f"classes, input {entry.input_shape}); do not also give {extra}."
            )
        return get_builder(entry.builder)(
            **entry.arguments, classes=entry.classes, input_shape=entry.input_shape,
            weights=entry.name if load_weights else None,
        )
    if dataset is not None:
        spec = data.info(dataset)
        given = {"classes": classes, "input_shape": input_shape and tuple(input_shape)}
        implied = {"classes": spec.num_classes, "input_shape": spec.image_shape}
        for name, value in given.items():
            if value is not None and value != implied[name]:
                raise ValueError(
                    f"{name}={value!r} disagrees with dataset={dataset!r}, which has "
                    f"{name}={implied[name]!r}; give one or the other."
                )
        classes, input_shape = implied["classes"], implied["input_shape"]
    architecture = {k: v for k, v in dict(reuse=reuse, width=width).items() if v is not None}
    return LruNet(**architecture, classes=classes, input_shape=input_shape, shuffle=shuffle,
                  weights=weights_file if load_weights else None)


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
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
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
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit={limit!r} must be a positive integer or None")
    return min(total, limit)
