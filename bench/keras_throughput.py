"""Keras inference and training throughput of N-LruNet-1x on this machine (issue: LruNet).

Measures, for N = 1 and 14:
- inference images/s at batch 256 (`model.predict_on_batch`, compiled, training=False);
- training images/s of `model.fit` at batch 128 (SGD momentum, in-memory batches, so the
  figure is the model's, not the input pipeline's);
for two formulations in the SAME run, so machine noise affects both alike:
- "fast": lru_keras as shipped (oneDNN grouped 1x1 conv, per-copy multiplier-1 depthwise,
  transpose shuffle on a tracked channel layout, fused BatchNorm, folded BN in inference);
- "literal": the same weights through `Reused.call`, the paper's block written op by op.

Writes bench/results/keras_throughput.json and .md. Usage:
    python bench/keras_throughput.py [--reuse 1 14] [--repeats 3] [--out bench/results]
"""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import keras
import numpy as np

from lru_keras.layers.reuse import LRUBlock, Reused
from lru_keras.zoo import LruNet


class LiteralLRUBlock(LRUBlock):
    """LRUBlock computed literally (Reused.call): the baseline formulation."""

    call = Reused.call


def literal_copy(model):
    """The same model and weights with every LRUBlock computed literally."""
    def clone(layer):
        if isinstance(layer, LRUBlock):
            return LiteralLRUBlock.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def images_per_second(run, images, repeats):
    """Median images/s over `repeats` timed calls of `run` (after one warm-up call)."""
    run()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(images / (time.perf_counter() - start))
    return statistics.median(rates), rates


def measure(model, repeats, infer_batch=256, train_batch=128, train_steps=8):
    rng = np.random.default_rng(0)
    x_infer = rng.integers(0, 256, (infer_batch, 32, 32, 3)).astype("float32")
    n_train = train_batch * train_steps
    x_train = rng.integers(0, 256, (n_train, 32, 32, 3)).astype("float32")
    y_train = rng.integers(0, 10, n_train)
    infer, infer_all = images_per_second(
        lambda: model.predict_on_batch(x_infer), infer_batch, repeats
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss="sparse_categorical_crossentropy",
    )
    train, train_all = images_per_second(
        lambda: model.fit(x_train, y_train, batch_size=train_batch, epochs=1, verbose=0,
                          shuffle=False),
        n_train, repeats,
    )
    return {"inference_images_per_s": infer, "inference_all": infer_all,
            "train_images_per_s": train, "train_all": train_all,
            "inference_batch": infer_batch, "train_batch": train_batch}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse", type=int, nargs="+", default=[1, 14])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    results = []
    for reuse in args.reuse:
        fast = LruNet(reuse=reuse, width=1.0, weights=None)
        for formulation, model in (("fast", fast), ("literal", literal_copy(fast))):
            row = {"model": f"{reuse}-LruNet-1x", "reuse": reuse, "formulation": formulation,
                   **measure(model, args.repeats)}
            results.append(row)
            print(f"{row['model']:>14} {formulation:>8}: inference "
                  f"{row['inference_images_per_s']:7.1f} img/s, training "
                  f"{row['train_images_per_s']:6.1f} img/s", flush=True)
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "keras": keras.__version__, "backend": keras.backend.backend()},
        "goals_14_lrunet_1x": {"inference_images_per_s": 400, "train_images_per_s": 150},
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "keras_throughput.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = ["| model | formulation | inference img/s (batch 256) | training img/s (batch 128) |",
             "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['formulation']} | {r['inference_images_per_s']:.1f} | "
              f"{r['train_images_per_s']:.1f} |" for r in results]
    (args.out / "keras_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
