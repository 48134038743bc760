"""Tests of lru_keras.train: optimizer, recipes, holdout, bad input, run dir, precision, a run.

Real images only (slices of ../shared/data imported into pytest's tmp TFDS dirs). The
distributed and resume tests, which start processes of their own, are in
test_train_distributed.py and test_train_resume.py.
"""

import argparse
import hashlib
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from lru_keras import checksums, data
from lru_keras.cli import main
from lru_keras.cli.train import add_train_commands, config_from_args
from lru_keras.layers import GroupedPointwiseConv2D
from lru_keras.layers.grouped_pointwise import grouped_pointwise_einsum
from lru_keras.train import (
    CoupledSGD, RunDirConflictError, TrainConfig, check_batch_size, compile_model, get_recipe,
    make_schedule, plan_splits, train)
from lru_keras.train import config as train_config
from lru_keras.train import callbacks, distribute, run_dir
from lru_keras.zoo import LruNet

@pytest.fixture(scope="module")
def fashion_dir(fashion_mnist_dir):
    """TFDS dir with real Fashion-MNIST: 2,500 training images (2,000 train + 500 to hold
    out) and 1,000 test images, as they come in the shared files (classes mixed)."""
    return fashion_mnist_dir(2500, 1000)


@pytest.fixture(scope="module")
def sorted_dir(tmp_path_factory, test_set):
    """TFDS dir whose training split is sorted by class, as the imported CIFAR splits are:
    100 real Fashion-MNIST images of each class in label order; test: 100 images."""
    x, y = test_set("fashion_mnist_train.npz")
    rows = np.concatenate([np.flatnonzero(y == label)[:100] for label in range(10)])
    target = tmp_path_factory.mktemp("tfds_sorted")
    data.import_arrays("fashion_mnist", "train", x[rows], y[rows], target)
    data.import_arrays("fashion_mnist", "test", x[-100:], y[-100:], target)
    return target


# --- The optimizer: PyTorch's coupled weight decay -----------------------------------------

def _lrunet_step_inputs(cifar10_images):
    keras.utils.set_random_seed(3)
    model = LruNet(reuse=2, width=0.5, dropout=0.0)
    x, y = cifar10_images
    return model, x[:16].astype("float32"), y[:16]


def _loss(model, x, y):
    return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, model(x, training=True)))


def test_coupled_weight_decay_step_equals_hand_computation_on_lrunet(cifar10_images):
    """One step: w <- w - lr * (g + wd * w) for every trainable variable, BatchNorm gamma and
    beta included; LruNet(reuse=2) calls each block's convs twice, and their kernels are
    decayed once (the gradient already sums both calls)."""
    model, x, y = _lrunet_step_inputs(cifar10_images)
    lr, wd = 0.1, 5e-4
    with tf.GradientTape() as tape:
        loss = _loss(model, x, y)
    variables = model.trainable_variables
    grads = tape.gradient(loss, variables)
    before = [v.numpy() for v in variables]
    assert any("gamma" in v.path for v in variables) and any("beta" in v.path for v in variables)
    CoupledSGD(lr, momentum=0.9, weight_decay=wd).apply(grads, variables)
    for w0, g, v in zip(before, grads, variables):
        np.testing.assert_allclose(v.numpy(), w0 - lr * (g.numpy() + wd * w0),
                                   rtol=1e-5, atol=1e-8, err_msg=v.path)


def test_coupled_weight_decay_equals_l2_penalty_half_wd_in_the_loss(cifar10_images):
    """The same step as plain SGD on loss + 0.5 * wd * sum ||w||^2 (the Keras formulation of
    PyTorch's weight_decay)."""
    model, x, y = _lrunet_step_inputs(cifar10_images)
    lr, wd = 0.1, 5e-4
    variables = model.trainable_variables
    before = [v.numpy() for v in variables]
    with tf.GradientTape() as tape:
        penalised = _loss(model, x, y) + 0.5 * wd * sum(keras.ops.sum(v * v) for v in variables)
    l2_grads = tape.gradient(penalised, variables)
    with tf.GradientTape() as tape:
        loss = _loss(model, x, y)
    grads = tape.gradient(loss, variables)

    CoupledSGD(lr, momentum=0.9, weight_decay=wd).apply(grads, variables)
    coupled = [v.numpy() for v in variables]
    for v, w0 in zip(variables, before):
        v.assign(w0)
    keras.optimizers.SGD(lr, momentum=0.9).apply(l2_grads, variables)
    for a, v in zip(coupled, variables):
        np.testing.assert_allclose(a, v.numpy(), rtol=1e-4, atol=1e-7, err_msg=v.path)


def test_momentum_follows_pytorch_across_a_learning_rate_drop():
    """Two steps with lr 0.1 then 0.01: buf = 0.9 buf + (g + wd w); w -= lr * buf."""
    keras.utils.set_random_seed(0)
    w = keras.Variable(np.array([[1.0, -2.0], [0.5, 3.0]], "float32"))
    x = np.array([[1.0, 2.0], [-1.0, 0.5]], "float32")
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([0], [0.1, 0.01])
    optimizer = CoupledSGD(schedule, momentum=0.9, weight_decay=0.01)
    w_hand, buf = w.numpy().copy(), np.zeros((2, 2), "float32")
    for lr in (0.1, 0.01):
        with tf.GradientTape() as tape:
            loss = keras.ops.sum(keras.ops.square(keras.ops.matmul(x, w) - 1.0))
        g = tape.gradient(loss, [w])[0]
        buf = 0.9 * buf + (g.numpy() + 0.01 * w_hand)
        w_hand = w_hand - lr * buf
        optimizer.apply([g], [w])
    np.testing.assert_allclose(w.numpy(), w_hand, rtol=1e-6)


def test_keras_decoupled_weight_decay_is_not_the_papers():
    """Keras's `SGD(weight_decay=)` decays outside the momentum buffer: from the second step on
    it differs from PyTorch's coupled decay, which CoupledSGD reproduces."""
    x = np.array([[1.0, 2.0], [-1.0, 0.5]], "float32")
    results = {}
    for name, optimizer in (("coupled", CoupledSGD(0.1, momentum=0.9, weight_decay=0.01)),
                            ("keras", keras.optimizers.SGD(0.1, momentum=0.9,
                                                           weight_decay=0.01))):
        w = keras.Variable(np.array([[1.0, -2.0], [0.5, 3.0]], "float32"))
        for _ in range(2):
            with tf.GradientTape() as tape:
                loss = keras.ops.sum(keras.ops.square(keras.ops.matmul(x, w) - 1.0))
            optimizer.apply(tape.gradient(loss, [w]), [w])
        results[name] = w.numpy()
    assert np.abs(results["coupled"] - results["keras"]).max() > 1e-4


def test_coupled_sgd_serialises_with_its_schedule():
    optimizer = CoupledSGD(make_schedule("cosine", 0.1, 5, 10, warmup_epochs=1),
                           momentum=0.8, weight_decay=1e-3, nesterov=True)
    again = CoupledSGD.from_config(optimizer.get_config())
    assert (again.momentum, again.coupled_weight_decay, again.nesterov) == (0.8, 1e-3, True)
    assert float(again.learning_rate) == pytest.approx(float(optimizer.learning_rate))


# --- Recipes and schedules ----------------------------------------------------------------

def test_paper_schedule_drops_at_epochs_200_and_250():
    steps = 176  # 45,000 images / batch 256, rounded up
    schedule = make_schedule("step", 0.1, 300, steps)
    lr = lambda epoch, step=0: float(schedule(epoch * steps + step))  # noqa: E731
    assert lr(0) == pytest.approx(0.1) and lr(199, steps - 1) == pytest.approx(0.1)
    assert lr(200) == pytest.approx(0.01) and lr(249, steps - 1) == pytest.approx(0.01)
    assert lr(250) == pytest.approx(0.001) and lr(299, steps - 1) == pytest.approx(0.001)
    short = make_schedule("step", 0.1, 30, steps)  # the drops keep their place in the run
    assert float(short(20 * steps - 1)) == pytest.approx(0.1)
    assert float(short(20 * steps)) == pytest.approx(0.01)
    assert float(short(25 * steps)) == pytest.approx(0.001)


def test_short_schedule_warms_up_then_decays_to_zero():
    schedule = make_schedule("cosine", 0.1, 5, 10, warmup_epochs=1)
    values = [float(schedule(step)) for step in range(50)]
    assert values[0] == pytest.approx(0.01) and values[9] == pytest.approx(0.1)
    assert values[10] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert values[-1] < 0.001


def test_recipe_defaults_are_the_papers():
    paper = train_config.resolve(TrainConfig(dataset="cifar10"))
    assert (paper.epochs, paper.batch_size, paper.learning_rate, paper.momentum,
            paper.weight_decay, paper.dropout, paper.augment, paper.schedule) == (
        300, 256, 0.1, 0.9, 5e-4, 0.5, True, "step")
    assert train_config.resolve(TrainConfig(dataset="cifar100")).dropout == 0.7
    short = train_config.resolve(TrainConfig(dataset="cifar100", recipe="short", epochs=2))
    assert (short.schedule, short.epochs, short.dropout) == ("cosine", 2, 0.2)
    assert get_recipe("short").epochs < 10


def test_every_registered_builder_is_a_training_model_by_name():
    """The model is a registry lookup: REAF, ConvMixer, ... train through the same path;
    dropout applies where the builder has it."""
    from lru_keras.zoo import list_builders
    for name in list_builders():
        resolved = train_config.resolve(TrainConfig(model=name.lower()))
        assert resolved.model == name
        assert (resolved.dropout is None) != train_config.builder_accepts(name, "dropout")
    with pytest.raises(ValueError, match="dropout=0.3: ConvMixer has no dropout argument"):
        train_config.resolve(TrainConfig(model="convmixer", dropout=0.3))


# --- Honest selection: the validation split ------------------------------------------------

def _labels(split, data_dir):
    ds = data.load("fashion_mnist", split, batch_size=500, data_dir=data_dir)
    images, labels = zip(*ds.as_numpy_iterator())
    return np.concatenate(images), np.concatenate(labels)


def test_validation_is_held_out_of_train_spread_over_classes_and_disjoint(sorted_dir):
    plan = plan_splits("fashion_mnist", validation=200, train_images=500, data_dir=sorted_dir)
    assert (plan.validation_images, plan.train_images, plan.test_images) == (200, 500, 100)
    assert plan.validation.startswith("train[") and plan.test == "test"
    x_val, y_val = _labels(plan.validation, sorted_dir)
    x_train, y_train = _labels(plan.train, sorted_dir)
    assert np.bincount(y_val, minlength=10).tolist() == [20] * 10  # not the last class only
    assert np.bincount(y_train, minlength=10).tolist() == [50] * 10
    digest = lambda images: {hashlib.sha1(im.tobytes()).hexdigest() for im in images}  # noqa
    assert not digest(x_val) & digest(x_train)


def test_an_uneven_holdout_leaves_the_rest_of_each_chunk_to_training(fashion_dir):
    """2,500 images hold out 250 for validation, 2 or 3 of each 25-image chunk; the 2,250
    training images fill the rest of every chunk (an even share would not fit half of them)."""
    plan = plan_splits("fashion_mnist", data_dir=fashion_dir)
    assert (plan.validation_images, plan.train_images) == (250, 2250)
    x_val, _ = _labels(plan.validation, fashion_dir)
    x_train, _ = _labels(plan.train, fashion_dir)
    assert (len(x_val), len(x_train)) == (250, 2250)
    digest = lambda images: {hashlib.sha1(im.tobytes()).hexdigest() for im in images}  # noqa
    assert not digest(x_val) & digest(x_train)


def test_default_validation_is_5000_or_a_tenth(sorted_dir):
    assert plan_splits("fashion_mnist", data_dir=sorted_dir).validation_images == 100
    from lru_keras.train.splits import default_validation
    assert default_validation(50000) == 5000 and default_validation(60000) == 5000
    assert default_validation(5000) == 500  # the shared CIFAR-100 training subset


# --- Bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("options, named", [
    ({"model": "resnet"}, "model='resnet'"),
    ({"dataset": "mnist"}, "dataset='mnist'"),
    ({"recipe": "fast"}, "recipe='fast'"),
    ({"batch_size": 0}, "`batch_size` must be a positive integer, got 0"),
    ({"batch_size": -8}, "`batch_size` must be a positive integer, got -8"),
    ({"batch_size": 12.5}, "`batch_size` must be a positive integer, got 12.5"),
    ({"batch_size": True}, "`batch_size` must be a positive integer, got True"),
    ({"epochs": 0}, "`epochs` must be a positive integer, got 0"),
    ({"learning_rate": 0}, "learning_rate=0"),
    ({"momentum": 1.0}, "momentum=1.0"),
    ({"dropout": 1.0}, "dropout=1.0"),
    ({"validation": -1}, "`validation` must be an integer >= 0, got -1"),
    ({"strategy": "tpu"}, "strategy='tpu'"),
    ({"cpu_devices": 2}, "cpu_devices=2"),
    ({"mixed_precision": "int8"}, "mixed_precision='int8'"),
    ({"model_args": {"classes": 3}}, "model_args['classes']"),
    ({"model_args": {"depth": 3}}, "model_args['depth']"),
    ({"epochs": 10**9}, "`epochs`=1000000000 is too large: at most 10000"),
    ({"learning_rate": float("inf")}, "learning_rate=inf must be a finite positive number"),
    ({"weight_decay": float("nan")}, "weight_decay=nan must be a finite number >= 0"),
    ({"recipe": "short", "epochs": 2, "warmup_epochs": 3}, "warmup_epochs=3 is longer than"),
    ({"seed": -1}, "`seed` must be an integer >= 0, got -1"),
    ({"seed": 2**32}, "seed=4294967296 must be an integer in 0..4294967295"),
    ({"strategy": "mirrored", "cpu_devices": 1000}, "`cpu_devices`=1000 is too large"),
])
def test_bad_options_are_clear_errors(options, named):
    with pytest.raises(ValueError, match=named.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(".", r"\.")):
        train_config.resolve(TrainConfig(**options))


def test_impossible_batch_sizes_are_refused():
    with pytest.raises(ValueError, match="batch_size=600 is larger than the 500 training"):
        check_batch_size(600, 500, 1)
    with pytest.raises(ValueError, match="multiple of the 2 replicas"):
        check_batch_size(33, 500, 2)
    check_batch_size(500, 500, 1)


def test_impossible_splits_are_refused(sorted_dir):
    with pytest.raises(ValueError, match="validation=1000 images cannot be held out"):
        plan_splits("fashion_mnist", validation=1000, data_dir=sorted_dir)
    with pytest.raises(ValueError, match="train_images=950 is more than the 900"):
        plan_splits("fashion_mnist", validation=100, train_images=950, data_dir=sorted_dir)
    with pytest.raises(ValueError, match="test_images=101"):
        plan_splits("fashion_mnist", test_images=101, data_dir=sorted_dir)


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(data.DatasetNotAvailableError, match="not prepared"):
        train(dataset="cifar10", data_dir=str(tmp_path / "empty"), run_dir=str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_multiworker_without_tf_config_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.worker_role("multiworker")
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
         "task": {"type": "worker", "index": 1}}))
    role = distribute.worker_role("multiworker")
    assert (role.index, role.workers, role.is_chief, role.name) == (1, 2, False, "worker-1")


def _snapshot(directory):
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*")
            if p.is_file()}


def test_run_dir_of_another_configuration_is_refused_and_left_untouched(tmp_path, capsys,
                                                                        fashion_dir):
    config = train_config.resolve(TrainConfig(dataset="fashion_mnist", recipe="short"))
    paths = run_dir.paths_for(tmp_path / "run", distribute.WorkerRole())
    identity = train_config.identity(config)
    assert run_dir.check(paths, identity) == "new"
    run_dir.record(paths, config.to_dict(), identity, {"train": "train"}, {})
    (paths.out / "log.csv").write_text("epoch,loss\n0,1.5\n")
    before = _snapshot(paths.out)
    assert run_dir.check(paths, identity) == "new"  # no committed state yet
    other = train_config.identity(train_config.resolve(
        TrainConfig(dataset="fashion_mnist", recipe="short", learning_rate=0.05)))
    with pytest.raises(RunDirConflictError, match="learning_rate: 0.1 there, 0.05 now"):
        run_dir.check(paths, other)
    status = main(["train", "--dataset", "fashion_mnist", "--recipe", "short", "--lr", "0.05",
                   "--run-dir", str(paths.out), "--data-dir", str(fashion_dir)])
    assert status == 2
    assert "belongs to another configuration" in capsys.readouterr().err
    assert _snapshot(paths.out) == before


def test_a_record_without_commits_is_replaced_by_another_configuration(tmp_path):
    """An attempt that failed in its first epoch left config.json and TensorBoard events but
    committed nothing: another configuration takes the directory over (and starts clean)."""
    config = train_config.resolve(TrainConfig(dataset="fashion_mnist", recipe="short"))
    paths = run_dir.paths_for(tmp_path / "run", distribute.WorkerRole())
    run_dir.record(paths, config.to_dict(), train_config.identity(config), {"train": "a"}, {})
    (paths.tensorboard / "train").mkdir(parents=True)
    (paths.tensorboard / "train" / "events.out.tfevents.1").write_bytes(b"old")
    other = train_config.identity(train_config.resolve(
        TrainConfig(dataset="fashion_mnist", recipe="short", learning_rate=0.05)))
    assert run_dir.check(paths, other) == "new"
    run_dir.record(paths, {}, other, {"train": "b"}, {})
    assert json.loads(paths.config.read_text())["identity"] == other
    assert not paths.tensorboard.exists()


def test_a_failed_command_leaves_no_run_dir(tmp_path, fashion_dir, capsys):
    """Unknown pretrained weights are found out before anything is written, so the corrected
    command is not refused as "another configuration"."""
    run = tmp_path / "run"
    assert main(["train", "--dataset", "fashion_mnist", "--recipe", "short", "--reuse", "1",
                 "--width", "0.125", "--weights", "imagenet", "--run-dir", str(run),
                 "--data-dir", str(fashion_dir)]) == 2
    assert "'imagenet'" in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.parametrize("where", ["read-only filesystem", "a file", "under a file"])
def test_an_unwritable_run_dir_is_refused_before_any_work(tmp_path, where):
    (tmp_path / "file").write_text("mine")
    directory, words = {
        "read-only filesystem": ("/sys/lru_keras_test_run", "is not writable"),
        "a file": (tmp_path / "file", "exists and is not a directory"),
        "under a file": (tmp_path / "file" / "run", "cannot be created"),
    }[where]
    with pytest.raises(ValueError, match=f"run dir '{directory}' {words}"):
        train(dataset="fashion_mnist", recipe="short", run_dir=str(directory))
    assert (tmp_path / "file").read_text() == "mine"


def test_a_directory_that_is_not_a_run_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    paths = run_dir.paths_for(tmp_path, distribute.WorkerRole())
    with pytest.raises(RunDirConflictError, match="notes.txt"):
        run_dir.check(paths, {})
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_default_run_dir_is_the_same_for_the_same_command():
    a = train_config.resolve(TrainConfig(model="lrunet", model_args={"reuse": 14}))
    b = train_config.resolve(TrainConfig(model="LruNet", model_args={"reuse": 14},
                                         run_dir=None, verbose=2, data_dir="/elsewhere"))
    c = train_config.resolve(TrainConfig(model="lrunet", model_args={"reuse": 14}, seed=1))
    name = train_config.default_run_name(a)
    assert name == train_config.default_run_name(b) != train_config.default_run_name(c)
    assert name.startswith("lrunet-reuse14-cifar10-paper-")


# --- Selection and early stopping ----------------------------------------------------------

def _tiny_model():
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="dense")(inputs), name="tiny")
    model.compile(optimizer=CoupledSGD(0.1), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def _epochs(callback, model, values, start=0):
    """Epochs with the given validation accuracies; the kernel holds the epoch number."""
    for epoch, value in enumerate(values, start=start):
        model.get_layer("dense").kernel.assign(np.full((2, 1), epoch, "float32"))
        callback.on_epoch_end(epoch, {"loss": 1.0, "val_accuracy": value})
        if model.stop_training:
            return epoch
    return None


def _kernel_in(path):
    model = _tiny_model()
    callbacks.model_only(model).load_weights(path)
    return float(model.get_layer("dense").kernel.numpy()[0, 0])


def test_best_weights_follow_validation_accuracy_and_patience_stops(tmp_path):
    paths = run_dir.paths_for(tmp_path, distribute.WorkerRole())
    model = _tiny_model()
    callback = callbacks.TrainingState(paths, patience=2, plot_title="t")
    callback.set_model(model)
    callback.on_train_begin()
    stopped = _epochs(callback, model, [0.5, 0.6, 0.55, 0.58, 0.7])
    assert stopped == 3  # two epochs without improvement after the best one
    state = callbacks.read_state(paths)
    assert (state["best_epoch"], state["best"], state["wait"], state["stopped"]) == (
        1, 0.6, 2, True)
    assert _kernel_in(paths.best) == 1.0 and _kernel_in(paths.last) == 3.0
    assert [row["epoch"] for row in run_dir.read_csv(paths.log)] == [0, 1, 2, 3]
    assert (tmp_path / "curves.png").is_file()


def test_selection_state_survives_a_restart(tmp_path):
    """A resumed run keeps the best value and the patience counter: a worse epoch after the
    restart does not overwrite best.weights.h5 (as a fresh ModelCheckpoint would)."""
    paths = run_dir.paths_for(tmp_path, distribute.WorkerRole())
    model = _tiny_model()
    first = callbacks.TrainingState(paths, patience=3)
    first.set_model(model)
    first.on_train_begin()
    _epochs(first, model, [0.5, 0.8, 0.6])
    second = callbacks.TrainingState(paths, patience=3, state=callbacks.read_state(paths))
    second.set_model(model)
    second.on_train_begin()
    assert _epochs(second, model, [0.7, 0.75], start=3) == 4
    assert _kernel_in(paths.best) == 1.0
    assert callbacks.read_state(paths)["best_epoch"] == 1


def test_each_commit_records_the_sha256_of_what_a_resume_reads(tmp_path):
    """The commit (latest.json, and commit.json in its epoch directory) lists the sha256 of the
    training state and of the best epoch's weights; the last two commits are kept, and the
    published weights come with .sha256 sidecars."""
    paths = run_dir.paths_for(tmp_path, distribute.WorkerRole())
    model = _tiny_model()
    callback = callbacks.TrainingState(paths)
    callback.set_model(model)
    callback.on_train_begin()
    _epochs(callback, model, [0.5, 0.6, 0.55, 0.58])
    state = callbacks.read_state(paths)
    train_state = "epoch-0004/train_state.weights.h5"
    assert state["files"] == {
        train_state: checksums.sha256_of(paths.state / train_state),
        "epoch-0002/best.weights.h5": checksums.sha256_of(paths.state / "epoch-0002" /
                                                          "best.weights.h5")}
    assert state == json.loads((paths.state / "epoch-0004" / "commit.json").read_text())
    assert {p.name for p in paths.state.iterdir()} == {
        "latest.json", "epoch-0002", "epoch-0003", "epoch-0004"}
    assert checksums.check_sidecar(paths.best) and checksums.check_sidecar(paths.last)


def test_a_damaged_last_commit_falls_back_to_the_one_before_or_is_refused(tmp_path):
    paths = run_dir.paths_for(tmp_path, distribute.WorkerRole())
    model = _tiny_model()
    callback = callbacks.TrainingState(paths)
    callback.set_model(model)
    callback.on_train_begin()
    _epochs(callback, model, [0.5, 0.6])
    last = paths.state / "epoch-0002" / "train_state.weights.h5"
    damaged = bytearray(last.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    last.write_bytes(bytes(damaged))
    said = []
    assert callbacks.read_state(paths, said.append)["epoch"] == 1
    assert str(last) in said[0] and "after epoch 1" in said[0]
    # Without an intact earlier commit: refused, naming the file and what to do.
    (paths.state / "epoch-0001" / "train_state.weights.h5").write_bytes(b"")
    with pytest.raises(run_dir.DamagedFileError, match=f"{last} is corrupt .* delete"):
        callbacks.read_state(paths)


def test_patience_counts_only_from_its_start_epoch(tmp_path):
    paths = run_dir.paths_for(tmp_path, distribute.WorkerRole())
    model = _tiny_model()
    callback = callbacks.TrainingState(paths, patience=2, patience_start=4)
    callback.set_model(model)
    callback.on_train_begin()
    assert _epochs(callback, model, [0.9, 0.1, 0.1, 0.1, 0.1, 0.1]) == 5


def test_without_validation_the_last_epoch_is_the_best(tmp_path):
    paths = run_dir.paths_for(tmp_path, distribute.WorkerRole())
    model = _tiny_model()
    callback = callbacks.TrainingState(paths, monitor=None, patience=1)
    callback.set_model(model)
    callback.on_train_begin()
    for epoch in range(3):
        model.get_layer("dense").kernel.assign(np.full((2, 1), epoch, "float32"))
        callback.on_epoch_end(epoch, {"loss": 1.0})
    assert not model.stop_training and _kernel_in(paths.best) == 2.0


# --- Command line ----------------------------------------------------------------------------

def _parse(argv):
    parser = argparse.ArgumentParser()
    add_train_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_arguments_become_the_config():
    args = _parse(["train", "--model", "lrunet", "--reuse", "14", "--width", "1.0",
                   "--dataset", "cifar100", "--recipe", "short", "--epochs", "4",
                   "--batch-size", "64", "--lr", "0.05", "--no-augment", "--validation", "500",
                   "--strategy", "mirrored", "--cpu-devices", "2", "--mixed-precision", "off",
                   "--jit", "off", "--model-arg", "shuffle=false", "--quiet"])
    config = config_from_args(args)
    assert config.model_args == {"reuse": 14, "width": 1.0, "shuffle": False}
    assert (config.dataset, config.recipe, config.epochs, config.batch_size,
            config.learning_rate, config.augment, config.validation, config.strategy,
            config.cpu_devices, config.mixed_precision, config.jit_compile, config.verbose) == (
        "cifar100", "short", 4, 64, 0.05, False, 500, "mirrored", 2, "off", "off", 2)
    defaults = config_from_args(_parse(["train"]))
    assert (defaults.augment, defaults.recipe, defaults.epochs) == (None, "paper", None)
    assert args.func.__name__ == "run_train"


def test_cli_bad_arguments_exit_2(capsys):
    assert main(["train", "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err
    assert main(["train", "--model", "nope", "--run-dir", "/nonexistent/x"]) == 2
    assert "model='nope' is not a registered model" in capsys.readouterr().err


# --- Mixed precision and XLA: numerics of a few steps on CPU ------------------------------

def _few_steps(policy, cifar10_images, jit_compile=False, steps=3):
    """Losses of `steps` training steps and how far they moved the trainable weights, from the
    same initial weights, with the dtype policy `policy`."""
    x, y = cifar10_images
    x, y = x[:32].astype("float32"), y[:32]
    keras.utils.set_random_seed(7)
    initial = LruNet(reuse=2, width=0.5, dropout=0.0).get_weights()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = LruNet(reuse=2, width=0.5, dropout=0.0)
        model.set_weights(initial)
        start = [v.numpy() for v in model.trainable_variables]
        config = train_config.resolve(TrainConfig(recipe="short", learning_rate=0.05,
                                                  schedule="constant"))
        compile_model(model, config, steps_per_epoch=steps, jit_compile=jit_compile)
        losses = [float(model.train_on_batch(x, y)[0]) for _ in range(steps)]
        updates = [v.numpy() - w for v, w in zip(model.trainable_variables, start)]
        return losses, updates, model
    finally:
        keras.config.set_dtype_policy(previous)


def _relative_difference(reference, other):
    """|other - reference| / |reference| over all arrays together (global L2 norms)."""
    difference = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(reference, other)))
    return difference / np.sqrt(sum(np.sum(a**2) for a in reference))


def _cosine(a, b):
    """Cosine similarity of two lists of arrays taken as one vector each."""
    dot = sum(np.sum(x * y) for x, y in zip(a, b))
    return dot / np.sqrt(sum(np.sum(x**2) for x in a) * sum(np.sum(y**2) for y in b))


# Measured on CPU: low-precision gradients differ most where a BatchNorm's backward pass
# cancels most of the incoming gradient (the head_bn input): float16 moves the weights in
# nearly the same direction (cosine ~0.975 after 3 steps), bfloat16 (8-bit
# mantissa) cosine ~0.95; the classifier's own update agrees to ~2.5% / ~7%.
# bfloat16 against float32, 3 steps, measured on three sets of 64 real CIFAR-10 images with
# TF_ENABLE_ONEDNN_OPTS=0 and =1 (2-core AMD EPYC with AVX-512 and avx512_bf16): first loss
# (forward pass only) within 0.28%, later losses within 6.2% (the steps compound the
# rounding), update cosine 0.923-0.972, classifier update 2.2-7.8% apart.


def test_mixed_bfloat16_training_matches_float32_for_a_few_steps(cifar10_images):
    losses32, updates32, _ = _few_steps("float32", cifar10_images)
    losses16, updates16, model = _few_steps("mixed_bfloat16", cifar10_images)
    assert model.get_layer("stage1").compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in model.weights)  # variables stay float32
    np.testing.assert_allclose(losses16[0], losses32[0], rtol=0.01)
    np.testing.assert_allclose(losses16, losses32, rtol=0.1)
    assert _cosine(updates32, updates16) > 0.85
    assert _relative_difference(updates32[-2:], updates16[-2:]) < 0.15  # classifier


def test_mixed_float16_training_with_loss_scaling_matches_float32(cifar10_images, monkeypatch):
    """float16 is the GPU default. TensorFlow's CPU grouped conv has no float16 gradient
    (Conv2DBackpropFilter: "filter_size does not have enough elements"), so on CPU the
    grouped 1x1 conv runs as the layer's einsum formulation for this test; everything else
    (loss scaling, casts, fused BatchNorm, CoupledSGD inside LossScaleOptimizer) is real."""
    def einsum_conv(self, inputs, kernel):
        return grouped_pointwise_einsum(inputs, kernel, self.groups)

    monkeypatch.setattr(GroupedPointwiseConv2D, "convolution_op", einsum_conv)
    losses32, updates32, _ = _few_steps("float32", cifar10_images)
    losses16, updates16, model = _few_steps("mixed_float16", cifar10_images)
    assert type(model.optimizer).__name__ == "LossScaleOptimizer"
    assert isinstance(model.optimizer.inner_optimizer, CoupledSGD)
    assert int(model.optimizer.iterations.numpy()) == 3  # no step skipped for overflow
    # Largest relative loss difference measured: under 1% on a 2-core AMD EPYC with AVX-512,
    # and 1.17% (third step) on an Intel Xeon with AVX512_FP16 and oneDNN on (=0: under 1%),
    # where oneDNN computes float16 natively; 3% keeps a margin over both.
    np.testing.assert_allclose(losses16, losses32, rtol=0.03)
    assert _cosine(updates32, updates16) > 0.95
    assert _relative_difference(updates32[-2:], updates16[-2:]) < 0.05  # classifier


@pytest.mark.slow
def test_xla_training_matches_eager_graph_for_a_few_steps(cifar10_images):
    losses, updates, _ = _few_steps("float32", cifar10_images, jit_compile=False)
    losses_xla, updates_xla, model = _few_steps("float32", cifar10_images, jit_compile=True)
    assert model.jit_compile is True
    np.testing.assert_allclose(losses_xla, losses, rtol=1e-4)
    assert _relative_difference(updates, updates_xla) < 1e-3


def test_precision_and_xla_switch_on_with_a_gpu_only():
    assert distribute.resolve_precision("auto", gpus=1) == "mixed_float16"
    assert distribute.resolve_precision("auto", gpus=0) == "float32"
    assert distribute.resolve_precision("bfloat16", gpus=0) == "mixed_bfloat16"
    assert distribute.resolve_precision("float16", gpus=1) == "mixed_float16"
    with pytest.raises(ValueError, match="mixed_precision='float16' needs a GPU"):
        distribute.resolve_precision("float16", gpus=0)
    assert distribute.resolve_jit("auto", gpus=2) is True
    assert distribute.resolve_jit("auto", gpus=0) is False
    assert distribute.resolve_jit("on", gpus=0) is True


# --- A whole run (the CI-sized acceptance run) ---------------------------------------------

@pytest.mark.slow
def test_ci_sized_run_learns_and_writes_the_run_directory(fashion_dir, tmp_path):
    """1-LruNet-1x, short recipe, 3 epochs on 2,000 real Fashion-MNIST images (500 more held
    out for validation), tested on 1,000: well above the 10% of chance."""
    summary = train(model="lrunet", model_args={"reuse": 1, "width": 1.0},
                    dataset="fashion_mnist", recipe="short", epochs=3, validation=500,
                    data_dir=str(fashion_dir), run_dir=str(tmp_path / "run"), verbose=2)
    out = tmp_path / "run"
    assert summary["test_accuracy"] > 0.5, summary
    assert (summary["train_images"], summary["validation_images"], summary["test_images"]) == (
        2000, 500, 1000)
    assert summary["epochs_run"] == 3 and summary["optimizer_steps"] == 3 * 16
    assert json.loads((out / "summary.json").read_text())["test_accuracy"] == \
        summary["test_accuracy"]
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["weight_decay"] == 5e-4 and config["data"]["validation"]
    rows = run_dir.read_csv(out / "log.csv")
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "images_per_second"} <= set(
        rows[0])
    best = max(range(3), key=lambda i: rows[i]["val_accuracy"])
    assert summary["best_epoch"] == best
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # best.weights.h5 holds the selected epoch and loads into the builder; evaluated on the
    # test split it gives the summary's number.
    model = LruNet(reuse=1, width=1.0, input_shape=(28, 28, 1),
                   weights=str(out / "best.weights.h5"))
    LruNet(reuse=1, width=1.0, input_shape=(28, 28, 1), weights=str(out / "last.weights.h5"))
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    test = model.evaluate(data.load("fashion_mnist", "test", data_dir=fashion_dir), verbose=0,
                          return_dict=True)
    assert test["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)
    # The same command again does not train or test again.
    again = train(model="lrunet", model_args={"reuse": 1, "width": 1.0},
                  dataset="fashion_mnist", recipe="short", epochs=3, validation=500,
                  data_dir=str(fashion_dir), run_dir=str(out), verbose=0)
    assert again == summary


@pytest.mark.slow
def test_fine_tuning_starts_from_pretrained_weights(tmp_path, fashion_dir):
    """Registered Fashion-MNIST weights of 1-LruNet-1x: every layer is copied, and one short
    epoch at a small learning rate keeps the accuracy of the published model."""
    summary = train(model="lrunet", model_args={"reuse": 1, "width": 1.0},
                    weights="lrunet1_1x.fashion_mnist", dataset="fashion_mnist",
                    recipe="short", epochs=1, learning_rate=0.001, schedule="constant",
                    train_images=500, validation=500, data_dir=str(fashion_dir),
                    run_dir=str(tmp_path / "run"), verbose=0)
    assert summary["fine_tuned_from"]["layers_not_copied"] == []
    assert summary["test_accuracy"] > 0.85


def test_curves_show_accuracy_in_percent_like_everything_else():
    """curves.png's accuracy panel: train and validation accuracy and the best weights' test
    accuracy in %, as the summary and the CLI report them."""
    from lru_keras.train import run_dir

    history = [{"epoch": 0, "loss": 2.0, "accuracy": 0.25, "val_loss": 2.1, "val_accuracy": 0.2},
               {"epoch": 1, "loss": 1.5, "accuracy": 0.5, "val_loss": 1.7, "val_accuracy": 0.4}]
    figure = run_dir.curves_figure(history, "run", test_accuracy=0.375, best_epoch=1)
    loss, accuracy = figure.axes
    lines = {line.get_label(): list(line.get_ydata()) for line in accuracy.get_lines()}
    assert lines["train"] == [25.0, 50.0] and lines["validation"] == [20.0, 40.0]
    assert lines["test (best weights): 37.50%"] == [37.5, 37.5]
    assert accuracy.get_ylabel() == "accuracy %"
    assert [list(line.get_ydata()) for line in loss.get_lines()][:2] == [[2.0, 1.5], [2.1, 1.7]]
    assert min(text.get_fontsize() for text in accuracy.get_legend().get_texts()) >= 9
