"""The run directory: what a training run writes, and the refusal to mix two runs in one.

Layout (`RunPaths`):

    config.json        the resolved configuration, its data splits, versions
    log.csv            one row per finished epoch (loss, accuracy, val_*, lr, images/s)
    tensorboard/       TensorBoard event files
    state/             the resumable state (weights + optimizer + epoch + history)
    best.weights.h5    weights of the epoch with the best validation accuracy
    last.weights.h5    weights after the last finished epoch
    curves.png         loss and accuracy per epoch
    summary.json       written at the end: test accuracy of the best weights, and more
    workers/<role>/    the same files for each non-chief worker of a multi-worker run

A directory whose config.json describes another configuration, or which holds files that no
run writes, is refused before anything is written in it, unless the run recorded there never
committed an epoch (see `check`). Every JSON file a run reads back is checked as it is read:
one that is not a JSON object (cut short, bytes flipped) is a `DamagedFileError` naming it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
from pathlib import Path

from lru_keras import atomic, checksums, extras

CONFIG = "config.json"
LOG = "log.csv"
TENSORBOARD = "tensorboard"
STATE = "state"
BEST = "best.weights.h5"
LAST = "last.weights.h5"
CURVES = "curves.png"
SUMMARY = "summary.json"
WORKERS = "workers"
LATEST = "latest.json"  # in state/: the last committed epoch (lru_keras.train.callbacks)
ARTIFACTS = {CONFIG, LOG, TENSORBOARD, STATE, BEST, LAST, CURVES, SUMMARY, WORKERS,
             *(checksums.sidecar_path(name).name for name in (BEST, LAST))}
# What exists only once a run has committed an epoch (or finished).
COMMITTED = (f"{STATE}/{LATEST}", LOG, BEST, LAST, SUMMARY)


class RunDirConflictError(ValueError):
    """The run directory belongs to another configuration (or is not a run directory)."""


class DamagedFileError(ValueError):
    """A file that a run or search wrote and reads back is not what it wrote: not valid JSON,
    cut short, or without the sha256 recorded for it."""


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """Where one process of a run writes: `out` is `root`, or root/workers/<role> for a
    non-chief worker of a multi-worker run."""

    root: Path
    out: Path

    def __getattr__(self, name):  # config, log, tensorboard, ... -> out / file name
        files = {"config": CONFIG, "log": LOG, "tensorboard": TENSORBOARD, "state": STATE,
                 "best": BEST, "last": LAST, "curves": CURVES, "summary": SUMMARY}
        if name in files:
            return self.out / files[name]
        raise AttributeError(name)


def paths_for(run_dir: str | os.PathLike, role) -> RunPaths:
    """The paths of this process (`role`: a `distribute.WorkerRole`)."""
    root = Path(run_dir).expanduser().absolute()
    out = root if role.is_chief else root / WORKERS / role.name
    return RunPaths(root=root, out=out)


def check(paths: RunPaths, identity: dict) -> str:
    """Refuse a directory of another run; return "new", "resume" or "complete".

    Reads only. `identity` is `config.identity(resolved config)`. A config.json of another
    configuration in a directory without any committed epoch is no conflict: the attempt
    that wrote it failed before it trained anything (a crash or Ctrl-C in its first epoch),
    and refusing would leave the user a directory that only the failed command can use.
    `record` replaces it.
    """
    for directory in dict.fromkeys((paths.root, paths.out)):
        recorded = read_record(directory, CONFIG, RunDirConflictError, "run dir")
        if recorded is not None:
            stored = recorded.get("identity")
            if stored != identity and has_commits(directory):
                raise RunDirConflictError(
                    f"run dir {str(directory)!r} belongs to another configuration "
                    f"({_differences(stored, identity)}); refusing to resume into it. Use "
                    f"another run dir, or delete this one to start over. Nothing was written.")
        elif directory.exists():
            foreign = sorted(p.name for p in directory.iterdir()
                             if p.name not in ARTIFACTS and not p.name.startswith("."))
            if foreign:
                raise RunDirConflictError(
                    f"run dir {str(directory)!r} is not empty and is not a training run "
                    f"directory (no {CONFIG}; it holds {foreign[:5]}); refusing to write in "
                    f"it. Choose an empty or new directory.")
    if paths.summary.is_file():
        return "complete"
    if (paths.state / LATEST).is_file():
        return "resume"
    return "new"


def has_commits(directory: Path) -> bool:
    """Whether the run in `directory` has committed an epoch (or published anything)."""
    return any((directory / name).exists() for name in COMMITTED)


def read_record(directory: Path, name: str, error: type, label: str) -> dict | None:
    """The JSON file `name` in `directory` that says what the run or search there computes
    (None if there is none); raises `error`, a message starting with `label`, if
    `directory` exists and is not a directory."""
    if directory.exists() and not directory.is_dir():
        raise error(f"{label} {str(directory)!r} exists and is not a directory")
    path = directory / name
    return read_json(path, _RECORD_ADVICE.format(label=label)) if path.is_file() else None


_RECORD_ADVICE = ("It records what the {label} holds: restore it from a backup, or delete the "
                  "{label} to start over.")


def record(paths: RunPaths, config: dict, identity: dict, plan: dict, environment: dict) -> None:
    """Write config.json, or check that the data splits of a run with committed epochs are
    still the same. Called once the whole configuration has been checked (model built,
    weights found, data prepared), so that a command that fails leaves no record behind.

    Without a committed epoch the run starts afresh: a record and TensorBoard events left by
    an attempt that failed in its first epoch are replaced (`check` explains why).
    """
    paths.out.mkdir(parents=True, exist_ok=True)
    if not has_commits(paths.out):
        for leftover in (paths.tensorboard, paths.state):
            shutil.rmtree(leftover, ignore_errors=True)
    elif paths.config.is_file():
        stored = read_json(paths.config, _RECORD_ADVICE.format(label="run dir"))
        if stored.get("data") != plan:
            raise RunDirConflictError(
                f"run dir {str(paths.out)!r} was trained on other data splits "
                f"({_differences(stored.get('data'), plan)}): was the dataset imported again "
                f"with other sizes? Refusing to resume; nothing was written.")
        return
    write_json(paths.config, {"identity": identity, "config": config, "data": plan,
                              "environment": environment})


def _differences(stored, current) -> str:
    if not isinstance(stored, dict) or not isinstance(current, dict):
        return f"stored {stored!r}, now {current!r}"
    keys = sorted(set(stored) | set(current))
    diffs = [f"{k}: {_brief(stored.get(k))} there, {_brief(current.get(k))} now"
             for k in keys if stored.get(k) != current.get(k)]
    return "; ".join(diffs)


def _brief(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_json(path: str | os.PathLike, advice: str = "") -> dict:
    """The JSON object in the file `path`; `DamagedFileError` naming the file (followed by
    `advice`, what the user can do) if it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DamagedFileError(f"{os.fspath(path)} is not valid JSON ({error}): it was cut "
                               f"short or damaged. {advice}".rstrip()) from None
    if not isinstance(value, dict):
        raise DamagedFileError(f"{os.fspath(path)} holds {type(value).__name__} JSON, not the "
                               f"object written there: it was damaged or replaced. "
                               f"{advice}".rstrip())
    return value


def write_json(path: str | os.PathLike, value) -> None:
    """Write JSON atomically (see `lru_keras.atomic`)."""
    atomic.write_text(path, json.dumps(value, indent=1) + "\n")


def write_csv(path: str | os.PathLike, history: list[dict]) -> None:
    """The epoch log as CSV (atomically): epoch first, then every key in first-seen order."""
    keys = ["epoch"]
    for row in history:
        keys += [k for k in row if k not in keys]
    with atomic.replacing(path) as temporary, open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in history:
            writer.writerow(row)


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of log.csv with numbers as floats (epoch as int)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v != ""}
            for row in rows]


def plot_curves(path: str | os.PathLike, history: list[dict], title: str,
                test_accuracy: float | None = None, best_epoch: int | None = None) -> None:
    """Writes `curves_figure` as a PNG to `path`."""
    figure = curves_figure(history, title, test_accuracy, best_epoch)
    with atomic.replacing(path) as temporary:
        figure.savefig(temporary, format="png")


def curves_figure(history: list[dict], title: str, test_accuracy: float | None = None,
                  best_epoch: int | None = None):
    """Training and validation loss and accuracy (%, as everywhere else) per epoch, the best
    weights' test accuracy as a dashed line and the best epoch as a dotted one (matplotlib's
    Agg backend)."""
    matplotlib = extras.require("matplotlib")
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] + 1 for row in history]
    figure = Figure(figsize=(10, 4), dpi=100)
    for position, metric, label, scale in ((1, "loss", "loss", 1),
                                           (2, "accuracy", "accuracy %", 100)):
        axes = figure.add_subplot(1, 2, position)
        for key, name in ((metric, "train"), (f"val_{metric}", "validation")):
            values = [None if row.get(key) is None else scale * row[key] for row in history]
            if any(v is not None for v in values):
                axes.plot(epochs, values, marker="o" if len(epochs) < 30 else None,
                          markersize=3, label=name)
        if metric == "accuracy" and test_accuracy is not None:
            axes.axhline(100 * test_accuracy, color="gray", linestyle="--",
                         label=f"test (best weights): {100 * test_accuracy:.2f}%")
        if best_epoch is not None:
            axes.axvline(best_epoch + 1, color="gray", linestyle=":", linewidth=1)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=9)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure
