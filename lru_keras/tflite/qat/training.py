"""The parent side of quantization-aware training: what the child process gets, running it,
and what comes back (see the package docstring)."""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lru_keras import data, extras
from lru_keras.layers.export_form import ExportConstants
from lru_keras.layers.reuse import LRUBlock, norm_constants, set_affine
from lru_keras.progress import Ticker
from lru_keras.tflite import calibration_data, equalization, graph, options
from lru_keras.tflite.errors import QATError, UnsupportedModelError
from lru_keras.tflite.export import export
from lru_keras.validation import require_int

WORKER = Path(__file__).with_name("worker.py")
DEFAULTS = {"epochs": 2, "train_images": 5000, "batch_size": 64, "learning_rate": 3e-5,
            "seed": 0}
TRANSFER_CHECK_IMAGES = 16
TRANSFER_TOLERANCE = 1e-4  # max |difference| of the float softmax outputs


def quantize_aware(model, train_data, path, *, epochs=DEFAULTS["epochs"],
                   train_images=DEFAULTS["train_images"], batch_size=DEFAULTS["batch_size"],
                   learning_rate=DEFAULTS["learning_rate"], seed=DEFAULTS["seed"],
                   dataset=None, labels=None, data_dir=None, verbose=1, timeout=None):
    """Fine-tunes an LruNet with simulated int8 quantization; writes a full-integer .tflite.

    Args:
        model: an `LruNet(...)` Keras model with its classifier (include_top=True, softmax).
        train_data: a dataset name ("cifar10", "cifar100", "fashion_mnist": `train_images`
            class-balanced images of its training split, the paper's augmentation) or arrays
            (x pixels 0..255 NHWC, y int labels) to fine-tune on; the images are checked as
            calibration images (`calibration_data.check_pixels`) before anything runs.
        path: the .tflite to write (`<stem>.labels.txt` and `<stem>.json` beside it).
        epochs: fine-tuning epochs (0: no training, the plain int8 export of the same graph).
        train_images: with a dataset name, how many training images (default 5000).
        batch_size, learning_rate, seed: of the Adam fine-tune.
        dataset: the dataset of the labels (default: `train_data` if a name, else the one
            dataset the model's input shape and classes fit).
        labels: class names (default: the dataset's).
        verbose: 1 (default): a line on stdout, as Keras's progress, at least every ~10 s
            saying what runs (building, calibrating, the epoch, step and loss of the
            fine-tune, the int8 export); 2: also Keras's line per epoch; 0: silent.
        timeout: seconds before the child is stopped (None: no limit).

    Returns (spec, finetuned): the spec written beside the .tflite (as `export`'s, plus "qat":
    settings, training history, seconds, transfer error), and the fine-tuned float Keras 3
    model.
    """
    options.require_tensorflow_backend("quantization-aware training (QAT)")
    # The fine-tune's child process imports tfmot and tf_keras ([qat] extra); the int8 file is
    # verified with LiteRT ([litert]).
    extras.require_installed("tensorflow_model_optimization", "tf_keras", "ai_edge_litert")
    for name, value, low in (("epochs", epochs, 0), ("batch_size", batch_size, 1),
                             ("seed", seed, 0), ("verbose", verbose, 0)):
        require_int(name, value, low)
    if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a number > 0, got {learning_rate!r}")
    path = Path(os.fspath(path))
    options.check_writable(path)  # before the slow part
    job = network_description(model)
    image_shape = tuple(job["input_shape"])
    if dataset is None and isinstance(train_data, str):
        dataset = train_data
    dataset = options.resolve_dataset(dataset, image_shape, job["classes"])
    labels = options.resolve_labels(labels, dataset, job["classes"])
    job.update(epochs=epochs, batch_size=batch_size, learning_rate=float(learning_rate),
               seed=seed, verbose=verbose,
               calibration_images=calibration_data.DEFAULT_CALIBRATION_SIZE)

    with tempfile.TemporaryDirectory(prefix="lru_keras_qat_") as folder:
        folder = Path(folder)
        job["train"], representative = _training_source(
            train_data, train_images, image_shape, job["classes"], folder, data_dir)
        check_images = _check_images(image_shape)
        np.savez(folder / "check.npz", x=check_images)
        np.savez(folder / "constants.npz", **export_constants(model))
        (folder / "job.json").write_text(json.dumps(job, indent=1))
        started = time.time()
        _run_worker(folder, timeout, verbose)
        seconds = time.time() - started
        expected = model.predict(check_images, verbose=0)
        transfer_error = float(np.abs(np.load(folder / "float_outputs.npy") - expected).max())
        if transfer_error > TRANSFER_TOLERANCE:
            raise QATError(
                f"the tf_keras copy of {model.name!r} computes other outputs than the Keras 3 "
                f"model (max difference {transfer_error:.2g} > {TRANSFER_TOLERANCE}); no "
                f"file written.")
        finetuned = with_constants(model, dict(np.load(folder / "finetuned.npz")))
        history = json.loads((folder / "history.json").read_text())
    qat = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
           "seed": seed, "train": job["train"]["description"], "history": history,
           "seconds": round(seconds, 1), "transfer_error": transfer_error,
           "tool": "tensorflow-model-optimization 0.8.1 (tf_keras, child process)"}
    # The last phase on stdout too, with the child's (the export says its steps on stderr).
    with Ticker("qat", f"writing {path.name} (the int8 export)", stream=sys.stdout,
                enabled=verbose > 0):
        spec = export(finetuned, path, "int8", representative, dataset=dataset,
                      labels=labels, data_dir=data_dir, extra_spec={"qat": qat},
                      verbose=verbose > 0)
    return spec, finetuned


# ------------------------------------------------------------------------------------------
# What the child process gets.
# ------------------------------------------------------------------------------------------
def network_description(model):
    """The LruNet layout the child rebuilds (stages, reuses, head), read from the model.

    Raises UnsupportedModelError for anything that is not a zoo LruNet with its classifier.
    """
    from lru_keras.layers import LRUBlock

    names = {layer.name for layer in model.layers}
    blocks = [layer for layer in model.layers if isinstance(layer, LRUBlock)]
    needed = {"rescaling", "stem_conv", "stem_bn", "head_conv", "head_bn", "classifier_conv",
              "predictions"}
    if len(blocks) != 4 or not needed <= names:
        raise UnsupportedModelError(
            f"quantize_aware supports LruNet models built with include_top=True, "
            f"include_preprocessing=True and classifier_activation='softmax' "
            f"(lru_keras.zoo.LruNet); {model.name!r} lacks "
            f"{sorted(needed - names) or 'its four LRU blocks'}.")
    stem_filters = int(model.get_layer("stem_conv").filters)
    stages = [{"name": block.name, "filters": block.filters, "reuse": block.times,
               "groups": block.groups, "multiplier": block.depth_multiplier,
               "shuffle": block.shuffle is not None,
               "pool": f"{block.name}_pool" in names, "concat": f"{block.name}_concat" in names}
              for block in blocks]
    return {"name": model.name, "input_shape": [int(d) for d in model.inputs[0].shape[1:]],
            "classes": int(model.outputs[0].shape[-1]),
            "stem_repeat": blocks[0].filters // stem_filters,
            "head_groups": int(model.get_layer("head_conv").groups),
            "dropout": float(model.get_layer("head_dropout").rate), "stages": stages,
            "input_scale": _input_scale(model)}


def export_constants(model):
    """{name: array} of the int8 export graph's constants, for the child's tf_keras copy.

    LRU blocks: their export constants exactly as `export` freezes them for int8 (tiled
    depthwise layout, equalized, dead channels silenced; `LRUBlock.export_constants`). Stem
    and head: each conv with its BatchNorm folded in (kernel times the BatchNorm scale,
    offset as bias), as the converter folds them.
    """
    copy, blocks, _ = graph.prepare(model, share_weights=True, form=graph.BN_AFFINE_5D,
                                    equalize=equalization.equalization_factors,
                                    silence_dead=True)
    constants = {}
    for name, block in blocks.items():
        if not isinstance(copy.get_layer(name), LRUBlock):
            continue
        constants[f"{name}/dw"] = block.kernels["depthwise"]
        constants[f"{name}/pw"] = block.kernels["pointwise"]
        for i, pair in enumerate(block.norms):
            for position, (scale, offset) in enumerate(pair):
                constants[f"{name}/scale{i}_{position}"] = scale.astype(np.float32)
                constants[f"{name}/offset{i}_{position}"] = offset.astype(np.float32)
    for conv, norm in (("stem_conv", "stem_bn"), ("head_conv", "head_bn")):
        norm_scale, norm_offset = norm_constants(copy.get_layer(norm))
        kernel = np.asarray(copy.get_layer(conv).kernel, np.float64) * norm_scale
        constants[f"{conv}/kernel"] = kernel.astype(np.float32)
        constants[f"{conv}/bias"] = norm_offset.astype(np.float32)
    classifier = copy.get_layer("classifier_conv")
    constants["classifier_conv/kernel"] = np.asarray(classifier.kernel, np.float32)
    constants["classifier_conv/bias"] = np.asarray(classifier.bias, np.float32)
    return constants


def _input_scale(model):
    rescaling = model.get_layer("rescaling")
    if float(np.asarray(rescaling.offset)) != 0.0:
        raise UnsupportedModelError("quantize_aware needs a Rescaling layer without offset")
    return float(np.asarray(rescaling.scale))


def _training_source(train_data, train_images, image_shape, classes, folder, data_dir):
    """(job["train"], int8 calibration images for the export): a TFDS split string of
    `train_images` balanced images (the export calibrates on the dataset as by default), or
    the given arrays saved as an .npz (the export calibrates on them)."""
    if isinstance(train_data, str):
        spec = data.info(train_data)  # ValueError naming the known datasets
        if tuple(spec.image_shape) != image_shape or spec.num_classes != classes:
            raise ValueError(
                f"train_data={train_data!r} has {spec.image_shape} images and "
                f"{spec.num_classes} classes, but the model takes {image_shape} and has "
                f"{classes} outputs.")
        from lru_keras.train.splits import plan_splits

        plan = plan_splits(train_data, validation=0, train_images=train_images,
                           data_dir=data_dir)
        return {"kind": "dataset", "dataset": train_data, "split": plan.train,
                "data_dir": str(data.resolve_data_dir(data_dir)),
                "description": f"{plan.train_images} images of {train_data}/train"}, None
    try:
        x, y = train_data
    except (TypeError, ValueError):
        raise ValueError("train_data must be a dataset name or a pair of arrays (x, y)") \
            from None
    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    if x.ndim != 4 or tuple(x.shape[1:]) != image_shape or len(x) != len(y) or not len(y):
        raise ValueError(
            f"train_data arrays: x must be (n, {', '.join(map(str, image_shape))}) pixels and "
            f"y n labels; got x {x.shape}, y {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"train_data labels (y) must be integers in 0..{classes - 1}, got "
                         f"dtype {y.dtype}.")
    if y.min() < 0 or y.max() >= classes:
        raise ValueError(f"train_data labels must be in 0..{classes - 1}, got "
                         f"{int(y.min())}..{int(y.max())}")
    # The images also calibrate the int8 export, after the fine-tune: checked as such now.
    calibration_data.check_pixels(x, "train_data images (x)")
    np.savez(folder / "train.npz", x=x, y=y.astype(np.int32))
    return {"kind": "arrays", "npz": str(folder / "train.npz"),
            "description": f"{len(y)} given images"}, x


def _check_images(image_shape):
    """A few real images in the model's input shape (the bundled CIFAR-10 sample)."""
    images, _ = data.load_sample()
    images = images[:TRANSFER_CHECK_IMAGES].astype(np.float32)
    height, width, channels = image_shape
    if channels == 1:
        images = images.mean(axis=-1, keepdims=True)
    return images[:, :height, :width, :]


def _run_worker(folder, timeout, verbose):
    """Runs qat_worker.py on the job folder; QATError with the end of its output if it fails.

    The child gets this environment plus TF_USE_LEGACY_KERAS=1; with `verbose` its progress
    goes to this process's stdout (its stderr is kept for the error report).
    """
    environment = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    try:
        result = subprocess.run(
            [sys.executable, str(WORKER), str(folder)], env=environment, text=True,
            stdout=None if verbose else subprocess.PIPE, stderr=subprocess.PIPE,
            timeout=timeout)
    except subprocess.TimeoutExpired:
        raise QATError(f"quantization-aware training did not finish within {timeout} s") \
            from None
    if result.returncode != 0 or not (folder / "finetuned.npz").is_file():
        lines = [line for line in (result.stderr or "").splitlines()
                 if "WARNING" not in line and not line.startswith(("I0000", "W0000"))]
        tail = "\n".join(lines[-15:])
        raise QATError(f"quantization-aware training failed (exit {result.returncode}):\n{tail}")


# ------------------------------------------------------------------------------------------
# What comes back.
# ------------------------------------------------------------------------------------------
def with_constants(model, constants):
    """A copy of the LruNet `model` whose weights compute the export graph of `constants`
    (the inverse of `export_constants`, through `LRUBlock.load_export_constants`). An
    equalization stays in the weights: it never changed the function."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for block in copy.layers:
        if not isinstance(block, LRUBlock):
            continue
        name = block.name
        norms = tuple(tuple((constants[f"{name}/scale{i}_{j}"], constants[f"{name}/offset{i}_{j}"])
                            for j in (0, 1)) for i in range(block.times))
        block.load_export_constants(ExportConstants(
            {"depthwise": constants[f"{name}/dw"], "pointwise": constants[f"{name}/pw"]}, norms))
    for conv, norm in (("stem_conv", "stem_bn"), ("head_conv", "head_bn")):
        bias = constants[f"{conv}/bias"]
        copy.get_layer(conv).kernel.assign(constants[f"{conv}/kernel"])
        set_affine(copy.get_layer(norm), np.ones_like(bias), bias)
    copy.get_layer("classifier_conv").kernel.assign(constants["classifier_conv/kernel"])
    copy.get_layer("classifier_conv").bias.assign(constants["classifier_conv/bias"])
    return copy
