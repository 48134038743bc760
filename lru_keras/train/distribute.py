"""Devices: GPU detection, mixed precision and XLA switches, tf.distribute strategies.

- `resolve_precision` / `resolve_jit`: "auto" turns mixed precision (float16) and XLA on when
  a GPU is present and off on CPU (XLA measured 2x slower on CPU here; CPU float16 kernels
  are slow or missing).
- `make_strategy("none" | "mirrored" | "multiworker")`: None (the default single-device
  strategy), MirroredStrategy over the local GPUs (or over N logical CPU devices, for
  testing), or MultiWorkerMirroredStrategy configured by TF_CONFIG. Create it before any
  other TensorFlow work: MultiWorkerMirroredStrategy must be created at program start.
- `worker_role()`: this process's role in TF_CONFIG, read without touching TensorFlow, so
  that the run directory can be checked before the strategy exists.
- `adapt_model(model, strategy, ...)`: two workarounds that make Keras 3's `model.fit` and
  `model.evaluate` run under MultiWorkerMirroredStrategy (see `_install_multiworker_fixes`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import types

STRATEGIES = ("none", "mirrored", "multiworker")
PRECISIONS = {"auto": None, "off": "float32", "float32": "float32",
              "float16": "mixed_float16", "mixed_float16": "mixed_float16",
              "bfloat16": "mixed_bfloat16", "mixed_bfloat16": "mixed_bfloat16"}
JIT_CHOICES = ("auto", "on", "off")


def gpu_count() -> int:
    """Number of physical GPUs TensorFlow sees."""
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def resolve_precision(value: str, gpus: int) -> str:
    """Keras dtype policy for a --mixed-precision value: auto is mixed_float16 with a GPU."""
    if value not in PRECISIONS:
        raise ValueError(f"mixed_precision={value!r} is not one of {sorted(PRECISIONS)}")
    if value == "auto":
        return "mixed_float16" if gpus else "float32"
    if PRECISIONS[value] == "mixed_float16" and not gpus:
        raise ValueError(
            f"mixed_precision={value!r} needs a GPU: TensorFlow's CPU kernels have no float16 "
            f"gradient for the grouped 1x1 convolution (and are slow in float16); use "
            f"'bfloat16' or 'off' on a CPU")
    return PRECISIONS[value]


def resolve_jit(value, gpus: int) -> bool:
    """XLA on or off for a --jit value (True/False accepted too): auto is on with a GPU."""
    if isinstance(value, bool):
        return value
    if value not in JIT_CHOICES:
        raise ValueError(f"jit_compile={value!r} is not one of {list(JIT_CHOICES)} "
                         f"(or True/False)")
    return {"on": True, "off": False, "auto": gpus > 0}[value]


@dataclasses.dataclass(frozen=True)
class WorkerRole:
    """This process's place in a multi-worker cluster (index 0 of 1 when not distributed)."""

    task_type: str = "worker"
    index: int = 0
    workers: int = 1
    is_chief: bool = True

    @property
    def name(self) -> str:
        return f"{self.task_type}-{self.index}"


def worker_role(strategy_name: str) -> WorkerRole:
    """The role TF_CONFIG gives this process under "multiworker"; the only role otherwise.

    The chief is the "chief" task if the cluster has one, else worker 0 (TensorFlow's rule).
    """
    if strategy_name != "multiworker":
        return WorkerRole()
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise ValueError(
            "strategy='multiworker' needs the TF_CONFIG environment variable, e.g. "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}} on the first worker')
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        task_type, index = task["type"], int(task["index"])
        workers = sum(len(cluster.get(job, [])) for job in ("chief", "worker"))
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"TF_CONFIG is not a valid cluster spec ({error}): {text!r}") from None
    is_chief = task_type == "chief" or (task_type == "worker" and index == 0
                                        and not cluster.get("chief"))
    return WorkerRole(task_type=task_type, index=index, workers=workers, is_chief=is_chief)


def configure_cpu_devices(count: int) -> None:
    """Split the CPU into `count` logical devices (to run MirroredStrategy without GPUs).

    Must run before TensorFlow initialises its devices (before any tensor is created).
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError:
        present = len(tf.config.list_logical_devices("CPU"))
        if present != count:
            raise ValueError(
                f"cpu_devices={count}: TensorFlow has already started with {present} logical "
                f"CPU device(s); choose the device count before any TensorFlow work (e.g. "
                f"in a fresh process)") from None


def make_strategy(name: str, cpu_devices: int | None = None):
    """A tf.distribute strategy for `name`, or None for "none" (Keras's default strategy).

    "mirrored": all local GPUs, or `cpu_devices` logical CPU devices when given (there are
    no GPUs here, so tests split the CPU). "multiworker": MultiWorkerMirroredStrategy from
    TF_CONFIG, using each worker's GPUs (or CPU).
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy={name!r} is not one of {list(STRATEGIES)}")
    if cpu_devices is not None:
        if name != "mirrored":
            raise ValueError(f"cpu_devices={cpu_devices} only goes with strategy='mirrored'")
        configure_cpu_devices(cpu_devices)
    import tensorflow as tf

    if name == "none":
        return None
    if name == "mirrored":
        if cpu_devices is not None:
            return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_devices)])
        return tf.distribute.MirroredStrategy()
    worker_role(name)  # a clear error if TF_CONFIG is missing or malformed
    _install_multiworker_fixes()
    return tf.distribute.MultiWorkerMirroredStrategy()


def replicas(strategy) -> int:
    """Number of replicas a global batch is split over (1 without a strategy)."""
    return 1 if strategy is None else strategy.num_replicas_in_sync


def is_multiworker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def scope(strategy):
    """`strategy.scope()`, or a no-op context without a strategy."""
    import contextlib

    return contextlib.nullcontext() if strategy is None else strategy.scope()


def shard_by_data(dataset, strategy):
    """Under multi-worker, shard the input by elements (each worker reads the same shuffled
    stream with the same seed and keeps its share); TFDS's few files cannot be split by file."""
    if not is_multiworker(strategy):
        return dataset
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def statistics_synchronizer(model, strategy):
    """A function that averages the model's non-trainable variables (BatchNorm moving mean and
    variance) over all replicas and workers, or None without a strategy.

    Under tf.distribute each replica updates the moving statistics from its own share of the
    batch (non-synchronized BatchNorm, as usual), so replicas and workers drift apart; the
    weights saved and the validation results would depend on the worker. Averaging them (at
    the end of every epoch, before validation) makes every copy identical and estimates the
    statistics from all replicas' data. Trainable weights need nothing: their gradients are
    all-reduced at every step.
    """
    if strategy is None or strategy.num_replicas_in_sync == 1:
        return None
    import tensorflow as tf

    variables = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]
    if not variables:
        return None

    def average():
        context = tf.distribute.get_replica_context()
        local = [tf.identity(v.value) for v in variables]  # this replica's values, as tensors
        means = context.all_reduce(tf.distribute.ReduceOp.MEAN, local)
        for variable, mean in zip(variables, means):
            variable.value.assign(mean)

    @tf.function
    def synchronize():
        strategy.run(average)

    return synchronize


def adapt_model(model, strategy, example_batch) -> None:
    """Make a compiled `model` trainable by `fit` under `strategy` (no-op unless multi-worker).

    Keras 3.15's `fit`/`evaluate` first build the model's metrics from a batch that they
    all-reduce with `strategy.reduce("MEAN", (x, y))`, which MultiWorkerMirroredStrategy
    rejects ("Attempt to convert a value (PerReplica...)"). The model here is built already,
    so its symbolic build is done from `example_batch`, a local (x, y) of the right shapes.
    """
    if not is_multiworker(strategy):
        return
    if not hasattr(model, "_maybe_symbolic_build") or not hasattr(model, "_symbolic_build"):
        raise RuntimeError("this Keras version changed the trainer internals that the "
                           "multi-worker workaround replaces; check lru_keras/train/distribute.py")

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        with strategy.scope():
            self._symbolic_build(data_batch=example_batch if data_batch is None else data_batch)

    model._maybe_symbolic_build = types.MethodType(_maybe_symbolic_build, model)


_FIXES_INSTALLED = False


def _install_multiworker_fixes() -> None:
    """Keras 3.15 under MultiWorkerMirroredStrategy averages each step's logs (scalars: loss,
    accuracy) with `strategy.reduce("MEAN", v, axis=0)`, which fails on a scalar ("Invalid
    reduction dimension 0 for input with 0 dimensions"; tensorflow/tensorflow#72388). The
    replacement averages scalars over workers with axis=None and leaves every other case
    (and every other strategy) to Keras."""
    global _FIXES_INSTALLED
    if _FIXES_INSTALLED:
        return
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    required = ("reduce_per_replica", "_collective_all_reduce_multi_worker",
                "_is_per_replica_instance")
    if not all(hasattr(trainer, name) for name in required):
        raise RuntimeError("this Keras version changed the trainer internals that the "
                           "multi-worker workaround replaces; check lru_keras/train/distribute.py")
    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not trainer._collective_all_reduce_multi_worker(
                strategy):
            return original(values, strategy, reduction)

        def reduce_one(value):
            local = (strategy.experimental_local_results(value)[0]
                     if trainer._is_per_replica_instance(value) else value)
            axis = None if len(local.shape) == 0 else 0
            return strategy.reduce("MEAN", value, axis=axis)

        return tree.map_structure(reduce_one, values)

    trainer.reduce_per_replica = reduce_per_replica
    _FIXES_INSTALLED = True
