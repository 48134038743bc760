"""`search(...)`: a KerasTuner search over LruNet's N (and width, dropout, shuffle) under a
device budget, resumable, on one machine or as KerasTuner's chief + workers.

The steps: resolve the configuration (the recipe's values filled in by
`lru_keras.train.config`), refuse a project directory of another search, hold a
class-balanced validation split out of the training split (`lru_keras.train.splits`; the test
split is never read), create the tuner (random, bayesian or hyperband), run the trials, and
on the chief (or the only process) write the results table and plot and save the best model.

What a trial does (`_BudgetedTuner.run_trial`): build the trial's model, measure params,
MFLOPs and (with a latency budget) int8 latency, and if it is over budget report it to the
oracle without training: objective `score` = -1 (below any accuracy, so it is never the
best) and metric `infeasible` = 1, with its measurements. Otherwise train it and report the
best epoch's validation accuracy as `score`, plus the measurements.

Failures are loud: KerasTuner catches a trial's exception, marks the trial failed and goes on
(without tensorboard installed, every trial fails that way and the search still "ends").
Here the first failed trial raises `SearchFailedError` with the trial's error, before the
oracle records it as ended, so the next run of the same search retries it.

Resuming: the same configuration in the same project directory reloads KerasTuner's state
(`overwrite=False`): finished trials are kept, an interrupted one runs again, and
`max_trials` may be raised to extend a finished search. Every JSON file of the search that is
read back and is damaged is refused naming the file; each trial's checkpoint and the best
model get a .sha256 sidecar, checked before they are loaded.

TensorBoard (`tensorboard --logdir <project dir>/tensorboard`): each trained trial logs to
tensorboard/<trial id>/execution0/ through KerasTuner's own integration, the
`keras.callbacks.TensorBoard` among a trial's callbacks, which KerasTuner points at that
folder and pairs with TensorBoard's HParams callback: epoch curves in train/ and validation/,
and the HParams session with the trial's hyperparameters. The trial's objective `score` (its
best epoch's validation accuracy; the curves hold each epoch's) and its params, MFLOPs and
latency are added as scalars of the session, so the HParams dashboard ranks trials as the
oracle does. A trial over budget is not trained and has no run. A trial that runs again after
an interruption first deletes its folder, so its events are the rerun's alone.

Distributed (KerasTuner's own mode): start the same search in several processes that share
the project directory, with KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT set in all of them
and KERASTUNER_TUNER_ID=chief in one (it serves the oracle over gRPC and trains nothing) and
a distinct id (tuner0, tuner1, ...) in each worker. The chief's `search` returns when the
workers have run all trials, and writes the results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import json
import math
import os
import shutil
import signal
import threading
import warnings
from pathlib import Path

import keras

from lru_keras import atomic, checksums, data, extras
from lru_keras.train import callbacks as train_callbacks
from lru_keras.train import check_batch_size, distribute, run_dir, splits
from lru_keras.train import config as train_config
from lru_keras.tune import report
from lru_keras.tune.budget import Budget, measure
from lru_keras.tune.hypermodel import LruNetHyperModel
from lru_keras.tune.space import SearchSpace

keras_tuner = extras.require("keras_tuner")  # the [tune] extra
from lru_keras.validation import require_at_most, require_int, require_positive_int

OBJECTIVE = "score"
INFEASIBLE_SCORE = -1.0
VALIDATION_METRIC = "val_accuracy"
TUNERS = ("random", "bayesian", "hyperband")
DEFAULT_MAX_TRIALS = 10
# No real search runs more: the default space holds 288 configurations, each trial trains at
# least an epoch, and KerasTuner rewrites its whole oracle state after every trial.
MAX_TRIALS = 1_000
DEFAULT_PROJECTS_DIR = "tune"
SEARCH_FILE = "search.json"
BEST_MODEL = "best_model.keras"
BEST_HYPERPARAMETERS = "best_hyperparameters.json"
# What to do about a damaged file of the search's saved state.
STATE_ADVICE = ("It is part of the search's saved state: delete the project dir, or run with "
                "overwrite=True (--overwrite), to start the search over.")
CALIBRATION_IMAGES = 64
# Fields that change how a search runs, not what it computes: a search may be resumed (or
# extended, for max_trials) with other values.
RUNTIME_FIELDS = ("max_trials", "project_dir", "data_dir", "verbose")
# Environment variables of KerasTuner's distributed mode.
ORACLE_IP, ORACLE_PORT, TUNER_ID = (
    "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID")


class SearchFailedError(RuntimeError):
    """A trial of the search raised; `cause` is the last line of its error, `details` the
    whole traceback."""

    def __init__(self, trial_id, cause, details=""):
        super().__init__(f"trial {trial_id} failed: {cause}")
        self.trial_id, self.cause, self.details = trial_id, cause, details


class SearchConflictError(ValueError):
    """The project directory holds another search (or files no search writes)."""


@dataclasses.dataclass(frozen=True)
class SearchConfig(train_config.TrainingOptions):
    """Everything that defines a search: the `TrainingOptions` each trial trains with (as in
    `lru_keras.train`, default recipe "short"; hyperband's max_epochs is `epochs`; the trials
    are scored on the `validation` images, so it may not be 0; `seed` also drives the tuner's
    draws, and initialises every trial alike), and

    tuner: "random", "bayesian" or "hyperband".
    max_trials: trials to run (default 10); with "hyperband" a cap on the trials its brackets
        would run (default: no cap). Raising it on a finished search extends the search.
    space: the `SearchSpace` (N, width, dropout, shuffle).
    budget: the `Budget` (max params, MFLOPs, int8 latency); trials over it are infeasible.
    project_dir: the project directory (None: tune/lrunet-<dataset>-<tuner>-<hash>).
    """

    recipe: str = "short"
    tuner: str = "random"
    max_trials: int | None = None
    space: SearchSpace = dataclasses.field(default_factory=SearchSpace)
    budget: Budget = dataclasses.field(default_factory=Budget)
    project_dir: str | None = None

    def to_dict(self) -> dict:
        return train_config.jsonable(dataclasses.asdict(self))


@dataclasses.dataclass
class SearchResult:
    """What `search` returns. On a worker of a distributed search only `project_dir`, `role`
    and `trials_run` are filled in: the chief writes the results."""

    project_dir: str
    role: str
    trials_run: list
    rows: list = dataclasses.field(default_factory=list)
    best: dict | None = None
    best_hyperparameters: dict | None = None
    best_model: keras.Model | None = None
    files: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        """Everything but the model, as JSON-able values."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if field.name != "best_model"}


def role() -> str:
    """"local", or "chief" / "worker" in KerasTuner's distributed mode, which is on when
    KERASTUNER_ORACLE_IP is set; the chief's KERASTUNER_TUNER_ID contains "chief"
    (KerasTuner's own rule)."""
    if ORACLE_IP not in os.environ:
        return "local"
    missing = [name for name in (ORACLE_PORT, TUNER_ID) if not os.environ.get(name)]
    if missing:
        raise ValueError(f"{ORACLE_IP} is set (distributed search) but {missing} "
                         f"{'is' if len(missing) == 1 else 'are'} not; set "
                         f"{TUNER_ID}=chief on one process and tuner0, tuner1, ... on the "
                         f"workers, and the same {ORACLE_PORT} everywhere")
    return "chief" if "chief" in os.environ[TUNER_ID] else "worker"


def resolve(config: SearchConfig) -> tuple[SearchConfig, train_config.TrainConfig]:
    """`config` with the recipe's training values filled in and every value checked, and the
    resolved `TrainConfig` each trial trains with."""
    if config.tuner not in TUNERS:
        raise ValueError(f"tuner={config.tuner!r} is not a known tuner; expected one of "
                         f"{list(TUNERS)}")
    if config.max_trials is not None:
        require_at_most("max_trials", require_positive_int("max_trials", config.max_trials),
                        MAX_TRIALS)
    require_int("seed", config.seed, 0)
    space = config.space
    if isinstance(space, dict):
        space = SearchSpace.from_dict(space)
    budget = Budget(**config.budget) if isinstance(config.budget, dict) else config.budget
    if not isinstance(space, SearchSpace) or not isinstance(budget, Budget):
        raise ValueError("space must be a SearchSpace (or its dict) and budget a Budget "
                         "(or its dict)")
    if budget.max_latency_ms is not None:
        extras.require_installed("ai_edge_litert")  # latency of the int8 file, with LiteRT
    if config.validation == 0:
        raise ValueError("validation=0: a search scores its trials on validation images held "
                         "out of the training split; hold out at least one")
    shared = {field.name: getattr(config, field.name)
              for field in dataclasses.fields(train_config.TrainingOptions)}
    training = train_config.resolve(train_config.TrainConfig(model="LruNet", **shared))
    resolved = dataclasses.replace(
        config, space=space, budget=budget, epochs=training.epochs,
        batch_size=training.batch_size, learning_rate=training.learning_rate,
        augment=training.augment)
    return resolved, training


def identity(config: SearchConfig) -> dict:
    """The part of a resolved config that defines what a search computes."""
    return {k: v for k, v in config.to_dict().items() if k not in RUNTIME_FIELDS}


def default_project_dir(config: SearchConfig) -> str:
    """tune/lrunet-<dataset>-<tuner>-<hash>: the same search, the same directory."""
    digest = hashlib.sha256(json.dumps(identity(config), sort_keys=True).encode()).hexdigest()
    return os.path.join(DEFAULT_PROJECTS_DIR,
                        f"lrunet-{config.dataset}-{config.tuner}-{digest[:8]}")


def check_project(project: Path, expected: dict) -> bool:
    """Refuse a project directory of another search, or one holding files of no search.
    Returns whether the search must start over there: a directory of another search in which
    no trial completed is replaced rather than refused (its attempt failed in its first
    trial, and refusing would leave the user a directory only the failed command can use;
    as `lru_keras.train.run_dir.check` does for a run without a committed epoch)."""
    recorded = run_dir.read_record(project, SEARCH_FILE, SearchConflictError, "project dir")
    if recorded is not None:
        stored = recorded.get("identity") or {}
        if stored != expected:
            if not _any_trial_completed(project):
                return True
            changed = sorted(k for k in set(stored) | set(expected)
                             if stored.get(k) != expected.get(k))
            raise SearchConflictError(
                f"project dir {str(project)!r} holds another search (different {changed}); "
                f"refusing to resume it. Use another project dir, or overwrite=True "
                f"(--overwrite) to start over.")
    elif project.exists() and any(not p.name.startswith(".") for p in project.iterdir()):
        raise SearchConflictError(f"project dir {str(project)!r} is not empty and holds no "
                                  f"{SEARCH_FILE}; choose an empty or new directory")
    return False


def _any_trial_completed(project: Path) -> bool:
    return any(run_dir.read_json(path, STATE_ADVICE).get("status") == "COMPLETED"
               for path in project.glob("trial_*/trial.json"))


def search(config: SearchConfig | None = None, *, overwrite: bool = False,
           **options) -> SearchResult:
    """Run (or resume) the search `config` (or keyword options of `SearchConfig`) describes.

    Returns a `SearchResult`: the table rows, the best trial (None if no trial within the
    budget completed), its hyperparameters and trained model, and the files written in the
    project dir (results.md/.csv/.json/.png, best_model.keras, best_hyperparameters.json, and
    the TensorBoard folder of the trials once one was trained).
    `overwrite=True` deletes the project's previous trials first. Raises `SearchFailedError`
    naming the first failed trial and its error.
    """
    # KerasTuner's trials log to TensorBoard ([tune]); the datasets ([data]); results.png
    # ([plots]): checked before any work.
    extras.require_installed("tensorboard", "tensorflow_datasets", "matplotlib")
    config = SearchConfig(**options) if config is None else dataclasses.replace(config, **options)
    config, training = resolve(config)
    this_role = role()
    project = Path(config.project_dir or default_project_dir(config)).expanduser().absolute()
    atomic.check_writable_folder(project, "project dir")
    plan = splits.plan_splits(config.dataset, validation=config.validation,
                              train_images=config.train_images, data_dir=config.data_dir)
    check_batch_size(training.batch_size, plan.train_images, 1)
    expected = {**identity(config), "data": plan.to_dict()}
    if not overwrite:
        # Only the chief (or the only process) starts over: a worker deleting the project
        # dir would delete the state the chief has begun to write.
        overwrite = check_project(project, expected) and this_role != "worker"

    steps_per_epoch = math.ceil(plan.train_images / training.batch_size)
    jit_compile = distribute.resolve_jit(training.jit_compile, distribute.gpu_count())
    hypermodel = LruNetHyperModel(config.space, training, steps_per_epoch, jit_compile)
    train_data = data.load(config.dataset, plan.train, batch_size=training.batch_size,
                           training=True, augment=training.augment, seed=config.seed,
                           data_dir=config.data_dir)
    validation_data = data.load(config.dataset, plan.validation,
                                batch_size=training.batch_size, data_dir=config.data_dir)
    calibration = (_calibration_images(config, plan)
                   if config.budget.max_latency_ms is not None else None)

    def measure_trial(model, workdir):
        return measure(model, config.budget, workdir=workdir, calibration_images=calibration,
                       dataset=config.dataset, data_dir=config.data_dir)

    with tuner_state_files():
        tuner = make_tuner(config, hypermodel, measure_trial, project, overwrite)
        if this_role != "worker":
            project.mkdir(parents=True, exist_ok=True)  # overwrite: KerasTuner removed it
            run_dir.write_json(project / SEARCH_FILE, {"identity": expected,
                                                       "config": config.to_dict()})
        with _quiet_optimizer_reload():
            tuner.search(train_data, validation_data=validation_data, epochs=training.epochs,
                         shuffle=False, verbose=config.verbose)  # the pipeline shuffles
    result = SearchResult(project_dir=str(project), role=this_role,
                          trials_run=list(tuner.trials_run))
    if this_role != "worker":
        check_trials(tuner.oracle.trials.values())
        _write_results(result, tuner, config, training, plan, project)
    return result


def _write_results(result: SearchResult, tuner, config: SearchConfig,
                   training: train_config.TrainConfig, plan: splits.SplitPlan,
                   project: Path) -> None:
    """Fill in `result` from the oracle's trials: the table and plot, and the best model and
    hyperparameters, each written to the project dir. The best trial's checkpoint is loaded
    (and checked) first, so that a damaged one changes no file."""
    result.rows = report.trial_rows(tuner.oracle.trials.values(), config.budget,
                                    training.epochs)
    result.best = report.best_row(result.rows)
    if result.best is not None:
        trial = tuner.oracle.get_trial(result.best["trial"])
        with _quiet_optimizer_reload():
            result.best_model = tuner.load_model(trial)
        result.best_hyperparameters = _best_hyperparameters(result.best, tuner.hypermodel,
                                                            trial, config)
    title = (f"LruNet search on {config.dataset} ({config.tuner}, {len(result.rows)} "
             f"trials, {plan.train_images} training / {plan.validation_images} validation "
             f"images)")
    result.files = report.write_tables(project, result.rows, config.budget, title,
                                       {"search": config.to_dict(), "data": plan.to_dict()})
    result.files["plot"] = report.plot(project / report.PLOT, result.rows, config.budget, title,
                                       chance=100 / data.info(config.dataset).num_classes)
    if result.best_model is not None:
        result.files.update(_save_best(project, result.best_model, result.best_hyperparameters))
    if tuner.tensorboard_dir.is_dir():
        result.files[report.TENSORBOARD] = str(tuner.tensorboard_dir)


def make_tuner(config: SearchConfig, hypermodel, measure_trial, project: Path,
               overwrite: bool = False):
    """The KerasTuner tuner of a resolved config, reloading the project's state if there is
    one (unless `overwrite`); its oracle's state changes are not cut by Ctrl-C
    (`_state_changes_complete`)."""
    tuner = _new_tuner(config, hypermodel, measure_trial, project, overwrite)
    _state_changes_complete(tuner.oracle)
    return tuner


def _state_changes_complete(oracle) -> None:
    """Makes each of the oracle's state changes (create, update and end a trial) one step
    that Ctrl-C does not cut: a SIGINT that arrives during one is raised when it returns.

    KerasTuner writes a new trial's trial.json, then oracle.json, which lists it as running.
    A search interrupted between the two (where Ctrl-C lands as soon as the trial's file
    appears) reloaded a trial that was neither finished nor running, so its resumption never
    ran it again and ended one trial short.
    """
    for name in ("create_trial", "update_trial", "end_trial"):
        setattr(oracle, name, _deferring_interrupts(getattr(oracle, name)))


def _deferring_interrupts(method):
    """`method`, with SIGINT held back until it returns (in the main thread, where Python
    takes signals; elsewhere it is `method` as it is)."""
    @functools.wraps(method)
    def call(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return method(*args, **kwargs)
        received = []
        previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
        try:
            return method(*args, **kwargs)
        finally:
            signal.signal(signal.SIGINT, previous)
            if received:
                signal.raise_signal(signal.SIGINT)  # to the handler of before, now

    return call


def _new_tuner(config: SearchConfig, hypermodel, measure_trial, project: Path, overwrite):
    common = dict(
        hypermodel=hypermodel, objective=keras_tuner.Objective(OBJECTIVE, direction="max"),
        # KerasTuner draws a random seed for seed=0, so 0 is shifted.
        seed=config.seed + 1, directory=str(project.parent), project_name=project.name,
        overwrite=overwrite, measure_trial=measure_trial, budget=config.budget)
    if config.tuner == "hyperband":
        tuner = BudgetedHyperband(max_epochs=config.epochs, **common)
        if config.max_trials is not None and isinstance(tuner.oracle, keras_tuner.Oracle):
            # Every oracle stops creating trials at max_trials; only Hyperband's constructor
            # lacks the argument (its brackets decide otherwise).
            tuner.oracle.max_trials = config.max_trials
        return tuner
    if config.tuner == "bayesian" and importlib.util.find_spec("sklearn") is None:
        raise ValueError("tuner='bayesian' needs scikit-learn (KerasTuner's Gaussian process), "
                         "which is not installed: pip install \"lru_keras[tune]\", or use "
                         "tuner='random' or 'hyperband'")
    tuner_class = {"random": BudgetedRandomSearch,
                   "bayesian": BudgetedBayesianOptimization}[config.tuner]
    return tuner_class(max_trials=config.max_trials or DEFAULT_MAX_TRIALS, **common)


def check_trials(trials) -> None:
    """Raise `SearchFailedError` for the first trial that failed or has no valid score."""
    for trial in sorted(trials, key=lambda t: t.trial_id):
        score = trial.score
        if trial.status in ("FAILED", "INVALID") or (
                trial.status == "COMPLETED" and (score is None or math.isnan(score))):
            cause = _cause(trial.message) or (f"status {trial.status} with score {score} "
                                              f"(did training diverge?)")
            raise SearchFailedError(trial.trial_id, cause, trial.message or "")


def _cause(message) -> str:
    """The last line of a traceback (the exception), with a hint for missing tensorboard."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    cause = lines[-1] if lines else ""
    if "tensorboard" in cause:
        cause += (" -- KerasTuner imports tensorboard in every trial, and TensorFlow 2.21 no "
                  "longer installs it: pip install tensorboard==2.21.0")
    return cause


class _ScoreFromValidation(keras.callbacks.Callback):
    """Copies each epoch's validation accuracy into the logs as the objective `score`, so
    that KerasTuner's checkpoint keeps the epoch of the best validation accuracy (the
    callbacks and the History of one fit share the logs)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and VALIDATION_METRIC in logs:
            logs[OBJECTIVE] = logs[VALIDATION_METRIC]


class _BudgetedTuner:
    """Mixin over a KerasTuner tuner: measure each trial before training, record a trial over
    budget as infeasible without training it, and stop the search at the first failed trial.

    `trials_run` lists the ids of the trials this process finished (trained, or measured and
    found over budget).
    """

    def __init__(self, *args, measure_trial, budget: Budget, **kwargs):
        self.measure_trial = measure_trial
        self.budget = budget
        self.trials_run = []
        super().__init__(*args, **kwargs)

    def run_trial(self, trial, *args, **kwargs):
        model = self.hypermodel.build(trial.hyperparameters)
        measured = self.measure_trial(model, self.get_trial_dir(trial.trial_id))
        metrics = {key: float(value) for key, value in measured.items() if value is not None}
        if self.budget.violations(measured):
            return {OBJECTIVE: INFEASIBLE_SCORE, report.INFEASIBLE_METRIC: 1.0, **metrics}
        continued = trial.hyperparameters.values.get("tuner/trial_id")  # Hyperband's
        if continued is not None:
            self._check_checkpoint(continued)
        # Before `_ScoreFromValidation`: TensorBoard would log `score` as a training curve.
        fit_callbacks = [*kwargs.pop("callbacks", []), self._tensorboard(trial),
                         _ScoreFromValidation()]
        histories = super().run_trial(trial, *args, callbacks=fit_callbacks, **kwargs)
        checkpoint = self._get_checkpoint_fname(trial.trial_id)
        if os.path.exists(checkpoint):  # none if no epoch had a score (diverged: NaN)
            checksums.write_sidecar(checkpoint)
        best = _best_epoch(histories[-1])
        session = self._get_tensorboard_dir(self.tensorboard_dir, trial.trial_id,
                                            len(histories) - 1)
        _write_scalars(session, {OBJECTIVE: best[OBJECTIVE], **metrics},
                       step=int(best["best_epoch"]) - 1)
        return {**best, report.INFEASIBLE_METRIC: 0.0, **metrics}

    @property
    def tensorboard_dir(self) -> Path:
        """<project dir>/tensorboard (named as a training run's): a folder per trained
        trial."""
        return Path(self.project_dir) / run_dir.TENSORBOARD

    def _tensorboard(self, trial) -> keras.callbacks.TensorBoard:
        """The TensorBoard callback of a trial, whose folder is first emptied of the events
        an interrupted attempt left. KerasTuner points it at <trial id>/execution<i> and adds
        TensorBoard's HParams callback beside it."""
        logs = self.tensorboard_dir / str(trial.trial_id)
        if logs.exists():
            shutil.rmtree(logs)
        return keras.callbacks.TensorBoard(str(self.tensorboard_dir), write_graph=False)

    def load_model(self, trial):
        self._check_checkpoint(trial.trial_id)
        return super().load_model(trial)

    def _check_checkpoint(self, trial_id):
        """ChecksumError naming the checkpoint of trial `trial_id` unless it has the sha256
        of its sidecar, written when the trial finished."""
        try:
            checksums.check_sidecar(self._get_checkpoint_fname(trial_id),
                                    f"checkpoint of trial {trial_id}")
        except checksums.ChecksumError as error:
            raise checksums.ChecksumError(f"{error} {STATE_ADVICE}") from None

    def on_trial_end(self, trial):
        if trial.status != "COMPLETED":  # raised inside the trial; KerasTuner caught it
            raise SearchFailedError(trial.trial_id, _cause(trial.message), trial.message or "")
        super().on_trial_end(trial)
        check_trials([self.oracle.get_trial(trial.trial_id)])
        self.trials_run.append(trial.trial_id)


def _write_scalars(logdir, values: dict, step: int) -> None:
    """`values` as TensorBoard scalars at `step` in `logdir`, the run of a trial's HParams
    session, where the HParams dashboard shows each as a metric of the trial."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        for name, value in values.items():
            tf.summary.scalar(name, value, step=step)
    writer.close()


def _best_epoch(history) -> dict:
    """Metrics of the epoch with the best validation accuracy (NaN counts as worst)."""
    logs, epochs = history.history, history.epoch
    if VALIDATION_METRIC not in logs:
        raise ValueError(f"the trial's fit reported no {VALIDATION_METRIC!r} (got "
                         f"{sorted(logs)}); a search needs validation data")
    values = logs[VALIDATION_METRIC]
    best = max(range(len(values)),
               key=lambda i: -math.inf if math.isnan(values[i]) else values[i])
    metrics = {name: float(series[best]) for name, series in logs.items()}
    metrics[OBJECTIVE] = float(values[best])
    metrics["best_epoch"] = float(epochs[best] + 1)
    return metrics


class BudgetedRandomSearch(_BudgetedTuner, keras_tuner.RandomSearch):
    """`keras_tuner.RandomSearch` with device budgets and loud failures."""


class BudgetedBayesianOptimization(_BudgetedTuner, keras_tuner.BayesianOptimization):
    """`keras_tuner.BayesianOptimization` with device budgets and loud failures."""


class BudgetedHyperband(_BudgetedTuner, keras_tuner.Hyperband):
    """`keras_tuner.Hyperband` with device budgets and loud failures."""


@contextlib.contextmanager
def tuner_state_files():
    """Within it, KerasTuner's JSON files (tuner0.json, oracle.json, trial_*/trial.json,
    build_config.json) are written atomically (a temporary file renamed over the target) and
    read with a clear error naming a damaged file (`run_dir.read_json`).

    KerasTuner writes them in place, so a search killed mid-write left an empty tuner0.json
    and the same command could not resume ("Expecting value: line 1 column 1", naming no
    file). All of them go through KerasTuner's `utils.save_json` and `utils.load_json`,
    replaced here while a search runs and restored afterwards.
    """
    from keras_tuner.src import utils

    in_place = utils.save_json, utils.load_json

    def save_json(path, value):
        text = json.dumps(value)
        atomic.write_text(path, text)
        return text  # what KerasTuner's save_json returns

    def load_json(path):
        return run_dir.read_json(path, STATE_ADVICE)

    utils.save_json, utils.load_json = save_json, load_json
    try:
        yield
    finally:
        utils.save_json, utils.load_json = in_place


@contextlib.contextmanager
def _quiet_optimizer_reload():
    """Silence Keras's warning that a trial checkpoint's optimizer variables are not loaded:
    KerasTuner reloads checkpoints into freshly compiled models (the best model, and the
    trials Hyperband continues), whose optimizer starts afresh by design."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        yield


def _calibration_images(config: SearchConfig, plan: splits.SplitPlan):
    """Training images (never validation or test) to calibrate the int8 latency export."""
    batches = data.load(config.dataset, plan.train, batch_size=CALIBRATION_IMAGES,
                        data_dir=config.data_dir)
    images, _ = next(iter(batches))
    return images.numpy()


def _best_hyperparameters(best: dict, hypermodel: LruNetHyperModel, trial,
                          config: SearchConfig) -> dict:
    return {
        "trial": best["trial"],
        "hyperparameters": {name: best[name] for name in ("reuse", "width", "dropout",
                                                          "shuffle")},
        "builder": "LruNet",
        "builder_arguments": hypermodel.builder_arguments(trial.hyperparameters),
        "val_accuracy": best["val_accuracy"], "params": best["params"],
        "mflops": best["mflops"], "latency_ms": best["latency_ms"], "epochs": best["epochs"],
        "dataset": config.dataset, "recipe": config.recipe, "model_file": BEST_MODEL,
    }


def _save_best(project: Path, model, hyperparameters: dict) -> dict:
    """best_model.keras (the trained model, without optimizer, with its .sha256 sidecar) and
    best_hyperparameters.json, each written atomically."""
    path = project / BEST_MODEL
    with atomic.replacing(path) as temporary:
        train_callbacks.model_only(model).save(temporary)
    checksums.write_sidecar(path)
    run_dir.write_json(project / BEST_HYPERPARAMETERS, hyperparameters)
    return {"best_model": str(path), "best_hyperparameters": str(project / BEST_HYPERPARAMETERS)}

