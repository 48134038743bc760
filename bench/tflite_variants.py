"""Size, latency and accuracy of every registered model in each .tflite variant an app can
pick: float32, float16, int8 with int8 I/O, and int8 with uint8 I/O (the shipped one).

Each file is `lru_keras.tflite.export` with its defaults; accuracy is top-1 on the full test
set with LiteRT's interpreter (XNNPACK); latency is batch 1, one thread, XNNPACK, the four
variants of a model timed interleaved (`runtime.latencies`), so that they compare on a shared
machine. The Keras column is the weights' recorded accuracy.

Long (about a minute per file): the files and the rows measured so far live in a run
directory outside the repository (`--run-dir`, default ~/.cache/lru_keras/tflite_variants);
an interrupted run resumes where it stopped when started again. Writes
bench/results/tflite_variants.json and .md. Needs `make data`. Usage:
    python bench/tflite_variants.py [--weights NAME ...] [--runs 200] [--run-dir DIR]
"""

import argparse
import re
from pathlib import Path

from results_files import load_rows, save_rows, write_results

from lru_keras import tflite, zoo
from lru_keras.tflite.runtime import latencies

VARIANTS = {  # name: (quantization, io_dtype)
    "float32": ("float32", None), "float16": ("float16", None),
    "int8": ("int8", "int8"), "int8, uint8 I/O": ("int8", "uint8"),
}


def measure_model(entry, run_dir, runs):
    """The four rows of one registered model (each file exported and evaluated once)."""
    paths = []
    rows = []
    for variant, (quantization, io_dtype) in VARIANTS.items():
        path = run_dir / f"{entry.name}.{re.sub('[^a-z0-9]+', '_', variant.lower())}.tflite"
        if not path.is_file():
            tflite.export(zoo.create(entry.name), path, quantization, dataset=entry.dataset,
                          io_dtype=io_dtype, model_info=entry.model_info(), verbose=False)
        result = tflite.evaluate(path, entry.dataset, "test", progress=False)
        paths.append(path)
        rows.append({"weights": entry.name, "variant": variant,
                     "size_bytes": path.stat().st_size, "accuracy": round(result["accuracy"], 2),
                     "keras_accuracy": entry.accuracy})
    for row, timing in zip(rows, latencies(paths, num_threads=1, runs=runs), strict=True):
        row.update(latency_ms_median=round(timing["median_ms"], 3),
                   latency_ms_min=round(timing["min_ms"], 3),
                   xnnpack_partitions=timing["xnnpack_partitions"])
    return rows


def markdown(rows):
    lines = ["| weights | variant | size (KB) | accuracy % (Keras) | 1 thread median / min (ms) "
             "| XNNPACK partitions |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['weights']} | {r['variant']} | {r['size_bytes'] / 1e3:.1f} | "
                     f"{r['accuracy']:.2f} ({r['keras_accuracy']:.2f}) | "
                     f"{r['latency_ms_median']:.3f} / {r['latency_ms_min']:.3f} | "
                     f"{r['xnnpack_partitions']} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", help="registered names (default: all)")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--run-dir", type=Path,
                        default=Path.home() / ".cache" / "lru_keras" / "tflite_variants")
    args = parser.parse_args()
    entries = [zoo.get_weights(name) for name in args.weights] if args.weights \
        else zoo.list_weights()
    done = load_rows(args.run_dir)
    for entry in entries:
        if entry.name not in done:
            done[entry.name] = measure_model(entry, args.run_dir, args.runs)
            save_rows(args.run_dir, done)
        print(markdown(done[entry.name]), flush=True)
    rows = [row for entry in entries for row in done[entry.name]]
    write_results(
        "tflite_variants",
        "lru_keras.tflite.export defaults (int8: 300 calibration images); accuracy: full test "
        "set, LiteRT interpreter, XNNPACK; latency: batch 1, one thread, XNNPACK, the model's "
        f"four files interleaved, {args.runs} rounds after 20 warm-up rounds",
        rows, markdown(rows))


if __name__ == "__main__":
    main()
