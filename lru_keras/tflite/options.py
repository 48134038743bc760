"""The options shared by export and QAT: where the files go, which dataset and labels, which
input range. Each is checked before any slow work starts."""

import os
import tempfile
from pathlib import Path

import numpy as np

from lru_keras import data

LABELS_SUFFIX = ".labels.txt"
SPEC_SUFFIX = ".json"


def sidecar_paths(path):
    """(labels path, spec path) written beside a .tflite file."""
    path = Path(path)
    stem = path.name[:-len(".tflite")] if path.name.endswith(".tflite") else path.name
    return path.with_name(stem + LABELS_SUFFIX), path.with_name(stem + SPEC_SUFFIX)


def check_writable(path):
    """ValueError unless `path` (a .tflite file) and its sidecar files can be written."""
    if path.exists() and path.is_dir():
        raise ValueError(f"export path {str(path)!r} is a directory; give a file name such "
                         f"as {str(path / 'model.tflite')!r}.")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"export path {str(path)!r}: folder {str(parent)!r} does not exist.")
    try:
        handle, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
    except OSError as error:
        raise ValueError(f"export path {str(path)!r} is not writable: {error.strerror} "
                         f"({str(parent)!r}).") from None
    os.close(handle)
    os.unlink(probe)
    for target in (path, *sidecar_paths(path)):
        if target.exists() and not os.access(target, os.W_OK):
            raise ValueError(f"export path {str(target)!r} exists and is not writable.")


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
    """(low, high) of the model's input pixels: `input_range` checked, else (0, 255) if the
    model starts with a Rescaling(1/255) layer, else (0, 1)."""
    if input_range is not None:
        low, high = (float(v) for v in input_range)
        if not high > low:
            raise ValueError(f"input_range={input_range!r} must be (low, high) with high > low")
        return (low, high)
    import keras

    for layer in model.layers[:3]:
        if isinstance(layer, keras.layers.Rescaling):
            scale = np.asarray(layer.scale, np.float64)
            offset = np.asarray(layer.offset, np.float64)
            if scale.size == 1 and offset.size == 1 and abs(float(scale) * 255 - 1) < 1e-6 and \
                    float(offset) == 0:
                return (0.0, 255.0)
    return (0.0, 1.0)


def to_input_range(images, input_range):
    """Images in [0, 255] mapped linearly to the model's input range."""
    low, high = input_range
    if (low, high) == (0.0, 255.0):
        return images
    return images * ((high - low) / 255.0) + low
