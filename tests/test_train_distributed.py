"""Training beyond one device, on CPU: MirroredStrategy over 2 logical CPU devices, and
MultiWorkerMirroredStrategy with 2 worker processes on 127.0.0.1.

Each test runs in processes of its own: logical devices and multi-worker strategies must be
set up before TensorFlow starts, which in the pytest process it already has.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest


REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 240


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def fashion_dir(fashion_mnist_dir):
    """TFDS dir with 700 real Fashion-MNIST training images and 200 test images."""
    return fashion_mnist_dir(700, 200)


MIRRORED_SCRIPT = r"""
import json, sys
import numpy as np
from lru_keras.train import distribute
strategy = distribute.make_strategy("mirrored", cpu_devices=2)  # before TensorFlow starts
import keras
import tensorflow as tf
from lru_keras.data import load_sample
from lru_keras.train import TrainConfig, compile_model
from lru_keras.train import config as train_config
from lru_keras.zoo import LruNet

x, y = load_sample()
x = x[::5][:64].astype("float32")  # 64 real CIFAR-10 images, all classes
y = y[::5][:64]
config = train_config.resolve(TrainConfig(recipe="short", learning_rate=0.05,
                                          schedule="constant"))
keras.utils.set_random_seed(0)
single = LruNet(reuse=2, width=0.5, dropout=0.0)  # no dropout: no per-replica randomness
initial = single.get_weights()
compile_model(single, config, steps_per_epoch=4, jit_compile=False)
with strategy.scope():
    mirrored = LruNet(reuse=2, width=0.5, dropout=0.0)
    mirrored.set_weights(initial)
    compile_model(mirrored, config, steps_per_epoch=4, jit_compile=False)

# 4 steps of 16 images on one device; on 2 replicas, each global batch of 32 holds the same
# 16 images twice, so that each replica normalises exactly the single-device batch.
one = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
two = one.map(lambda a, b: (tf.concat([a, a], 0), tf.concat([b, b], 0)))
h1 = single.fit(one, epochs=1, verbose=0, shuffle=False).history
h2 = mirrored.fit(two, epochs=1, verbose=0, shuffle=False).history
w1, w2 = single.get_weights(), mirrored.get_weights()
start = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(initial, w1)))
result = {
    "replicas": strategy.num_replicas_in_sync,
    "steps": [int(single.optimizer.iterations.numpy()), int(mirrored.optimizer.iterations.numpy())],
    "loss": [h1["loss"][0], h2["loss"][0]],
    "moved": float(start),
    "max_abs_difference": float(max(np.abs(a - b).max() for a, b in zip(w1, w2))),
    "relative_difference": float(np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(w1, w2)))
                                 / start),
}

# With different images on the two replicas, each replica's BatchNorm moving statistics
# drift apart; the statistics synchronizer averages them back to one value.
from lru_keras.train import callbacks, distribute
def spread():
    components = [strategy.experimental_local_results(v.value) for v in
                  mirrored.non_trainable_variables]
    return float(max(np.abs(a.numpy() - b.numpy()).max() for a, b in components))
mixed = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
mirrored.fit(mixed, epochs=1, verbose=0)
result["spread_before"] = spread()
synchronize = distribute.statistics_synchronizer(mirrored, strategy)
mirrored.fit(mixed, epochs=1, verbose=0,
             callbacks=[callbacks.SynchronizeStatistics(synchronize)])
result["spread_after"] = spread()
print("RESULT " + json.dumps(result))
"""


def _result(completed):
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = [ln for ln in completed.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.mark.slow
def test_mirrored_over_two_cpu_devices_matches_single_device_training(tmp_path):
    completed = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True,
                               text=True, timeout=TIMEOUT, env=_env(), cwd=tmp_path)
    result = _result(completed)
    assert result["replicas"] == 2
    assert result["steps"] == [4, 4]
    assert result["loss"][1] == pytest.approx(result["loss"][0], rel=1e-4)
    assert result["moved"] > 0.1  # the four steps changed the weights...
    assert result["relative_difference"] < 1e-4, result  # ...identically on both paths
    assert result["spread_before"] > 1e-3 and result["spread_after"] == 0.0, result


@pytest.mark.slow
def test_train_command_runs_with_mirrored_strategy_on_two_cpu_devices(fashion_dir, tmp_path):
    run = tmp_path / "run"
    completed = subprocess.run(
        [sys.executable, "-m", "lru_keras.cli", "train", "--model", "lrunet", "--reuse",
         "1", "--width", "0.5", "--dataset", "fashion_mnist", "--recipe", "short", "--epochs",
         "1", "--batch-size", "64", "--validation", "100", "--test-images", "200",
         "--strategy", "mirrored", "--cpu-devices", "2", "--data-dir", str(fashion_dir),
         "--run-dir", str(run), "--quiet"],
        capture_output=True, text=True, timeout=TIMEOUT, env=_env(), cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["environment"]["replicas"] == 2
    assert summary["optimizer_steps"] == 600 // 64  # whole global batches only
    assert 0 <= summary["test_accuracy"] <= 1 and summary["epochs_run"] == 1


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _read_h5(path):
    values = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: values.__setitem__(name, item[()])
                     if isinstance(item, h5py.Dataset) else None)
    return values


@pytest.mark.slow
def test_multiworker_two_processes_train_and_agree_on_the_weights(fashion_dir, tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    run = tmp_path / "run"
    command = [sys.executable, "-m", "lru_keras.cli", "train", "--model", "lrunet",
               "--reuse", "1", "--width", "0.5", "--dataset", "fashion_mnist",
               "--recipe", "short", "--epochs", "2", "--batch-size", "64",
               "--validation", "100", "--test-images", "200", "--strategy", "multiworker",
               "--data-dir", str(fashion_dir), "--run-dir", str(run), "--quiet"]
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
            env=_env(TF_CONFIG=tf_config)))
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=TIMEOUT))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    assert "test accuracy" in outputs[0][0]  # the chief reports

    chief = json.loads((run / "summary.json").read_text())
    other = json.loads((run / "workers" / "worker-1" / "summary.json").read_text())
    assert chief["environment"]["workers"] == 2 and chief["environment"]["replicas"] == 2
    assert chief["epochs_run"] == other["epochs_run"] == 2
    assert chief["optimizer_steps"] == other["optimizer_steps"] == 2 * (600 // 64)
    assert chief["test_accuracy"] == other["test_accuracy"]
    for name in ("last.weights.h5", "best.weights.h5"):
        a = _read_h5(run / name)
        b = _read_h5(run / "workers" / "worker-1" / name)
        assert a.keys() == b.keys() and len(a) > 50
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
