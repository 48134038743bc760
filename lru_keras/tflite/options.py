"""The options shared by export and QAT: where the files go (and what the zoo's files are
called), which dataset and labels, which input range, what the metadata says of the model.
Each is checked before any slow work starts."""

import os
from collections.abc import Mapping
from pathlib import Path

import lru_keras
from lru_keras import atomic, data
from lru_keras.layers.preprocessing import declared_input_range
from lru_keras.tflite.errors import UnsupportedBackendError
from lru_keras.tflite.metadata import ModelInfo
from lru_keras.validation import require_range

LABELS_SUFFIX = ".labels.txt"
SPEC_SUFFIX = ".json"


def zoo_file_name(weights_name, quantization):
    """The file name of a registered model's .tflite, as tflite/make_tflite.py writes it and
    `lru_keras.compare` reads it, e.g. "lrunet14_1x.cifar10.int8.tflite"."""
    return f"{weights_name}.{quantization}.tflite"


def sidecar_paths(path):
    """(labels path, spec path) written beside a .tflite file."""
    path = Path(path)
    stem = path.name[:-len(".tflite")] if path.name.endswith(".tflite") else path.name
    return path.with_name(stem + LABELS_SUFFIX), path.with_name(stem + SPEC_SUFFIX)


def require_tensorflow_backend(what):
    """UnsupportedBackendError unless Keras runs on TensorFlow. `what` (the export, QAT) traces
    the model into a TensorFlow graph, which fails deep inside TensorFlow with an unrelated
    message when the model's layers compute with another backend's tensors."""
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise UnsupportedBackendError(
            f"{what} needs Keras's TensorFlow backend, but this process runs Keras on "
            f"{backend!r} (KERAS_BACKEND={os.environ.get('KERAS_BACKEND')!r}; the backend is "
            f"chosen once per process, when Keras is imported). Run it in a process started "
            f"with KERAS_BACKEND=tensorflow; the model's weights move over with "
            f"`save_weights` and `load_weights`.")


def check_writable(path):
    """ValueError unless `path` (a .tflite file) and its sidecar files can be written."""
    atomic.check_writable_file(path, "export path", companions=sidecar_paths(path))


def resolve_dataset(dataset, image_shape, outputs):
    """`dataset` checked against the model (input shape, classes), or the one supported
    dataset the model fits (None if not exactly one)."""
    if dataset is not None:
        spec = data.info(dataset)
        if tuple(spec.image_shape) != tuple(image_shape):
            raise ValueError(
                f"dataset={dataset!r} has images of shape {tuple(spec.image_shape)}, but the "
                f"model takes {tuple(image_shape)}.")
        if spec.num_classes != outputs:
            raise ValueError(f"dataset={dataset!r} has {spec.num_classes} classes, but the "
                             f"model has {outputs} outputs.")
        return dataset
    fits = [name for name, spec in data.DATASETS.items()
            if tuple(spec.image_shape) == tuple(image_shape) and spec.num_classes == outputs]
    return fits[0] if len(fits) == 1 else None


def resolve_labels(labels, dataset, outputs):
    """The class names: `labels` checked (one per output, no line breaks), else the dataset's,
    else "0", "1", ..."""
    if labels is None:
        if dataset is not None:
            return list(data.class_names(dataset))
        return [str(i) for i in range(outputs)]
    labels = [str(label) for label in labels]
    if len(labels) != outputs:
        raise ValueError(f"labels: {len(labels)} names given for {outputs} model outputs.")
    if any("\n" in label for label in labels):
        raise ValueError("labels must not contain line breaks (labels.txt has one per line)")
    return labels


def resolve_input_range(model, input_range):
    """(low, high) of the model's input pixels: the range the model declares (its
    `PixelPreprocessing` layer, which every zoo model built with include_preprocessing=True
    has), else `input_range`. Both given must agree; a model that declares none needs
    `input_range` (nothing is guessed: a wrong range ruins int8 calibration)."""
    declared = declared_input_range(model)
    if input_range is not None:
        low, high = require_range("input_range", input_range)
        if declared is not None and (low, high) != declared:
            raise ValueError(
                f"input_range={input_range!r} contradicts model {model.name!r}, which takes "
                f"pixels in {declared} (its PixelPreprocessing layer); leave input_range=None.")
        return (low, high)
    if declared is None:
        raise ValueError(
            f"model {model.name!r} does not declare the pixel range it takes (it has no "
            f"PixelPreprocessing layer after its input, e.g. it was built with "
            f"include_preprocessing=False): pass input_range=(low, high), e.g. (0, 1) for "
            f"pixels scaled to [0, 1] or (0, 255) for raw pixels.")
    return declared


MODEL_INFO_KEYS = ("name", "description", "version", "author", "license")


def resolve_model_info(model_info, model, dataset):
    """What the standard metadata says of the model: `model_info` (a mapping with any of
    MODEL_INFO_KEYS, string values) over the defaults: the model's name, what it classifies
    and the version of lru_keras that exported it."""
    given = {} if model_info is None else model_info
    if not isinstance(given, Mapping):
        raise ValueError(f"model_info must be a mapping with any of the keys "
                         f"{list(MODEL_INFO_KEYS)}, not {type(given).__name__}")
    unknown = sorted(set(given) - set(MODEL_INFO_KEYS))
    if unknown:
        raise ValueError(f"model_info: unknown keys {unknown}; allowed: {list(MODEL_INFO_KEYS)}")
    not_text = sorted(key for key, value in given.items() if not isinstance(value, str))
    if not_text:
        raise ValueError(f"model_info: the values of {not_text} must be strings")
    classifies = f"an image classifier for {dataset}" if dataset else "an image classifier"
    defaults = {"name": model.name, "description": f"{model.name}: {classifies}",
                "version": f"exported by lru_keras {lru_keras.__version__}"}
    return ModelInfo(**{**defaults, **given})


def to_input_range(images, input_range):
    """Images in [0, 255] mapped linearly to the model's input range."""
    low, high = input_range
    if (low, high) == (0.0, 255.0):
        return images
    return images * ((high - low) / 255.0) + low
