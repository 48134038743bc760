"""`train(...)`: one training run with `model.fit`, from configuration to test accuracy.

A resumed run continues from the weights, optimizer state (momentum, step counter and so the
learning-rate schedule) and epoch of its last finished epoch; the order in which it then
draws the training images differs from an uninterrupted run's (the shuffle restarts from the
seed), and a resume on another number of replicas shifts the step-based schedule by the
partial batches that multi-replica runs drop.

The steps, each in its own module: resolve the configuration (`config`), refuse a run
directory of another configuration or one that cannot be written (`run_dir`), read the last
committed state, its files checked (`callbacks`), create the tf.distribute strategy and pick
mixed precision / XLA (`distribute`), hold a validation split out of the training data
(`splits`), build the model from the builder registry (and the pretrained weights to start
from) and compile it with the recipe's schedule and PyTorch-style SGD (`recipes`,
`optimizer`); only then record the run (config.json), so that a command refused at any of
these steps writes nothing. Then resume from the committed state if there is one, fit with
selection on validation accuracy (`callbacks`), evaluate the selected (best) weights once on
the test split and write summary.json.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import statistics
import sys
import time

import keras
import numpy as np

from lru_keras import __version__, analysis, atomic, checksums, data, extras, zoo
from lru_keras.progress import Ticker
from lru_keras.train import callbacks, distribute, recipes, run_dir, splits
from lru_keras.train import config as config_module
from lru_keras.train.config import TrainConfig
from lru_keras.train.optimizer import CoupledSGD

DEFAULT_RUNS_DIR = "runs"
SUMMARY_ADVICE = ("Delete it and run the same command again: the run is complete, and it "
                  "tests the best weights again and writes a new summary.")


def train(config: TrainConfig | None = None, **options) -> dict:
    """Train a model as `config` (or keyword options of `TrainConfig`) says; return the summary.

    Running the same configuration again resumes an interrupted run from its last finished
    epoch (weights, optimizer, epoch, schedule), and returns a finished run's summary without
    training. A run directory of another configuration raises `RunDirConflictError`.
    """
    started = time.perf_counter()
    # The datasets ([data] extra) and the run's curves.png ([plots]), checked before any work.
    extras.require_installed("tensorflow_datasets", "matplotlib")
    config = TrainConfig(**options) if config is None else dataclasses.replace(config, **options)
    config = config_module.resolve(config)
    role = distribute.worker_role(config.strategy)
    paths = run_dir.paths_for(config.run_dir or default_run_dir(config), role)
    identity = config_module.identity(config)
    status = run_dir.check(paths, identity)
    say = print if role.is_chief else (lambda *args, **kwargs: None)
    if status == "complete":
        summary = run_dir.read_json(paths.summary, SUMMARY_ADVICE)
        say(f"{paths.root}: this run is complete (test accuracy "
            f"{summary['test_accuracy']:.4f}); nothing to do.")
        return summary
    atomic.check_writable_folder(paths.out, "run dir")
    state = callbacks.read_state(paths, say)  # every file checked before anything is loaded

    # Everything that can refuse the configuration comes before `run_dir.record`, the first
    # write: a failed command leaves no record that would refuse the corrected one.
    strategy = distribute.make_strategy(config.strategy, config.cpu_devices)
    gpus = distribute.gpu_count()
    policy = distribute.resolve_precision(config.mixed_precision, gpus)
    jit_compile = distribute.resolve_jit(config.jit_compile, gpus)
    replicas = distribute.replicas(strategy)
    plan = splits.plan_splits(config.dataset, validation=config.validation,
                              train_images=config.train_images, test_images=config.test_images,
                              data_dir=config.data_dir)
    check_batch_size(config.batch_size, plan.train_images, replicas)
    environment = {"lru_keras": __version__, "keras": keras.__version__,
                   "tensorflow": _tf_version(), "python": platform.python_version(),
                   "gpus": gpus, "replicas": replicas, "workers": role.workers,
                   "mixed_precision": policy, "jit_compile": jit_compile}

    spec = data.info(config.dataset)
    drop_remainder = replicas > 1  # never give a replica an empty batch to normalise
    steps_per_epoch = (plan.train_images // config.batch_size if drop_remainder
                       else math.ceil(plan.train_images / config.batch_size))
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(config.seed)
        source = _pretrained_source(config, spec)
        with distribute.scope(strategy):
            model = build_model(config, spec)
            transfer = _transfer(model, source, config.weights) if source is not None else None
            compile_model(model, config, steps_per_epoch, jit_compile)
        distribute.adapt_model(model, strategy, _example_batch(spec))
        run_dir.record(paths, config_module.jsonable(config.to_dict()), identity,
                       plan.to_dict(), environment)

        if state is not None:
            callbacks.restore(model, paths, state)
            state["resumes"] = [*state.get("resumes", []), state["epoch"]]
            say(f"resuming {paths.root} after epoch {state['epoch']} of {config.epochs} "
                f"(optimizer step {int(model.optimizer.iterations.numpy())})")
        else:
            say(f"training {model.name} on {config.dataset} ({plan.train_images} training, "
                f"{plan.validation_images} validation images held out of 'train', "
                f"{plan.test_images} test images) -> {paths.root}")
        say(f"recipe {config.recipe}: {config.epochs} epochs, batch {config.batch_size}, "
            f"lr {config.learning_rate:g} ({config.schedule}), momentum {config.momentum:g}, "
            f"weight decay {config.weight_decay:g} (coupled L2), dropout {config.dropout}, "
            f"augment {config.augment}; {replicas} replica(s), {policy}, XLA {jit_compile}")

        train_data = distribute.shard_by_data(data.load(
            config.dataset, plan.train, batch_size=config.batch_size, training=True,
            augment=config.augment, seed=config.seed, data_dir=config.data_dir,
            drop_remainder=drop_remainder), strategy)
        validation_data = None if plan.validation is None else distribute.shard_by_data(
            data.load(config.dataset, plan.validation, batch_size=config.batch_size,
                      data_dir=config.data_dir), strategy)
        title = f"{model.name} on {config.dataset}, recipe {config.recipe}"
        recipe = recipes.get_recipe(config.recipe)
        state_callback = callbacks.TrainingState(
            paths, monitor="val_accuracy" if validation_data is not None else None,
            patience=config.patience if validation_data is not None else 0,
            patience_start=round(recipe.patience_start * config.epochs), state=state,
            plot_title=title if role.is_chief else None)
        initial_epoch = state["epoch"] if state else 0
        finished = state is not None and (state["stopped"] or initial_epoch >= config.epochs)
        # "auto": Keras's progress bar on a terminal; in a log file (where a bar writes a line
        # per update), Keras's line per epoch and a status line at least every 10 s.
        periodic = config.verbose == "auto" and role.is_chief and not sys.stdout.isatty()
        verbose = 0 if not role.is_chief else (
            (2 if periodic else 1) if config.verbose == "auto" else config.verbose)
        ticker = Ticker("train", f"epoch {initial_epoch + 1}/{config.epochs} (the first step "
                                 f"compiles)", stream=sys.stdout, enabled=periodic)
        synchronize = distribute.statistics_synchronizer(model, strategy)
        images_per_epoch = (steps_per_epoch * config.batch_size if drop_remainder
                            else plan.train_images)
        fit_callbacks = [callbacks.EpochStats(images_per_epoch),
                         callbacks.StepProgress(ticker, "training")]
        if synchronize is not None:  # before validation, saving and the test
            fit_callbacks.append(callbacks.SynchronizeStatistics(synchronize))
        fit_callbacks += [keras.callbacks.TensorBoard(str(paths.tensorboard), write_graph=False),
                          state_callback]
        with ticker:
            if not finished:
                model.fit(train_data, validation_data=validation_data, epochs=config.epochs,
                          shuffle=False,  # the pipeline shuffles (seeded)
                          initial_epoch=initial_epoch, verbose=verbose, callbacks=fit_callbacks)
            state = state_callback.state

            # The selected weights, evaluated once on the test split.
            ticker.say(f"testing the weights of epoch {state['best_epoch'] + 1} on "
                       f"{plan.test_images} images")
            checksums.check_sidecar(paths.best, "best weights")
            callbacks.model_only(model).load_weights(paths.best)
            test_data = distribute.shard_by_data(data.load(
                config.dataset, plan.test, batch_size=config.batch_size,
                data_dir=config.data_dir), strategy)
            test = model.evaluate(test_data, verbose=0, return_dict=True)
        summary = _summary(config, model, plan, state, test, environment, paths, transfer,
                           seconds=time.perf_counter() - started)
        run_dir.write_json(paths.summary, summary)
        if role.is_chief:
            run_dir.plot_curves(paths.curves, state["history"], title,
                                test_accuracy=summary["test_accuracy"],
                                best_epoch=state["best_epoch"])
        say(format_summary(summary))
        return summary
    finally:
        keras.config.set_dtype_policy(previous_policy)


def default_run_dir(config: TrainConfig) -> str:
    """runs/<model>-<args>-<dataset>-<recipe>-<hash>: the same configuration, the same dir."""
    return os.path.join(DEFAULT_RUNS_DIR, config_module.default_run_name(config))


def check_batch_size(batch_size: int, train_images: int, replicas: int) -> None:
    """Refuse batch sizes that cannot train: larger than the training set, or not a multiple
    of the number of replicas the global batch is split over."""
    if batch_size > train_images:
        raise ValueError(f"batch_size={batch_size} is larger than the {train_images} training "
                         f"images; use a batch size of at most {train_images}")
    if batch_size % replicas:
        raise ValueError(f"batch_size={batch_size} is the global batch and must be a multiple "
                         f"of the {replicas} replicas it is split over")


def build_model(config: TrainConfig, spec: data.DatasetSpec):
    """The model a resolved config describes, with the dataset's classes and image shape
    (`lru_keras.zoo.create` of its builder)."""
    arguments = dict(config.model_args, classes=spec.num_classes, input_shape=spec.image_shape)
    if config.dropout is not None:  # None: the builder has no dropout
        arguments["dropout"] = config.dropout
    return zoo.create(config.model, **arguments)


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> CoupledSGD:
    """PyTorch-style SGD with the recipe's learning-rate schedule (a function of the step)."""
    recipe = recipes.get_recipe(config.recipe)
    schedule = recipes.make_schedule(
        config.schedule, config.learning_rate, config.epochs, steps_per_epoch,
        milestones=recipe.milestones, decay=recipe.decay, warmup_epochs=config.warmup_epochs)
    return CoupledSGD(schedule, momentum=config.momentum, weight_decay=config.weight_decay,
                      nesterov=config.nesterov)


def compile_model(model, config: TrainConfig, steps_per_epoch: int, jit_compile: bool) -> None:
    """Compile for training: cross-entropy on the softmax output, accuracy. Call inside the
    strategy's scope; with a mixed_float16 policy Keras wraps the optimizer in a
    LossScaleOptimizer."""
    model.compile(optimizer=make_optimizer(config, steps_per_epoch),
                  loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  jit_compile=jit_compile)


def _pretrained_source(config: TrainConfig, spec):
    """The model holding the pretrained weights to start from (None without `weights`)."""
    if config.weights is None:
        return None
    builder = zoo.get_builder(config.model)
    if str(config.weights).endswith(".weights.h5"):  # the user's own file: same architecture
        arguments = dict(config.model_args, classes=spec.num_classes,
                         input_shape=spec.image_shape)
    else:  # a registered name: its own classes and input shape
        arguments = dict(config.model_args)
    return builder(**arguments, weights=config.weights)


def _transfer(model, source, weights) -> dict:
    """Copy every layer whose weights have the same shapes; report what was left out."""
    copied, skipped = [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            other = source.get_layer(layer.name)
        except ValueError:
            skipped.append(layer.name)
            continue
        values = other.get_weights()
        if [tuple(v.shape) for v in values] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(values)
            copied.append(layer.name)
        else:
            skipped.append(layer.name)
    if not copied:
        raise ValueError(f"weights={weights!r}: no layer of {source.name} fits {model.name}")
    return {"weights": str(weights), "layers_copied": len(copied), "layers_not_copied": skipped}


def _example_batch(spec):
    return (np.zeros((1, *spec.image_shape), "float32"), np.zeros((1,), "int32"))


def _summary(config, model, plan, state, test, environment, paths, transfer, seconds) -> dict:
    history = state["history"]
    speeds = [row["images_per_second"] for row in history if "images_per_second" in row]
    steady = speeds[1:] or speeds  # the first epoch includes tracing
    return {
        "run_dir": str(paths.root),
        "model": model.name,
        "builder": config.model,
        "model_args": config.model_args,
        "dataset": config.dataset,
        "recipe": config.recipe,
        "parameters": analysis.count_parameters(model)["trainable"],
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        "test_images": plan.test_images,
        "test_split": plan.test,
        "selection": f"weights of the epoch with the best validation accuracy on "
                     f"{plan.validation_images} images held out of the training split; the "
                     f"test split was evaluated once, after training"
                     if plan.validation else "no validation split: the last epoch's weights",
        "best_epoch": state["best_epoch"],
        "best_val_accuracy": state["best"],
        "train_images": plan.train_images,
        "validation_images": plan.validation_images,
        "epochs": config.epochs,
        "epochs_run": len(history),
        "stopped_early": bool(state["stopped"]) and len(history) < config.epochs,
        "resumed_at_epochs": state.get("resumes", []),
        "optimizer_steps": int(model.optimizer.iterations.numpy()),
        "train_images_per_second": statistics.median(steady) if steady else None,
        "seconds_this_process": seconds,
        "fine_tuned_from": transfer,
        "environment": environment,
    }


def format_summary(summary: dict) -> str:
    """A few lines for the terminal."""
    speed = summary["train_images_per_second"]
    best, value = summary["best_epoch"], summary["best_val_accuracy"]
    selected = (f"selected on validation accuracy {value:.4f}" if value is not None
                else "no validation split")
    return "\n".join([
        f"test accuracy {summary['test_accuracy']:.4f} on {summary['test_images']} test images "
        f"(weights after epoch {best + 1} of {summary['epochs_run']}, {selected})",
        f"training: {speed:.0f} images/s (median epoch)" if speed else "training: -",
        f"run dir: {summary['run_dir']}",
    ])


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__

