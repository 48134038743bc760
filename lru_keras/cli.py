"""`lru-keras`: the command line of the model zoo (zoo list, info, evaluate, data, export).

Parsing only: each command's handler calls library functions (`lru_keras.analysis`,
`lru_keras.evaluate`, `lru_keras.data`) and prints. `main(argv)` returns the exit status:
0 on success, 2 for bad arguments or a library error (printed as one line, no traceback).
"""

import argparse
import json
import sys

from lru_keras import analysis, data, evaluate
from lru_keras.cli_data import add_data_commands, add_data_dir_argument
from lru_keras.cli_qat import add_qat_command
from lru_keras.cli_train import add_train_commands
from lru_keras.cli_tune import add_tune_command
from lru_keras.cli_tflite import add_export_command, run_evaluate_tflite
from lru_keras.zoo import get_weights, list_weights
from lru_keras.zoo.lrunet import stage_widths

ARCHITECTURE_FLAGS = {
    "reuse": "--reuse", "width": "--width", "classes": "--classes",
    "input_shape": "--input-shape", "no_shuffle": "--no-shuffle",
    "weights_file": "--weights-file",
}


def main(argv=None):
    """Runs the command line on `argv` (default: sys.argv[1:]); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except SystemExit as stop:  # argparse errors (status 2) and --help (status 0)
        return 0 if stop.code is None else stop.code
    except (ValueError, FileNotFoundError) as error:  # incl. data.DatasetNotAvailableError
        print(f"lru-keras: error: {error}", file=sys.stderr)
        return 2


def build_parser():
    """The argparse parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="lru-keras", description="Keras 3 model zoo of layer-reuse CNNs (LruNet).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    zoo = commands.add_parser("zoo", help="the registry of pretrained weights")
    zoo_commands = zoo.add_subparsers(dest="zoo_command", required=True, metavar="COMMAND")
    lister = zoo_commands.add_parser("list", help="every registered weights file")
    lister.add_argument("--json", action="store_true", help="print a JSON list")
    lister.set_defaults(func=run_zoo_list)

    info = commands.add_parser(
        "info", help="parameters, MFLOPs and per-stage table of a model",
        description=f"Counts as the paper does. {analysis.MFLOPS_CONVENTION}.")
    _add_model_arguments(info)
    info.add_argument("--dataset", choices=sorted(data.DATASETS),
                      help="take classes and input shape from this dataset")
    info.add_argument("--json", action="store_true", help="print a JSON object")
    info.set_defaults(func=run_info, parser=info)

    evaluator = commands.add_parser(
        "evaluate", help="top-1 accuracy on a dataset split or on the bundled sample",
        description="Evaluate a model (--weights NAME; or the model arguments with "
                    "--weights-file PATH; or a .keras file) on a prepared dataset split or on "
                    "the 500 CIFAR-10 test images bundled with the package.")
    evaluator.add_argument("model", nargs="?", metavar="MODEL_FILE",
                           help="a saved .keras model, or a .tflite file (run with LiteRT)")
    _add_model_arguments(evaluator)
    evaluator.add_argument("--weights-file", metavar="PATH",
                           help="a .weights.h5 file for the model the arguments describe")
    source = evaluator.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=sorted(data.DATASETS),
                        help="a dataset prepared in TFDS (see `lru-keras data`)")
    source.add_argument("--sample", action="store_true",
                        help="the 500 bundled CIFAR-10 test images (no dataset needed)")
    evaluator.add_argument("--split", help="TFDS split, slicing allowed (default: test)")
    evaluator.add_argument("--batch-size", type=_positive_int, default=256, metavar="N")
    evaluator.add_argument("--limit", type=_positive_int, metavar="N",
                           help="only the first N images")
    add_data_dir_argument(evaluator)
    evaluator.add_argument("--json", action="store_true", help="print a JSON object")
    evaluator.set_defaults(func=run_evaluate, parser=evaluator)

    add_data_commands(commands)
    add_train_commands(commands)
    add_tune_command(commands)
    add_export_command(commands)
    add_qat_command(commands)
    return parser


def _add_model_arguments(parser):
    """--weights NAME, or the LruNet architecture arguments."""
    group = parser.add_argument_group(
        "model", "either --weights NAME, or the architecture (builder defaults: --reuse 14 "
                 "--width 1, 10 classes, 32x32x3 input)")
    group.add_argument("--weights", choices=[e.name for e in list_weights()], metavar="NAME",
                       help="registered weights: " + ", ".join(e.name for e in list_weights()))
    group.add_argument("--reuse", type=_positive_int, metavar="N", help="reuses per block")
    group.add_argument("--width", type=_width, metavar="W",
                       help="width multiplier, a positive multiple of 0.125")
    group.add_argument("--classes", type=_positive_int, metavar="C")
    group.add_argument("--input-shape", type=_input_shape, metavar="H,W,C")
    group.add_argument("--no-shuffle", action="store_true",
                       help="no channel shuffle between reuses")


def run_zoo_list(args):
    """Handles `zoo list`: one line (or JSON object) per registered weights file."""
    rows = []
    for entry in list_weights():
        model = evaluate.build_model(entry.name, load_weights=False)
        rows.append({
            "name": entry.name, "fits": entry.describe(), "dataset": entry.dataset,
            "classes": entry.classes, "input_shape": list(entry.input_shape),
            "params": analysis.count_parameters(model)["trainable"],
            "accuracy": entry.accuracy,
        })
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(analysis.format_table(
        ["name", "fits", "dataset", "params", "accuracy %"],
        [[r["name"], r["fits"], r["dataset"], f"{r['params']:,}", f"{r['accuracy']:.2f}"]
         for r in rows],
        align_right=(3, 4)))
    print("accuracy: test accuracy recorded in the authors' checkpoint; "
          "`lru-keras evaluate --weights NAME --dataset DATASET` measures it.")
    return 0


def run_info(args):
    """Handles `info`: counts, MFLOPs and the per-stage table."""
    if args.weights and args.dataset:
        args.parser.error(f"--weights {args.weights} fixes the dataset; drop --dataset")
    model = _model(args, dataset=args.dataset, load_weights=False)
    summary = analysis.summary(model)
    entry = get_weights(args.weights) if args.weights else None
    if args.json:
        weights = None if entry is None else {
            "name": entry.name, "dataset": entry.dataset, "accuracy": entry.accuracy}
        print(json.dumps({**summary, "weights": weights,
                          "stages": analysis.stage_table(model)}, indent=1))
        return 0
    if entry is not None:
        print(f"weights:       {entry.name} ({entry.describe()}, {entry.dataset}, recorded "
              f"accuracy {entry.accuracy:.2f}%)")
    print(analysis.format_summary(summary))
    print()
    print(analysis.format_stage_table(analysis.stage_table(model)))
    return 0


def run_evaluate(args):
    """Handles `evaluate`: builds or loads the model, runs it, prints the accuracy."""
    if args.sample and args.split:
        args.parser.error("--split goes with --dataset; --sample is its own split")
    if args.model and str(args.model).endswith(".tflite"):
        return run_evaluate_tflite(args)
    if args.model:
        given = [flag for flag in ("--weights", *ARCHITECTURE_FLAGS.values())
                 if _given(args, flag)]
        if given:
            args.parser.error(f"MODEL_FILE is a whole model; drop {', '.join(given)}")
        model, name = evaluate.load_model_file(args.model), None
    elif args.weights or args.weights_file:
        model = _model(args, dataset="cifar10" if args.sample else args.dataset)
        name = args.weights
    else:
        args.parser.error("give a model: --weights NAME, or --weights-file PATH with the model "
                          "arguments, or a .keras MODEL_FILE")
    common = dict(batch_size=args.batch_size, limit=args.limit, model_name=name)
    if args.sample:
        result = evaluate.evaluate_sample(model, **common)
    else:
        result = evaluate.evaluate_dataset(model, args.dataset, args.split or "test",
                                           data_dir=args.data_dir, **common)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{result['model']}: {result['images']} images in {result['seconds']:.1f} s "
          f"({result['images_per_second']:.0f} images/s)")
    print(evaluate.format_result(result))
    return 0


def _model(args, dataset, load_weights=True):
    """The model the parsed model arguments describe (see `evaluate.build_model`)."""
    if args.weights:
        given = [flag for flag in ARCHITECTURE_FLAGS.values() if _given(args, flag)]
        if given:
            args.parser.error(f"--weights {args.weights} fixes the model; drop {', '.join(given)}")
        return evaluate.build_model(args.weights, load_weights=load_weights)
    return evaluate.build_model(
        reuse=args.reuse, width=args.width, dataset=dataset, classes=args.classes,
        input_shape=args.input_shape, shuffle=not args.no_shuffle,
        weights_file=getattr(args, "weights_file", None), load_weights=load_weights)


def _given(args, flag):
    value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
    return value not in (None, False)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _width(text):
    try:
        value = float(text)
        stage_widths(value)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"expected a positive multiple of 0.125 (0.5, 1, 2, ...), got {text!r}") from None
    return value


def _input_shape(text):
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected HEIGHT,WIDTH,CHANNELS such as 32,32,3, "
                                         f"got {text!r}")
    return shape


if __name__ == "__main__":
    sys.exit(main())
