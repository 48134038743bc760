"""`lru-keras export`: convert a model to a .tflite file that keeps each shared kernel once.

The model is named as for `evaluate`: --weights NAME, the model options with --weights-file,
or a .keras file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lru_keras import data
from lru_keras.cli.options import (
    add_data_dir_argument, add_model_arguments, handled_by, model_from_args, positive_int,
    refuse_model_arguments, require_model, weights_dataset)

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")


def add_export_command(subparsers) -> argparse.ArgumentParser:
    """Adds `export` to an argparse subparsers object; returns its parser."""
    exporter = subparsers.add_parser(
        "export", help="convert a model to a .tflite file (LiteRT builtin ops only)",
        description="Convert a zoo model (--weights NAME; or the model arguments with "
                    "--weights-file PATH; or a .keras file) to a .tflite file that keeps each "
                    "shared kernel once, plus OUT.labels.txt and OUT.json (input spec). int8 "
                    "is full-integer (int8 input and output), calibrated on training images "
                    "of the model's dataset.")
    exporter.add_argument("model", nargs="?", metavar="MODEL_FILE", help="a saved .keras model")
    add_model_arguments(exporter)
    exporter.add_argument("-o", "--output", required=True, metavar="OUT.tflite",
                          help="the .tflite file to write")
    exporter.add_argument("-q", "--quantization", choices=QUANTIZATIONS, default="float32",
                          help="float32 (default), float16 weights, dynamic (int8 weights), or "
                               "int8 (full integer)")
    exporter.add_argument("--folded", action="store_true",
                          help="plain conversion: fold each reuse's BatchNorm into its own "
                               "kernel copy (bigger file; for comparison)")
    exporter.add_argument("--reuse-loops", nargs="*", metavar="BLOCK",
                          help="write these LRU blocks (all without names; LruNet's are "
                               "stage1..stage4) as one loop over their reuses instead of N "
                               "copies: a TensorFlow Lite Micro RAM arena that does not grow "
                               "with the reuses, at some int8 accuracy")
    exporter.add_argument("--dataset", choices=sorted(data.DATASETS),
                          help="the model's dataset (labels, int8 calibration images); "
                               "default: from --weights, or the dataset that fits the model")
    exporter.add_argument("--calibration-size", type=positive_int, metavar="N",
                          help="int8: number of training images to calibrate on (default 300)")
    exporter.add_argument("--calibration-npz", metavar="FILE",
                          help="int8: calibrate on the images (array x, pixels 0..255) of this "
                               ".npz instead of the dataset's training split")
    exporter.add_argument("--io-dtype", choices=("int8", "uint8"),
                          help="int8: the input and output type (default int8; uint8 takes "
                               "raw 8-bit pixels, as Android's Task Library does)")
    exporter.add_argument("--input-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                          help="the pixel range the model takes, for a .keras model that does "
                               "not declare it (zoo models do: 0 255)")
    add_data_dir_argument(exporter)
    return handled_by(exporter, run_export, json_help="print the input spec as JSON",
                      interrupt_hint="no file was written")


def run_export(args: argparse.Namespace) -> int:
    """Handles `export`: builds or loads the model, exports it, prints what was written."""
    from lru_keras import evaluate, tflite, zoo
    from lru_keras.tflite.graph import resolve_loops
    from lru_keras.tflite.options import check_writable

    require_model(args)
    if args.model:
        refuse_model_arguments(args)
    if args.calibration_npz and args.quantization != "int8":
        args.parser.error("--calibration-npz goes with --quantization int8")
    if args.calibration_size and args.quantization != "int8":
        args.parser.error("--calibration-size goes with --quantization int8")
    if args.reuse_loops is not None and args.folded:
        args.parser.error("--reuse-loops goes without --folded (a loop reads one kernel at "
                          "every reuse; --folded makes a kernel copy per reuse)")
    check_writable(Path(args.output))  # before the model is read or built
    if args.model:
        dataset, model = args.dataset, evaluate.load_model_file(args.model)
    else:
        dataset = weights_dataset(args)
        model = model_from_args(args, dataset=None if args.weights else dataset)
    reuse_loops = False
    if args.reuse_loops is not None:  # before the calibration images are read
        reuse_loops = resolve_loops(model, args.reuse_loops or True, "--reuse-loops")
    representative = None
    if args.calibration_npz:
        representative = _calibration_images(args.calibration_npz, model.inputs[0].shape[1:])
    spec = tflite.export(
        model, args.output, args.quantization, representative, share_weights=not args.folded,
        dataset=dataset, calibration_size=args.calibration_size, data_dir=args.data_dir,
        input_range=args.input_range, io_dtype=args.io_dtype,
        model_info=zoo.get_weights(args.weights).model_info() if args.weights else None,
        reuse_loops=reuse_loops)
    if args.json:
        print(json.dumps(spec, indent=1, sort_keys=True))
        return 0
    labels, spec_file = tflite.sidecar_paths(args.output)
    inp = spec["input"]
    line = f"{args.output}: {spec['size_bytes'] / 1e6:.3f} MB, {spec['quantization']}, " + (
        "kernels shared" if spec["share_weights"] else "kernels folded per reuse")
    if spec.get("reuse_loops"):
        line += f", loops: {', '.join(spec['reuse_loops'])}"
    print(line)
    quant = (f", scale {inp['scale']:g}, zero point {inp['zero_point']}"
             if "scale" in inp else "")
    print(f"input: {inp['dtype']} {inp['shape']} NHWC, pixels {inp['pixel_range'][0]:g}.."
          f"{inp['pixel_range'][1]:g}{quant}")
    print(f"also written: {labels}, {spec_file}")
    return 0


def _calibration_images(path, image_shape):
    """The images (array x) of the --calibration-npz file, checked as calibration pixels
    for a model taking `image_shape`: ValueError naming the file and the array."""
    from lru_keras.data.store import read_npz_arrays
    from lru_keras.tflite.calibration_data import check_pixels

    images = read_npz_arrays(path, ("x",), what="--calibration-npz file")["x"]
    what = f"array 'x' of --calibration-npz file {path!r}"
    if images.ndim != 4 or not len(images) or any(
            wanted is not None and size != wanted
            for size, wanted in zip(images.shape[1:], image_shape)):
        raise ValueError(f"{what} has shape {images.shape}; the model takes images of shape "
                         f"(n, {', '.join(map(str, image_shape))}), n >= 1.")
    return check_pixels(images, what)
