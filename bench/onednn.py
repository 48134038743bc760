"""Benchmarks that measure both oneDNN settings, each in a child process of the script.

TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it starts, so a script measures each
setting by running itself again with --child and the variable set.
"""

import argparse
import os
from pathlib import Path

VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def add_arguments(parser):
    """--onednn (the settings to measure), --child (internal: measure this process's setting)
    and --out (the results folder, default bench/results)."""
    parser.add_argument("--onednn", nargs="+", choices=["0", "1"], default=["0", "1"],
                        help=f"{VARIABLE} values to measure, each in a child process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")


def child_environment(onednn):
    """This process's environment with the oneDNN setting `onednn` ("0" or "1")."""
    return {**os.environ, VARIABLE: onednn}


def this_setting():
    """The oneDNN setting this (child) process runs with."""
    return os.environ[VARIABLE]
