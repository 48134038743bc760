"""Shared fixtures: the real data and reference checkpoints in ../shared, beside the repository,
and the expensive results (full test-set predictions, exported files) computed once per run.

The suite needs ../shared: without it the run stops at once with one message, instead of
skipping a third of the tests with exit status 0. `LRU_KERAS_ALLOW_NO_SHARED=1` runs what
can run on a bare checkout and skips the rest, each with its reason.

Tiers: `make test` runs the tests not marked `slow` (about 10 minutes on 2 cores); `make check`
(and CI) runs them all. `slow` marks full test-set evaluations and process-heavy runs.
"""

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "reference" / "cnn-layer-reuse"
DATA = SHARED / "data"
ALLOW_NO_SHARED = "LRU_KERAS_ALLOW_NO_SHARED"

# Test-set file of each dataset name used by the weights registry.
TEST_SETS = {
    "cifar10": "cifar10_test.npz",
    "cifar100": "cifar100_test.npz",
    "fashion_mnist": "fashion_mnist_test.npz",
}


def load_script(name):
    """A development tool of scripts/ (not a package module) imported by file path, with
    scripts/ on sys.path for the modules it imports from there (zoo_manifest)."""
    import importlib.util
    import sys

    scripts = str(REPO / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def randomize_weights(target, seed, kernel_noise=0.0):
    """Gives the BatchNorms of a layer or model non-trivial statistics and scales (their
    initial values are identities, which hide mistakes in how BatchNorms are applied), and
    adds N(0, `kernel_noise`) to every other weight. Returns `target`."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in target._flatten_layers():  # noqa: SLF001  (BatchNorms nested in blocks too)
        if isinstance(layer, keras.layers.BatchNormalization):
            draws = {"gamma": lambda s: rng.uniform(0.5, 1.5, s),
                     "beta": lambda s: rng.normal(0, 0.2, s),
                     "moving_mean": lambda s: rng.normal(0, 0.2, s),
                     "moving_variance": lambda s: rng.uniform(0.5, 2.0, s)}
            for variable in layer.weights:
                name = variable.path.rsplit("/", 1)[-1]
                variable.assign(draws[name](tuple(variable.shape)).astype("float32"))
        elif kernel_noise and layer._layers == []:  # noqa: SLF001  (leaf layers only)
            for variable in layer.weights:
                value = np.asarray(variable, np.float32)
                variable.assign(value + rng.normal(0, kernel_noise, value.shape).astype("float32"))
    return target


@pytest.fixture(scope="session")
def randomize():
    """`randomize_weights(target, seed, kernel_noise=0.0)` for tests (see its docstring)."""
    return randomize_weights


def pytest_sessionstart(session):
    if not SHARED.is_dir() and os.environ.get(ALLOW_NO_SHARED) != "1":
        pytest.exit(f"{SHARED} is absent: the test suite checks against the real data and "
                    f"reference checkpoints there (put ../shared beside the repository, or set "
                    f"{ALLOW_NO_SHARED}=1 to skip the tests that need it)", returncode=4)


def _require(path):
    if not path.exists():
        message = f"{path} is absent: the shared folder (../shared beside the repository) is " \
                  f"incomplete"
        if os.environ.get(ALLOW_NO_SHARED) == "1":
            pytest.skip(message)
        pytest.fail(message)
    return path


@pytest.fixture(scope="session")
def shared_dir():
    """../shared beside the repository."""
    return _require(SHARED)


@pytest.fixture(scope="session")
def reference_dir(shared_dir):
    """../shared/reference/cnn-layer-reuse: the authors' checkpoints as .npz, golden outputs."""
    return _require(REFERENCE)


@pytest.fixture(scope="session")
def reference_state(reference_dir):
    """Loader of one reference checkpoint: name -> {parameter name: float32 array}."""
    cache = {}

    def load(checkpoint):
        if checkpoint not in cache:
            with np.load(_require(reference_dir / f"{checkpoint}.npz")) as arrays:
                cache[checkpoint] = {key: arrays[key] for key in arrays.files}
        return cache[checkpoint]

    return load


@pytest.fixture(scope="session")
def shared_arrays(shared_dir):
    """Loader of a file of ../shared/data: file name -> {array name: array}, read once per run
    (the LZMA archives take seconds each to decompress)."""
    cache = {}

    def load(file_name):
        if file_name not in cache:
            with np.load(_require(DATA / file_name)) as arrays:
                cache[file_name] = {key: arrays[key] for key in arrays.files}
        return cache[file_name]

    return load


@pytest.fixture(scope="session")
def test_set(shared_arrays):
    """Loader of real images: dataset name (its test set) or file name of ../shared/data ->
    (x uint8 NHWC, y int64)."""

    def load(name):
        arrays = shared_arrays(TEST_SETS.get(name, name))
        x, y = arrays["x"], arrays["y"].astype(np.int64)
        assert x.dtype == np.uint8 and x.ndim == 4 and len(x) == len(y)
        return x, y

    return load


@pytest.fixture(scope="session")
def fashion_mnist_dir(tmp_path_factory, test_set):
    """Loader: (training images, test images) -> a TFDS data dir holding the first that many
    real Fashion-MNIST images of each shared split (classes mixed), made once per run."""
    cache = {}

    def make(train, test):
        if (train, test) not in cache:
            from lru_keras import data

            x, y = test_set("fashion_mnist_train.npz")
            x_test, y_test = test_set("fashion_mnist")
            target = tmp_path_factory.mktemp(f"tfds_fashion_{train}_{test}")
            data.import_arrays("fashion_mnist", "train", x[:train], y[:train], target)
            data.import_arrays("fashion_mnist", "test", x_test[:test], y_test[:test], target)
            cache[train, test] = target
        return cache[train, test]

    return make


@pytest.fixture(scope="session")
def cifar10_images(test_set):
    """64 real CIFAR-10 test images (uint8, every 150th) and their labels: a small real batch.

    The few-step training comparisons of tests/test_train.py (XLA against eager, mixed
    precision against float32) had their bounds measured on these images: the steps compound
    rounding differently on other images."""
    x, y = test_set("cifar10")
    return x[::150][:64], y[::150][:64]


@pytest.fixture(scope="session")
def prepared_datasets():
    """The datasets of ../shared/data prepared in the default data dir
    (`lru_keras.data.default_data_dir()`, where `make data` imports them): tests that read a
    dataset by name (QAT, default int8 calibration, the README's examples) need them."""
    from lru_keras import data

    missing = [name for name in TEST_SETS
               if not {"train", "test"} <= set(data.prepared_counts(name) or {})]
    if missing:
        message = (f"{', '.join(missing)} not prepared in {data.default_data_dir()}: run "
                   f"`make data` (or `lru-keras data import --from-shared ../shared/data`)")
        if os.environ.get(ALLOW_NO_SHARED) == "1":
            pytest.skip(message)
        pytest.fail(message)


# --------------------------------------------------------------------------------------------
# Expensive results, computed once per run and shared by the tests that read them.
# --------------------------------------------------------------------------------------------
def same_worker(weights_name):
    """Mark of a test that reads the caches below for registered weights `weights_name`. The
    caches live in each pytest-xdist worker; the Makefile's `--dist loadgroup` runs the tests
    of one mark on one worker, so that a model's full-test-set pass or export happens once."""
    return pytest.mark.xdist_group(weights_name)


def with_worker_marks(values, weights=str, id=str):
    """`pytest.param`s of `values` for `pytest.mark.parametrize`, each marked `same_worker`
    with its weights name `weights(value)`."""
    return [pytest.param(value, marks=same_worker(weights(value)), id=id(value))
            for value in values]


@pytest.fixture(scope="session")
def keras_test_predictions(test_set):
    """Loader: registered weights name -> the published model's predicted classes on the full
    test set of its dataset (one 10,000-image pass per model per run)."""
    cache = {}

    def predict(name):
        if name not in cache:
            from lru_keras import zoo

            entry = zoo.get_weights(name)
            x, _ = test_set(entry.dataset)
            model = zoo.create(name)
            scores = model.predict(x.astype(np.float32), batch_size=256, verbose=0)
            cache[name] = scores.argmax(axis=1)
        return cache[name]

    return predict


@pytest.fixture(scope="session")
def make_tflite():
    """tflite/make_tflite.py, the script that writes the shipped .tflite files (imported by
    path: tflite/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_tflite",
                                                  REPO / "tflite" / "make_tflite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def litert_test_predictions(test_set):
    """Loader: (.tflite path, dataset) -> the file's predicted classes on the dataset's full
    test set with LiteRT's interpreter. Keyed by the file's sha256, so the same bytes (a fresh
    export identical to a shipped file) are evaluated once per run."""
    cache = {}

    def predict(path, dataset):
        key = (hashlib.sha256(Path(path).read_bytes()).hexdigest(), dataset)
        if key not in cache:
            from lru_keras import tflite

            x, _ = test_set(dataset)
            classifier = tflite.TFLiteClassifier(path, num_threads=os.cpu_count(),
                                                 batch_size=100)
            cache[key] = np.concatenate([
                classifier.predict(x[i:i + 100].astype(np.float32)).argmax(1)
                for i in range(0, len(x), 100)])
        return cache[key]

    return predict


@pytest.fixture(scope="session")
def int8_exports(tmp_path_factory, make_tflite, prepared_datasets):
    """Loader: registered weights name -> spec of its int8 file as tflite/make_tflite.py writes
    it (default calibration: training images from TFDS), exported once per run."""
    folder = tmp_path_factory.mktemp("int8_exports")
    cache = {}

    def export(name):
        if name not in cache:
            from lru_keras.zoo import get_weights

            spec = make_tflite.export_one(get_weights(name), "int8", folder)
            cache[name] = {**spec, "path": folder / spec["file"]}
        return cache[name]

    return export


CLIENTS_PYTHON = REPO / ".venv-clients" / "bin" / "python"


@pytest.fixture(scope="session")
def client():
    """`client(script, *args)`: the JSON a reader that apps or hubs use prints for `args`:
    `tests/clients/<script>.py`, run in .venv-clients (requirements-clients.lock says why it
    is a venv of its own; `make test` and `make check` build it)."""
    import json
    import subprocess

    def run(script, *args):
        if not CLIENTS_PYTHON.is_file():
            pytest.fail("no .venv-clients: run `make .venv-clients/.installed`")
        done = subprocess.run(
            [str(CLIENTS_PYTHON), str(REPO / "tests" / "clients" / f"{script}.py"),
             *map(str, args)], capture_output=True, text=True, timeout=600,
            env={**os.environ, "GLOG_minloglevel": "2"})
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    return run


@pytest.fixture(scope="session")
def run_on_backend():
    """`run_on_backend(backend, *args, timeout=900)`: `python *args` (this interpreter) in a
    child process with KERAS_BACKEND=`backend`, as tests of the JAX and torch backends need:
    Keras picks its backend once per process, when it is imported. Fails the test if the
    backend is not installed (naming the pip extra) or the child fails (with the end of its
    output); returns the finished process, its stdout as text."""
    import importlib.util
    import subprocess
    import sys

    def run(backend, *args, timeout=900):
        assert importlib.util.find_spec(backend) is not None, (
            f"the {backend} backend is not installed: pip install -e '.[backends]' (make check "
            f"installs it)")
        child = subprocess.run([sys.executable, *map(str, args)], capture_output=True,
                               text=True, env={**os.environ, "KERAS_BACKEND": backend},
                               timeout=timeout)
        assert child.returncode == 0, child.stdout[-4000:] + child.stderr[-2000:]
        return child

    return run


@pytest.fixture
def layers_made(monkeypatch):
    """The layers made (by class name) while the test runs: a refused argument must be
    refused before any layer exists."""
    import keras

    made = []
    original = keras.layers.Layer.__init__

    def counting(self, *args, **kwargs):
        made.append(type(self).__name__)
        original(self, *args, **kwargs)

    monkeypatch.setattr(keras.layers.Layer, "__init__", counting)
    return made
