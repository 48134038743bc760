"""Keras inference and training throughput of 14-LruNet-1x on each Keras backend (issue:
Multi-backend).

For TensorFlow, JAX and torch, each in a child process of this run (Keras picks its backend
once per process, from KERAS_BACKEND), `LruNet(reuse=14, width=1.0)` measured as
bench/keras_throughput.py measures it (`keras_throughput.measure`: inference images/s of
`model.predict_on_batch`, training images/s of `model.fit` with SGD momentum on in-memory
batches; the median of the timed calls after one warm-up call, which takes the tracing and
compilation). The batches are smaller than keras_throughput.py's so that the slowest backend
takes about two minutes. TensorFlow runs with this environment's oneDNN setting (its default
on this CPU unless TF_ENABLE_ONEDNN_OPTS is set; the results file records it).

Writes bench/results/backend_throughput.json and .md. Usage:
    python bench/backend_throughput.py [--backends tensorflow jax torch] [--repeats 2]
                                       [--out DIR]
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lru_keras import environment

BACKENDS = ("tensorflow", "jax", "torch")
REUSE, WIDTH = 14, 1.0
BATCHES = {"infer_batch": 256, "train_batch": 32, "train_steps": 1}


def measure_this_process(repeats):
    """The row of this process's backend (the child side of `main`)."""
    import keras
    from keras_throughput import measure

    from lru_keras.zoo import LruNet

    backend = keras.backend.backend()
    started = time.perf_counter()
    model = LruNet(reuse=REUSE, width=WIDTH, weights=None)
    row = {"backend": backend, "version": importlib.metadata.version(backend),
           **measure(model, repeats, **BATCHES)}
    row["seconds"] = round(time.perf_counter() - started, 1)
    print(f"{backend:>10}: inference {row['inference_images_per_s']:6.1f} img/s, training "
          f"{row['train_images_per_s']:5.1f} img/s ({row['seconds']} s)", file=sys.stderr,
          flush=True)
    return row


def run_child(backend, repeats):
    """This script in a child process with KERAS_BACKEND=`backend`; its row."""
    command = [sys.executable, __file__, "--child", "--repeats", str(repeats)]
    result = subprocess.run(command, env={**os.environ, "KERAS_BACKEND": backend},
                            stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def write_report(rows, repeats, out):
    """backend_throughput.json (every figure) and .md (the table) in `out`."""
    machine = {**environment.describe(), "date": datetime.date.today().isoformat()}
    report = {"machine": machine, "model": f"{REUSE}-LruNet-1x",
              "settings": {**BATCHES, "repeats": repeats}, "results": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "backend_throughput.json").write_text(json.dumps(report, indent=1) + "\n")
    onednn = machine["TF_ENABLE_ONEDNN_OPTS"] or "TensorFlow's default"
    lines = [f"{REUSE}-LruNet-1x (`LruNet(reuse={REUSE}, width={WIDTH})`), Keras "
             f"{machine['keras']}, {machine['cpu']}, {machine['cpus']} cores, "
             f"{machine['date']}. Median of {repeats} timed calls after a warm-up call "
             f"(tracing, compilation); TensorFlow's oneDNN setting: {onednn}.", "",
             f"| backend | version | inference img/s (`predict_on_batch`, batch "
             f"{BATCHES['infer_batch']}) | training img/s (`fit`, batch "
             f"{BATCHES['train_batch']}) | share of TensorFlow's (inference / training) |",
             "|---|---|---:|---:|---:|"]
    reference = next((r for r in rows if r["backend"] == "tensorflow"), None)
    for r in rows:
        share = ("" if reference is None else
                 f"{r['inference_images_per_s'] / reference['inference_images_per_s']:.2f} / "
                 f"{r['train_images_per_s'] / reference['train_images_per_s']:.2f}")
        lines.append(f"| {r['backend']} | {r['version']} | {r['inference_images_per_s']:.1f} | "
                     f"{r['train_images_per_s']:.1f} | {share} |")
    (out / "backend_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS),
                        help="Keras backends to measure, each in a child process")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_this_process(args.repeats)))
        return
    write_report([run_child(backend, args.repeats) for backend in args.backends],
                 args.repeats, args.out)


if __name__ == "__main__":
    main()
