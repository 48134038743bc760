"""Keras's layer harness (tests/test_layer_harness.py) under the JAX and torch backends.

Keras picks its backend once per process, from KERAS_BACKEND, so each backend runs the
harness module in a child pytest (`run_on_backend`, conftest.py). JAX and torch come with
`pip install -e '.[backends]'` (`make check` installs them).
"""

import pathlib
import re

import pytest

from test_layer_harness import CASES

HARNESS = pathlib.Path(__file__).with_name("test_layer_harness.py")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_every_layer_passes_keras_layer_harness_on_backend(backend, run_on_backend):
    child = run_on_backend(backend, "-m", "pytest", "-q", "-p", "no:cacheprovider", HARNESS)
    summary = child.stdout.strip().splitlines()[-1] if child.stdout.strip() else ""
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) == len(CASES) + 2, summary
    assert "skipped" not in summary, summary
