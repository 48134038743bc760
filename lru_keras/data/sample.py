"""A few hundred real CIFAR-10 test images shipped inside the package.

They let demos, docs and smoke tests run with no prepared dataset at all. The file is made by
scripts/make_sample_data.py; lru_keras/sample_data/README.md says which images they are.
"""

from __future__ import annotations

import importlib.resources

import numpy as np

SAMPLE_FILE = "cifar10_test_sample.npz"


def load_sample() -> tuple[np.ndarray, np.ndarray]:
    """Return (x uint8 (500, 32, 32, 3), y int32 (500,)): 50 CIFAR-10 test images per class."""
    resource = importlib.resources.files("lru_keras.sample_data").joinpath(SAMPLE_FILE)
    with resource.open("rb") as file, np.load(file) as arrays:
        return arrays["x"], arrays["y"].astype(np.int32)
