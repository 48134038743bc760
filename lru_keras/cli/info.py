"""`lru-keras info`: parameters, MFLOPs and the per-stage table of a model."""

from __future__ import annotations

import argparse
import json

from lru_keras import analysis, data
from lru_keras.cli.options import add_model_arguments, handled_by, model_from_args
from lru_keras.zoo import get_weights


def add_info_command(subparsers) -> argparse.ArgumentParser:
    """Adds `info` to an argparse subparsers object; returns its parser."""
    info = subparsers.add_parser(
        "info", help="parameters, MFLOPs and per-stage table of a model",
        description=f"Counts as the paper does. {analysis.MFLOPS_CONVENTION}.")
    add_model_arguments(info, weights_file=False)
    info.add_argument("--dataset", choices=sorted(data.DATASETS),
                      help="take classes and input shape from this dataset")
    return handled_by(info, run_info, json_help="print a JSON object")


def run_info(args: argparse.Namespace) -> int:
    """Handles `info`: counts, MFLOPs and the per-stage table."""
    if args.weights and args.dataset:
        args.parser.error(f"--weights {args.weights} fixes the dataset; drop --dataset")
    model = model_from_args(args, dataset=args.dataset, load_weights=False)
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
