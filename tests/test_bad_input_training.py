"""Catalogue of bad input to training and tuning: one row per case.

- Bad `lru-keras train` / `lru-keras tune` arguments (bounds included) and unwritable
  directories: exit status 2, one line naming the argument or directory, nothing created.
- A damaged run state (flipped bytes, truncated or replaced weights, JSON that is not JSON):
  refused naming the file, with nothing written, or, while an earlier commit is intact,
  resumed from it, saying so.
- A damaged search state (KerasTuner's JSON files, the search's record, trial checkpoints):
  refused naming the file, with nothing written.
- A failed first command, then the corrected one in the same directory: not refused.

One tiny run (1-LruNet-0.125x, 2 epochs on 200 real Fashion-MNIST images) and one tiny
search (1 trial, 1 epoch) are made per module, each after failed first attempts.
"""

import shutil
import sys
import types

import pytest

from lru_keras import checksums
from lru_keras.cli import main
from lru_keras.train import callbacks, distribute, run_dir, train
from lru_keras.tune import SearchFailedError, SearchSpace, search

TINY_RUN = dict(model="lrunet", model_args={"reuse": 1, "width": 0.125},
                dataset="fashion_mnist", recipe="short", epochs=2, batch_size=50,
                train_images=200, validation=100, test_images=100, verbose=0)
TINY_SEARCH = dict(tuner="random", max_trials=1, dataset="fashion_mnist", epochs=1,
                   batch_size=64, validation=100, train_images=300, verbose=0,
                   space=SearchSpace(reuse=(1,), width=(0.125,), dropout=(0.0,),
                                     shuffle=(True,)))
COMMANDS = {
    "train": ["train", "--model", "lrunet", "--reuse", "1", "--width", "0.125", "--dataset",
              "fashion_mnist", "--recipe", "short", "--epochs", "2", "--batch-size", "50",
              "--train-images", "200", "--validation", "100", "--test-images", "100",
              "--silent"],
    "tune": ["tune", "--dataset", "fashion_mnist", "--reuse", "1", "--width", "0.125",
             "--dropout", "0", "--shuffle", "on", "--epochs", "1", "--batch-size", "64",
             "--validation", "100", "--train-images", "300", "--max-trials", "1", "--silent"],
}
DIRECTORY_FLAG = {"train": "--run-dir", "tune": "--project-dir"}
UNWRITABLE = "/sys/lru_keras_test_dir"  # sysfs: no file can be created there, even by root


@pytest.fixture(scope="module")
def fashion_dir(fashion_mnist_dir):
    """TFDS dir with 400 real Fashion-MNIST training images and 100 test images."""
    return fashion_mnist_dir(400, 100)


def _snapshot(directory):
    """Every file (its bytes) and folder (None) under `directory`: what a command changed."""
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else None
            for p in sorted(directory.rglob("*"))}


def _interrupt(self, batch, logs=None):
    raise KeyboardInterrupt  # Ctrl-C in the middle of the first epoch


@pytest.fixture(scope="module")
def tiny_run(fashion_dir, tmp_path_factory):
    """The tiny run, made after two failed attempts in its directory: a command naming
    unknown weights, then one of another configuration interrupted in its first epoch."""
    run = tmp_path_factory.mktemp("train") / "run"
    data = ["--data-dir", str(fashion_dir), "--run-dir", str(run)]
    steps = {"unknown weights": (main([*COMMANDS["train"], *data, "--weights", "imagenet"]),
                                 _snapshot(run) if run.exists() else None)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(callbacks.EpochStats, "on_train_batch_end", _interrupt)
        try:
            train(**{**TINY_RUN, "learning_rate": 0.05}, run_dir=str(run),
                  data_dir=str(fashion_dir))
            status = 0
        except KeyboardInterrupt:
            status = 130
    steps["interrupted in its first epoch"] = (status, sorted(p.name for p in run.iterdir()))
    summary = train(**TINY_RUN, run_dir=str(run), data_dir=str(fashion_dir))
    return types.SimpleNamespace(dir=run, steps=steps, summary=summary)


@pytest.fixture(scope="module")
def tiny_search(fashion_dir, tmp_path_factory):
    """The tiny search, made after two failed attempts in its project dir: a command over
    the trial limit, then a search of another seed whose first trial failed."""
    project = tmp_path_factory.mktemp("tune") / "project"
    data = ["--data-dir", str(fashion_dir), "--project-dir", str(project)]
    steps = {"too many trials": (main([*COMMANDS["tune"], *data, "--max-trials", "100000"]),
                                 _snapshot(project) if project.exists() else None)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "tensorboard.plugins.hparams", None)  # the trial fails
        try:
            search(**{**TINY_SEARCH, "seed": 1}, project_dir=str(project),
                   data_dir=str(fashion_dir))
            status = 0
        except SearchFailedError:
            status = 1
    steps["first trial failed"] = (status, sorted(p.name for p in project.iterdir()))
    result = search(**TINY_SEARCH, project_dir=str(project), data_dir=str(fashion_dir))
    return types.SimpleNamespace(dir=project, steps=steps, result=result)


# --- Bad arguments: exit status 2, one line naming the argument, nothing created -------------

# (command, extra arguments, words of the one-line error). {file}: an existing file, {notes}:
# a folder holding a file of the user's, {run}: the run or project dir (never created).
ARGUMENTS = [
    ("train", ["--epochs", "0"], "argument --epochs: expected a positive integer"),
    ("train", ["--epochs", "1000000"], "`epochs`=1000000 is too large: at most 10000"),
    ("train", ["--batch-size", "0"], "argument --batch-size: expected a positive integer"),
    ("train", ["--batch-size", "1000000000"],
     "batch_size=1000000000 is larger than the 200 training images"),
    ("train", ["--lr", "inf"], "learning_rate=inf must be a finite positive number"),
    ("train", ["--lr", "nan"], "argument --lr: expected a positive number, got 'nan'"),
    ("train", ["--weight-decay", "inf"], "weight_decay=inf must be a finite number >= 0"),
    ("train", ["--warmup-epochs", "5"], "warmup_epochs=5.0 is longer than the run (epochs=2)"),
    ("train", ["--momentum", "1"], "momentum=1.0 must be a number in [0, 1)"),
    ("train", ["--dropout", "1.5"], "dropout=1.5 must be a number in [0, 1)"),
    ("train", ["--patience", "-1"], "argument --patience: expected an integer >= 0"),
    ("train", ["--seed", "-1"], "`seed` must be an integer >= 0, got -1"),
    ("train", ["--seed", str(2**32)], "seed=4294967296 must be an integer in 0..4294967295"),
    ("train", ["--strategy", "mirrored", "--cpu-devices", "1000"],
     "`cpu_devices`=1000 is too large: at most 64"),
    ("train", ["--cpu-devices", "2"], "cpu_devices=2 only goes with strategy='mirrored'"),
    ("train", ["--mixed-precision", "float16"], "mixed_precision='float16' needs a GPU"),
    ("train", ["--model", "resnet"], "model='resnet' is not a registered model"),
    ("train", ["--model-arg", "classes=3"], "model_args['classes'] is set by the training run"),
    ("train", ["--model-arg", "depth=3"], "model_args['depth']: LruNet takes no argument"),
    ("train", ["--model-arg", "reuse"], "--model-arg expects KEY=VALUE, got 'reuse'"),
    ("train", ["--weights", "imagenet"], "got 'imagenet'"),
    ("train", ["--weights", "{notes}/none.weights.h5"], "{notes}/none.weights.h5"),
    ("train", ["--validation", "100000"], "validation=100000 images cannot be held out"),
    ("train", ["--train-images", "1000000"], "train_images=1000000 is more than the 300"),
    ("train", ["--test-images", "1000000"], "test_images=1000000 is more than the 100"),
    ("train", ["--data-dir", "{notes}"], "not prepared in data_dir '{notes}'"),
    ("train", ["--run-dir", UNWRITABLE], f"run dir '{UNWRITABLE}' is not writable"),
    ("train", ["--run-dir", "{file}"], "run dir '{file}' exists and is not a directory"),
    ("train", ["--run-dir", "{file}/run"], "run dir '{file}/run' cannot be created"),
    ("train", ["--run-dir", "{notes}"], "run dir '{notes}' is not empty and is not a training"),
    ("tune", ["--max-trials", "0"], "argument --max-trials: expected a positive integer"),
    ("tune", ["--max-trials", "100000"], "`max_trials`=100000 is too large: at most 1000"),
    ("tune", ["--epochs", "1000000"], "`epochs`=1000000 is too large: at most 10000"),
    ("tune", ["--batch-size", "1000000000"],
     "batch_size=1000000000 is larger than the 300 training images"),
    ("tune", ["--lr", "inf"], "learning_rate=inf must be a finite positive number"),
    ("tune", ["--validation", "0"], "argument --validation: expected a positive integer"),
    ("tune", ["--seed", "-1"], "argument --seed: expected an integer >= 0"),
    ("tune", ["--seed", str(2**32)], "seed=4294967296 must be an integer in 0..4294967295"),
    ("tune", ["--reuse", "0-20"], "argument --reuse: reuse=0: N must be an integer in 1..16"),
    ("tune", ["--width", "0.1"], "argument --width: width=0.1: expected a positive multiple"),
    ("tune", ["--train-images", "1000000"], "train_images=1000000 is more than the 300"),
    ("tune", ["--project-dir", UNWRITABLE], f"project dir '{UNWRITABLE}' is not writable"),
    ("tune", ["--project-dir", "{file}"], "project dir '{file}' exists and is not a directory"),
    ("tune", ["--project-dir", "{notes}"], "project dir '{notes}' is not empty and holds no"),
]


@pytest.mark.parametrize("command, extra, words", ARGUMENTS,
                         ids=[f"{c} {' '.join(e)}" for c, e, _ in ARGUMENTS])
def test_bad_arguments_exit_2_with_one_line_and_create_nothing(command, extra, words,
                                                               fashion_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("mine")
    where = {"file": tmp_path / "file", "notes": tmp_path / "notes", "run": tmp_path / "run"}
    defaults = {DIRECTORY_FLAG[command]: "{run}", "--data-dir": str(fashion_dir)}
    argv = [*COMMANDS[command], *extra]
    for flag, value in defaults.items():
        if flag not in extra:
            argv += [flag, value]
    before = _snapshot(tmp_path)
    assert main([part.format(**where) for part in argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lru-keras: error: "), lines
    assert words.format(**where) in lines[0]
    assert _snapshot(tmp_path) == before


# --- A damaged run state ---------------------------------------------------------------------

def _flip(path):
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


def _every(pattern, damage):
    """Damage every file of the run dir matching `pattern` (the copy in each kept epoch)."""
    def apply(run):
        paths = sorted(run.glob(pattern))
        assert paths, pattern
        for path in paths:
            damage(path)
    return apply


def _write(text):
    return lambda path: path.write_text(text)


# (case, damage of a copy of the tiny run without its summary (an interrupted run) unless the
# damaged file is summary.json, the file the refusal names; {best}: the best epoch's dir)
REFUSED = [
    ("train state of both kept epochs: a flipped byte",
     _every("state/epoch-*/train_state.weights.h5", _flip),
     "state/epoch-0002/train_state.weights.h5"),
    ("train state of both kept epochs: truncated",
     _every("state/epoch-*/train_state.weights.h5", _truncate),
     "state/epoch-0002/train_state.weights.h5"),
    ("train state of both kept epochs: not HDF5",
     _every("state/epoch-*/train_state.weights.h5", _write("not hdf5")),
     "state/epoch-0002/train_state.weights.h5"),
    ("train state of both kept epochs: empty",
     _every("state/epoch-*/train_state.weights.h5", _write("")),
     "state/epoch-0002/train_state.weights.h5"),
    ("train state of both kept epochs: missing",
     _every("state/epoch-*/train_state.weights.h5", lambda path: path.unlink()),
     "state/epoch-0002/train_state.weights.h5"),
    ("best epoch's weights: a flipped byte", _every("state/epoch-*/best.weights.h5", _flip),
     "state/{best}/best.weights.h5"),
    ("best epoch's weights: truncated", _every("state/epoch-*/best.weights.h5", _truncate),
     "state/{best}/best.weights.h5"),
    ("latest.json and every commit.json: not JSON",
     _every("state/**/*.json", _write('{"epoch": 2, "dir": ')), "state/latest.json"),
    ("latest.json and every commit.json: a JSON list", _every("state/**/*.json", _write("[]")),
     "state/latest.json"),
    ("latest.json and every commit.json: fields missing",
     _every("state/**/*.json", _write('{"epoch": 2}')), "state/latest.json"),
    ("latest.json and every commit.json: not UTF-8",
     _every("state/**/*.json", lambda path: path.write_bytes(b"\xff\xfe{")), "state/latest.json"),
    ("config.json: not JSON", _every("config.json", _write('{"identity": ')), "config.json"),
    ("config.json: empty", _every("config.json", _write("")), "config.json"),
    ("config.json: a JSON string", _every("config.json", _write('"run"')), "config.json"),
    ("summary.json of the finished run: not JSON", _every("summary.json", _truncate),
     "summary.json"),
]


@pytest.mark.parametrize("damage, named", [case[1:] for case in REFUSED],
                         ids=[case[0] for case in REFUSED])
def test_damaged_run_state_is_refused_naming_the_file(damage, named, tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.dir, run)
    if named != "summary.json":
        (run / "summary.json").unlink()  # an interrupted run: the same command resumes it
    best = run_dir.read_json(run / "state" / "latest.json")["best_dir"]
    damage(run)
    before = _snapshot(run)
    with pytest.raises(ValueError) as refusal:  # before the data is read: there is none
        train(**TINY_RUN, run_dir=str(run), data_dir=str(tmp_path / "no data"))
    assert str(run / named.format(best=best)) in str(refusal.value)
    assert _snapshot(run) == before


# (case, damage of a copy of the interrupted tiny run, the epoch it resumes after, the file
# the message names)
FALLS_BACK = [
    ("last train state: a flipped byte",
     _every("state/epoch-0002/train_state.weights.h5", _flip), 1,
     "state/epoch-0002/train_state.weights.h5"),
    ("last train state: truncated",
     _every("state/epoch-0002/train_state.weights.h5", _truncate), 1,
     "state/epoch-0002/train_state.weights.h5"),
    ("last train state: missing",
     _every("state/epoch-0002/train_state.weights.h5", lambda path: path.unlink()), 1,
     "state/epoch-0002/train_state.weights.h5"),
    ("latest.json: not JSON (its copy in the epoch dir is whole)",
     _every("state/latest.json", _truncate), 2, "state/latest.json"),
    ("latest.json: a recorded sha256 changed (its copy in the epoch dir is whole)",
     _every("state/latest.json", lambda path: path.write_text(
         path.read_text().replace('train_state.weights.h5": "', 'train_state.weights.h5": "0'))),
     2, "state/epoch-0002/train_state.weights.h5"),
]


@pytest.mark.parametrize("damage, epoch, named", [case[1:] for case in FALLS_BACK],
                         ids=[case[0] for case in FALLS_BACK])
def test_damaged_last_commit_falls_back_to_an_intact_one_and_says_so(damage, epoch, named,
                                                                     tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.dir, run)
    (run / "summary.json").unlink()
    damage(run)
    said = []
    state = callbacks.read_state(run_dir.paths_for(run, distribute.WorkerRole()), said.append)
    assert state["epoch"] == epoch and state["dir"] == f"epoch-{epoch:04d}"
    assert len(said) == 1 and str(run / named) in said[0], said
    assert f"after epoch {epoch}" in said[0]


def test_the_same_command_resumes_from_the_intact_commit(tiny_run, fashion_dir, tmp_path,
                                                        capsys):
    """End to end: the last epoch's state is damaged; the command trains that epoch again
    from the one before and finishes, with the published weights and sidecars whole."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run.dir, run)
    (run / "summary.json").unlink()
    _flip(run / "state" / "epoch-0002" / "train_state.weights.h5")
    summary = train(**TINY_RUN, run_dir=str(run), data_dir=str(fashion_dir))
    out = capsys.readouterr().out
    assert "Resuming from the last intact commit instead: after epoch 1" in out
    assert summary["resumed_at_epochs"] == [1] and summary["epochs_run"] == 2
    assert callbacks.read_state(run_dir.paths_for(run, distribute.WorkerRole()))["epoch"] == 2
    assert checksums.check_sidecar(run / "best.weights.h5")
    assert checksums.check_sidecar(run / "last.weights.h5")


# --- A damaged search state ------------------------------------------------------------------

# (case, damage of the tiny search's project dir, the file the refusal names)
SEARCH_DAMAGE = [
    ("search.json: not JSON", _every("search.json", _truncate), "search.json"),
    ("search.json: a JSON list", _every("search.json", _write("[]")), "search.json"),
    ("oracle.json: not JSON", _every("oracle.json", _truncate), "oracle.json"),
    ("oracle.json: a JSON list", _every("oracle.json", _write("[1]")), "oracle.json"),
    ("tuner0.json: empty", _every("tuner0.json", _write("")), "tuner0.json"),
    ("trial.json: not JSON", _every("trial_0/trial.json", _truncate), "trial_0/trial.json"),
    ("trial checkpoint: a flipped byte",
     _every("trial_0/checkpoint.weights.h5", _flip), "trial_0/checkpoint.weights.h5"),
    ("trial checkpoint: truncated",
     _every("trial_0/checkpoint.weights.h5", _truncate), "trial_0/checkpoint.weights.h5"),
]


@pytest.mark.parametrize("damage, named", [case[1:] for case in SEARCH_DAMAGE],
                         ids=[case[0] for case in SEARCH_DAMAGE])
def test_damaged_search_state_is_refused_naming_the_file(damage, named, tiny_search,
                                                         fashion_dir):
    """The same search again, in its own project dir (damaged there and repaired after)."""
    project = tiny_search.dir
    intact = _snapshot(project)
    try:
        damage(project)
        before = _snapshot(project)
        with pytest.raises(ValueError) as refusal:
            search(**TINY_SEARCH, project_dir=str(project), data_dir=str(fashion_dir))
        assert str(project / named) in str(refusal.value)
        assert _snapshot(project) == before
    finally:
        for name, content in intact.items():
            if content is not None:
                (project / name).write_bytes(content)
    assert _snapshot(project) == intact


# --- A failed first command, then the corrected one -------------------------------------------

# (case, the module fixture, its step, the first command's status, what it left)
FIRST_ATTEMPTS = [
    ("train with unknown weights", "tiny_run", "unknown weights", 2, None),
    ("train of another configuration, interrupted in its first epoch", "tiny_run",
     "interrupted in its first epoch", 130, ["config.json", "tensorboard"]),
    ("tune over the trial limit", "tiny_search", "too many trials", 2, None),
    ("tune of another seed whose first trial failed", "tiny_search", "first trial failed", 1,
     ["oracle.json", "search.json", "trial_0"]),
]


@pytest.mark.parametrize("made, step, status, left", [case[1:] for case in FIRST_ATTEMPTS],
                         ids=[case[0] for case in FIRST_ATTEMPTS])
def test_a_failed_first_command_does_not_block_the_corrected_one(made, step, status, left,
                                                                 request):
    """The first command failed and left nothing, or a record without any committed epoch
    or completed trial; the corrected command then ran in the same directory."""
    outcome = request.getfixturevalue(made)
    assert outcome.steps[step] == (status, left)
    if made == "tiny_run":
        assert outcome.summary["epochs_run"] == 2
        recorded = run_dir.read_json(outcome.dir / "config.json")
        assert recorded["config"]["learning_rate"] == 0.1  # the corrected command's
    else:
        assert outcome.result.trials_run == ["0"] and outcome.result.best is not None
        assert run_dir.read_json(outcome.dir / "search.json")["identity"]["seed"] == 0
