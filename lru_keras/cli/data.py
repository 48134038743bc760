"""`lru-keras data ...`: import real arrays into TFDS's prepared format and list what is there."""

from __future__ import annotations

import argparse

from lru_keras import data
from lru_keras.cli.options import add_data_dir_argument, handled_by


def add_data_commands(subparsers) -> argparse.ArgumentParser:
    """Adds `data import` and `data list` to an argparse subparsers object; returns `data`."""
    group = subparsers.add_parser(
        "data", help="prepare CIFAR-10/100 and Fashion-MNIST for tfds.load, offline",
        description="Prepare datasets in TFDS's format without network access.")
    commands = group.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    importer = commands.add_parser(
        "import", help="write .npz arrays as prepared TFDS datasets",
        description="Either --from-shared DIR (the shared .npz files, all splits) or "
                    "--dataset NAME --split SPLIT --npz FILE (any .npz with x and y arrays).")
    source = importer.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-shared", metavar="DIR",
                        help="directory with the shared .npz files (e.g. ../shared/data)")
    source.add_argument("--dataset", choices=sorted(data.DATASETS),
                        help="dataset the --npz file belongs to")
    importer.add_argument("--datasets", metavar="NAMES",
                          help="with --from-shared: comma-separated subset of "
                               f"{','.join(data.DATASETS)} (default: all)")
    importer.add_argument("--split", help="with --dataset: split to write, e.g. train or test")
    importer.add_argument("--npz", metavar="FILE",
                          help="with --dataset: .npz with x (uint8 NHWC) and y; optional "
                               "y_coarse (cifar100) and filenames")
    add_data_dir_argument(importer)
    importer.add_argument("--overwrite", action="store_true",
                          help="rewrite even if prepared from the same files already")
    handled_by(importer, run_import,
               interrupt_hint="nothing half-imported was kept; run the command again")

    lister = commands.add_parser("list", help="show the prepared datasets and split sizes")
    add_data_dir_argument(lister)
    handled_by(lister, run_list)
    return group


def run_import(args: argparse.Namespace) -> int:
    """Handles `data import`: the shared files, or one split from one .npz file."""
    if args.from_shared is not None:
        if args.split or args.npz:
            args.parser.error("--split and --npz go with --dataset, not --from-shared")
        names = args.datasets.split(",") if args.datasets else None
        data.import_shared(args.from_shared, names, args.data_dir, overwrite=args.overwrite)
        return 0
    if args.datasets:
        args.parser.error("--datasets goes with --from-shared; use --dataset NAME")
    if not (args.split and args.npz):
        args.parser.error("--dataset needs both --split and --npz")
    data.import_npz(args.dataset, args.split, args.npz, args.data_dir, overwrite=args.overwrite)
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Handles `data list`: every supported dataset, prepared or not, with split sizes."""
    prepared = data.list_prepared(args.data_dir)
    print(f"data dir: {data.resolve_data_dir(args.data_dir)}")
    for name in data.DATASETS:
        counts = prepared.get(name)
        sizes = ", ".join(f"{split} {n}" for split, n in sorted(counts.items())) if counts else \
            "not prepared"
        print(f"  {name:<14} {sizes}")
    return 0
