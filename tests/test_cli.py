"""The `lru-keras` command line, run in-process through `main([...])`.

Evaluations use the 1-reuse CIFAR-10 port (fast) on the bundled sample or on 200 real test
images of ../shared/data (conftest's `test_set`) imported into a temporary TFDS dir.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from lru_keras import data
from lru_keras.cli import main
from lru_keras.cli.interrupt import GRACE_SECONDS
from lru_keras.zoo import LruNet, list_weights

FAST = "lrunet1_1x.cifar10"
ACCURACY_LINE = re.compile(r"^accuracy: (\d+\.\d\d)% on (\d+) images of (\w+)/(\w+)")


def run(capsys, *argv):
    """(exit status, stdout, stderr) of `lru-keras argv...`."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def cifar10_dir(tmp_path_factory, test_set):
    """A TFDS data dir holding 200 real CIFAR-10 test images (every 50th) as 'test'."""
    x, y = test_set("cifar10")
    target = tmp_path_factory.mktemp("tfds")
    data.import_arrays("cifar10", "test", x[::50], y[::50], target)
    return target


def test_zoo_list_shows_every_weights_entry(capsys):
    status, out, _ = run(capsys, "zoo", "list")
    assert status == 0
    for entry in list_weights():
        assert re.search(rf"^{re.escape(entry.name)}\s+{re.escape(entry.describe())}", out, re.M)
    assert "206,282" in out and "89.34" in out


def test_zoo_list_json_has_params_and_accuracy(capsys):
    status, out, _ = run(capsys, "zoo", "list", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert status == 0 and len(rows) == len(list_weights())
    assert rows["lrunet14_2x.cifar100"]["params"] == 663716
    assert rows["lrunet10_1x.fashion_mnist"]["accuracy"] == 93.46
    assert rows["cifar_shufflenet_0.5x.cifar10"]["params"] == 228565  # BASELINES.md
    assert {row["provenance"] for row in rows.values()} == {"ported", "trained"}
    assert sum(row["provenance"] == "ported" for row in rows.values()) == 18


def test_info_prints_the_papers_counts(capsys):
    status, out, _ = run(capsys, "info", "--reuse", "14", "--width", "1", "--dataset", "cifar10")
    assert status == 0
    assert "206,282 trainable" in out and "conv params:   125,002" in out
    assert "MFLOPs:        35.50" in out and "multiply-accumulates" in out
    assert re.search(r"^stage4\s+LRUBlock\s+dw 3x3, 1x1 g8\s+14\s+4x4x512", out, re.M)


def test_info_of_weights_as_json(capsys):
    status, out, _ = run(capsys, "info", "--weights", "lrunet10_1x.fashion_mnist", "--json")
    info = json.loads(out)
    assert status == 0 and info["weights"]["accuracy"] == 93.46
    assert (info["trainable_params"], info["conv_params"]) == (182090, 123850)
    assert info["input_shape"] == [28, 28, 1]
    assert [row["name"] for row in info["stages"]][:2] == ["stem_conv", "stage1"]


def test_info_with_classes_and_input_shape(capsys):
    status, out, _ = run(capsys, "info", "--reuse", "1", "--width", "2", "--classes", "100",
                         "--input-shape", "32,32,3", "--json")
    assert status == 0 and json.loads(out)["trainable_params"] == 513956


def test_evaluate_sample_prints_an_accuracy_line_and_json(capsys):
    status, out, _ = run(capsys, "evaluate", "--sample", "--weights", FAST)
    assert status == 0
    accuracy, images, dataset, split = ACCURACY_LINE.match(out.splitlines()[-1]).groups()
    assert (images, dataset, split) == ("500", "cifar10", "sample")
    # 1-LruNet-1x: 83.91% on the full test set; 424 of these 500 images (+-2 for float noise)
    assert abs(float(accuracy) - 84.8) <= 0.4

    status, out, _ = run(capsys, "evaluate", "--sample", "--weights", FAST, "--json")
    result = json.loads(out)
    assert status == 0 and result["model"] == FAST and result["images"] == 500
    assert f"{result['accuracy']:.2f}" == accuracy
    assert result["images_per_second"] > 0 and result["seconds"] > 0


def test_evaluate_on_an_imported_dataset_split(capsys, cifar10_dir, test_set):
    status, out, err = run(capsys, "evaluate", "--weights", FAST, "--dataset", "cifar10",
                           "--data-dir", str(cifar10_dir), "--batch-size", "64")
    assert status == 0, err
    accuracy, images, dataset, split = ACCURACY_LINE.match(out.splitlines()[-1]).groups()
    assert (images, dataset, split) == ("200", "cifar10", "test")
    # The model's own predictions on the same 200 images (at most one image may flip with
    # the batch size's float rounding).
    x, y = test_set("cifar10")
    predicted = LruNet(reuse=1, weights="cifar10").predict(
        x[::50].astype("float32"), verbose=0).argmax(1)
    assert abs(float(accuracy) - 100 * (predicted == y[::50]).mean()) <= 0.5 + 1e-9

    status, out, _ = run(capsys, "evaluate", "--weights", FAST, "--dataset", "cifar10",
                         "--data-dir", str(cifar10_dir), "--limit", "70", "--json")
    result = json.loads(out)
    assert status == 0 and (result["images"], result["split"]) == (70, "test")


def test_evaluate_a_saved_keras_file(capsys, tmp_path):
    path = tmp_path / "lrunet1.keras"
    LruNet(reuse=1, weights="cifar10").save(path)
    _, out, _ = run(capsys, "evaluate", str(path), "--sample", "--limit", "100", "--json")
    _, reference, _ = run(capsys, "evaluate", "--weights", FAST, "--sample", "--limit", "100",
                          "--json")
    assert json.loads(out)["accuracy"] == json.loads(reference)["accuracy"]


def test_missing_dataset_is_a_clear_error_with_status_2(capsys, tmp_path):
    status, out, err = run(capsys, "evaluate", "--weights", FAST, "--dataset", "cifar10",
                           "--data-dir", str(tmp_path))
    assert status == 2 and "Traceback" not in err
    assert "not prepared" in err and "lru-keras data import" in err


def test_missing_tflite_model_file_is_a_clear_error(capsys):
    # .tflite files run with LiteRT (tests/test_tflite.py); a missing one is a one-line error.
    status, _, err = run(capsys, "evaluate", "model.tflite", "--sample")
    assert status == 2 and "Traceback" not in err
    assert "model.tflite" in err and "does not exist" in err


def test_weights_that_do_not_fit_the_dataset_are_an_error(capsys):
    status, _, err = run(capsys, "evaluate", "--sample", "--weights", "lrunet1_1x.fashion_mnist")
    assert status == 2 and "(28, 28, 1)" in err and "(32, 32, 3)" in err


@pytest.mark.parametrize("argv, named, allowed", [
    (["info", "--weights", "nope"], "--weights", "lrunet14_1x.cifar10"),
    (["info", "--width", "0.3"], "--width", "multiple of 0.125"),
    (["info", "--reuse", "0"], "--reuse", "positive integer"),
    (["info", "--input-shape", "32,32"], "--input-shape", "HEIGHT,WIDTH,CHANNELS"),
    (["info", "--dataset", "mnist"], "--dataset", "fashion_mnist"),
    (["info", "--weights", FAST, "--reuse", "2"], "--reuse", "--weights"),
    (["evaluate", "--weights", FAST], "--dataset", "--sample"),
    (["evaluate", "--sample"], "--weights", "MODEL_FILE"),
    (["evaluate", "--sample", "--weights", FAST, "--split", "train"], "--split", "--dataset"),
    (["evaluate", "--dataset", "cifar10", "--weights", FAST, "--batch-size", "0"],
     "--batch-size", "positive integer"),
])
def test_bad_arguments_exit_2_naming_the_argument(capsys, argv, named, allowed):
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert named in err and allowed in err and "Traceback" not in err


@pytest.mark.parametrize("argv, command", [
    (["evaluate", "--weights", FAST], "lru-keras evaluate"),
    (["data", "import"], "lru-keras data import"),
    (["nosuch"], "lru-keras"),
])
def test_usage_errors_are_one_line_pointing_to_help(capsys, argv, command):
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == "" and "usage:" not in err
    assert err.startswith("lru-keras: error: ") and err.count("\n") == 1
    assert err.rstrip().endswith(f"(see `{command} --help`)")


# A command whose handler stands for long work: either Python code, which KeyboardInterrupt
# unwinds (its `finally` runs), or one TensorFlow call that does not return to Python code (as
# compiling a training step does not, for a long time).
INTERRUPTED_COMMAND = """
import sys, time
import lru_keras.cli.{module} as command
import tensorflow as tf
from lru_keras import cli

@tf.function
def spin():
    return tf.while_loop(lambda i: i >= 0, lambda i: i + 1, [tf.constant(0)])

def long_work(args):
    stuck = spin.get_concrete_function() if {work!r} == "tensorflow" else None
    print("ready", flush=True)
    try:
        if stuck is not None:
            stuck()
        if {work!r} == "swallowed":  # as Python drops one that lands in a weakref callback
            try:
                time.sleep(60)
            except KeyboardInterrupt:
                pass
        time.sleep(60)
    finally:
        print("cleaned up", flush=True)

command.{handler} = long_work
sys.exit(cli.main({argv}))
"""


@pytest.mark.parametrize("module, handler, argv, work, hint", [
    ("export", "run_export", ["export", "-o", "x.tflite"], "python", "; no file was written"),
    ("train", "run_train", ["train"], "tensorflow", "; the same command resumes after the last "
                                                    "finished epoch"),
    ("info", "run_info", ["info"], "tensorflow", ""),
    ("zoo", "run_zoo_list", ["zoo", "list"], "swallowed", ""),
])
def test_ctrl_c_ends_any_command_within_seconds_with_one_line_and_status_130(
        module, handler, argv, work, hint):
    script = INTERRUPTED_COMMAND.format(module=module, handler=handler, work=work, argv=argv)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert child.stdout.readline() == "ready\n"
    time.sleep(0.5)  # into the sleep or TensorFlow's loop
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 130 and time.monotonic() - sent < GRACE_SECONDS + 5
    assert err.splitlines() == [f"lru-keras: error: interrupted{hint}"]
    # Python code unwinds (temporary files go), also after a KeyboardInterrupt was dropped
    # (it is raised again); a stuck C call is cut after the grace time.
    assert ("cleaned up" in out) == (work != "tensorflow")


def test_data_commands_are_wired(capsys, tmp_path):
    status, out, _ = run(capsys, "data", "list", "--data-dir", str(tmp_path))
    assert status == 0 and re.search(r"cifar10\s+not prepared", out)


def test_help_exits_0(capsys):
    status, out, _ = run(capsys, "--help")
    assert status == 0 and "evaluate" in out and "data" in out
