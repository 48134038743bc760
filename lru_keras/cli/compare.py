"""`lru-keras compare`: every registered model of a dataset side by side (`lru_keras.compare`).

The Markdown table (or --json, the whole result) goes to stdout, one progress line per model
to stderr.
"""

from __future__ import annotations

import argparse
import json

from lru_keras import compare, data
from lru_keras.cli.options import add_data_dir_argument, handled_by, positive_int


def add_compare_command(subparsers) -> argparse.ArgumentParser:
    """Adds `compare` to an argparse subparsers object; returns its parser."""
    comparer = subparsers.add_parser(
        "compare", help="every zoo model of a dataset side by side: accuracy, size, latency",
        description="Measure every registered model of a dataset on this machine: params, "
                    "MFLOPs, Keras and int8 (LiteRT) test accuracy, .tflite sizes, and int8 "
                    "batch-1 latency on one thread (XNNPACK), interleaved over the models.")
    comparer.add_argument("--dataset", required=True, choices=sorted(data.DATASETS),
                          help="a dataset prepared in TFDS (see `lru-keras data`)")
    comparer.add_argument("--limit", type=positive_int, metavar="N",
                          help="only the first N test images")
    comparer.add_argument("--latency-runs", type=positive_int, default=100, metavar="N",
                          help="timed rounds of the latency measurement (default 100)")
    comparer.add_argument("--tflite-dir", metavar="DIR",
                          help="folder with the models' .int8.tflite and .float16.tflite "
                               "files (default: the checkout's tflite/)")
    comparer.add_argument("--plot", metavar="PNG",
                          help="also write accuracy against latency and params as a PNG")
    add_data_dir_argument(comparer)
    return handled_by(comparer, run_compare, json_help="print the result as a JSON object")


def run_compare(args: argparse.Namespace) -> int:
    """Handles `compare`: measures, prints the table or JSON, writes the plot if asked."""
    if args.plot:
        compare.check_plot_path(args.plot)
    result = compare.compare(args.dataset, tflite_dir=args.tflite_dir, data_dir=args.data_dir,
                             limit=args.limit, latency_runs=args.latency_runs)
    if args.plot:
        compare.plot_compare(result, args.plot)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(compare.format_compare(result))
    if args.plot:
        print(f"\nplot: {args.plot}")
    return 0
