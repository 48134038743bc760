"""`lru-keras qat`: quantization-aware fine-tuning of a zoo LruNet to a full-integer .tflite.

The model is named as for `export`: --weights NAME, or the model options with --weights-file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lru_keras import data
from lru_keras.cli.options import (
    add_data_dir_argument, add_model_arguments, handled_by, model_from_args, non_negative_int,
    positive_float, positive_int, require_model, weights_dataset)


def add_qat_command(subparsers) -> argparse.ArgumentParser:
    """Adds `qat` to an argparse subparsers object; returns its parser."""
    from lru_keras.tflite.qat import DEFAULTS

    parser = subparsers.add_parser(
        "qat", help="quantization-aware fine-tuning (tensorflow-model-optimization) to an int8 "
                    ".tflite",
        description="Fine-tune a zoo LruNet (--weights NAME, or the model arguments with "
                    "--weights-file PATH) with int8 quantization simulated "
                    "(tensorflow-model-optimization, in a child process), then write a "
                    "full-integer .tflite that keeps each shared kernel once, plus "
                    "OUT.labels.txt and OUT.json.")
    add_model_arguments(parser)
    parser.add_argument("-o", "--output", required=True, metavar="OUT.tflite",
                        help="the .tflite file to write")
    parser.add_argument("--dataset", choices=sorted(data.DATASETS),
                        help="the dataset to fine-tune on (default: the one of --weights)")
    parser.add_argument("--epochs", type=non_negative_int, default=DEFAULTS["epochs"],
                        help=f"fine-tuning epochs (default {DEFAULTS['epochs']})")
    parser.add_argument("--train-images", type=positive_int,
                        default=DEFAULTS["train_images"], metavar="N",
                        help=f"class-balanced training images (default "
                             f"{DEFAULTS['train_images']})")
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULTS["batch_size"],
                        metavar="N", help=f"default {DEFAULTS['batch_size']}")
    parser.add_argument("--learning-rate", type=positive_float,
                        default=DEFAULTS["learning_rate"], metavar="LR",
                        help=f"Adam learning rate (default {DEFAULTS['learning_rate']:g})")
    parser.add_argument("--save-weights", metavar="PATH.weights.h5",
                        help="also save the fine-tuned float Keras model's weights (with a "
                             ".sha256 sidecar that loading checks)")
    parser.add_argument("--evaluate", action="store_true",
                        help="then evaluate the .tflite on the dataset's test split (LiteRT)")
    add_data_dir_argument(parser)
    return handled_by(parser, run_qat, json_help="print the spec as JSON",
                      interrupt_hint="no file was written")


def run_qat(args: argparse.Namespace) -> int:
    """Handles `qat`: builds the model, fine-tunes and exports it, prints what was written."""
    from lru_keras import evaluate, tflite
    from lru_keras.tflite.options import check_writable
    from lru_keras.zoo import weights

    require_model(args, model_file=False)
    dataset = weights_dataset(args)
    if dataset is None:
        args.parser.error("--weights-file needs --dataset (the data to fine-tune on)")
    # Every output before minutes of fine-tuning: a failure then writes nothing.
    check_writable(Path(args.output))
    if args.save_weights:
        weights.check_save_path(args.save_weights, "--save-weights")
    model = model_from_args(args, dataset=None if args.weights else dataset)
    spec, finetuned = tflite.quantize_aware(
        model, dataset, args.output, epochs=args.epochs, train_images=args.train_images,
        batch_size=args.batch_size, learning_rate=args.learning_rate, data_dir=args.data_dir,
        verbose=0 if args.json else 1)
    if args.save_weights:
        weights.save_weights(finetuned, args.save_weights)
    result = None
    if args.evaluate:
        result = tflite.evaluate(args.output, dataset, "test", data_dir=args.data_dir,
                                 progress=not args.json)
    if args.json:
        print(json.dumps({**spec, "test": result}, indent=1, sort_keys=True))
        return 0
    qat = spec["qat"]
    print(f"{args.output}: {spec['size_bytes'] / 1e6:.3f} MB, int8 (full integer), kernels "
          f"shared; fine-tuned {qat['epochs']} epochs on {qat['train']} in "
          f"{qat['seconds']:.0f} s")
    if args.save_weights:
        print(f"fine-tuned float weights: {args.save_weights}")
    if result is not None:
        print(evaluate.format_result(result))
    return 0
