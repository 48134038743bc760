"""`lru-keras inspect`: what a .tflite file holds and what it needs on a device."""

from __future__ import annotations

import argparse
import json

from lru_keras.cli.options import handled_by


def add_inspect_command(subparsers) -> argparse.ArgumentParser:
    """Adds `inspect` to an argparse subparsers object; returns its parser."""
    inspector = subparsers.add_parser(
        "inspect", help="ops, weight sharing, XNNPACK partitions and microcontroller needs of "
                        "a .tflite file",
        description="Describe a .tflite file: its ops, how its conv weights are shared, how "
                    "XNNPACK partitions it, whether every op declares the output shape it "
                    "computes, and for an int8 file what TensorFlow Lite Micro needs: flash, "
                    "the smallest RAM arena and the ops to register (with the [micro] extra).")
    inspector.add_argument("file", metavar="FILE.tflite", help="the .tflite file")
    return handled_by(inspector, run_inspect, json_help="print everything as JSON")


def run_inspect(args: argparse.Namespace) -> int:
    """Handles `inspect`."""
    from lru_keras import tflite

    report = tflite.inspect(args.file)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    spec = report["spec"] or {}
    ops = report["ops"]
    print(f"file:            {args.file} ({report['size_bytes'] / 1024:.1f} KiB)")
    if spec:
        print(f"model:           {spec.get('model')} ({spec.get('quantization')}, "
              f"{spec.get('dataset')})")
    print(f"operators:       {sum(ops.values())}: "
          + ", ".join(f"{name} {count}" for name, count in ops.items()))
    sharing = report["sharing"]
    print(f"conv weights:    {sharing['weight_tensors']} tensors read by "
          f"{sharing['conv_ops']} conv ops")
    xnnpack = report["xnnpack"]
    left = xnnpack["undelegated_ops"]
    print(f"XNNPACK:         {xnnpack['partitions']} partition(s)"
          + (f"; left to LiteRT's kernels: {', '.join(left)}" if left else ""))
    wrong = report["declared_shape_mismatches"]
    print("declared shapes: " + ("each op declares the shape it computes" if not wrong else
                                 f"{len(wrong)} ops declare a wrong output shape (first: op "
                                 f"{wrong[0]['op']} {wrong[0]['name']}, declared "
                                 f"{wrong[0]['declared']}, computes {wrong[0]['computed']})"))
    micro = report["micro"]
    if micro is not None and "error" in micro:
        print(f"microcontroller: {micro['error']}")
    elif micro is not None:
        print(f"microcontroller: flash {micro['flash_bytes'] / 1024:.1f} KiB, arena (RAM) "
              f"{micro['arena_bytes'] / 1024:.1f} KiB in TensorFlow Lite Micro; "
              f"tflite::MicroMutableOpResolver<{len(micro['resolver'])}> with "
              + ", ".join(micro["resolver"]))
    elif spec.get("quantization") == "int8":
        print('microcontroller: not measured: pip install "lru_keras[micro]"')
    return 0
