"""`lru-keras train`: train a zoo model with `model.fit` (see `lru_keras.train`).

    lru-keras train --model lrunet --reuse 14 --width 1.0 --dataset cifar10
    lru-keras train --model lrunet --reuse 1 --dataset fashion_mnist --recipe short \\
        --epochs 3 --train-images 4000
"""

from __future__ import annotations

import argparse
import json
import textwrap

from lru_keras import data
from lru_keras.cli.options import (
    add_augment_argument, add_data_dir_argument, add_recipe_arguments, add_train_images_argument,
    add_verbosity_arguments, handled_by, non_negative_float, non_negative_int, positive_int,
    positive_number)
from lru_keras.train import config as train_config
from lru_keras.train import distribute, recipes

EPILOG = """\
Honest selection: --validation images (default 5,000, or a tenth of a smaller training split)
are held out of the training split, spread evenly over it; the epoch with the best
validation accuracy gives best.weights.h5 and drives early stopping, and the test split is
evaluated once, at the end, with those weights.

Resuming: the same command again continues an interrupted run from its last finished epoch
(the default --run-dir is derived from the configuration). Every file of the saved state is
checked against its recorded sha256 before it is loaded: if the last epoch's state is
damaged, the run resumes from the epoch before (and says so); if nothing intact is left, it
stops naming the damaged file. A run directory of another configuration is refused, unless
that run never finished an epoch. A command that fails writes nothing in RUN_DIR.
best.weights.h5 and last.weights.h5 come with a .sha256 file, checked when they are loaded.

Multi-worker: run the same command on every worker with --strategy multiworker and TF_CONFIG
set (the chief writes RUN_DIR, the others RUN_DIR/workers/<role>).
"""


def add_train_commands(subparsers) -> argparse.ArgumentParser:
    """Adds `train` to an argparse subparsers object; returns its parser."""
    parser = subparsers.add_parser(
        "train", help="train a model with model.fit (paper or short recipe), resumable",
        description=_description(),
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="lrunet", metavar="NAME",
                       help="builder name, case-insensitive (registered: %s; default lrunet)"
                            % ", ".join(_builders()))
    model.add_argument("--reuse", type=positive_int, metavar="N",
                       help="LruNet: reuses per block (builder default 14)")
    model.add_argument("--depth", type=positive_int, metavar="D",
                       help="depth of the ResNet-style and ConvMixer builders")
    model.add_argument("--width", type=positive_number, metavar="W",
                       help="width: LruNet's multiplier, a multiple of 0.125 (default 1); "
                            "ConvMixer's channels")
    model.add_argument("--no-shuffle", action="store_true",
                       help="LruNet: no channel shuffle between reuses")
    model.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="any other builder argument (VALUE is JSON, else a string); "
                            "repeatable")
    model.add_argument("--weights", metavar="NAME_OR_FILE",
                       help="start from pretrained weights (fine-tuning): a registered "
                            "weights or dataset name, or a .weights.h5 file")

    run = parser.add_argument_group("data and recipe")
    run.add_argument("--dataset", default="cifar10", choices=sorted(data.DATASETS),
                     help="default cifar10")
    add_recipe_arguments(run, "paper", batch_size_help="global batch size (over all devices)")
    run.add_argument("--schedule", choices=recipes.SCHEDULES)
    run.add_argument("--warmup-epochs", type=non_negative_float, metavar="E")
    run.add_argument("--momentum", type=float, metavar="M")
    run.add_argument("--weight-decay", type=non_negative_float, metavar="WD",
                     help="coupled L2 as PyTorch's SGD weight_decay (paper: 5e-4)")
    run.add_argument("--nesterov", action="store_true", default=None)
    run.add_argument("--dropout", type=float, metavar="P")
    add_augment_argument(run)
    run.add_argument("--patience", type=non_negative_int, metavar="EPOCHS",
                     help="early-stopping patience on validation accuracy (0: off)")
    run.add_argument("--validation", type=non_negative_int, metavar="N",
                     help="images held out of the training split for selection (0: none)")
    add_train_images_argument(run)
    run.add_argument("--test-images", type=positive_int, metavar="N",
                     help="test on only N images (spread over the split)")
    run.add_argument("--seed", type=int, default=0, help="default 0")

    where = parser.add_argument_group("where and how")
    where.add_argument("--run-dir", metavar="DIR",
                       help="run directory (default runs/<model>-<args>-<dataset>-<recipe>-"
                            "<hash of the configuration>)")
    add_data_dir_argument(where)
    where.add_argument("--strategy", default="none", choices=distribute.STRATEGIES,
                       help="tf.distribute: none (one device), mirrored (local GPUs), "
                            "multiworker (TF_CONFIG); default none")
    where.add_argument("--cpu-devices", type=positive_int, metavar="N",
                       help="with --strategy mirrored: split the CPU into N logical devices "
                            "(testing without GPUs)")
    where.add_argument("--mixed-precision", default="auto",
                       choices=["auto", "off", "float16", "bfloat16"],
                       help="auto: float16 with a GPU, off on CPU (default auto)")
    where.add_argument("--jit", default="auto", choices=distribute.JIT_CHOICES,
                       dest="jit_compile", help="XLA; auto: on with a GPU (default auto)")
    add_verbosity_arguments(where, silent_help="no per-epoch output")
    return handled_by(parser, run_train, json_help="print the summary as JSON", verbose="auto",
                      interrupt_hint="the same command resumes after the last finished "
                                     "epoch")


def _description() -> str:
    lines = textwrap.wrap("Train a zoo model on a prepared dataset (see `lru-keras data "
                          "import`). Options left out take the recipe's value. Recipes:", 90)
    for recipe in recipes.RECIPES.values():
        lines += textwrap.wrap(f"{recipe.name}: {recipe.description}", 90,
                               initial_indent="  ", subsequent_indent="    ")
    lines += textwrap.wrap("Weight decay is PyTorch's coupled form (the paper's): wd * w is "
                           "added to the gradient of every parameter, i.e. an L2 penalty "
                           "wd/2 * ||w||^2 in the loss; not Keras's decoupled weight_decay.", 90)
    return "\n".join(lines)


def _builders():
    from lru_keras.zoo import list_builders

    return [name.lower() for name in list_builders()]


def config_from_args(args: argparse.Namespace) -> train_config.TrainConfig:
    """The TrainConfig that parsed `train` arguments describe."""
    model_args = {}
    for item in args.model_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            args.parser.error(f"--model-arg expects KEY=VALUE, got {item!r}")
        try:
            model_args[key] = json.loads(value)
        except json.JSONDecodeError:
            model_args[key] = value
    for key, value in (("reuse", args.reuse), ("width", args.width), ("depth", args.depth)):
        if value is not None:
            model_args[key] = value
    if args.no_shuffle:
        model_args["shuffle"] = False
    fields = ("dataset", "recipe", "epochs", "batch_size", "learning_rate", "schedule",
              "warmup_epochs", "momentum", "weight_decay", "nesterov", "dropout", "augment",
              "patience", "validation", "train_images", "test_images", "seed", "weights",
              "strategy", "cpu_devices", "jit_compile", "run_dir", "data_dir", "verbose")
    options = {field: getattr(args, field) for field in fields}
    options["mixed_precision"] = args.mixed_precision
    return train_config.TrainConfig(model=args.model, model_args=model_args, **options)


def run_train(args: argparse.Namespace) -> int:
    """Handles `train`: runs it, prints the summary (JSON with --json)."""
    from lru_keras.train import train

    summary = train(config_from_args(args))
    if args.json:
        print(json.dumps(summary, indent=1))
    return 0
