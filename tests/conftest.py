"""Shared fixtures: the real data and reference checkpoints in ../shared, beside the repository.

Tests that need ../shared skip with a clear reason when it is absent (e.g. a bare checkout).
"""

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "reference" / "cnn-layer-reuse"
DATA = SHARED / "data"

# Test-set file of each dataset name used by the weights registry.
TEST_SETS = {
    "cifar10": "cifar10_test.npz",
    "cifar100": "cifar100_test.npz",
    "fashion_mnist": "fashion_mnist_test.npz",
}


def _require(path):
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared folder (../shared beside the repository, "
                    f"with reference checkpoints and real test sets) is needed for this test")
    return path


@pytest.fixture(scope="session")
def shared_dir():
    """../shared beside the repository (skip if absent)."""
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
def test_set(shared_dir):
    """Loader of a real test set: dataset name (or file name) -> (x uint8 NHWC, y int64).

    Arrays are cached for the session (loading the LZMA archives takes a few seconds).
    """
    cache = {}

    def load(name):
        file_name = TEST_SETS.get(name, name)
        if file_name not in cache:
            with np.load(_require(DATA / file_name)) as arrays:
                x, y = arrays["x"], arrays["y"].astype(np.int64)
            assert x.dtype == np.uint8 and x.ndim == 4 and len(x) == len(y)
            cache[file_name] = (x, y)
        return cache[file_name]

    return load


@pytest.fixture(scope="session")
def cifar10_images(test_set):
    """64 real CIFAR-10 test images (uint8, every 150th) and their labels: a small real batch."""
    x, y = test_set("cifar10")
    return x[::150][:64], y[::150][:64]
