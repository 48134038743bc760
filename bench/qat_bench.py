"""Quantization-aware training vs post-training int8 of a published LruNet, on both oneDNN
settings and several seeds.

For each TF_ENABLE_ONEDNN_OPTS value (a child process each: TensorFlow turns oneDNN on by
default on CPUs with AVX-512 only, and the LRU block's training formulation depends on it),
from the published weights: the Keras float predictions, the post-training int8 file
(`lru_keras.tflite.export(..., "int8")`), and for each QAT recipe (training images x epochs)
and seed the fine-tuned float model and its int8 file (`lru_keras.tflite.quantize_aware`).
Every accuracy is top-1 on the full test set (int8 files with LiteRT's interpreter);
"agreement" is the share of test images on which a file predicts the published float
model's class, a less noisy measure than accuracy.

Long (a QAT run of 14-LruNet-1x takes about 15 minutes on 2 cores): every row is kept in a
run directory outside the repository (`--run-dir`, default
~/.cache/lru_keras/qat_bench/<weights>) as it is measured, and the same command run again
measures only the rows still missing. Writes bench/results/qat_bench.<weights>.json and .md
after every measurement. Needs `make data`. Usage:
    python bench/qat_bench.py [--weights lrunet14_1x.cifar10] [--recipe 5000x2 ...]
                              [--seed 0 1] [--onednn 0 1] [--run-dir DIR]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import onednn

ROW = "ROW "  # prefix of a result line on a child's stdout


def recipe(text):
    """"IMAGESxEPOCHS", e.g. "5000x2"."""
    try:
        images, epochs = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"recipe must be IMAGESxEPOCHS, got {text!r}") from None
    return images, epochs


def _scores(predicted, expected, labels):
    return {"accuracy": round(100.0 * float(np.mean(predicted == labels)), 2),
            "agreement_with_float": round(100.0 * float(np.mean(predicted == expected)), 2)}


def row_key(row):
    """What identifies a measurement: (oneDNN setting, method, seed)."""
    return [row["onednn"], row["method"], row["seed"]]


def measure_this_process(weights, recipes, seeds, learning_rate, done, emit):
    """The rows for this process's oneDNN setting that `done` (a list of `row_key`s) lacks;
    `emit(row)` as each is measured. The float model's row is measured every time (the
    agreement of the others is with its predictions)."""
    from lru_keras import data, tflite
    from lru_keras.zoo import LruNet, get_weights

    entry = get_weights(weights)
    batches = list(data.load(entry.dataset, "test", batch_size=500).as_numpy_iterator())
    images = np.concatenate([batch[0] for batch in batches])
    labels = np.concatenate([batch[1] for batch in batches])
    model = LruNet(**entry.arguments, weights=weights)

    def keras_predictions(keras_model):
        return keras_model.predict(images, batch_size=256, verbose=0).argmax(1)

    def litert_predictions(path):
        classifier = tflite.TFLiteClassifier(path, num_threads=os.cpu_count(), batch_size=100)
        return np.concatenate([classifier.predict(images[i:i + 100]).argmax(1)
                               for i in range(0, len(images), 100)])

    setting = onednn.this_setting()
    float_predictions = keras_predictions(model)
    emit({"onednn": setting, "method": "published float (Keras)", "seed": None,
          "seconds": 0.0, **_scores(float_predictions, float_predictions, labels)})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ptq.tflite"
        if [setting, "post-training int8", None] not in done:
            spec = tflite.export(model, path, "int8")
            emit({"onednn": setting, "method": "post-training int8", "seed": None,
                  "seconds": 0.0, "size_bytes": spec["size_bytes"],
                  **_scores(litert_predictions(path), float_predictions, labels)})
        for train_images, epochs in recipes:
            method = f"QAT int8, {train_images} images x {epochs} epochs, Adam {learning_rate:g}"
            for seed in seeds:
                if [setting, method, seed] in done:
                    continue
                path = Path(folder) / f"qat_{train_images}x{epochs}_{seed}.tflite"
                spec, finetuned = tflite.quantize_aware(
                    model, entry.dataset, path, epochs=epochs, train_images=train_images,
                    learning_rate=learning_rate, seed=seed, verbose=2)
                finetuned_float = _scores(keras_predictions(finetuned), float_predictions,
                                          labels)
                emit({"onednn": setting, "method": method, "seed": seed, "seconds": round(spec["qat"]["seconds"], 1),
                      "size_bytes": spec["size_bytes"],
                      "finetuned_float_accuracy": finetuned_float["accuracy"],
                      **_scores(litert_predictions(path), float_predictions, labels)})


def run_child(setting, args, done, on_row):
    """This script in a child process with TF_ENABLE_ONEDNN_OPTS=`setting`; each row it prints
    (a stdout line `ROW <json>`) is passed to `on_row` as it arrives, other output (the QAT
    child's progress) goes to stderr."""
    command = [sys.executable, __file__, "--child", "--weights", args.weights,
               "--recipe", *[f"{i}x{e}" for i, e in args.recipe],
               "--seed", *map(str, args.seed), "--learning-rate", str(args.learning_rate),
               "--done", json.dumps(done)]
    with subprocess.Popen(command, env=onednn.child_environment(setting),
                          stdout=subprocess.PIPE, text=True) as child:
        for line in child.stdout:
            if line.startswith(ROW):
                on_row(json.loads(line[len(ROW):]))
            else:
                sys.stderr.write(line)
    if child.returncode != 0:
        raise SystemExit(f"the oneDNN={setting} child failed with status {child.returncode}")


def write_results(out, weights, rows):
    """bench/results/qat_bench.<weights>.json and .md with the rows measured so far."""
    from lru_keras.environment import cpu_model

    out.mkdir(parents=True, exist_ok=True)
    result = {"weights": weights, "machine": platform.platform(), "cpu": cpu_model(),
              "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "results": rows}
    (out / f"qat_bench.{weights}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"`{weights}`, full test set; agreement: share of test images on which the model "
             f"predicts the published float model's class. "
             f"{', '.join(sorted({row.get('cpu', cpu_model()) for row in rows}))}, "
             f"{os.cpu_count()} cores, {result['date']}.", "",
             "| oneDNN | method | seed | fine-tune (s) | size (MB) | float after fine-tune | "
             "accuracy | agreement with float |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        size = f"{row['size_bytes'] / 1e6:.3f}" if "size_bytes" in row else ""
        finetuned = (f"{row['finetuned_float_accuracy']:.2f}"
                     if "finetuned_float_accuracy" in row else "")
        lines.append(f"| {'on' if row['onednn'] == '1' else 'off'} | {row['method']} | "
                     f"{'' if row['seed'] is None else row['seed']} | {row['seconds']:.0f} | "
                     f"{size} | {finetuned} | {row['accuracy']:.2f} | "
                     f"{row['agreement_with_float']:.2f} |")
    (out / f"qat_bench.{weights}.md").write_text("\n".join(lines) + "\n")


def main():
    from lru_keras.tflite.qat import DEFAULTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="lrunet14_1x.cifar10")
    parser.add_argument("--recipe", type=recipe, nargs="+",
                        default=[(DEFAULTS["train_images"], DEFAULTS["epochs"])])
    parser.add_argument("--seed", type=int, nargs="+", default=[DEFAULTS["seed"]])
    parser.add_argument("--learning-rate", type=float, default=DEFAULTS["learning_rate"])
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="where the measured rows are kept (default: "
                             "~/.cache/lru_keras/qat_bench/<weights>)")
    parser.add_argument("--done", type=json.loads, default=[], help=argparse.SUPPRESS)
    onednn.add_arguments(parser)
    args = parser.parse_args()
    if args.child:
        measure_this_process(args.weights, args.recipe, args.seed, args.learning_rate,
                             args.done, lambda row: print(ROW + json.dumps(row), flush=True))
        return
    from lru_keras import atomic
    from lru_keras.environment import cpu_model

    run_dir = args.run_dir or Path.home() / ".cache" / "lru_keras" / "qat_bench" / args.weights
    run_dir.mkdir(parents=True, exist_ok=True)
    kept = run_dir / "rows.json"
    rows = json.loads(kept.read_text()) if kept.is_file() else []

    def on_row(row):
        row["cpu"] = cpu_model()  # a resumed run may continue on another machine
        keys = [row_key(r) for r in rows]
        if row_key(row) in keys:
            rows[keys.index(row_key(row))] = row
        else:
            rows.append(row)
        rows.sort(key=lambda r: r["onednn"])  # stable: each setting's rows in measured order
        atomic.write_text(kept, json.dumps(rows, indent=1) + "\n")
        print(json.dumps(row), file=sys.stderr, flush=True)
        write_results(args.out, args.weights, rows)

    for setting in args.onednn:
        run_child(setting, args, [row_key(row) for row in rows], on_row)
    print((args.out / f"qat_bench.{args.weights}.md").read_text())


if __name__ == "__main__":
    main()
