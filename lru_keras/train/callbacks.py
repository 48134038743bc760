"""Callbacks of a training run: epoch statistics, and the resumable run state.

`TrainingState` does the work of Keras's BackupAndRestore, ModelCheckpoint(save_best_only)
and EarlyStopping together, so that the three can never disagree after an interruption:
at the end of every epoch it

1. decides whether the validation accuracy improved (selection; never the test split),
2. writes the full training state (weights + optimizer, incl. its step counter and so the
   learning-rate schedule) into a new state/epoch-NNNN/ directory, with the model-only
   weights of the best epoch beside it when this epoch is the best,
3. commits by atomically replacing state/latest.json (next epoch, history, best epoch, the
   early-stopping counter): a run killed at any moment resumes from the last commit,
4. publishes best.weights.h5, last.weights.h5, log.csv and curves.png from the commit.

Keras's BackupAndRestore writes its weights and its epoch number in two steps (a kill between
them resumes an epoch late) and its ModelCheckpoint forgets the best value on restart, so a
resumed run would overwrite best.weights.h5 with a worse epoch.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import keras

from lru_keras import atomic, progress
from lru_keras.train import run_dir

LATEST = "latest.json"
TRAIN_STATE = "train_state.weights.h5"


def model_only(model) -> keras.Model:
    """A view of `model` without its optimizer: saves/loads exactly the builder's weights
    file layout (`model.save_weights` on a compiled model adds the optimizer's variables)."""
    try:
        return keras.Model(model.inputs, model.outputs, name=model.name)
    except (AttributeError, ValueError, TypeError) as error:
        raise ValueError(f"training needs a functional model (as the zoo's builders return); "
                         f"{model.name!r} is not one: {error}") from None


def learning_rate(model) -> float:
    """The optimizer's learning rate for its next step (inside a LossScaleOptimizer too)."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class EpochStats(keras.callbacks.Callback):
    """Adds to each epoch's logs: `lr` (at the epoch's first step), `epoch_seconds` (training
    steps only, no validation) and `images_per_second` of training."""

    def __init__(self, train_images: int):
        super().__init__()
        self.train_images = train_images

    def on_epoch_begin(self, epoch, logs=None):
        self._lr = learning_rate(self.model)
        self._start = self._last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._last = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        seconds = max(self._last - self._start, 1e-9)
        logs["lr"] = self._lr
        logs["epoch_seconds"] = seconds
        logs["images_per_second"] = self.train_images / seconds


class StepProgress(progress.FitProgress, keras.callbacks.Callback):
    """The epoch, step and loss as the status of a `progress.Ticker` (a line every ~10 s)."""


class SynchronizeStatistics(keras.callbacks.Callback):
    """Average the BatchNorm moving statistics over replicas and workers before every
    evaluation (validation in `fit` too) and at the end of every epoch; see
    `distribute.statistics_synchronizer`. Every replica and worker calls it at the same
    points, so the collective operations match."""

    def __init__(self, synchronize):
        super().__init__()
        self.synchronize = synchronize

    def on_test_begin(self, logs=None):
        self.synchronize()

    def on_epoch_end(self, epoch, logs=None):
        self.synchronize()


def read_state(paths: run_dir.RunPaths) -> dict | None:
    """The last committed state (see `TrainingState`), or None."""
    latest = paths.state / LATEST
    return run_dir.read_json(latest) if latest.is_file() else None


def restore(model, paths: run_dir.RunPaths, state: dict) -> None:
    """Load the committed weights and optimizer state into a compiled `model`, and publish the
    committed best/last weights and log again (a kill may have cut their publication)."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(paths.state / state["dir"] / TRAIN_STATE)
    _publish(model_only(model), paths, state, plot_title=None)


class TrainingState(keras.callbacks.Callback):
    """Selection on validation accuracy, early stopping, and atomic resumable checkpoints.

    Args:
        paths: the run's `RunPaths`.
        monitor: the log key to maximise ("val_accuracy"), or None when there is no
            validation split: then every epoch counts as the best (the last weights win).
        patience: stop after this many epochs without improvement (0: never), counting
            only epochs from `patience_start` on.
        state: the committed state to continue from (`read_state`), or None.
        plot_title: title of curves.png, or None to write no plot (non-chief workers).
    """

    def __init__(self, paths, monitor="val_accuracy", patience=0, patience_start=0, state=None,
                 plot_title=None):
        super().__init__()
        self.paths = paths
        self.monitor = monitor
        self.patience = patience
        self.patience_start = patience_start
        self.plot_title = plot_title
        self.state = dict(state) if state else {
            "epoch": 0, "dir": None, "best_dir": None, "best": None, "best_epoch": None,
            "wait": 0, "stopped": False, "history": [], "resumes": []}

    def on_train_begin(self, logs=None):
        self._weights_view = model_only(self.model)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        row = {"epoch": epoch, **{k: _number(v) for k, v in logs.items()}}
        state = dict(self.state)
        state["history"] = [*state["history"], row]
        state["epoch"] = epoch + 1
        value = row.get(self.monitor) if self.monitor else None
        if self.monitor and value is None:
            raise ValueError(f"selection metric {self.monitor!r} is missing from the epoch logs "
                             f"{sorted(logs)}")
        improved = self.monitor is None or (
            not math.isnan(value) and (state["best"] is None or value > state["best"]))
        if improved:
            state.update(best=value, best_epoch=epoch, wait=0)
        elif epoch >= self.patience_start:
            state["wait"] += 1
        if self.patience and state["wait"] >= self.patience:
            state["stopped"] = True
            self.model.stop_training = True

        name = f"epoch-{epoch + 1:04d}"
        self.paths.state.mkdir(parents=True, exist_ok=True)
        staging = self.paths.state / f".{name}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        self.model.save_weights(staging / TRAIN_STATE)
        if improved:
            self._weights_view.save_weights(staging / run_dir.BEST)
        final = self.paths.state / name
        shutil.rmtree(final, ignore_errors=True)  # left by an epoch that was never committed
        os.replace(staging, final)
        state["dir"] = name
        if improved:
            state["best_dir"] = name
        run_dir.write_json(self.paths.state / LATEST, state)  # the commit
        self.state = state
        _publish(self._weights_view, self.paths, state, self.plot_title)
        _remove_uncommitted(self.paths.state, keep={state["dir"], state["best_dir"]})


def _publish(weights_view, paths, state, plot_title):
    """best.weights.h5, last.weights.h5, log.csv and curves.png from the committed state."""
    if state.get("best_dir"):
        _copy_atomic(paths.state / state["best_dir"] / run_dir.BEST, paths.best)
    with atomic.replacing(paths.last) as temporary:
        weights_view.save_weights(temporary)
    run_dir.write_csv(paths.log, state["history"])
    if plot_title is not None and state["history"]:
        run_dir.plot_curves(paths.curves, state["history"], plot_title,
                            best_epoch=state.get("best_epoch"))


def _copy_atomic(source: Path, target: Path) -> None:
    with atomic.replacing(target) as temporary:
        shutil.copyfile(source, temporary)


def _remove_uncommitted(state_dir: Path, keep: set) -> None:
    for entry in state_dir.iterdir():
        if entry.is_dir() and entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value
