"""The configuration of a training run: what the user asked for, checked and completed.

`TrainConfig` holds every choice of a run. Fields left None take the recipe's value (see
`lru_keras.train.recipes`); `resolve` fills them in and checks every value, naming the
argument, the value and what is allowed. The resolved config is what a run directory records
(config.json) and what decides whether a directory belongs to a run (`identity`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import numbers

from lru_keras import data
from lru_keras.train import distribute, recipes
from lru_keras.validation import require_at_most, require_int, require_positive_int
from lru_keras import zoo

# Fields that change how a run is executed, not what it computes: a run may be resumed with
# other values (e.g. on another machine, with another number of devices).
RUNTIME_FIELDS = ("run_dir", "data_dir", "verbose", "strategy", "cpu_devices", "jit_compile")
# Upper bounds that no real run reaches, so that a typo (an extra zero, 10**9) is refused at
# once instead of running for days or exhausting memory. The paper trains 300 epochs; 10,000
# epochs of even Fashion-MNIST take days on a GPU.
MAX_EPOCHS = 10_000
# MirroredStrategy over logical CPU devices is for testing without GPUs; each device is a full
# TensorFlow device with its own threads, and a few are enough to test with.
MAX_CPU_DEVICES = 64
# The seeds NumPy (and so keras.utils.set_random_seed) accepts.
MAX_SEED = 2**32 - 1
# Builder arguments that the training run sets itself.
RESERVED_MODEL_ARGS = ("classes", "input_shape", "weights", "dropout", "include_top",
                       "input_tensor", "classifier_activation", "pooling", "name",
                       "feature_extractor", "feature_keys")


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    """The options a training run and each trial of a search (`lru_keras.tune`) share. None
    means "the recipe's value".

    dataset: "cifar10", "cifar100" or "fashion_mnist" (prepared with `lru-keras data import`).
    recipe: "paper" or "short".
    epochs, batch_size (global, over all devices), learning_rate (peak), augment: recipe
        overrides.
    validation: images held out of the training split for selection (None: 5,000, or a
        tenth of a smaller training split).
    train_images: train on only this many images (None: all).
    seed: weight initialisation, shuffling and augmentation.
    data_dir: TFDS data dir (None: $TFDS_DATA_DIR or ~/tensorflow_datasets).
    verbose: Keras verbosity: "auto"/1 progress bar, 2 one line per epoch, 0 silent.
    """

    dataset: str = "cifar10"
    recipe: str = "paper"
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    augment: bool | None = None
    validation: int | None = None
    train_images: int | None = None
    seed: int = 0
    data_dir: str | None = None
    verbose: int | str = "auto"


@dataclasses.dataclass(frozen=True)
class TrainConfig(TrainingOptions):
    """Everything that defines a training run: the `TrainingOptions`, and

    model: a builder name of `lru_keras.zoo.list_builders()` (case-insensitive, e.g. "lrunet").
    model_args: builder arguments, e.g. {"reuse": 14, "width": 1.0}.
    schedule, warmup_epochs, momentum, weight_decay (coupled L2, PyTorch's), nesterov,
        dropout: recipe overrides (None: the recipe's value).
    patience: early-stopping patience in epochs on validation accuracy (0: off).
    validation=0: no validation, the last epoch's weights count as the best.
    test_images: test on only this many images (None: all).
    weights: start from pretrained weights: a registered weights or dataset name, or a
        .weights.h5 file (fine-tuning; a classifier of another size is left initialised).
    strategy: "none", "mirrored" or "multiworker"; cpu_devices: with "mirrored", split the
        CPU into that many logical devices (testing without GPUs).
    mixed_precision: "auto" (float16 with a GPU), "off", "float16", "bfloat16".
    jit_compile: "auto" (XLA with a GPU), "on", "off".
    run_dir: the run's directory (None: runs/<name>-<hash of the config>).
    """

    model: str = "LruNet"
    model_args: dict = dataclasses.field(default_factory=dict)
    schedule: str | None = None
    warmup_epochs: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    nesterov: bool | None = None
    dropout: float | None = None
    patience: int | None = None
    test_images: int | None = None
    weights: str | None = None
    strategy: str = "none"
    cpu_devices: int | None = None
    mixed_precision: str = "auto"
    jit_compile: str = "auto"
    run_dir: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training options {unknown}; known: {sorted(known)}")
        return cls(**values)


def resolve(config: TrainConfig) -> TrainConfig:
    """`config` with the recipe's values filled in, the model name made canonical, and every
    value checked (ValueError naming the argument, the value and what is allowed)."""
    recipe = recipes.get_recipe(config.recipe)
    if config.dataset not in data.DATASETS:
        raise ValueError(f"dataset={config.dataset!r} is not a supported dataset; expected one "
                         f"of {sorted(data.DATASETS)}")
    model = resolve_model_name(config.model)
    filled = {}
    for field in ("epochs", "batch_size", "learning_rate", "schedule", "warmup_epochs",
                  "momentum", "weight_decay", "nesterov", "augment"):
        value = getattr(config, field)
        filled[field] = getattr(recipe, field) if value is None else value
    dropout = config.dropout
    if not builder_accepts(model, "dropout"):
        if dropout:  # asked for explicitly
            raise ValueError(f"dropout={dropout!r}: {model} has no dropout argument; leave "
                             f"dropout unset")
        dropout = None  # not applicable
    elif dropout is None:
        dropout = recipe.dropout if recipe.dropout is not None else recipes.default_dropout(
            config.dataset)
    patience = recipe.patience if config.patience is None else config.patience
    resolved = dataclasses.replace(config, model=model, model_args=dict(config.model_args),
                                   dropout=dropout, patience=patience or 0, **filled)
    _check(resolved)
    return resolved


def resolve_model_name(name: str) -> str:
    """The registered builder name for `name`, ignoring case ("lrunet" -> "LruNet")."""
    names = {known.lower(): known for known in zoo.list_builders()}
    if not isinstance(name, str) or name.lower() not in names:
        raise ValueError(f"model={name!r} is not a registered model; expected one of "
                         f"{zoo.list_builders()} (case-insensitive)")
    return names[name.lower()]


def builder_accepts(model: str, argument: str) -> bool:
    """Whether the builder of `model` takes `argument`."""
    return argument in inspect.signature(zoo.get_builder(model)).parameters


def identity(config: TrainConfig) -> dict:
    """The part of a resolved config that defines what a run computes (not how it runs)."""
    return {k: v for k, v in jsonable(config.to_dict()).items() if k not in RUNTIME_FIELDS}


def default_run_name(config: TrainConfig) -> str:
    """A readable, deterministic directory name: the same command gives the same directory
    (so that running it again resumes), another configuration another directory."""
    args = "".join(f"-{k}{_short(v)}" for k, v in sorted(config.model_args.items()))
    canonical = json.dumps(_integral_floats_as_ints(identity(config)), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{config.model.lower()}{args}-{config.dataset}-{config.recipe}-{digest[:8]}"


def _integral_floats_as_ints(value):
    """1.0 -> 1 (recursively), so that `--width 1` and `--width 1.0` name the same run."""
    if isinstance(value, dict):
        return {k: _integral_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_floats_as_ints(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _short(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def jsonable(values):
    """A JSON round trip, so that configs read back from config.json compare equal."""
    return json.loads(json.dumps(values))


def _check(config: TrainConfig) -> None:
    require_at_most("epochs", require_positive_int("epochs", config.epochs), MAX_EPOCHS)
    require_positive_int("batch_size", config.batch_size)  # its bound: fit.check_batch_size
    _positive_number("learning_rate", config.learning_rate)
    if config.schedule not in recipes.SCHEDULES:
        raise ValueError(f"schedule={config.schedule!r} is not one of {list(recipes.SCHEDULES)}")
    _number_at_least("warmup_epochs", config.warmup_epochs, 0)
    if config.warmup_epochs > config.epochs:
        raise ValueError(f"warmup_epochs={config.warmup_epochs!r} is longer than the run "
                         f"(epochs={config.epochs}); use at most {config.epochs}")
    _number_at_least("weight_decay", config.weight_decay, 0)
    if not isinstance(config.momentum, numbers.Real) or not 0 <= config.momentum < 1:
        raise ValueError(f"momentum={config.momentum!r} must be a number in [0, 1)")
    if config.dropout is not None and (not isinstance(config.dropout, numbers.Real)
                                       or not 0 <= config.dropout < 1):
        raise ValueError(f"dropout={config.dropout!r} must be a number in [0, 1)")
    for flag in ("nesterov", "augment"):
        if not isinstance(getattr(config, flag), bool):
            raise ValueError(f"{flag}={getattr(config, flag)!r} must be True or False")
    require_int("patience", config.patience, 0)
    if config.validation is not None:
        require_int("validation", config.validation, 0)
    for field in ("train_images", "test_images"):
        if getattr(config, field) is not None:
            require_positive_int(field, getattr(config, field))
    if require_int("seed", config.seed, 0) > MAX_SEED:
        raise ValueError(f"seed={config.seed!r} must be an integer in 0..{MAX_SEED} (the "
                         f"seeds NumPy takes)")
    if config.strategy not in distribute.STRATEGIES:
        raise ValueError(f"strategy={config.strategy!r} is not one of "
                         f"{list(distribute.STRATEGIES)}")
    if config.cpu_devices is not None:
        require_at_most("cpu_devices", require_positive_int("cpu_devices", config.cpu_devices),
                        MAX_CPU_DEVICES)
        if config.strategy != "mirrored":
            raise ValueError(f"cpu_devices={config.cpu_devices} only goes with "
                             f"strategy='mirrored' (got strategy={config.strategy!r})")
    if config.mixed_precision not in distribute.PRECISIONS:
        raise ValueError(f"mixed_precision={config.mixed_precision!r} is not one of "
                         f"{sorted(distribute.PRECISIONS)}")
    distribute.resolve_jit(config.jit_compile, 0)
    if config.verbose not in ("auto", 0, 1, 2):
        raise ValueError(f"verbose={config.verbose!r} must be 'auto', 0, 1 or 2")
    if not isinstance(config.model_args, dict):
        raise ValueError(f"model_args={config.model_args!r} must be a dict of builder arguments")
    parameters = inspect.signature(zoo.get_builder(config.model)).parameters
    for name in config.model_args:
        if name in RESERVED_MODEL_ARGS:
            raise ValueError(f"model_args[{name!r}] is set by the training run (from the "
                             f"dataset, the recipe or `weights`); do not pass it")
        if name not in parameters:
            raise ValueError(f"model_args[{name!r}]: {config.model} takes no argument {name!r}; "
                             f"it takes {[p for p in parameters if p not in RESERVED_MODEL_ARGS]}")


def _positive_number(name, value):
    if not _finite(value) or not value > 0:
        raise ValueError(f"{name}={value!r} must be a finite positive number")


def _number_at_least(name, value, low):
    if not _finite(value) or not value >= low:
        raise ValueError(f"{name}={value!r} must be a finite number >= {low}")


def _finite(value) -> bool:
    return (not isinstance(value, bool) and isinstance(value, numbers.Real)
            and math.isfinite(value))
