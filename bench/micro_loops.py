"""LRU blocks as loops on a microcontroller: int8 files of a registered LruNet in each form.

Forms (`lru_keras.tflite.export(..., "int8", io_dtype="uint8", reuse_loops=...)`, otherwise
its defaults, as tflite/make_tflite.py writes the shipped files):
- "unrolled": every reuse has its own ops (the shipped files' form);
- "loops": every LRU block is one WHILE loop over its reuses;
- "loops-minmax": the same with the converter's plain min/max activation ranges;
- "loops-after-first": the first LRU block unrolled (LruNet's stage 1: the largest
  activations, whose loop-carried state would stay float32), the others as loops.
For each file: its size (the flash), the smallest TensorFlow Lite Micro arena (the RAM, as the
export measures it), its operator count, top-1 accuracy on the full test set with LiteRT's
interpreter, and the share of test images on which it predicts the Keras model's class.

Long for 14-reuse models (each export calibrates, verifies and bisects TFLM's arena; a loop
file's WHILE ops run outside XNNPACK): the files, the Keras predictions and every finished
row ("<weights> | <form>") live in a run directory outside the repository (`--run-dir`,
default ~/.cache/lru_keras/micro_loops); the same command run again measures only the rows
still missing. Writes bench/results/micro_loops.json and .md (with --test-images, into the
run directory instead). Needs `make data`. Usage:
    python bench/micro_loops.py [--weights lrunet14_1x.cifar10 ...] [--form FORM ...]
                                [--test-images N] [--run-dir DIR]
"""

import argparse
import json
import os
import re
from pathlib import Path

import numpy as np
from results_files import RESULTS, load_rows, save_rows, write_results

FORMS = ("unrolled", "loops", "loops-minmax", "loops-after-first")


def form_arguments(form, blocks):
    """The `export` arguments of a form, for a model whose LRU blocks are `blocks`."""
    return {"unrolled": {"reuse_loops": False},
            "loops": {"reuse_loops": True},
            "loops-minmax": {"reuse_loops": True, "ranges": "minmax"},
            "loops-after-first": {"reuse_loops": blocks[1:] or False}}[form]


def test_set(dataset, split):
    """(images float32 [0, 255], labels) of a test split ("test" or "test[:N]")."""
    from lru_keras import data

    batches = list(data.load(dataset, split, batch_size=500).as_numpy_iterator())
    return (np.concatenate([batch[0] for batch in batches]),
            np.concatenate([batch[1] for batch in batches]))


def keras_predictions(entry, images, split, run_dir):
    """The Keras model's classes on `images` (the test `split`), computed once per run
    directory."""
    from lru_keras import zoo

    path = run_dir / f"{entry.name}.keras_classes.{re.sub('[^a-z0-9]+', '_', split)}.npy"
    if not path.is_file():
        classes = zoo.create(entry.name).predict(images, batch_size=256, verbose=0).argmax(1)
        np.save(path, classes)
    return np.load(path)


def measure(entry, form, images, labels, expected, run_dir):
    """The row of one form of one registered model (the file is exported once per run dir)."""
    from lru_keras import tflite, zoo
    from lru_keras.tflite import graph

    model = zoo.create(entry.name)
    arguments = form_arguments(form, graph.loop_blocks(model))
    path = run_dir / f"{entry.name}.{form}.int8.tflite"
    spec_path = tflite.sidecar_paths(path)[1]
    if spec_path.is_file():  # exported before the run was stopped
        spec = json.loads(spec_path.read_text())
    else:
        # uint8 input and output, as the shipped int8 files (tflite/make_tflite.py)
        spec = tflite.export(model, path, "int8", dataset=entry.dataset, io_dtype="uint8",
                             model_info=entry.model_info(), verbose=True, **arguments)
    classifier = tflite.TFLiteClassifier(path, num_threads=os.cpu_count(), batch_size=100)
    predicted = np.concatenate([classifier.predict(images[i:i + 100]).argmax(1)
                                for i in range(0, len(images), 100)])
    micro = spec.get("micro", {})
    return {"weights": entry.name, "form": form, "reuse_loops": spec.get("reuse_loops", []),
            "ranges": spec["calibration"]["ranges"], "size_bytes": spec["size_bytes"],
            "arena_bytes": micro.get("arena_bytes"), "operators": micro.get("operators"),
            "micro_error": micro.get("error"), "test_images": len(images),
            "accuracy": round(100.0 * float(np.mean(predicted == labels)), 2),
            "agreement_with_keras": round(100.0 * float(np.mean(predicted == expected)), 2),
            "keras_accuracy": round(100.0 * float(np.mean(expected == labels)), 2)}


def markdown(rows):
    lines = ["| weights | form | file (KB) | TFLM arena (KiB) | operators | int8 accuracy % "
             "(Keras) | agreement with Keras % |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        arena = "" if r["arena_bytes"] is None else f"{r['arena_bytes'] / 1024:.0f}"
        lines.append(f"| {r['weights']} | {r['form']} | {r['size_bytes'] / 1e3:.0f} | {arena} | "
                     f"{r['operators'] or ''} | {r['accuracy']:.2f} ({r['keras_accuracy']:.2f}) "
                     f"| {r['agreement_with_keras']:.2f} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", default=["lrunet14_1x.cifar10"],
                        help="registered LruNet weights (default: lrunet14_1x.cifar10)")
    parser.add_argument("--form", nargs="+", choices=FORMS, default=list(FORMS),
                        help="forms to measure (default: all)")
    parser.add_argument("--test-images", type=int, metavar="N",
                        help="score on the first N test images only (a quick check: its "
                             "rows need a --run-dir of their own, and the tables go there)")
    parser.add_argument("--run-dir", type=Path,
                        default=Path.home() / ".cache" / "lru_keras" / "micro_loops")
    args = parser.parse_args()
    from lru_keras import extras, zoo

    extras.require_installed("tflite_micro")  # the arena is the point of the comparison
    entries = [zoo.get_weights(name) for name in args.weights]
    split = "test" if args.test_images is None else f"test[:{args.test_images}]"
    done = load_rows(args.run_dir)
    mixed = sorted({row["split"] for row in done.values()} - {split})
    if mixed:
        raise SystemExit(f"{args.run_dir} holds rows scored on {mixed}, not {split!r}: "
                         f"use another --run-dir")
    for entry in entries:
        images = labels = expected = None
        for form in args.form:
            key = f"{entry.name} | {form}"
            if key in done:
                continue
            if images is None:
                images, labels = test_set(entry.dataset, split)
                expected = keras_predictions(entry, images, split, args.run_dir)
            done[key] = {**measure(entry, form, images, labels, expected, args.run_dir),
                         "split": split}
            save_rows(args.run_dir, done)
            print(markdown([done[key]]), flush=True)
    rows = [done[f"{entry.name} | {form}"] for entry in entries for form in args.form]
    write_results(
        "micro_loops",
        "lru_keras.tflite.export int8 (300 calibration images of the training split) in each "
        "form; arena: the smallest TensorFlow Lite Micro accepts (its reference kernels, "
        "`lru_keras.tflite.micro`); accuracy and agreement: LiteRT interpreter on the test set",
        rows, markdown(rows), out=RESULTS if args.test_images is None else args.run_dir)
    print(markdown(rows))


if __name__ == "__main__":
    main()
