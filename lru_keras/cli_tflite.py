"""`lru-keras export ...` and the .tflite side of `lru-keras evaluate MODEL.tflite`.

`add_export_command(subparsers)` adds `export` to the main parser. The model is named as for
`evaluate`: --weights NAME, the architecture arguments with --weights-file, or a .keras file.
"""

from __future__ import annotations

import argparse
import json
import os

from lru_keras import data
from lru_keras.cli_data import add_data_dir_argument

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")


def add_export_command(subparsers) -> argparse.ArgumentParser:
    """Adds `export` to an argparse subparsers object; returns its parser."""
    from lru_keras import cli

    exporter = subparsers.add_parser(
        "export", help="convert a model to a .tflite file (LiteRT builtin ops only)",
        description="Convert a zoo model (--weights NAME; or the model arguments with "
                    "--weights-file PATH; or a .keras file) to a .tflite file that keeps each "
                    "shared kernel once, plus OUT.labels.txt and OUT.json (input spec). int8 "
                    "is full-integer (int8 input and output), calibrated on training images "
                    "of the model's dataset.")
    exporter.add_argument("model", nargs="?", metavar="MODEL_FILE", help="a saved .keras model")
    cli._add_model_arguments(exporter)
    exporter.add_argument("--weights-file", metavar="PATH",
                          help="a .weights.h5 file for the model the arguments describe")
    exporter.add_argument("-o", "--output", required=True, metavar="OUT.tflite",
                          help="the .tflite file to write")
    exporter.add_argument("-q", "--quantization", choices=QUANTIZATIONS, default="float32",
                          help="float32 (default), float16 weights, dynamic (int8 weights), or "
                               "int8 (full integer)")
    exporter.add_argument("--folded", action="store_true",
                          help="plain conversion: fold each reuse's BatchNorm into its own "
                               "kernel copy (bigger file; for comparison)")
    exporter.add_argument("--dataset", choices=sorted(data.DATASETS),
                          help="the model's dataset (labels, int8 calibration images); "
                               "default: from --weights, or the dataset that fits the model")
    exporter.add_argument("--calibration-size", type=cli._positive_int, metavar="N",
                          help="int8: number of training images to calibrate on (default 300)")
    exporter.add_argument("--calibration-npz", metavar="FILE",
                          help="int8: calibrate on the images (array x, pixels 0..255) of this "
                               ".npz instead of the dataset's training split")
    add_data_dir_argument(exporter)
    exporter.add_argument("--json", action="store_true", help="print the input spec as JSON")
    exporter.set_defaults(func=run_export, parser=exporter)
    return exporter


def run_export(args: argparse.Namespace) -> int:
    """Handles `export`: builds or loads the model, exports it, prints what was written."""
    from lru_keras import cli, evaluate, tflite
    from lru_keras.zoo import get_weights

    dataset = args.dataset
    if args.model:
        given = [flag for flag in ("--weights", *cli.ARCHITECTURE_FLAGS.values())
                 if cli._given(args, flag)]
        if given:
            args.parser.error(f"MODEL_FILE is a whole model; drop {', '.join(given)}")
        model = evaluate.load_model_file(args.model)
    elif args.weights or args.weights_file:
        if args.weights:
            entry_dataset = get_weights(args.weights).dataset
            if dataset is not None and dataset != entry_dataset:
                args.parser.error(f"--weights {args.weights} is a {entry_dataset} model; "
                                  f"drop --dataset {dataset}")
            dataset = entry_dataset
            model = cli._model(args, dataset=None)
        else:
            model = cli._model(args, dataset=dataset)
    else:
        args.parser.error("give a model: --weights NAME, or --weights-file PATH with the model "
                          "arguments, or a .keras MODEL_FILE")
    representative = None
    if args.calibration_npz:
        if args.quantization != "int8":
            args.parser.error("--calibration-npz goes with --quantization int8")
        import numpy as np

        if not os.path.isfile(args.calibration_npz):
            raise ValueError(f"--calibration-npz file {args.calibration_npz!r} does not exist.")
        with np.load(args.calibration_npz) as arrays:
            if "x" not in arrays.files:
                raise ValueError(f"{args.calibration_npz} has no array 'x' (images); it has "
                                 f"{arrays.files}.")
            representative = arrays["x"]
    if args.calibration_size and args.quantization != "int8":
        args.parser.error("--calibration-size goes with --quantization int8")
    spec = tflite.export(
        model, args.output, args.quantization, representative, share_weights=not args.folded,
        dataset=dataset, calibration_size=args.calibration_size, data_dir=args.data_dir)
    if args.json:
        print(json.dumps(spec, indent=1, sort_keys=True))
        return 0
    labels, spec_file = tflite.sidecar_paths(args.output)
    inp = spec["input"]
    line = f"{args.output}: {spec['size_bytes'] / 1e6:.3f} MB, {spec['quantization']}, " + (
        "kernels shared" if spec["share_weights"] else "kernels folded per reuse")
    print(line)
    quant = (f", scale {inp['scale']:g}, zero point {inp['zero_point']}"
             if "scale" in inp else "")
    print(f"input: {inp['dtype']} {inp['shape']} NHWC, pixels {inp['pixel_range'][0]:g}.."
          f"{inp['pixel_range'][1]:g}{quant}")
    print(f"also written: {labels}, {spec_file}")
    return 0


def run_evaluate_tflite(args: argparse.Namespace) -> int:
    """`evaluate MODEL.tflite`: LiteRT interpreter over a dataset split or the bundled sample."""
    from lru_keras import cli, evaluate, tflite

    given = [flag for flag in ("--weights", "--weights-file", *cli.ARCHITECTURE_FLAGS.values())
             if cli._given(args, flag)]
    if given:
        args.parser.error(f"MODEL_FILE is a whole model; drop {', '.join(given)}")
    common = dict(batch_size=args.batch_size, progress=True)
    if args.sample:
        images, labels = data.load_sample()
        if args.limit:
            images, labels = images[:args.limit], labels[:args.limit]
        result = tflite.evaluate_arrays(args.model, images, labels, dataset="cifar10",
                                        split=evaluate.SAMPLE_SPLIT, **common)
    else:
        result = tflite.evaluate(args.model, args.dataset, args.split or "test",
                                 limit=args.limit, data_dir=args.data_dir, **common)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{result['model']} ({result['quantization'] or 'tflite'}, LiteRT): {result['images']} "
          f"images in {result['seconds']:.1f} s ({result['images_per_second']:.0f} images/s)")
    print(evaluate.format_result(result))
    return 0
