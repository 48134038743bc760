"""`lru-keras evaluate`: top-1 accuracy of a model on a dataset split or on the bundled sample.

The model is --weights NAME, the model options with --weights-file, a .keras file (run with
Keras) or a .tflite file (run with LiteRT's interpreter); the output is the same for all.
"""

from __future__ import annotations

import argparse
import json

from lru_keras import data, evaluate
from lru_keras.cli.options import (
    add_data_dir_argument, add_model_arguments, handled_by, model_from_args, positive_int,
    refuse_model_arguments, require_model)


def add_evaluate_command(subparsers) -> argparse.ArgumentParser:
    """Adds `evaluate` to an argparse subparsers object; returns its parser."""
    evaluator = subparsers.add_parser(
        "evaluate", help="top-1 accuracy on a dataset split or on the bundled sample",
        description="Evaluate a model (--weights NAME; or the model arguments with "
                    "--weights-file PATH; or a .keras file) on a prepared dataset split or on "
                    "the 500 CIFAR-10 test images bundled with the package.")
    evaluator.add_argument("model", nargs="?", metavar="MODEL_FILE",
                           help="a saved .keras model, or a .tflite file (run with LiteRT)")
    add_model_arguments(evaluator)
    source = evaluator.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=sorted(data.DATASETS),
                        help="a dataset prepared in TFDS (see `lru-keras data`)")
    source.add_argument("--sample", action="store_true",
                        help="the 500 bundled CIFAR-10 test images (no dataset needed)")
    evaluator.add_argument("--split", help="TFDS split, slicing allowed (default: test)")
    evaluator.add_argument("--batch-size", type=positive_int, default=256, metavar="N")
    evaluator.add_argument("--limit", type=positive_int, metavar="N",
                           help="only the first N images")
    add_data_dir_argument(evaluator)
    return handled_by(evaluator, run_evaluate, json_help="print a JSON object")


def run_evaluate(args: argparse.Namespace) -> int:
    """Handles `evaluate`: builds or loads the model, runs it, prints the accuracy."""
    if args.sample and args.split:
        args.parser.error("--split goes with --dataset; --sample is its own split")
    require_model(args)
    if args.model:
        refuse_model_arguments(args)
    tflite_file = bool(args.model) and str(args.model).endswith(".tflite")
    result = _evaluate_tflite(args) if tflite_file else _evaluate_keras(args)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    runtime = f" ({result['quantization'] or 'tflite'}, LiteRT)" if tflite_file else ""
    print(f"{result['model']}{runtime}: {result['images']} images in {result['seconds']:.1f} s "
          f"({result['images_per_second']:.0f} images/s)")
    print(evaluate.format_result(result))
    return 0


def _evaluate_keras(args: argparse.Namespace) -> dict:
    """The result of `lru_keras.evaluate` for a built model or a .keras file."""
    if args.model:
        model, name = evaluate.load_model_file(args.model), None
    else:
        model = model_from_args(args, dataset="cifar10" if args.sample else args.dataset)
        name = args.weights
    common = dict(batch_size=args.batch_size, limit=args.limit, model_name=name)
    if args.sample:
        return evaluate.evaluate_sample(model, **common)
    return evaluate.evaluate_dataset(model, args.dataset, args.split or "test",
                                     data_dir=args.data_dir, **common)


def _evaluate_tflite(args: argparse.Namespace) -> dict:
    """The result of LiteRT's interpreter running the .tflite MODEL_FILE."""
    from lru_keras import tflite

    common = dict(batch_size=args.batch_size, progress=True)
    if args.sample:
        images, labels = data.load_sample()
        if args.limit:
            images, labels = images[:args.limit], labels[:args.limit]
        return tflite.evaluate_arrays(args.model, images, labels, dataset="cifar10",
                                      split=evaluate.SAMPLE_SPLIT, **common)
    return tflite.evaluate(args.model, args.dataset, args.split or "test",
                           limit=args.limit, data_dir=args.data_dir, **common)
