"""`lru-keras tune ...`: a KerasTuner search over LruNet's N under a device budget (see
`lru_keras.tune`).

`add_tune_command(subparsers)` adds the `tune` command to the main parser; its handler
(`func`) takes the parsed namespace and returns an exit status: 0 when the search wrote its
results, 1 when a trial failed or no trial was within the budget, 2 for bad arguments.

    lru-keras tune --dataset cifar10 --tuner bayesian --max-trials 20 --max-params 200000
    lru-keras tune --dataset fashion_mnist --reuse 1-8 --width 0.5,1 --max-mflops 10
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from lru_keras import data
from lru_keras.cli_data import add_data_dir_argument
from lru_keras.cli_train import _non_negative_int, _positive_float, _positive_int
from lru_keras.train import recipes
from lru_keras.tune import space as space_module

# lru_keras.tune.run.TUNERS, named here so that the command line starts without
# importing KerasTuner.
TUNER_CHOICES = ("random", "bayesian", "hyperband")

EPILOG = """\
Each trial trains on the training split minus --validation images (held out, spread evenly
over it; the test split is never read) and is scored on its best validation accuracy. A trial
over a budget is measured but not trained, and listed as infeasible.

Results in the project dir: results.md / .csv / .json (one row per trial: N, width, params,
MFLOPs, val accuracy, status), results.png (val accuracy vs N and vs MFLOPs),
best_model.keras and best_hyperparameters.json.

Resuming: the same command again continues an interrupted search (finished trials are kept);
a larger --max-trials extends a finished one. A project dir of another search is refused.

Distributed (KerasTuner's mode): run the same command in every process, sharing the project
dir, with KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT set everywhere,
KERASTUNER_TUNER_ID=chief in one process (it serves the oracle and writes the results) and
tuner0, tuner1, ... in the workers (they run the trials).
"""


def add_tune_command(subparsers) -> argparse.ArgumentParser:
    """Add `tune` to an argparse subparsers object; return its parser."""
    parser = subparsers.add_parser(
        "tune", help="KerasTuner search over LruNet's N (width, dropout, shuffle) under a "
                     "device budget, resumable",
        description="Search LruNet's hyperparameters with KerasTuner on a prepared dataset "
                    "(see `lru-keras data import`); options left out take the recipe's value.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    search = parser.add_argument_group("search")
    search.add_argument("--dataset", default="cifar10", choices=sorted(data.DATASETS),
                        help="default cifar10")
    search.add_argument("--tuner", default="random", choices=TUNER_CHOICES,
                        help="default random")
    search.add_argument("--max-trials", type=_positive_int, metavar="N",
                        help="trials to run (default 10; hyperband: a cap on its brackets)")
    search.add_argument("--reuse", type=_space(space_module.parse_reuse), metavar="LIST",
                        help="N values: a range and/or a list, e.g. 1-16 or 1,2,4,8 "
                             "(default 1-16)")
    search.add_argument("--width", type=_space(space_module.parse_numbers, "width"),
                        metavar="LIST", help="width multipliers, multiples of 0.125 "
                                             "(default 0.25,0.5,1)")
    search.add_argument("--dropout", type=_space(space_module.parse_numbers, "dropout"),
                        metavar="LIST", help="dropout rates in [0, 1) (default 0,0.2,0.5)")
    search.add_argument("--shuffle", choices=sorted(space_module.SHUFFLE_CHOICES),
                        default="both", help="channel shuffle: both, on or off (default both)")

    budget = parser.add_argument_group("budget (trials over it are infeasible)")
    budget.add_argument("--max-params", type=_positive_int, metavar="N",
                        help="trainable parameters")
    budget.add_argument("--max-mflops", type=_positive_float, metavar="F",
                        help="millions of multiply-accumulates per image")
    budget.add_argument("--max-latency-ms", type=_positive_float, metavar="MS",
                        help="median int8 .tflite latency, batch 1, one thread (LiteRT)")

    run = parser.add_argument_group("training of each trial")
    run.add_argument("--recipe", default="short", choices=sorted(recipes.RECIPES),
                     help="default short")
    run.add_argument("--epochs", type=_positive_int, metavar="N",
                     help="epochs per trial (hyperband: its max epochs)")
    run.add_argument("--batch-size", type=_positive_int, metavar="N")
    run.add_argument("--lr", type=_positive_float, metavar="LR", dest="learning_rate",
                     help="(peak) learning rate")
    run.add_argument("--no-augment", action="store_false", dest="augment", default=None,
                     help="no crop/rotation/flip augmentation")
    run.add_argument("--validation", type=_positive_int, metavar="N",
                     help="images held out of the training split to score trials on "
                          "(default 5,000, or a tenth of a smaller split)")
    run.add_argument("--train-images", type=_positive_int, metavar="N",
                     help="train on only N images (spread over the split)")
    run.add_argument("--seed", type=_non_negative_int, default=0, help="default 0")

    where = parser.add_argument_group("where")
    where.add_argument("--project-dir", metavar="DIR",
                       help="the search's directory (default tune/lrunet-<dataset>-<tuner>-"
                            "<hash of the configuration>)")
    where.add_argument("--overwrite", action="store_true",
                       help="delete the project's previous trials and start over")
    add_data_dir_argument(where)
    verbosity = where.add_mutually_exclusive_group()
    verbosity.add_argument("--quiet", action="store_const", const=2, dest="verbose",
                           help="one line per epoch instead of a progress bar")
    verbosity.add_argument("--silent", action="store_const", const=0, dest="verbose",
                           help="no per-trial output")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=run_tune, parser=parser, verbose="auto")
    return parser


def _space(parse, *names):
    """An argparse type from a `lru_keras.tune.space` parser (ValueError -> usage error)."""
    def parse_argument(text):
        try:
            return parse(*names, text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse_argument


def config_from_args(args: argparse.Namespace):
    """The `SearchConfig` that parsed `tune` arguments describe."""
    from lru_keras.tune import Budget, SearchConfig, SearchSpace

    defaults = SearchSpace()
    space = SearchSpace(
        reuse=args.reuse or defaults.reuse, width=args.width or defaults.width,
        dropout=args.dropout or defaults.dropout,
        shuffle=space_module.parse_shuffle(args.shuffle))
    budget = Budget(max_params=args.max_params, max_mflops=args.max_mflops,
                    max_latency_ms=args.max_latency_ms)
    fields = ("dataset", "tuner", "max_trials", "recipe", "epochs", "batch_size",
              "learning_rate", "augment", "validation", "train_images", "seed", "project_dir",
              "data_dir", "verbose")
    return SearchConfig(space=space, budget=budget,
                        **{field: getattr(args, field) for field in fields})


def run_tune(args: argparse.Namespace) -> int:
    """Handle `tune`: run or resume the search, print the table (or JSON) and the best."""
    from lru_keras.tune import SearchFailedError, report, search

    config = config_from_args(args)
    # With --json, stdout holds only the JSON: KerasTuner's and Keras's progress go to stderr.
    progress = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    try:
        with progress:
            result = search(config, overwrite=args.overwrite)
    except SearchFailedError as error:
        print(error.details, file=sys.stderr)
        print(f"lru-keras: error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    elif result.role == "worker":
        print(f"worker: ran trials {', '.join(result.trials_run) or 'none'}; the chief writes "
              f"the results to {result.project_dir}")
    else:
        print(report.format_text(result.rows, config.budget))
        for name, path in result.files.items():
            print(f"{name}: {path}")
    if result.role != "worker" and result.best is None:
        print(f"lru-keras: error: no trial within the budget ({config.budget.describe()}) "
              f"completed; relax the budget or widen the search space", file=sys.stderr)
        return 1
    if not args.json and result.best is not None:
        best = result.best
        print(f"best: trial {best['trial']}: N={best['reuse']}, width {best['width']:g}, "
              f"dropout {best['dropout']:g}, shuffle {'on' if best['shuffle'] else 'off'}: "
              f"val accuracy {100 * best['val_accuracy']:.2f}%, {best['params']:,} params, "
              f"{best['mflops']:.2f} MFLOPs")
    return 0
