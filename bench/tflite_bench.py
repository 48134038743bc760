"""TFLite (LiteRT) size and batch-1 latency of N-LruNet-1x, kernels shared vs folded (issue 7).

For N = 1 and 14 (the published CIFAR-10 weights), quantization float32 / float16 / int8 and
both export modes (`share_weights=True`: each shared kernel stored once; False: the plain
conversion, one kernel copy per reuse), exports the model with `lru_keras.tflite.export` and
measures with `ai_edge_litert`'s interpreter:
- file size;
- batch-1 latency, XNNPACK on, 1 thread and all threads (median and minimum of --runs calls;
  on a machine shared with other jobs the minimum is the steadier figure);
- XNNPACK partitions (1 = the whole graph runs in the delegate);
- optionally (--accuracy) top-1 accuracy on the full CIFAR-10 test set (needs `make data`).

Writes bench/results/tflite_bench.json and .md. Usage:
    python bench/tflite_bench.py [--reuse 1 14] [--quantization float32 float16 int8]
                                 [--runs 300] [--accuracy] [--keep DIR]
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from lru_keras import tflite
from lru_keras.tflite.runtime import latency
from lru_keras.zoo import LruNet

GOALS_14 = {"float32_shared_mb": 0.95, "int8_shared_mb": 0.5, "int8_1_thread_ms": 3.0}


def measure(model, folder, reuse, quantization, share, runs, accuracy):
    mode = "shared" if share else "folded"
    path = Path(folder) / f"lrunet{reuse}_1x_{quantization}_{mode}.tflite"
    start = time.perf_counter()
    spec = tflite.export(model, path, quantization, share_weights=share)
    row = {
        "model": f"{reuse}-LruNet-1x", "reuse": reuse, "quantization": quantization,
        "mode": mode, "size_bytes": spec["size_bytes"], "export_seconds":
        round(time.perf_counter() - start, 1),
        "conv_weight_tensors": spec["conv_weight_tensors"], "conv_ops": spec["conv_ops"],
        "ops": sum(spec["ops"].values()), "gather_ops": spec["ops"].get("GATHER", 0),
    }
    threads = os.cpu_count() or 1
    for name, n in (("1_thread", 1), ("all_threads", threads)):
        result = latency(path, num_threads=n, runs=runs)
        row[f"latency_{name}_median_ms"] = round(result["median_ms"], 3)
        row[f"latency_{name}_min_ms"] = round(result["min_ms"], 3)
        row["xnnpack_partitions"] = result["xnnpack_partitions"]
    row["threads"] = threads
    if accuracy:
        result = tflite.evaluate(path, "cifar10", "test", progress=False)
        row["accuracy"] = result["accuracy"]
    return row


def markdown(rows, accuracy):
    header = ["model", "quantization", "kernels", "size (MB)", "1 thread median / min (ms)",
              "all threads median / min (ms)", "XNNPACK partitions", "conv weights / ops"]
    if accuracy:
        header.append("CIFAR-10 test accuracy %")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["model"], r["quantization"], r["mode"], f"{r['size_bytes'] / 1e6:.3f}",
                 f"{r['latency_1_thread_median_ms']:.2f} / {r['latency_1_thread_min_ms']:.2f}",
                 f"{r['latency_all_threads_median_ms']:.2f} / "
                 f"{r['latency_all_threads_min_ms']:.2f}",
                 str(r["xnnpack_partitions"]), f"{r['conv_weight_tensors']} / {r['conv_ops']}"]
        if accuracy:
            cells.append(f"{r['accuracy']:.2f}" if "accuracy" in r else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse", type=int, nargs="+", default=[1, 14])
    parser.add_argument("--quantization", nargs="+", default=["float32", "float16", "int8"],
                        choices=list(tflite.QUANTIZATIONS))
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--accuracy", action="store_true",
                        help="also evaluate each file on the full CIFAR-10 test set")
    parser.add_argument("--keep", type=Path, help="keep the .tflite files in this folder")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for reuse in args.reuse:
            model = LruNet(reuse=reuse, width=1.0, weights="cifar10")
            for quantization in args.quantization:
                for share in (True, False):
                    row = measure(model, folder, reuse, quantization, share, args.runs,
                                  args.accuracy)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    import ai_edge_litert
    import tensorflow as tf

    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "tensorflow": tf.__version__,
                    "ai_edge_litert": getattr(ai_edge_litert, "__version__", "2.3.0")},
        "method": "lru_keras.tflite.export defaults; batch 1, XNNPACK on, median and minimum "
                  f"of {args.runs} invokes after 20 warm-up invokes",
        "goals_14_lrunet_1x": GOALS_14,
        "results": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tflite_bench.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(rows, args.accuracy)
    (args.out / "tflite_bench.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
