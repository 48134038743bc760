"""Keras's layer harness (tests/test_layer_harness.py) under the JAX and torch backends.

Keras picks its backend once per process, from KERAS_BACKEND, so each backend runs the
harness module in a child pytest. JAX and torch come with `pip install -e '.[backends]'`
(`make check` installs them).
"""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

from test_layer_harness import CASES

HARNESS = pathlib.Path(__file__).with_name("test_layer_harness.py")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_every_layer_passes_keras_layer_harness_on_backend(backend):
    assert importlib.util.find_spec(backend) is not None, (
        f"the {backend} backend is not installed: pip install -e '.[backends]' (make check "
        f"installs it)")
    env = {**os.environ, "KERAS_BACKEND": backend}
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HARNESS)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    summary = child.stdout.strip().splitlines()[-1] if child.stdout.strip() else ""
    assert child.returncode == 0, child.stdout[-4000:] + child.stderr[-2000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) == len(CASES) + 2, summary
    assert "skipped" not in summary, summary
