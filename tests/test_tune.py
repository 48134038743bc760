"""Tests of lru_keras.tune: a search under a budget, its table, plot and TensorBoard logs, the
best model, loud failures, resume after a kill, KerasTuner's distributed mode, the command
line.

Real images only: 400 Fashion-MNIST training images (300 train + 100 held out for
validation) imported into pytest's tmp TFDS dir; tiny models (width 0.125 / 0.25, N 1..2,
1 epoch; 2 in the TensorBoard test, which counts steps). The resume and distributed tests
start processes of their own.
"""

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from lru_keras import analysis, checksums, data
from lru_keras.cli import main
from lru_keras.cli.tune import TUNER_CHOICES
from lru_keras.train import plan_splits
from lru_keras.tune import (
    TUNERS, Budget, SearchFailedError, SearchSpace, search)
from lru_keras.tune import report
from lru_keras.tune import run as tune_run
from lru_keras.tune.budget import format_count
from lru_keras.tune.space import parse_numbers, parse_reuse, parse_shuffle
from lru_keras.zoo import LruNet

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300
# 8 configurations; every width-0.125 model has < 6k parameters, every width-0.25 one > 13k.
SPACE = SearchSpace(reuse=(1, 2), width=(0.125, 0.25), dropout=(0.0,), shuffle=(True, False))
MAX_PARAMS = 10_000
# The resume test runs the bayesian tuner where scikit-learn (which it needs) is installed.
RESUME_TUNER = "bayesian" if importlib.util.find_spec("sklearn") else "random"
TRAINING = dict(dataset="fashion_mnist", epochs=1, batch_size=64, validation=100,
                train_images=300, verbose=0)


@pytest.fixture(scope="module")
def fashion_dir(fashion_mnist_dir):
    """TFDS dir with 400 real Fashion-MNIST training images and 100 test images."""
    return fashion_mnist_dir(400, 100)


@pytest.fixture(scope="module")
def searched(fashion_dir, tmp_path_factory):
    """A random search of 5 trials of SPACE under MAX_PARAMS: (result, project dir)."""
    project = tmp_path_factory.mktemp("search") / "project"
    result = search(tuner="random", max_trials=5, space=SPACE,
                    budget=Budget(max_params=MAX_PARAMS), project_dir=str(project),
                    data_dir=str(fashion_dir), **TRAINING)
    return result, project


def _lrunet(row):
    return LruNet(reuse=row["reuse"], width=row["width"], shuffle=row["shuffle"],
                  dropout=row["dropout"], input_shape=(28, 28, 1), classes=10)


def _trial_files(project):
    return sorted(project.glob("trial_*/trial.json"))


def _tensorboard_run(folder):
    """The events of one TensorBoard run (the event files in `folder`, not its subfolders),
    every event kept: a run written twice holds each step twice."""
    from tensorboard.backend.event_processing import event_accumulator

    run = event_accumulator.EventAccumulator(
        str(folder), size_guidance={event_accumulator.TENSORS: 0})
    run.Reload()
    return run


def _scalar(run, tag):
    """(steps, values) of a scalar of a run (TF2 summaries store scalars as tensors)."""
    from tensorboard.util import tensor_util

    events = run.Tensors(tag)
    return ([event.step for event in events],
            [float(tensor_util.make_ndarray(event.tensor_proto)) for event in events])


def _hparams_session(run):
    """(number of session starts, group name, {hyperparameter: value}) of the HParams
    session a run holds."""
    from tensorboard.plugins.hparams import metadata

    tag = metadata.SESSION_START_INFO_TAG
    info = metadata.parse_session_start_info_plugin_data(
        run.SummaryMetadata(tag).plugin_data.content)
    values = {name: getattr(value, value.WhichOneof("kind"))
              for name, value in info.hparams.items()}
    return len(run.Tensors(tag)), info.group_name, values


# --- A search under a budget ------------------------------------------------------------------

def test_search_of_five_trials_saves_the_best_model_and_its_hyperparameters(searched,
                                                                             fashion_dir):
    result, project = searched
    assert [row["trial"] for row in result.rows] == ["0", "1", "2", "3", "4"]
    ok = [row for row in result.rows if row["status"] == "ok"]
    assert ok and result.best == max(ok, key=lambda row: row["val_accuracy"])

    saved = json.loads((project / "best_hyperparameters.json").read_text())
    assert saved == result.best_hyperparameters
    assert saved["trial"] == result.best["trial"]
    assert saved["hyperparameters"] == {k: result.best[k] for k in ("reuse", "width",
                                                                    "dropout", "shuffle")}
    arguments = saved["builder_arguments"]
    assert arguments["classes"] == 10 and arguments["input_shape"] == [28, 28, 1]
    rebuilt = LruNet(**arguments)
    assert analysis.count_parameters(rebuilt)["trainable"] == result.best["params"]

    # The saved model is the trained one: it reproduces the trial's validation accuracy, and
    # reloading it gives identical predictions.
    loaded = keras.saving.load_model(project / "best_model.keras")
    validation = plan_splits("fashion_mnist", validation=100, train_images=300,
                             data_dir=fashion_dir).validation
    images, labels = next(iter(data.load("fashion_mnist", validation, batch_size=100,
                                         data_dir=fashion_dir)))
    predictions = loaded.predict(images, verbose=0)
    np.testing.assert_array_equal(predictions, result.best_model.predict(images, verbose=0))
    accuracy = float(np.mean(predictions.argmax(-1) == labels.numpy()))
    assert accuracy == pytest.approx(result.best["val_accuracy"], abs=1e-6)


def test_results_table_and_plot_list_every_trial_with_its_real_counts(searched):
    result, project = searched
    trial_ids = sorted(json.loads(f.read_text())["trial_id"] for f in _trial_files(project))
    assert trial_ids == [row["trial"] for row in result.rows]

    csv_rows = (project / "results.csv").read_text().splitlines()
    assert csv_rows[0].split(",") == list(report.COLUMNS) and len(csv_rows) == 1 + 5
    table = (project / "results.md").read_text().splitlines()
    body = [line for line in table if line.startswith("| ") and not line.startswith("| trial")]
    assert [line.split(" | ")[0][2:] for line in body] == trial_ids
    stored = json.loads((project / "results.json").read_text())
    assert stored["rows"] == result.rows and stored["best"] == result.best

    for row in result.rows:
        model = _lrunet(row)
        assert row["params"] == analysis.count_parameters(model)["trainable"]
        assert row["mflops"] == pytest.approx(analysis.count_macs(model) / 1e6, rel=1e-9)
        assert f"| {row['params']:,} | {row['mflops']:.3f} |" in body[int(row["trial"])]

    png = (project / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_trial_checkpoints_and_the_best_model_are_published_with_sidecars(searched):
    """Each trained trial's checkpoint and best_model.keras get a .sha256 sidecar; the
    checkpoints' are checked before KerasTuner loads them."""
    result, project = searched
    trained = [row["trial"] for row in result.rows if row["status"] == "ok"]
    for trial in trained:
        checkpoint = project / f"trial_{trial}" / "checkpoint.weights.h5"
        assert checksums.check_sidecar(checkpoint)
    assert checksums.check_sidecar(project / "best_model.keras")


def test_trial_over_max_params_is_recorded_infeasible_and_never_best(searched):
    result, project = searched
    infeasible = [row for row in result.rows if row["status"] != "ok"]
    assert infeasible, "the seeded search drew no width-0.25 model"
    for row in infeasible:
        assert row["params"] > MAX_PARAMS and row["width"] == 0.25
        assert row["status"] == f"infeasible (params {format_count(row['params'])} > 10k)"
        assert row["val_accuracy"] is None
        trial = json.loads((project / f"trial_{row['trial']}" / "trial.json").read_text())
        assert trial["status"] == "COMPLETED" and trial["score"] == -1.0
        assert not (project / f"trial_{row['trial']}" / "checkpoint.weights.h5").exists()
        assert not (project / "tensorboard" / row["trial"]).exists()  # never trained
    for row in result.rows:
        if row["status"] == "ok":
            assert row["params"] <= MAX_PARAMS and 0 <= row["val_accuracy"] <= 1
            assert (project / "tensorboard" / row["trial"] / "execution0").is_dir()
    assert result.best["status"] == "ok" and result.best["params"] <= MAX_PARAMS


def test_latency_budget_measures_the_int8_tflite_and_marks_slow_trials(fashion_dir, tmp_path):
    result = search(tuner="random", max_trials=1,
                    space=SearchSpace(reuse=(1,), width=(0.125,), dropout=(0.0,),
                                      shuffle=(True,)),
                    budget=Budget(max_latency_ms=1e-4), project_dir=str(tmp_path / "p"),
                    data_dir=str(fashion_dir), **TRAINING)
    (row,) = result.rows
    assert row["latency_ms"] > 1e-4
    assert row["status"] == f"infeasible (latency {row['latency_ms']:.3g} ms > 0.0001 ms)"
    spec = json.loads((tmp_path / "p" / "trial_0" / "model.int8.json").read_text())
    assert "int8" in json.dumps(spec)
    assert result.best is None and result.best_model is None
    assert not (tmp_path / "p" / "best_model.keras").exists()


def test_each_trial_logs_its_curves_and_hparams_session_to_tensorboard(fashion_dir, tmp_path,
                                                                       capsys):
    """KerasTuner's TensorBoard integration, per trial: a run whose HParams session holds the
    trial's hyperparameters as the oracle recorded them and its objective `score` (the best
    epoch's validation accuracy, at that epoch's step), and the epoch curves, a step per
    epoch. The command line prints the command that shows the folder."""
    epochs = 2
    project = tmp_path / "p"
    argv = _cli_args(project, fashion_dir, "--max-trials", "2", "--reuse", "1,2", "--width",
                     "0.125", "--shuffle", "on", "--epochs", str(epochs))
    argv.remove("--json")
    assert main(argv) == 0
    folder = project / "tensorboard"
    assert f"\ntensorboard: tensorboard --logdir {folder}  (" in capsys.readouterr().out

    trials = [json.loads(path.read_text()) for path in _trial_files(project)]
    assert sorted(path.name for path in folder.iterdir()) == [t["trial_id"] for t in trials]
    assert trials[0]["hyperparameters"]["values"] != trials[1]["hyperparameters"]["values"]
    for trial in trials:
        session = folder / trial["trial_id"] / "execution0"
        run = _tensorboard_run(session)
        assert _hparams_session(run) == (1, trial["trial_id"],
                                         trial["hyperparameters"]["values"])
        train = _tensorboard_run(session / "train")
        assert "epoch_score" not in train.Tags()["tensors"]  # the objective is not a curve
        loss_steps, _ = _scalar(train, "epoch_loss")
        accuracy_steps, accuracies = _scalar(_tensorboard_run(session / "validation"),
                                             "epoch_accuracy")
        assert loss_steps == accuracy_steps == list(range(epochs))
        score_steps, scores = _scalar(run, "score")
        assert scores == [pytest.approx(trial["score"], rel=1e-6)]
        assert scores == [pytest.approx(max(accuracies), rel=1e-6)]
        assert score_steps == [accuracies.index(max(accuracies))]


# --- Failures are loud ------------------------------------------------------------------------

def test_failed_trial_fails_the_search_naming_the_cause_and_is_retried_next_run(
        fashion_dir, tmp_path, monkeypatch):
    """Without tensorboard every KerasTuner trial fails inside its TensorBoard setup; the
    search must raise with that cause, and the next run retries the trial."""
    options = dict(tuner="random", max_trials=1,
                   space=SearchSpace(reuse=(1,), width=(0.125,), dropout=(0.0,),
                                     shuffle=(True,)),
                   project_dir=str(tmp_path / "p"), data_dir=str(fashion_dir), **TRAINING)
    monkeypatch.setitem(sys.modules, "tensorboard.plugins.hparams", None)  # "not installed"
    with pytest.raises(SearchFailedError, match="tensorboard") as failure:
        search(**options)
    assert failure.value.trial_id == "0"
    assert "pip install tensorboard" in str(failure.value)
    assert "Traceback" in failure.value.details
    assert not (tmp_path / "p" / "results.md").exists()

    # No trial completed: a search of another configuration may take the directory over.
    recorded = json.loads((tmp_path / "p" / "search.json").read_text())["identity"]
    assert tune_run.check_project(tmp_path / "p", {**recorded, "seed": 1}) is True

    monkeypatch.delitem(sys.modules, "tensorboard.plugins.hparams")
    result = search(**options)
    assert result.trials_run == ["0"] and result.rows[0]["status"] == "ok"
    with pytest.raises(tune_run.SearchConflictError, match="different \\['seed'\\]"):
        tune_run.check_project(tmp_path / "p", {**recorded, "seed": 1})


def test_failed_trial_check_names_trials_without_a_valid_score():
    class Trial:
        trial_id, status, score, message = "3", "COMPLETED", float("nan"), None

    with pytest.raises(SearchFailedError, match="trial 3 failed: status COMPLETED with "
                                                "score nan"):
        tune_run.check_trials([Trial()])


# --- Resume -----------------------------------------------------------------------------------

def _env(**extra):
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path, TF_CPP_MIN_LOG_LEVEL="3")
    for name in (tune_run.ORACLE_IP, tune_run.ORACLE_PORT, tune_run.TUNER_ID):
        env.pop(name, None)
    env.update(extra)
    return env


def _start(argv, log, **env):
    """`lru-keras ARGV` in a process group of its own; stdout piped, stderr to `log`."""
    with open(log, "w") as stderr:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "lru_keras.cli", *argv],
                                env=_env(**env), stdout=subprocess.PIPE, stderr=stderr,
                                text=True, start_new_session=True)


def _kill(process):
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def _cli_args(project, fashion_dir, *extra):
    return ["tune", "--dataset", "fashion_mnist", "--epochs", "1", "--batch-size", "64",
            "--validation", "100", "--train-images", "300", "--dropout", "0",
            "--project-dir", str(project), "--data-dir", str(fashion_dir), "--silent",
            "--json", *extra]


def test_tuner_state_files_are_replaced_whole_and_read_naming_the_file(tmp_path, monkeypatch):
    """KerasTuner writes trial.json, oracle.json and tuner0.json in place: a kill mid-write
    once left an empty tuner0.json that the resuming command could not read, with an error
    naming no file. Within `tuner_state_files` (what `search` runs in) a save killed before
    its rename leaves the previous file whole, a finished save reloads, a damaged file is a
    ValueError naming it, and afterwards KerasTuner's own functions are back."""
    import keras_tuner
    from keras_tuner.src import utils
    from keras_tuner.src.engine import trial as trial_module

    from lru_keras import atomic

    in_place = utils.save_json, utils.load_json
    path = tmp_path / "trial.json"
    hyperparameters = keras_tuner.HyperParameters()
    hyperparameters.Fixed("reuse", 4)
    trial = trial_module.Trial(hyperparameters, trial_id="3", status="COMPLETED")
    with tune_run.tuner_state_files():
        trial.save(str(path))
        assert trial_module.Trial.load(str(path)).hyperparameters.get("reuse") == 4
        before = path.read_bytes()

        def killed(temporary, target):
            raise KeyboardInterrupt  # the process dies between writing and renaming

        with monkeypatch.context() as patch:
            patch.setattr(atomic, "publish", killed)
            trial.hyperparameters.Fixed("width", 0.5)
            with pytest.raises(KeyboardInterrupt):
                trial.save(str(path))
        assert path.read_bytes() == before
        path.write_bytes(before[:len(before) // 2])
        with pytest.raises(ValueError, match=f"{path} is not valid JSON .*overwrite=True"):
            trial_module.Trial.load(str(path))
    assert (utils.save_json, utils.load_json) == in_place


def test_interrupted_search_resumes_without_redoing_finished_trials(fashion_dir, tmp_path,
                                                                   capsys):
    project = tmp_path / "p"
    argv = _cli_args(project, fashion_dir, "--tuner", RESUME_TUNER, "--max-trials", "2",
                     "--reuse", "1", "--width", "0.125")
    log = tmp_path / "interrupted.log"
    process = _start(argv, log)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (project / "trial_1" / "trial.json").exists():  # trial 0 has ended
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "trial 0 did not finish in time"
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: one line, at once
        assert process.wait(timeout=10) == 130
        assert log.read_text().splitlines()[-1].startswith("lru-keras: error: interrupted; ")
    finally:
        _kill(process)
    first = project / "trial_0" / "trial.json"
    checkpoint = project / "trial_0" / "checkpoint.weights.h5"
    before = (first.read_bytes(), first.stat().st_mtime_ns, checkpoint.stat().st_mtime_ns)
    assert json.loads(first.read_text())["status"] == "COMPLETED"
    # The killed trial's own events, as if it had trained before the kill (trial 0's copied).
    tensorboard = project / "tensorboard"
    shutil.copytree(tensorboard / "0", tensorboard / "1", dirs_exist_ok=True)
    events_before = {path: path.stat().st_mtime_ns for path in (tensorboard / "0").rglob("*")}

    assert main(argv) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["trials_run"] == ["1"]  # only the trial that was killed, again
    assert [row["trial"] for row in resumed["rows"]] == ["0", "1"]
    assert all(row["status"] == "ok" for row in resumed["rows"])
    assert (first.read_bytes(), first.stat().st_mtime_ns,
            checkpoint.stat().st_mtime_ns) == before
    # TensorBoard: trial 0's run as it was; trial 1's written once, by its rerun alone.
    assert {path: path.stat().st_mtime_ns
            for path in (tensorboard / "0").rglob("*")} == events_before
    rerun = tensorboard / "1" / "execution0"
    drawn = json.loads((project / "trial_1" / "trial.json").read_text())["hyperparameters"]
    assert _hparams_session(_tensorboard_run(rerun)) == (1, "1", drawn["values"])
    assert _scalar(_tensorboard_run(rerun / "train"), "epoch_loss")[0] == [0]

    assert main(argv) == 0  # finished: nothing runs again
    assert json.loads(capsys.readouterr().out)["trials_run"] == []


# --- Distributed: KerasTuner's chief + workers ------------------------------------------------

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_distributed_search_with_a_chief_and_two_workers_on_localhost(fashion_dir, tmp_path):
    """Three TensorFlow processes (chief and two workers): the full tier only. How the 4
    trials split between the workers depends on scheduling, so only the split's union and
    disjointness are asserted."""
    project = tmp_path / "p"
    argv = _cli_args(project, fashion_dir, "--max-trials", "4", "--reuse", "1,2",
                     "--width", "0.125,0.25", "--shuffle", "on",
                     "--max-params", str(MAX_PARAMS))
    oracle = {tune_run.ORACLE_IP: "127.0.0.1",
              tune_run.ORACLE_PORT: str(_free_port())}
    names = ("chief", "tuner0", "tuner1")
    logs = {name: tmp_path / f"{name}.log" for name in names}
    processes = {name: _start(argv, logs[name], **oracle, **{tune_run.TUNER_ID: name})
                 for name in names}
    outputs = {}
    try:
        deadline = time.monotonic() + TIMEOUT
        for name in ("tuner0", "tuner1", "chief"):
            remaining = max(deadline - time.monotonic(), 1)
            outputs[name] = processes[name].communicate(timeout=remaining)[0]
            assert processes[name].returncode == 0, f"{name}: {logs[name].read_text()[-3000:]}"
    finally:
        for process in processes.values():
            _kill(process)

    chief = json.loads(outputs["chief"])
    workers = [json.loads(outputs[name]) for name in ("tuner0", "tuner1")]
    assert chief["role"] == "chief" and chief["trials_run"] == []
    assert [w["role"] for w in workers] == ["worker", "worker"]
    ran = [set(w["trials_run"]) for w in workers]
    assert not ran[0] & ran[1] and ran[0] | ran[1] == {"0", "1", "2", "3"}

    rows = chief["rows"]
    assert sorted((row["reuse"], row["width"]) for row in rows) == [
        (1, 0.125), (1, 0.25), (2, 0.125), (2, 0.25)]
    for row in rows:
        assert row["params"] == analysis.count_parameters(_lrunet(row))["trainable"]
        assert row["status"] == ("ok" if row["width"] == 0.125 else
                                 f"infeasible (params {format_count(row['params'])} > 10k)")
    assert chief["best"]["width"] == 0.125
    assert (project / "best_model.keras").is_file() and (project / "results.png").is_file()


# --- Command line -----------------------------------------------------------------------------

@pytest.mark.slow  # the library path it drives is in the fast tier
def test_cli_hyperband_search_continues_its_best_trial_and_prints_the_table(
        fashion_dir, tmp_path, capsys):
    project = tmp_path / "p"
    argv = _cli_args(project, fashion_dir, "--tuner", "hyperband", "--max-trials", "4",
                     "--epochs", "3", "--reuse", "1", "--width", "0.125,0.25,0.375",
                     "--shuffle", "on", "--max-params", str(MAX_PARAMS))
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    rows = result["rows"]
    assert [row["trial"] for row in rows] == ["0", "1", "2", "3"]
    assert [row["epochs"] for row in rows] == [1, 1, 1, 3]  # Hyperband's two rounds
    # Round 1 continues the best of round 0, the one model within the budget.
    assert sorted(row["width"] for row in rows[:3]) == [0.125, 0.25, 0.375]
    assert [row["width"] for row in rows if row["status"] == "ok"] == [0.125, 0.125]
    assert rows[3]["val_accuracy"] is not None and result["best"]["width"] == 0.125
    assert result["best"]["params"] <= MAX_PARAMS

    argv.remove("--json")
    assert main(argv) == 0  # finished: prints the table again, trains nothing
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line[:1].isdigit()]
    assert len(table) == 4 and out.count("infeasible (params") == 2
    assert f"best: trial {result['best']['trial']}: N=1, width 0.125" in out


@pytest.mark.parametrize("extra, message", [
    (["--tuner", "grid"], "argument --tuner: invalid choice: 'grid' (choose from 'random', "
                          "'bayesian', 'hyperband')"),
    (["--reuse", "0-20"], "argument --reuse: reuse=0: N must be an integer in 1..16"),
    (["--reuse", "a-b"], "argument --reuse: reuse='a-b': expected integers and ranges"),
    (["--width", "0.1"], "argument --width: width=0.1: expected a positive multiple of 0.125"),
    (["--dropout", "1"], "argument --dropout: dropout=1.0: expected a number in [0, 1)"),
    (["--shuffle", "maybe"], "argument --shuffle: invalid choice: 'maybe' (choose from "
                             "'both', 'off', 'on')"),
    (["--max-params", "-5"], "argument --max-params: expected a positive integer, got '-5'"),
    (["--max-mflops", "0"], "argument --max-mflops: expected a positive number, got '0'"),
    (["--max-trials", "0"], "argument --max-trials: expected a positive integer, got '0'"),
    (["--max-trials", "100000"], "`max_trials`=100000 is too large: at most 1000"),
    (["--project-dir", "/sys/lru_keras_test_project"],
     "project dir '/sys/lru_keras_test_project' is not writable"),
])
def test_cli_bad_arguments_exit_2_naming_the_argument(extra, message, capsys):
    assert main(["tune", "--dataset", "fashion_mnist", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err, err


def test_cli_refuses_a_project_dir_of_another_search(searched, fashion_dir, capsys):
    _, project = searched
    argv = _cli_args(project, fashion_dir, "--tuner", "bayesian", "--max-trials", "5",
                     "--reuse", "1,2", "--width", "0.125,0.25", "--max-params",
                     str(MAX_PARAMS))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds another search (different ['tuner'])" in err[0]


def test_cli_tuner_choices_are_the_library_tuners():
    assert TUNER_CHOICES == TUNERS


# --- Space and budget -------------------------------------------------------------------------

def test_search_space_parses_and_checks_values():
    assert parse_reuse("1-4,8,16") == (1, 2, 3, 4, 8, 16)
    assert parse_numbers("width", "1,0.25,0.25") == (0.25, 1.0)
    assert parse_shuffle("both") == (True, False) and parse_shuffle("off") == (False,)
    assert SearchSpace().reuse == tuple(range(1, 17))
    assert SearchSpace(shuffle=(False, True)).shuffle == (True, False)
    assert SPACE.size() == 8
    with pytest.raises(ValueError, match="reuse=17: N must be an integer in 1..16"):
        SearchSpace(reuse=(1, 17))
    with pytest.raises(ValueError, match="width=0.3: expected a positive multiple of 0.125"):
        SearchSpace(width=(0.3,))
    with pytest.raises(ValueError, match=r"needs at least one dropout"):
        SearchSpace(dropout=())
    with pytest.raises(ValueError, match="shuffle=1: expected True or False"):
        SearchSpace(shuffle=(1,))


def test_search_space_declares_fixed_choice_and_boolean_hyperparameters():
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    values = SearchSpace(reuse=(2, 4), width=(0.5,), dropout=(0.0, 0.5)).declare(hp)
    assert values == {"reuse": 2, "width": 0.5, "dropout": 0.0, "shuffle": True}
    kinds = {p.name: type(p).__name__ for p in hp.space}
    assert kinds == {"reuse": "Choice", "width": "Fixed", "dropout": "Choice",
                     "shuffle": "Boolean"}


def test_budget_checks_limits_and_names_what_is_exceeded():
    budget = Budget(max_params=200_000, max_mflops=30, max_latency_ms=1.5)
    measured = {"params": 210_282, "mflops": 35.5, "latency_ms": 1.2}
    assert budget.violations(measured) == ["params 210.3k > 200k", "MFLOPs 35.5 > 30"]
    assert budget.status({"params": 200_000, "mflops": 30, "latency_ms": 1.5}) == "ok"
    assert budget.describe() == "params <= 200k, MFLOPs <= 30, latency <= 1.5 ms"
    assert Budget().describe() == "none" and Budget().status(measured) == "ok"
    with pytest.raises(ValueError, match="`max_params` must be a positive integer, got 0"):
        Budget(max_params=0)
    with pytest.raises(ValueError, match="max_mflops=-1 must be a positive number"):
        Budget(max_mflops=-1)


def _tuner(kind, project, max_trials=7):
    config, training = tune_run.resolve(tune_run.SearchConfig(
        tuner=kind, max_trials=max_trials, space=SPACE, **TRAINING))
    hypermodel = tune_run.LruNetHyperModel(config.space, training, steps_per_epoch=5)
    return tune_run.make_tuner(config, hypermodel, measure_trial=None, project=project)


@pytest.mark.parametrize("tuner, oracle, max_trials", [
    ("random", "RandomSearchOracle", 7), ("bayesian", "BayesianOptimizationOracle", 7),
    ("hyperband", "HyperbandOracle", 7)])
def test_tuners_are_keras_tuner_oracles_with_the_trial_cap(tuner, oracle, max_trials,
                                                           tmp_path):
    if tuner == "bayesian":
        pytest.importorskip("sklearn", reason="KerasTuner's bayesian tuner needs scikit-learn")
    made = _tuner(tuner, tmp_path / "p", max_trials)
    assert type(made.oracle).__name__ == oracle
    assert made.oracle.max_trials == max_trials
    assert made.oracle.objective.name == "score" and made.oracle.objective.direction == "max"


def test_bayesian_tuner_without_scikit_learn_is_refused_naming_the_package(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # "not installed"
    with pytest.raises(ValueError, match="tuner='bayesian' needs scikit-learn"):
        _tuner("bayesian", tmp_path / "p")


def test_search_refuses_bad_configurations(fashion_dir, tmp_path):
    with pytest.raises(ValueError, match=r"tuner='grid' is not a known tuner; expected one of "
                                         r"\['random', 'bayesian', 'hyperband'\]"):
        search(tuner="grid", **TRAINING)
    with pytest.raises(ValueError, match="validation=0"):
        search(**{**TRAINING, "validation": 0})
    with pytest.raises(ValueError, match="`seed` must be an integer >= 0, got -1"):
        search(seed=-1, **TRAINING)
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "notes.txt").write_text("mine")
    with pytest.raises(tune_run.SearchConflictError, match="holds no search.json"):
        search(project_dir=str(tmp_path / "p"), data_dir=str(fashion_dir), **TRAINING)


def test_an_oracle_state_change_is_not_cut_by_ctrl_c():
    """Ctrl-C in the middle of one (here: between a trial's two files) is raised after it."""
    written = []

    class Oracle:
        def create_trial(self, tuner_id):
            written.append("trial.json")
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # Python runs a signal's handler here at the latest
            written.append("oracle.json")
            return tuner_id

        update_trial = end_trial = create_trial

    oracle = Oracle()
    tune_run._state_changes_complete(oracle)
    # Python's own handler, as in a command's process (an earlier test of this worker may have
    # left another one: seen once with the oldest allowed versions).
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            oracle.create_trial("tuner0")
        assert written == ["trial.json", "oracle.json"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, outer)


def test_results_plot_shows_chance_and_readable_legends():
    """A search whose trials all sit at chance must look like it: the plot draws the chance
    accuracy (100 / classes %) in both panels, in %, with legends of at least 9 points."""
    rows = [{"trial": f"{i:02d}", "reuse": reuse, "width": 1.0, "shuffle": True,
             "mflops": 3.0 * reuse, "val_accuracy": 0.1 + 0.001 * i, "status": "ok"}
            for i, reuse in enumerate((1, 2, 4))]
    figure = report.results_figure(rows, Budget(), "search", chance=100 / 10)
    for axes in figure.axes:
        chance = [line for line in axes.get_lines() if line.get_label().startswith("chance")]
        assert [list(line.get_ydata()) for line in chance] == [[10.0, 10.0]]
        points = [y for line in axes.get_lines() if line.get_label().startswith("width")
                  for y in line.get_ydata()]
        assert sorted(points) == pytest.approx([10.0, 10.1, 10.2])
        assert axes.get_ylabel() == "validation accuracy %"
        assert min(text.get_fontsize() for text in axes.get_legend().get_texts()) >= 9
