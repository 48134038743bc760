"""A non-editable install works away from the source tree: weights, sample data, command line;
and the core install (no extras) predicts, and names the extra each missing part needs.

The repository is copied to a temporary folder first (pip builds in the source folder and
would leave build/ and *.egg-info in the shared checkout), installed with the test
interpreter's pip into a --target folder, offline and without dependencies, then used from a
subprocess whose working directory and PYTHONPATH contain nothing of the source tree. The core
install is a venv holding that package and the closure of its Requires-Dist without extras
(the installed folders of this venv, linked: no download).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lru_keras import extras

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
    # The training curves of the trained entries (zoo/trained/<name>/, pilots included).
    curves = sorted(p.relative_to(REPO / "zoo") for p in (REPO / "zoo" / "trained").rglob("*")
                    if p.is_file())
    assert curves and all(
        (weights / p).read_bytes() == (REPO / "zoo" / p).read_bytes() for p in curves)
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


def core_distributions(target):
    """The distributions `pip install lru_keras` brings: the closure of the built package's
    Requires-Dist without extras, over what this venv has installed."""
    from importlib import metadata

    from packaging.requirements import Requirement

    built = metadata.Distribution.at(next(Path(target).glob("lru_keras-*.dist-info")))
    todo = [Requirement(text) for text in built.requires]
    todo = [req for req in todo if not req.marker or req.marker.evaluate({"extra": ""})]
    closure = {}
    while todo:
        requirement = todo.pop()
        key = requirement.name.lower().replace("_", "-")
        if key in closure:
            continue
        closure[key] = distribution = metadata.distribution(requirement.name)
        for text in distribution.requires or []:
            dependency = Requirement(text)
            if not dependency.marker or dependency.marker.evaluate({"extra": ""}):
                todo.append(dependency)
    return closure


@pytest.fixture(scope="module")
def core_venv(installed, tmp_path_factory):
    """A venv holding lru_keras and exactly its core dependencies (no extras): the installed
    package folders of each, linked from this venv, so that no download is needed."""
    target, _ = installed
    venv = tmp_path_factory.mktemp("core") / "venv"
    result = run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv.parent,
                 target="")
    assert result.returncode == 0, result.stderr
    site = next((venv / "lib").glob("python3.*/site-packages"))
    sources = [(entry, target / entry) for entry in os.listdir(target) if entry != "bin"]
    for distribution in core_distributions(target).values():
        root = Path(distribution.locate_file(""))
        tops = {Path(file).parts[0] for file in distribution.files or []}
        sources += [(top, root / top) for top in tops if top != ".."]
    for name, source in sources:
        if not (site / name).exists() and source.exists():
            (site / name).symlink_to(source)
    return venv


CORE_PROBE = """
import importlib, importlib.util, json
from lru_keras import data, extras, zoo
from lru_keras.data import load_sample
from lru_keras.train import run_dir

x, y = load_sample()
model = zoo.create("lrunet1_1x.cifar10")
accuracy = float((model.predict(x, batch_size=250, verbose=0).argmax(1) == y).mean())
missing = {}
for label, attempt in {
        "litert": lambda: importlib.import_module("lru_keras.tflite").export(
            model, "never.tflite"),
        "data": lambda: data.load("cifar10", "test"),
        "tune": lambda: importlib.import_module("lru_keras.tune").search,
        "qat": lambda: importlib.import_module("lru_keras.tflite").quantize_aware(
            model, "cifar10", "never.tflite"),
        "plots": lambda: run_dir.curves_figure([{"epoch": 0, "loss": 1.0}], "title"),
        "micro": lambda: importlib.import_module("lru_keras.tflite.micro").smallest_arena(
            b"never read"),
}.items():
    try:
        attempt()
        missing[label] = None
    except extras.MissingExtraError as error:
        missing[label] = str(error)
print("RESULT " + json.dumps({
    "accuracy": accuracy, "missing": missing,
    "installed_optional": [m for m in extras.EXTRAS if importlib.util.find_spec(m)]}))
"""


@pytest.mark.slow
def test_the_core_install_predicts_and_names_the_extra_each_missing_part_needs(core_venv,
                                                                                tmp_path):
    python = core_venv / "bin" / "python"
    result = run([python, "-c", CORE_PROBE], cwd=tmp_path, target="")
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-5000:]
    facts = json.loads(lines[-1][len("RESULT "):])
    assert facts["installed_optional"] == []  # the core closure holds none of the extras
    assert abs(facts["accuracy"] - 0.848) <= 0.004 + 1e-9, facts  # as the full install
    for extra, error in facts["missing"].items():
        assert error and f'pip install "lru_keras[{extra}]"' in error, (extra, error)
    assert not (tmp_path / "never.tflite").exists()

    command = [python, "-m", "lru_keras.cli", "export", "--weights", "lrunet1_1x.cifar10",
               "-o", tmp_path / "m.tflite"]
    result = run(command, cwd=tmp_path, target="")
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        "lru-keras: error: " + extras.message("ai_edge_litert")], result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_every_optional_library_is_installed_by_the_extra_its_message_names():
    """lru_keras/extras.py's table agrees with setup.cfg: the extra it names for a module
    lists the distribution that provides that module, and every extra is in `all`."""
    import configparser
    from importlib import metadata

    from packaging.requirements import Requirement

    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    declared = {extra: [Requirement(line) for line in text.split("\n") if line.strip()]
                for extra, text in config["options.extras_require"].items()}
    providers = metadata.packages_distributions()
    for module, (extra, _) in extras.EXTRAS.items():
        names = {req.name.lower().replace("_", "-") for req in declared[extra]}
        provided_by = {name.lower().replace("_", "-") for name in providers[module]}
        assert provided_by & names, (module, extra, provided_by, names)
    (everything,) = declared["all"]
    assert everything.name == "lru_keras"
    assert everything.extras == {extra for extra, _ in extras.EXTRAS.values()}
