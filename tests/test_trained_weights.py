"""The weights trained with `lru-keras train` (provenance "trained"): each loads by name, has
its card and curves, and reproduces its recorded test accuracy exactly; and the tool that
registers them (scripts/register_trained.py) on a real, tiny timed run.
"""

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lru_keras.zoo import create, get_weights, list_weights

from conftest import load_script, with_worker_marks

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "zoo"
# name -> (builder, dataset) of every trained entry (the README's "Trained with lru_keras").
EXPECTED = {
    "lrunet1_1x_trained.cifar10": ("LruNet", "cifar10"),
    "lrunet1_1x_trained.fashion_mnist": ("LruNet", "fashion_mnist"),
    "convmixer128_8_k5_p4_trained.cifar10": ("ConvMixer", "cifar10"),
    "convmixer128_8_k5_p4_shared2_trained.cifar10": ("ConvMixer", "cifar10"),
}
# What every card states (the list), as the registration tool writes it.
CARD_FIELDS = [r"Command \(", r"scripts/timed_train\.sh \S+ --model", r"Recipe: ", r"Seed \d+",
               r"\d+ epochs", r"Wall time: [\d.]+ h in \d+ attempt", r"CPU .+TF_ENABLE_ONEDNN_OPTS (0|1|unset)",
               r"Selected: epoch \d+ of \d+, validation accuracy [\d.]+%",
               r"Test accuracy: \*\*[\d.]+%\*\* \([\d,]+ of [\d,]+ images",
               r"Parameters: [\d,]+ trainable; [\d.]+ MFLOPs"]


def trained():
    return [entry for entry in list_weights() if entry.provenance == "trained"]


def test_the_trained_entries_are_registered():
    assert {e.name: (e.builder, e.dataset) for e in trained()} == EXPECTED


@pytest.mark.parametrize("name", list(EXPECTED))
def test_trained_entry_loads_by_name(name):
    entry = get_weights(name)
    model = create(name)
    assert model.input_shape[1:] == entry.input_shape
    assert model.output_shape == (None, entry.classes)
    assert entry.author.startswith("lru_keras") and entry.license == "MIT"


@pytest.mark.parametrize("name", list(EXPECTED))
def test_card_and_curves_are_complete(name):
    entry = get_weights(name)
    text = (ZOO / entry.card).read_text()
    for field in CARD_FIELDS:
        assert re.search(field, text), (name, field)
    assert f"**{entry.accuracy:.2f}%**" in text
    if re.search(r"Aim: .*: not met", text):  # the issue: its shortfall and an estimate
        assert re.search(r"not met \([\d.]+ points short.*\n- Estimate: .*\d+ epochs", text), name
    epochs = int(re.search(r"Selected: epoch \d+ of (\d+)", text)[1])
    with open(ZOO / "trained" / name / "log.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == epochs and {"accuracy", "val_accuracy", "loss", "lr"} <= set(rows[0])
    selected = int(re.search(r"Selected: epoch (\d+)", text)[1])
    best = max(float(row["val_accuracy"]) for row in rows)
    assert float(rows[selected - 1]["val_accuracy"]) == best  # selected on validation
    assert f"validation accuracy {100 * best:.2f}%" in text
    assert (ZOO / "trained" / name / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
@pytest.mark.parametrize("name", with_worker_marks(EXPECTED))
def test_trained_accuracy_is_reproduced_exactly(name, test_set, keras_test_predictions):
    """The shipped file through `zoo.create`, on the full test set: the recorded count of
    right answers, to the image."""
    entry = get_weights(name)
    _, y = test_set(entry.dataset)
    right = int((keras_test_predictions(name) == y).sum())
    assert len(y) == 10_000 and right / 100 == entry.accuracy, (name, right)


# --------------------------------------------------------------------------------------------
# The registration tool, on a tiny run timed by scripts/timed_train.sh.
# --------------------------------------------------------------------------------------------
TINY_RUN = ["--model", "lrunet", "--reuse", "1", "--width", "0.25", "--dataset", "fashion_mnist",
            "--recipe", "short", "--epochs", "2", "--train-images", "384", "--validation",
            "128", "--batch-size", "64", "--seed", "3", "--silent"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, fashion_mnist_dir):
    """A finished tiny run (its directory, with the wall log beside it) and its data dir."""
    data_dir = fashion_mnist_dir(train=512, test=200)
    runs = tmp_path_factory.mktemp("runs")
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run([REPO / "scripts" / "timed_train.sh", runs / "tiny", *TINY_RUN,
                    "--data-dir", str(data_dir)], check=True, env=environment, timeout=600)
    return runs / "tiny", data_dir


@pytest.fixture
def register(tmp_path, monkeypatch):
    """scripts/register_trained.py writing into a copy of zoo/ (the real one untouched)."""
    module = load_script("register_trained")
    manifest = sys.modules["zoo_manifest"]
    zoo_copy = tmp_path / "zoo"
    shutil.copytree(ZOO, zoo_copy, ignore=shutil.ignore_patterns("*.h5", "trained"))
    monkeypatch.setattr(manifest, "ZOO", zoo_copy)
    monkeypatch.setattr(module, "ZOO", zoo_copy)
    return module, zoo_copy


def test_registration_writes_entry_card_curves_and_keeps_the_others(tiny_run, register):
    run, data_dir = tiny_run
    module, zoo_copy = register
    before = module.read_entries()
    entry = module.register(run, "tiny_trained.fashion_mnist", [run], aim=90.0,
                            budget_hours=1.0, estimate="About 40 epochs.", notes=["A note."],
                            data_dir=data_dir)
    after = module.read_entries()
    ported = [e for e in before if e["provenance"] == "ported"]
    trained = [e for e in before if e["provenance"] == "trained"]
    assert after == ported + sorted([*trained, entry], key=lambda e: e["name"])
    assert entry["provenance"] == "trained" and entry["arguments"] == {
        "reuse": 1, "width": 0.25, "shuffle": True}
    assert (zoo_copy / entry["file"]).read_bytes() == (run / "best.weights.h5").read_bytes()
    text = (zoo_copy / entry["card"]).read_text()
    for field in CARD_FIELDS:
        assert re.search(field, text), field
    assert f"not met ({90 - entry['accuracy']:.2f} points short).\n- Estimate: About 40 epochs." \
        in text
    assert "## Pilot runs" in text and "\n- A note.\n" in text
    assert f"({round(entry['accuracy'] * 2)} of 200 images" in text  # 200 test images
    for folder in (zoo_copy / "trained" / entry["name"],
                   zoo_copy / "trained" / entry["name"] / "pilots" / "tiny"):
        assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [
            "curves.png", "log.csv"]
    # Registering again replaces the entry, not adds one.
    module.register(run, "tiny_trained.fashion_mnist", data_dir=data_dir)
    assert [e["name"] for e in module.read_entries()] == [e["name"] for e in after]


@pytest.mark.parametrize("case, message", [
    ("other dataset", r"--name 'tiny\.cifar10': expected <model>\.fashion_mnist"),
    ("ported name", r"'lrunet1_1x\.fashion_mnist' is a ported entry"),
    ("no wall log", r"no wall-time log"),
    ("unfinished", r"no summary\.json: the run has not finished"),
    ("corrupt weights", r"best\.weights\.h5 is corrupt or was replaced"),
    ("unmet aim, no estimate", r"misses the aim of 90% in 1 h; --estimate must say"),
])
def test_registration_refuses_before_writing(case, message, tiny_run, register, tmp_path):
    run, data_dir = tiny_run
    module, zoo_copy = register
    name = "tiny_trained.fashion_mnist"
    if case in ("no wall log", "unfinished", "corrupt weights"):
        copy = tmp_path / "runs" / "copy"
        shutil.copytree(run, copy)
        if case != "no wall log":
            shutil.copyfile(f"{run}.wall", f"{copy}.wall")
        if case == "unfinished":
            (copy / "summary.json").unlink()
        if case == "corrupt weights":
            with open(copy / "best.weights.h5", "r+b") as file:
                file.seek(-100, 2)
                file.write(b"\0" * 50)
        run = copy
    name = {"other dataset": "tiny.cifar10", "ported name": "lrunet1_1x.fashion_mnist"}.get(
        case, name)
    manifest = (zoo_copy / "manifest.json").read_bytes()
    aim = dict(aim=90.0, budget_hours=1.0) if case == "unmet aim, no estimate" else {}
    with pytest.raises(module.RegistrationError, match=message):
        module.register(run, name, data_dir=data_dir, **aim)
    assert (zoo_copy / "manifest.json").read_bytes() == manifest
    assert not (zoo_copy / "trained").exists()
