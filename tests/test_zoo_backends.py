"""The pretrained LruNets and a few training steps under the JAX and torch backends, checked
against the TensorFlow backend on the same inputs.

Keras picks its backend once per process, so this module also runs as a script: each backend
(TensorFlow too, the reference) runs it in a child process (`run_on_backend`, conftest.py)
on one folder of inputs and writes what it computed there:
- every registered LruNet weights name through `zoo.create(name)`, called on `IMAGES` real
  test images of its dataset (the bundled sample for CIFAR-10; the shared test sets for
  CIFAR-100 and Fashion-MNIST, which the sample does not cover): the class scores. The models
  are called eagerly: `model.predict` first compiles the whole network, which under JAX takes
  longer than the prediction (about 7 s for a 14-reuse model on 2 cores). `model.predict`
  itself (a jit-compiled trace under JAX) runs on `COMPILED`;
- `model.fit` for a few steps (jit-compiled under JAX) from the pretrained weights of
  `FIT_START`: the losses and the weights after them;
- under JAX and torch, what `lru_keras.tflite.export` and `quantize_aware` raise.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from lru_keras.zoo import get_weights, list_weights

pytestmark = pytest.mark.slow

BACKENDS = ["jax", "torch"]
LRUNET_WEIGHTS = [entry.name for entry in list_weights(builder="LruNet")]
COMPILED = "lrunet1_1x.cifar10"  # also through `model.predict`: the fastest to compile
IMAGES = 50  # per weights name: 5 per class for CIFAR-10 and Fashion-MNIST
FIT = dict(batch_size=16, batches=2, epochs=2, learning_rate=0.05)
FIT_START = "lrunet1_1x.cifar10"  # the same start in every run (random starts differ per run)
# Largest differences from TensorFlow measured (jax, torch; identical in 2 runs), bounds
# about 10x above them:
SCORE_TOLERANCE = 2e-5  # softmax scores: 1.8e-6, 1.6e-6 (compiled predict: 1.4e-6, 7.7e-7)
# The fit from pretrained weights, measured on both oneDNN settings (Intel Xeon, AVX-512):
# epoch losses within 8.8e-7 of TensorFlow's; weights within 5.6e-4 of how far the steps
# moved the array, plus 4.8e-8 (from random starts, float rounding grew ~50-fold on some).
LOSS_TOLERANCE = 1e-5
WEIGHT_TOLERANCE = 0.005  # of the largest change TensorFlow's steps made to the array ...
WEIGHT_FLOOR = 5e-7  # ... plus this


# --------------------------------------------------------------------------------------------
# The child side: `python test_zoo_backends.py FOLDER` under one backend.
# --------------------------------------------------------------------------------------------
def compute_on_this_backend(folder):
    """Everything the tests compare, computed on this process's backend: `<backend>.npz`
    (arrays) and `<backend>.json` (the backend's name, the TFLite refusals) in `folder`."""
    import keras

    backend = keras.backend.backend()
    inputs = dict(np.load(folder / "inputs.npz"))
    arrays = {f"scores/{name}": predict_pretrained(name, inputs[f"x/{name}"])
              for name in LRUNET_WEIGHTS}
    arrays["compiled_scores"] = predict_pretrained(COMPILED, inputs[f"x/{COMPILED}"],
                                                   compiled=True)
    losses, weights, start = fit_a_few_steps(inputs["fit/x"], inputs["fit/y"])
    arrays["fit_losses"] = losses
    arrays.update({f"fit_weights/{i}": w for i, w in enumerate(weights)})
    arrays.update({f"fit_start/{i}": w for i, w in enumerate(start)})
    np.savez(folder / f"{backend}.npz", **arrays)
    report = {"backend": backend}
    if backend != "tensorflow":
        report["tflite_errors"] = tflite_refusals(folder, inputs["fit/x"], inputs["fit/y"])
    (folder / f"{backend}.json").write_text(json.dumps(report))


def predict_pretrained(name, images, compiled=False):
    """Class scores of `zoo.create(name)` on `images`: called eagerly, or with
    `model.predict` (`compiled`)."""
    import keras

    from lru_keras import zoo

    model = zoo.create(name)
    if compiled:
        return model.predict(images, batch_size=len(images), verbose=0)
    return keras.ops.convert_to_numpy(model(images, training=False))


def small_lrunet():
    """1-LruNet-0.25x, random weights: what the TFLite refusals are tried on."""
    from lru_keras.zoo import LruNet

    return LruNet(reuse=1, width=0.25, dropout=0.0, weights=None)


def fit_a_few_steps(x, y):
    """(loss of each epoch, weights after, weights before) of `model.fit` with plain SGD on
    (x, y), in order, from `FIT_START`'s weights. Without dropout, so that a training step is
    the same function on every backend (dropout draws other random masks on each)."""
    import keras

    from lru_keras import zoo

    model = zoo.create(FIT_START, dropout=0.0)
    start = model.get_weights()
    model.compile(optimizer=keras.optimizers.SGD(FIT["learning_rate"]),
                  loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, batch_size=FIT["batch_size"], epochs=FIT["epochs"],
                        shuffle=False, verbose=0)
    return np.array(history.history["loss"]), model.get_weights(), start


def tflite_refusals(folder, x, y):
    """{function: None if it ran, else [error class, message]} of the TFLite export and QAT
    of a small LruNet."""
    from lru_keras import tflite

    model = small_lrunet()
    calls = {"export": lambda: tflite.export(model, folder / "refused.tflite"),
             "quantize_aware": lambda: tflite.quantize_aware(model, (x, y),
                                                             folder / "refused_qat.tflite")}
    refusals = {}
    for name, call in calls.items():
        try:
            call()
            refusals[name] = None
        except Exception as error:  # noqa: BLE001  (the tests check which one)
            refusals[name] = [type(error).__name__, str(error)]
    return refusals


# --------------------------------------------------------------------------------------------
# The parent side: the inputs, one child per backend, the comparisons.
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def job_folder(tmp_path_factory, test_set):
    """A folder with what every backend's child reads: images and their classes per weights
    name, and the training batches (sample images)."""
    from lru_keras import data

    folder = tmp_path_factory.mktemp("zoo_backends")
    sample, sample_classes = data.load_sample()
    arrays = {}
    for name in LRUNET_WEIGHTS:
        dataset = get_weights(name).dataset
        images, classes = ((sample, sample_classes) if dataset == "cifar10"
                           else test_set(dataset))
        arrays[f"x/{name}"] = spread(images, IMAGES).astype(np.float32)
        arrays[f"y/{name}"] = spread(classes, IMAGES)
    fit_images = FIT["batch_size"] * FIT["batches"]
    arrays["fit/x"] = spread(sample, fit_images).astype(np.float32)
    arrays["fit/y"] = spread(sample_classes, fit_images).astype(np.int32)
    np.savez(folder / "inputs.npz", **arrays)
    return folder


def spread(array, count):
    """`count` rows taken evenly over `array` (the image files are sorted by class)."""
    return array[::len(array) // count][:count]


@pytest.fixture(scope="module")
def computed(job_folder, run_on_backend):
    """backend -> (arrays, report) its child wrote; each backend runs once per module."""
    cache = {}

    def get(backend):
        if backend not in cache:
            run_on_backend(backend, __file__, job_folder, timeout=600)
            cache[backend] = (dict(np.load(job_folder / f"{backend}.npz")),
                              json.loads((job_folder / f"{backend}.json").read_text()))
        return cache[backend]

    return get


def correct(scores, classes):
    """How many of the top-1 predictions are right."""
    return int((scores.argmax(axis=1) == classes).sum())


@pytest.mark.parametrize("backend", ["tensorflow", *BACKENDS])
def test_child_runs_on_the_backend_asked_for(backend, computed):
    assert computed(backend)[1]["backend"] == backend


@pytest.mark.parametrize("name", LRUNET_WEIGHTS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_pretrained_lrunet_predicts_as_on_tensorflow(backend, name, job_folder, computed):
    scores = computed(backend)[0][f"scores/{name}"]
    reference = computed("tensorflow")[0][f"scores/{name}"]
    with np.load(job_folder / "inputs.npz") as inputs:
        classes = inputs[f"y/{name}"]
    assert scores.shape == reference.shape == (IMAGES, get_weights(name).classes)
    assert correct(scores, classes) == correct(reference, classes)
    assert correct(reference, classes) >= IMAGES // 4  # far above chance: the weights loaded
    assert np.abs(scores - reference).max() <= SCORE_TOLERANCE


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_predict_gives_the_same_scores(backend, computed):
    arrays, reference = computed(backend)[0], computed("tensorflow")[0]
    assert np.abs(arrays["compiled_scores"] - reference["compiled_scores"]).max() \
        <= SCORE_TOLERANCE
    assert np.abs(arrays["compiled_scores"] - arrays[f"scores/{COMPILED}"]).max() \
        <= SCORE_TOLERANCE


@pytest.mark.parametrize("backend", BACKENDS)
def test_fit_trains_as_on_tensorflow(backend, computed):
    arrays, reference = computed(backend)[0], computed("tensorflow")[0]
    losses = arrays["fit_losses"]
    assert losses.shape == (FIT["epochs"],) and np.isfinite(losses).all()
    assert losses[-1] < losses[0]  # the steps trained
    assert np.abs(losses - reference["fit_losses"]).max() <= LOSS_TOLERANCE
    weights = sorted(key for key in arrays if key.startswith("fit_weights/"))
    assert weights == sorted(key for key in reference if key.startswith("fit_weights/"))
    moved = 0
    for key in weights:
        change = np.abs(reference[key] - reference[key.replace("fit_weights", "fit_start")])
        moved += change.max() > 1e-3
        difference = np.abs(arrays[key] - reference[key]).max()
        assert difference <= WEIGHT_TOLERANCE * change.max() + WEIGHT_FLOOR, (
            key, difference, change.max())
    assert moved > len(weights) / 2  # the steps trained most arrays


@pytest.mark.parametrize("backend", BACKENDS)
def test_tflite_export_and_qat_refuse_other_backends_clearly(backend, computed):
    refusals = computed(backend)[1]["tflite_errors"]
    assert sorted(refusals) == ["export", "quantize_aware"]
    for function, refusal in refusals.items():
        assert refusal is not None, f"{function} ran on {backend}"
        kind, message = refusal
        assert kind == "UnsupportedBackendError", (function, kind, message)
        assert f"runs Keras on {backend!r}" in message and "KERAS_BACKEND=tensorflow" in message


if __name__ == "__main__":
    compute_on_this_backend(Path(sys.argv[1]))
