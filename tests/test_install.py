"""A non-editable install works away from the source tree: weights, sample data, command line.

The repository is copied to a temporary folder first (pip builds in the source folder and
would leave build/ and *.egg-info in the shared checkout), installed with the test
interpreter's pip into a --target folder, offline and without dependencies, then used from a
subprocess whose working directory and PYTHONPATH contain nothing of the source tree.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Every registered weights name of the source tree (the six LruNets, the 12 baselines).
SHIPPED = [item["name"] for item in
           json.loads((REPO / "zoo" / "manifest.json").read_text())["weights"]]
IGNORED = shutil.ignore_patterns(".venv", ".git", ".tfds", "build", "dist", "*.egg-info",
                                 "__pycache__", ".pytest_cache", "runs")

PROBE = """
import json
import lru_keras
import lru_keras.zoo.weights as registry
from lru_keras.data import load_sample
from lru_keras.zoo import LruNet

directory = str(registry.weights_dir())
model = LruNet(reuse=1, weights="cifar10")
x, y = load_sample()
p = model.predict(x.astype("float32"), batch_size=250, verbose=0)
print("RESULT " + json.dumps({
    "package": lru_keras.__file__, "weights_dir": directory,
    "n": int(len(y)), "accuracy": float((p.argmax(1) == y).mean()),
}))
"""


def run(command, cwd, target, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(target), "TF_CPP_MIN_LOG_LEVEL": "3",
           "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(target folder, an empty working folder) after `pip install --target` of a copy."""
    root = tmp_path_factory.mktemp("install")
    source, target, elsewhere = root / "src", root / "target", root / "elsewhere"
    shutil.copytree(REPO, source, ignore=IGNORED)
    elsewhere.mkdir()
    result = run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                  "--no-index", "--target", target, source], cwd=root, target="")
    assert result.returncode == 0, (
        "pip install failed (if setuptools is missing from the venv, install it there):\n"
        + result.stdout[-3000:] + result.stderr[-3000:]
    )
    return target, elsewhere


@pytest.mark.slow
def test_installed_package_loads_packaged_weights_and_predicts_sample(installed):
    target, elsewhere = installed
    result = run([sys.executable, "-c", PROBE], cwd=elsewhere, target=target)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-5000:]
    facts = json.loads(lines[-1][len("RESULT "):])
    assert Path(facts["package"]).resolve().is_relative_to(target.resolve())
    assert Path(facts["weights_dir"]).resolve().is_relative_to(target.resolve()), facts
    assert facts["n"] == 500
    # 424 of the 500 sample images, as tests/test_cli.py measures in the source tree (the
    # same on both TF_ENABLE_ONEDNN_OPTS settings); 2 images of float-rounding room.
    assert abs(facts["accuracy"] - 0.848) <= 0.004 + 1e-9, facts


@pytest.mark.slow
def test_installed_package_ships_weights_manifest_license_and_cards(installed):
    target, _ = installed
    weights = target / "lru_keras" / "weights"
    manifest = json.loads((weights / "manifest.json").read_text())
    assert [item["name"] for item in manifest["weights"]] == SHIPPED
    assert (weights / "LICENSE").read_bytes() == (REPO / "zoo" / "LICENSE").read_bytes()
    for item in manifest["weights"]:
        assert (weights / item["file"]).read_bytes() == (REPO / "zoo" / item["file"]).read_bytes()
    missing = [item["card"] for item in manifest["weights"] if not (weights / item["card"]).is_file()]
    assert not missing, f"model cards not installed: {missing}"
    assert (target / "lru_keras" / "sample_data" / "cifar10_test_sample.npz").is_file()


@pytest.mark.slow
def test_installed_console_script_lists_the_zoo(installed):
    target, elsewhere = installed
    script = target / "bin" / "lru-keras"
    assert script.is_file()
    result = run([script, "zoo", "list"], cwd=elsewhere, target=target)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    for name in SHIPPED:
        assert name in result.stdout
