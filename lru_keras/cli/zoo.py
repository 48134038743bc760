"""`lru-keras zoo list`: the registry of pretrained weights, with parameters, accuracy and
provenance (ported or trained)."""

from __future__ import annotations

import argparse
import json

from lru_keras import analysis
from lru_keras.cli.options import create_model, handled_by
from lru_keras.zoo import list_weights


def add_zoo_command(subparsers) -> argparse.ArgumentParser:
    """Adds `zoo list` to an argparse subparsers object; returns the `zoo` parser."""
    zoo = subparsers.add_parser("zoo", help="the registry of pretrained weights")
    commands = zoo.add_subparsers(dest="zoo_command", required=True, metavar="COMMAND")
    lister = commands.add_parser("list", help="every registered weights file")
    handled_by(lister, run_zoo_list, json_help="print a JSON list")
    return zoo


def run_zoo_list(args: argparse.Namespace) -> int:
    """Handles `zoo list`: one line (or JSON object) per registered weights file."""
    rows = []
    for entry in list_weights():
        model = create_model(entry.name, load_weights=False)
        rows.append({
            "name": entry.name, "fits": entry.describe(), "dataset": entry.dataset,
            "classes": entry.classes, "input_shape": list(entry.input_shape),
            "params": analysis.count_parameters(model)["trainable"],
            "accuracy": entry.accuracy, "provenance": entry.provenance,
        })
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(analysis.format_table(
        ["name", "fits", "dataset", "params", "accuracy %", "provenance"],
        [[r["name"], r["fits"], r["dataset"], f"{r['params']:,}", f"{r['accuracy']:.2f}",
          r["provenance"]] for r in rows],
        align_right=(3, 4)))
    print("accuracy: test accuracy recorded with the weights (ported: in the authors' "
          "checkpoint); `lru-keras evaluate --weights NAME --dataset DATASET` measures it.")
    return 0
