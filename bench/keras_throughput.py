"""Keras inference and training throughput of N-LruNet-1x on this machine (issue: LruNet).

Measures, for N = 1 and 14:
- inference images/s at batch 256 (`model.predict_on_batch`, compiled, training=False);
- training images/s of `model.fit` at batch 128 (SGD momentum, in-memory batches, so the
  figure is the model's, not the input pipeline's);
for the two formulations of `LRUBlock` (it picks one by where it runs, see `LRUBlock.call`),
so machine noise affects both alike:
- "physical": `LRUBlock.physical_call` (grouped 1x1 conv through TensorFlow's conv where it
  trains, per-copy multiplier-1 depthwise, transpose shuffle on a tracked channel layout,
  fused BatchNorm, folded BN in inference);
- "literal": the same weights through `Reused.call`, the paper's block written op by op;
and for both oneDNN settings (TF_ENABLE_ONEDNN_OPTS=0 and 1; TensorFlow turns oneDNN on by
itself only on CPUs with AVX-512), each in a child process of this run, since the setting is
read once when TensorFlow starts. For 14-LruNet-1x "physical" it also profiles one inference batch
and one training step (TensorFlow profiler) and reports each op type's share of the op time,
and, per oneDNN setting, the most images/s that TensorFlow's convolution kernels alone allow
for 14-LruNet-1x (`conv_floor.py`), measured in the same run as the models.

Writes bench/results/keras_throughput.json and .md. Usage:
    python bench/keras_throughput.py [--reuse 1 14] [--repeats 3] [--onednn 0 1] [--out DIR]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np

import onednn
from conv_floor import conv_floor
from timing import call_seconds
from lru_keras.environment import cpu_model
from lru_keras.layers.reuse import LRUBlock, Reused
from lru_keras.zoo import LruNet


class PhysicalLRUBlock(LRUBlock):
    """LRUBlock always on its physical channel layout (`LRUBlock.physical_call`)."""

    call = LRUBlock.physical_call


class LiteralLRUBlock(LRUBlock):
    """LRUBlock computed literally (`Reused.call`): the baseline formulation."""

    call = Reused.call


def copy_with(model, block_class):
    """The same model and weights with every LRUBlock computed as `block_class`."""
    def clone(layer):
        if isinstance(layer, LRUBlock):
            return block_class.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def images_per_second(run, images, repeats):
    """Median images/s over `repeats` timed calls of `run` (after one warm-up call)."""
    rates = [images / seconds for seconds in call_seconds(run, repeats)]
    return statistics.median(rates), rates


def measure(model, repeats, infer_batch=256, train_batch=128, train_steps=4):
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


def op_time_shares(run):
    """Share of the op time per TensorFlow op type in one call of `run` (profiler trace).

    Sums the ops' durations on TensorFlow's compute threads; ops overlap on the two cores, so
    the shares say where the work goes, not a wall-clock split.
    """
    import tempfile

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as trace_dir:
        tf.profiler.experimental.start(trace_dir)
        run()
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(next(Path(trace_dir).rglob("*.xplane.pb")).read_bytes())
    durations = {}
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                op_type = names.get(event.metadata_id, "?").rpartition(":")[2]
                if op_type not in ("Process", "ExecutorDoneCallback"):  # wrappers, not ops
                    durations[op_type] = durations.get(op_type, 0.0) + event.duration_ps
    total = sum(durations.values()) or 1.0
    shares = sorted(((op, 100 * d / total) for op, d in durations.items()), key=lambda r: -r[1])
    return {op: round(share, 1) for op, share in shares if share >= 1.0}


def profile(model, infer_batch=256, train_batch=128):
    """Op-type shares of one inference batch and one training step of a compiled `model`."""
    rng = np.random.default_rng(1)
    x_infer = rng.integers(0, 256, (infer_batch, 32, 32, 3)).astype("float32")
    x_train = rng.integers(0, 256, (train_batch, 32, 32, 3)).astype("float32")
    y_train = rng.integers(0, 10, train_batch)
    return {
        "inference": op_time_shares(lambda: model.predict_on_batch(x_infer)),
        "training_step": op_time_shares(lambda: model.train_on_batch(x_train, y_train)),
    }


def measure_this_process(reuses, repeats):
    """Every row for this process's oneDNN setting, and the conv-kernel bound for the
    largest N (the child side of `main`)."""
    rows = []
    for reuse in reuses:
        shipped = LruNet(reuse=reuse, width=1.0, weights=None)
        for formulation, block_class in (("physical", PhysicalLRUBlock),
                                         ("literal", LiteralLRUBlock)):
            model = copy_with(shipped, block_class)
            row = {"model": f"{reuse}-LruNet-1x", "reuse": reuse, "formulation": formulation,
                   "onednn": onednn.this_setting(), **measure(model, repeats)}
            if reuse == 14 and formulation == "physical":
                row["op_time_shares_percent"] = profile(model)
            rows.append(row)
            print(f"{row['model']:>14} {formulation:>8} oneDNN {row['onednn']}: inference "
                  f"{row['inference_images_per_s']:7.1f} img/s, training "
                  f"{row['train_images_per_s']:6.1f} img/s", file=sys.stderr, flush=True)
    bound = {"onednn": onednn.this_setting(),
             **conv_floor(reuse=max(reuses), repeats=repeats)}
    return {"rows": rows, "conv_bound": bound}


def run_child(setting, reuses, repeats):
    """This script in a child process with TF_ENABLE_ONEDNN_OPTS=`setting`; its rows and
    conv-kernel bound."""
    command = [sys.executable, __file__, "--child", "--reuse", *map(str, reuses),
               "--repeats", str(repeats)]
    result = subprocess.run(command, env=onednn.child_environment(setting),
                            stdout=subprocess.PIPE, text=True,
                            check=True)
    return json.loads(result.stdout)


def write_report(results, bounds, out):
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "cpu": cpu_model(), "keras": keras.__version__,
                    "backend": keras.backend.backend()},
        "goals_14_lrunet_1x": {"inference_images_per_s": 400, "train_images_per_s": 150},
        "results": results,
        "conv_kernel_bounds": bounds,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "keras_throughput.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = ["| model | formulation | oneDNN | inference img/s (batch 256) | "
             "training img/s (batch 128) |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['formulation']} | {'on' if r['onednn'] == '1' else 'off'} | "
              f"{r['inference_images_per_s']:.1f} | {r['train_images_per_s']:.1f} |"
              for r in results]
    for r in results:
        for phase, shares in r.get("op_time_shares_percent", {}).items():
            listed = ", ".join(f"{op} {share}%" for op, share in shares.items())
            lines.append(f"\n{r['model']} {r['formulation']}, oneDNN "
                         f"{'on' if r['onednn'] == '1' else 'off'}, {phase}: {listed}")
    lines += ["", f"Most images/s TensorFlow's conv kernels alone allow "
              f"(the block's two convs per reuse, fastest way per stage, x{bounds[0]['reuse']} "
              "reuses; everything else left out):", "",
              "| oneDNN | inference bound (batch 256) | training bound (batch 128) | "
              "fastest way per stage, inference |", "|---|---|---|---|"]
    lines += [f"| {'on' if b['onednn'] == '1' else 'off'} | "
              f"{b['inference']['bound_images_per_s']:.1f} | "
              f"{b['training']['bound_images_per_s']:.1f} | "
              + "; ".join(f"{st['channels']} ch: {st['best']} {st['ms_per_reuse'][st['best']]} ms"
                          for st in b["inference"]["stages"]) + " |"
              for b in bounds]
    (out / "keras_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse", type=int, nargs="+", default=[1, 14])
    parser.add_argument("--repeats", type=int, default=3)
    onednn.add_arguments(parser)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_this_process(args.reuse, args.repeats)))
        return
    children = [run_child(setting, args.reuse, args.repeats) for setting in args.onednn]
    write_report([row for child in children for row in child["rows"]],
                 [child["conv_bound"] for child in children], args.out)


if __name__ == "__main__":
    main()
