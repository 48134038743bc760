"""Quantization-aware training vs post-training int8 of 14-LruNet-1x (CIFAR-10), issue 8.

From the published weights, in one run on the same machine: the Keras float accuracy, the
post-training int8 file (`lru_keras.tflite.export(..., "int8")`), and for each QAT recipe
(training images x epochs, Adam learning rate) the fine-tuned float model and its int8 file
(`lru_keras.tflite.quantize_aware`); every accuracy is top-1 on the full CIFAR-10 test set
(int8 files with LiteRT's interpreter). Reports the gap of each int8 file to float.

Writes bench/results/qat_bench.json and .md. Needs `make data`. Usage:
    python bench/qat_bench.py [--recipe 5000x2 20000x3 ...] [--learning-rate 3e-5]
"""

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from lru_keras import evaluate, tflite
from lru_keras.tflite.qat import DEFAULTS
from lru_keras.zoo import LruNet


def recipe(text):
    """"IMAGESxEPOCHS", e.g. "5000x2"."""
    try:
        images, epochs = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"recipe must be IMAGESxEPOCHS, got {text!r}") from None
    return images, epochs


def int8_accuracy(path):
    return tflite.evaluate(path, "cifar10", "test", progress=False)["accuracy"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=recipe, nargs="+", default=[(5000, 2), (20000, 3)])
    parser.add_argument("--learning-rate", type=float, default=DEFAULTS["learning_rate"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    model = LruNet(reuse=14, width=1.0, weights="cifar10")
    float_accuracy = evaluate.evaluate_dataset(model, "cifar10", "test",
                                             progress=False)["accuracy"]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ptq.tflite"
        spec = tflite.export(model, path, "int8")
        rows.append({"method": "post-training int8", "train_images": 0, "epochs": 0,
                     "seconds": 0.0,
                     "size_bytes": spec["size_bytes"],
                     "int8_accuracy": int8_accuracy(path),
                     "float_accuracy": float_accuracy})
        write_results(args.out, float_accuracy, rows)
        for images, epochs in args.recipe:
            path = Path(folder) / f"qat_{images}x{epochs}.tflite"
            spec, finetuned = tflite.quantize_aware(
                model, "cifar10", path, epochs=epochs, train_images=images,
                learning_rate=args.learning_rate, verbose=2)
            rows.append({
                "method": f"QAT {images} images x {epochs} epochs, Adam {args.learning_rate:g}",
                "train_images": images, "epochs": epochs, "seconds": spec["qat"]["seconds"],
                "size_bytes": spec["size_bytes"],
                "int8_accuracy": int8_accuracy(path),
                "float_accuracy": evaluate.evaluate_dataset(
                    finetuned, "cifar10", "test", progress=False)["accuracy"]})
            print(json.dumps(rows[-1]), flush=True)
            write_results(args.out, float_accuracy, rows)  # a long run keeps what it measured
    print((args.out / "qat_bench.md").read_text())


def write_results(out, float_accuracy, rows):
    """bench/results/qat_bench.json and .md with the rows measured so far."""
    for row in rows:
        row["gap_to_published_float"] = round(float_accuracy - row["int8_accuracy"], 2)
    out.mkdir(parents=True, exist_ok=True)
    result = {"model": "14-LruNet-1x (CIFAR-10, published weights)",
              "published_float_accuracy": float_accuracy, "machine": platform.platform(),
              "processor": platform.processor() or platform.machine(),
              "date": time.strftime("%Y-%m-%d"), "results": rows}
    (out / "qat_bench.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"14-LruNet-1x, CIFAR-10 test set (10,000 images); Keras float (published weights) "
             f"{float_accuracy:.2f}%.", "",
             "| method | fine-tune time (s) | size (MB) | float after fine-tune | int8 .tflite "
             "| gap to float |", "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['method']} | {row['seconds']:.0f} | {row['size_bytes'] / 1e6:.3f} | "
                     f"{row['float_accuracy']:.2f} | {row['int8_accuracy']:.2f} | "
                     f"{row['gap_to_published_float']:.2f} |")
    (out / "qat_bench.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
