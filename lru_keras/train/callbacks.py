"""Callbacks of a training run: epoch statistics, and the resumable run state.

`TrainingState` does the work of Keras's BackupAndRestore, ModelCheckpoint(save_best_only)
and EarlyStopping together, so that the three can never disagree after an interruption:
at the end of every epoch it

1. decides whether the validation accuracy improved (selection; never the test split),
2. writes the full training state (weights + optimizer, incl. its step counter and so the
   learning-rate schedule) into a new state/epoch-NNNN/ directory, with the model-only
   weights of the best epoch beside it when this epoch is the best, and the epoch's commit
   record (commit.json: next epoch, history, best epoch, the early-stopping counter, and the
   sha256 of every file a resume reads),
3. commits by atomically replacing state/latest.json with that record: a run killed at any
   moment resumes from the last commit,
4. publishes best.weights.h5, last.weights.h5 (each with its .sha256 sidecar), log.csv and
   curves.png from the commit.

The files of the last two commits are kept, so that a damaged last epoch costs one epoch, not
the run. A resume (`read_state`) checks the
sha256 of every file before loading anything; if the last commit is damaged (flipped bytes,
a truncated file, a latest.json that is not JSON) it falls back to the newest intact earlier
commit and says so, and refuses, naming the damaged file, when there is none.

Keras's BackupAndRestore writes its weights and its epoch number in two steps (a kill between
them resumes an epoch late) and its ModelCheckpoint forgets the best value on restart, so a
resumed run would overwrite best.weights.h5 with a worse epoch.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
from pathlib import Path

import keras

from lru_keras import atomic, checksums, progress
from lru_keras.train import run_dir

LATEST = run_dir.LATEST
TRAIN_STATE = "train_state.weights.h5"
COMMIT = "commit.json"
EPOCH_DIR = re.compile(r"epoch-\d{4,}")


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


def read_state(paths: run_dir.RunPaths, say=lambda message: None) -> dict | None:
    """The newest committed state (see `TrainingState`) whose files are intact, or None when
    nothing was committed.

    Every file the state lists is checked against its recorded sha256 before anything is
    loaded. A damaged last commit falls back to the newest intact earlier one (kept in the
    epoch directories), and `say` is told what was damaged and where the run resumes; without
    one, `DamagedFileError` names the damaged file and says how to start over.
    """
    latest = paths.state / LATEST
    if not latest.is_file():
        return None
    damage, tried = [], []
    for source in [latest, *_epoch_commits(paths.state)]:
        try:
            state = _read_commit(source)
            if state in tried or (tried and state["epoch"] > tried[0]["epoch"]):
                continue  # a copy already checked, or an epoch latest.json never committed
            tried.append(state)
            _check_files(paths.state, state, source)
        except (run_dir.DamagedFileError, checksums.ChecksumError) as error:
            damage.append(str(error))
            continue
        if damage:
            say(f"{damage[0]} Resuming from the last intact commit instead: after epoch "
                f"{state['epoch']} ({source}).")
        return state
    raise run_dir.DamagedFileError(
        f"{damage[0]} No earlier intact commit to fall back to: delete (or move away) the run "
        f"dir {str(paths.out)!r} to train from scratch.")


def _epoch_commits(state_dir: Path) -> list[Path]:
    """commit.json of each epoch directory, the newest first."""
    names = sorted((p.name for p in state_dir.iterdir() if EPOCH_DIR.fullmatch(p.name)),
                   key=lambda name: int(name.split("-")[1]), reverse=True)
    return [state_dir / name / COMMIT for name in names if (state_dir / name / COMMIT).is_file()]


# The fields of a commit record and their types.
_FIELDS = {"epoch": int, "dir": str, "best_dir": (str, type(None)), "wait": int,
           "stopped": bool, "history": list, "resumes": list, "files": dict}


def _read_commit(path: Path) -> dict:
    """The commit record in `path`, checked to be one (`DamagedFileError` naming it if not)."""
    state = run_dir.read_json(path)
    wrong = [name for name, kind in _FIELDS.items() if not _is(state.get(name), kind)]
    if not wrong and not all(isinstance(k, str) and isinstance(v, str)
                             for k, v in state["files"].items()):
        wrong = ["files"]
    if wrong or state["epoch"] < 1:
        raise run_dir.DamagedFileError(
            f"{path} is not a commit record of a training run (missing or invalid "
            f"{wrong or ['epoch']}): it was damaged, or written by another program or by an "
            f"older lru_keras, which recorded no sha256.")
    return state


def _is(value, kind) -> bool:
    """isinstance, except that True and False are not integers here."""
    return isinstance(value, kind) and isinstance(value, bool) == (kind is bool)


def _check_files(state_dir: Path, state: dict, source: Path) -> None:
    """DamagedFileError or ChecksumError naming the first file of `state` (read from
    `source`) that is missing or does not have its recorded sha256."""
    needed = [f"{state['dir']}/{TRAIN_STATE}"]
    if state["best_dir"] is not None:
        needed.append(f"{state['best_dir']}/{run_dir.BEST}")
    for name in needed:
        path = state_dir / name
        if name not in state["files"] or not EPOCH_DIR.fullmatch(name.split("/")[0]):
            raise run_dir.DamagedFileError(f"{source}: the commit of epoch {state['epoch']} "
                                           f"records no sha256 of {path}.")
        if not path.is_file():
            raise run_dir.DamagedFileError(f"training state file {path} is missing.")
        checksums.check(path, state["files"][name], "training state file")


def restore(model, paths: run_dir.RunPaths, state: dict) -> None:
    """Load the committed weights and optimizer state (checked by `read_state`) into a
    compiled `model`, and publish the committed best/last weights and log again (a kill may
    have cut their publication)."""
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
            "wait": 0, "stopped": False, "history": [], "resumes": [], "files": {}}

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
        files = {f"{name}/{TRAIN_STATE}": checksums.sha256_of(staging / TRAIN_STATE)}
        if improved:
            self._weights_view.save_weights(staging / run_dir.BEST)
            state["best_dir"] = name
            files[f"{name}/{run_dir.BEST}"] = checksums.sha256_of(staging / run_dir.BEST)
        elif state["best_dir"] is not None:
            best = f"{state['best_dir']}/{run_dir.BEST}"
            files[best] = state["files"][best]
        state["dir"] = name
        state["files"] = files
        run_dir.write_json(staging / COMMIT, state)
        final = self.paths.state / name
        shutil.rmtree(final, ignore_errors=True)  # left by an epoch that was never committed
        os.replace(staging, final)
        run_dir.write_json(self.paths.state / LATEST, state)  # the commit
        previous, self.state = self.state, state
        _publish(self._weights_view, self.paths, state, self.plot_title)
        _remove_uncommitted(self.paths.state, keep={
            previous["dir"], previous["best_dir"], state["dir"], state["best_dir"]})


def _publish(weights_view, paths, state, plot_title):
    """best.weights.h5, last.weights.h5 (each with its .sha256 sidecar, which the zoo's
    loaders check), log.csv and curves.png from the committed state. A kill between a file
    and its sidecar leaves them disagreeing until the same command runs again: it resumes
    and publishes again."""
    if state.get("best_dir"):
        _copy_atomic(paths.state / state["best_dir"] / run_dir.BEST, paths.best)
        checksums.write_sidecar(paths.best)
    with atomic.replacing(paths.last) as temporary:
        weights_view.save_weights(temporary)
    checksums.write_sidecar(paths.last)
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
