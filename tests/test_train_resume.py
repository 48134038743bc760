"""Interruption: a real `lru-keras train` run is SIGKILLed in the middle of an epoch; the same
command again continues it (weights, optimizer, epoch, learning-rate schedule) instead of
starting over."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lru_keras.train import make_schedule, run_dir

REPO = Path(__file__).resolve().parents[1]
EPOCHS, BATCH, TRAIN_IMAGES = 4, 50, 2000
STEPS = TRAIN_IMAGES // BATCH

# The first run is the CLI itself, with one test hook: when epoch 3 (index 2) has done 5 of its
# 40 steps, it writes a marker file and pauses, so that the SIGKILL surely lands mid-epoch,
# after the in-memory weights have moved past the last committed state.
KILLED_RUN = r"""
import pathlib, sys, time
from lru_keras.cli import main
from lru_keras.train import callbacks

marker = pathlib.Path(sys.argv[1])
original = callbacks.EpochStats.on_train_batch_end
def on_train_batch_end(self, batch, logs=None):
    original(self, batch, logs)
    if self._epoch == 2 and batch == 4:
        marker.write_text("mid-epoch")
        time.sleep(120)
callbacks.EpochStats.on_train_batch_end = on_train_batch_end
original_begin = callbacks.EpochStats.on_epoch_begin
def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch
    original_begin(self, epoch, logs)
callbacks.EpochStats.on_epoch_begin = on_epoch_begin
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def fashion_dir(fashion_mnist_dir):
    """TFDS dir with 2,200 real Fashion-MNIST training images and 200 test images."""
    return fashion_mnist_dir(2200, 200)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_the_same_command_resumes(fashion_dir, tmp_path):
    run = tmp_path / "run"
    arguments = ["train", "--model", "lrunet", "--reuse", "1", "--width", "0.5",
                 "--dataset", "fashion_mnist", "--recipe", "short", "--epochs", str(EPOCHS),
                 "--batch-size", str(BATCH), "--validation", "200", "--data-dir",
                 str(fashion_dir), "--run-dir", str(run), "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    marker = tmp_path / "mid-epoch"
    first = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(marker), *arguments],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert first.poll() is None, first.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the run did not reach epoch 3"
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL

    state = json.loads((run / "state" / "latest.json").read_text())
    assert state["epoch"] == 2 and not (run / "summary.json").exists()
    rows_before = run_dir.read_csv(run / "log.csv")
    assert [row["epoch"] for row in rows_before] == [0, 1]

    # Verbosity is not part of the configuration: without --quiet, and with stdout not a
    # terminal, Keras's line per epoch comes with a status line at least every 10 s.
    second = subprocess.run([sys.executable, "-m", "lru_keras.cli", *arguments[:-1]],
                            capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming {run} after epoch 2 of {EPOCHS} (optimizer step {2 * STEPS})" in \
        second.stdout
    assert "Epoch 3/4" in second.stdout and "Epoch 1/4" not in second.stdout
    assert "train: epoch 3/4 (the first step compiles)" in second.stdout.splitlines()

    rows = run_dir.read_csv(run / "log.csv")
    assert [row["epoch"] for row in rows] == [0, 1, 2, 3]
    assert rows[:2] == rows_before  # the finished epochs were kept, not trained again
    schedule = make_schedule("cosine", 0.1, EPOCHS, STEPS, warmup_epochs=1)
    for row in rows:  # the schedule continued from the restored optimizer step
        assert row["lr"] == pytest.approx(float(schedule(row["epoch"] * STEPS)), rel=1e-5)
    assert rows[2]["loss"] < rows[0]["loss"]  # continued from trained weights

    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_at_epochs"] == [2]
    assert summary["optimizer_steps"] == EPOCHS * STEPS  # optimizer state restored too
    assert summary["epochs_run"] == EPOCHS and 0 <= summary["test_accuracy"] <= 1
    # kept: exactly the latest and best epochs of the last two commits, to fall back to
    final = json.loads((run / "state" / "latest.json").read_text())
    previous = json.loads((run / "state" / "epoch-0003" / "commit.json").read_text())
    kept = {p.name for p in (run / "state").iterdir() if p.is_dir()}
    assert final["dir"] == "epoch-0004" and kept == {
        final["dir"], final["best_dir"], previous["dir"], previous["best_dir"]}, kept
