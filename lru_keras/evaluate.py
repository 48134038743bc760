"""Accuracy of a zoo classifier on a dataset split or on the bundled sample.

Models take raw pixels in [0, 255], as the zoo's builders do by default and as
`lru_keras.data` delivers them.
"""

import json
import os
import time
import zipfile
import zlib

import numpy as np
from tqdm import tqdm

from lru_keras import checksums, data
from lru_keras.data import pipeline
from lru_keras.validation import require_positive_int

SAMPLE_SPLIT = "sample"  # the split name reported for the bundled CIFAR-10 sample


def load_model_file(path):
    """A whole saved Keras model (`.keras`), checked before Keras reads it: ValueError naming
    the file if it is missing, has bytes other than its `.sha256` sidecar records, is not an
    intact .keras archive (truncated, damaged, another kind of file), or names a layer class
    or argument this installation does not know (saved by a newer lru_keras or Keras). TFLite
    files run with LiteRT instead (`lru_keras.tflite.evaluate`), so they are refused here with
    a pointer to it."""
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
        raise ValueError(f"model file {path!r} "
                         f"{'is not a file' if os.path.exists(path) else 'does not exist'}.")
    checksums.check_sidecar(path, "model file")
    config, saved_with = _read_keras_archive(path)
    import keras

    import lru_keras.layers  # registers the custom layers for deserialization

    unknown = sorted(_unknown_classes(config))
    installed = f"lru_keras {lru_keras.__version__}, Keras {keras.__version__}"
    if unknown:
        raise ValueError(
            f"model file {path!r} uses layer classes that this installation ({installed}) "
            f"does not know: {unknown}; it was saved by a newer lru_keras{saved_with}. Upgrade "
            f"lru_keras to load it.")
    try:
        return keras.saving.load_model(path)
    except (TypeError, ValueError, KeyError) as error:
        # The archive is intact (every member passed its CRC), so a model Keras cannot build
        # from it was saved by other code: a newer version, or another package's layers.
        reason = (str(error).splitlines() or [type(error).__name__])[0].rstrip(".")
        raise ValueError(
            f"model file {path!r} cannot be built by this installation ({installed}): "
            f"{reason}; it was probably saved by a newer lru_keras or Keras{saved_with}. "
            f"Upgrade them to load it.") from None


def _read_keras_archive(path):
    """(model config, ", with Keras <version>" or "") of a .keras file whose every member is
    intact; ValueError naming the file otherwise."""
    def unreadable(reason):
        return ValueError(f"model file {path!r} is not a readable .keras file: {reason}.")

    if not zipfile.is_zipfile(path):
        raise unreadable("not a zip archive (truncated, or another kind of file)")
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()  # reads every member, checking its CRC
            names = archive.namelist()
            members = {name: archive.read(name) for name in names if name.endswith(".json")}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
        raise unreadable(f"a damaged archive ({error})") from None
    if damaged is not None:
        raise unreadable(f"its member {damaged!r} is damaged")
    if "config.json" not in names or not any(name.startswith("model.weights.")
                                             for name in names):
        raise unreadable(f"it lacks the model's config.json or weights (it holds {names})")
    try:
        config = json.loads(members["config.json"])
        metadata = json.loads(members.get("metadata.json", b"{}"))
    except ValueError as error:  # not UTF-8, or not JSON
        raise unreadable(f"its config is not valid JSON ({error})") from None
    version = metadata.get("keras_version") if isinstance(metadata, dict) else None
    return config, f", with Keras {version}" if version else ""


def _unknown_classes(config):
    """The lru_keras classes a saved model's config names that are not registered here."""
    import keras

    found = set()
    nodes = [config]
    while nodes:
        node = nodes.pop()
        if isinstance(node, dict):
            name = node.get("registered_name")
            if (isinstance(name, str) and name.startswith("lru_keras>")
                    and keras.saving.get_registered_object(name) is None):
                found.add(name.split(">", 1)[1])
            nodes.extend(node.values())
        elif isinstance(node, list):
            nodes.extend(node)
    return found


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

    A Keras model's batches are checked before it sees them (`data.pipeline.check_pixels`:
    ValueError for NaN or infinite pixels, which a model turns into confident predictions,
    or pixels outside the range the model declares); a LiteRT classifier checks its own.
    Returns {model, dataset, split, images, correct, accuracy (percent), seconds,
    images_per_second}; the time is the wall time of the whole pass, data loading and the
    first call's tracing included.
    """
    import keras

    from lru_keras.layers.preprocessing import declared_input_range

    checked = isinstance(model, keras.Model)
    pixel_range = declared_input_range(model) if checked else None
    correct = seen = 0
    start = time.perf_counter()
    with tqdm(total=total, unit="img", desc=f"{dataset}/{split}", disable=not progress) as bar:
        for number, (images, labels) in enumerate(batches, 1):
            take = min(len(labels), total - seen)
            if checked:
                pipeline.check_pixels(images[:take], f"the images of batch {number}",
                                      pixel_range)
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
