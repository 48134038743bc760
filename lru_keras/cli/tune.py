"""`lru-keras tune`: a KerasTuner search over LruNet's N under a device budget (see
`lru_keras.tune`).

The handler returns 0 when the search wrote its results, 1 when a trial failed or no trial
was within the budget (2, bad arguments, comes from the parser). Ctrl-C ends the search at once
with one line and status 130; the same command resumes it.

    lru-keras tune --dataset cifar10 --tuner bayesian --max-trials 20 --max-params 200000
    lru-keras tune --dataset fashion_mnist --reuse 1-8 --width 0.5,1 --max-mflops 10
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from lru_keras import data
from lru_keras.cli.options import (
    add_augment_argument, add_data_dir_argument, add_recipe_arguments, add_train_images_argument,
    add_verbosity_arguments, handled_by, non_negative_int, positive_float, positive_int,
    print_error)
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
best_model.keras and best_hyperparameters.json; tensorboard/<trial id>/ (each trained trial's
curves and its HParams session: tensorboard --logdir <project dir>/tensorboard).

Resuming: the same command again continues an interrupted search (finished trials are kept);
a larger --max-trials extends a finished one. A project dir of another search is refused,
unless none of its trials completed. A damaged file of the search's state is named. Trial
checkpoints (checked before they are loaded) and best_model.keras come with a .sha256 file.

Distributed (KerasTuner's mode): run the same command in every process, sharing the project
dir, with KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT set everywhere,
KERASTUNER_TUNER_ID=chief in one process (it serves the oracle and writes the results) and
tuner0, tuner1, ... in the workers (they run the trials).
"""


def add_tune_command(subparsers) -> argparse.ArgumentParser:
    """Adds `tune` to an argparse subparsers object; returns its parser."""
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
    search.add_argument("--max-trials", type=positive_int, metavar="N",
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
    budget.add_argument("--max-params", type=positive_int, metavar="N",
                        help="trainable parameters")
    budget.add_argument("--max-mflops", type=positive_float, metavar="F",
                        help="millions of multiply-accumulates per image")
    budget.add_argument("--max-latency-ms", type=positive_float, metavar="MS",
                        help="median int8 .tflite latency, batch 1, one thread (LiteRT)")

    run = parser.add_argument_group("training of each trial")
    add_recipe_arguments(run, "short", epochs_help="epochs per trial (hyperband: its max "
                                                   "epochs)")
    add_augment_argument(run)
    run.add_argument("--validation", type=positive_int, metavar="N",
                     help="images held out of the training split to score trials on "
                          "(default 5,000, or a tenth of a smaller split)")
    add_train_images_argument(run)
    run.add_argument("--seed", type=non_negative_int, default=0, help="default 0")

    where = parser.add_argument_group("where")
    where.add_argument("--project-dir", metavar="DIR",
                       help="the search's directory (default tune/lrunet-<dataset>-<tuner>-"
                            "<hash of the configuration>)")
    where.add_argument("--overwrite", action="store_true",
                       help="delete the project's previous trials and start over")
    add_data_dir_argument(where)
    add_verbosity_arguments(where, silent_help="no per-trial output")
    return handled_by(parser, run_tune, json_help="print the results as JSON", verbose="auto",
                      interrupt_hint="the same command resumes the search (finished "
                                     "trials are kept)")


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
    """Handles `tune`: runs or resumes the search, prints the table (or JSON) and the best."""
    from lru_keras.tune import SearchFailedError, report, search

    config = config_from_args(args)
    # With --json, stdout holds only the JSON: KerasTuner's and Keras's progress go to stderr.
    progress = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    # KerasTuner's state files are written atomically (lru_keras.tune.run), so an interrupted
    # search resumes: the interrupted trial runs again.
    try:
        with progress:
            result = search(config, overwrite=args.overwrite)
    except SearchFailedError as error:
        print(error.details, file=sys.stderr)
        print_error(error)
        return 1
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    elif result.role == "worker":
        print(f"worker: ran trials {', '.join(result.trials_run) or 'none'}; the chief writes "
              f"the results to {result.project_dir}")
    else:
        print(report.format_text(result.rows, config.budget))
        print(report.format_files(result.files))
    if result.role != "worker" and result.best is None:
        print_error(f"no trial within the budget ({config.budget.describe()}) completed; "
                    f"relax the budget or widen the search space")
        return 1
    if not args.json and result.best is not None:
        best = result.best
        print(f"best: trial {best['trial']}: N={best['reuse']}, width {best['width']:g}, "
              f"dropout {best['dropout']:g}, shuffle {'on' if best['shuffle'] else 'off'}: "
              f"val accuracy {100 * best['val_accuracy']:.2f}%, {best['params']:,} params, "
              f"{best['mflops']:.2f} MFLOPs")
    return 0
