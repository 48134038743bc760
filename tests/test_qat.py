"""Tests of quantization-aware training (lru_keras.tflite.quantize_aware, `lru-keras qat`).

The QAT machinery (tf_keras + tensorflow-model-optimization) runs in a child process; these
tests check that weights cross over exactly, that this process is left alone, that the file
is full integer with each shared kernel stored once, and (slow, issue 8's acceptance) that
the fine-tuned 14-LruNet-1x int8 file beats the post-training int8 file on the full CIFAR-10
test set.
"""

import json
import os
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from lru_keras import data, tflite
from lru_keras.cli import main
from lru_keras.tflite import qat
from lru_keras.tflite.graph import UnsupportedModelError
from lru_keras.zoo import ConvMixer, LruNet



@pytest.fixture(scope="module")
def lrunet1():
    """The published 1-LruNet-1x (CIFAR-10): the cheapest LruNet to run QAT on."""
    return LruNet(reuse=1, weights="cifar10")


def _images(cifar10_images, count=16):
    return cifar10_images[0][:count].astype(np.float32)


@pytest.mark.parametrize("reuse, width, weights", [(14, 1.0, "cifar10"), (14, 2.0, "cifar100"),
                                                   (10, 1.0, "fashion_mnist")])
def test_constants_go_to_the_child_and_back_without_changing_the_model(
        reuse, width, weights, test_set):
    """export_constants -> with_constants is the identity up to the silenced dead channels
    (graph.silence_dead_channels: outputs move by < 1e-3, no prediction changes)."""
    model = LruNet(reuse=reuse, width=width, weights=weights)
    x, _ = test_set(weights)
    images = x[::100][:100].astype(np.float32)
    if images.ndim == 3:
        images = images[..., None]
    back = qat.with_constants(model, qat.export_constants(model))
    expected, got = model.predict(images, verbose=0), back.predict(images, verbose=0)
    assert np.abs(expected - got).max() < 1e-3
    np.testing.assert_array_equal(expected.argmax(1), got.argmax(1))


def test_qat_child_copies_the_model_exactly_and_leaves_this_process_alone(
        lrunet1, cifar10_images, tmp_path):
    images = _images(cifar10_images)
    before = lrunet1.predict(images, verbose=0)
    legacy_before = os.environ.get("TF_USE_LEGACY_KERAS")
    path = tmp_path / "lrunet1.qat.int8.tflite"
    x, y = cifar10_images
    spec, finetuned = tflite.quantize_aware(lrunet1, (x, y), path, epochs=0)
    # The tf_keras copy computed the Keras 3 model's outputs before any training.
    assert spec["qat"]["transfer_error"] < qat.TRANSFER_TOLERANCE
    # This process never imported the QAT machinery, and Keras 3 is untouched.
    assert "tensorflow_model_optimization" not in sys.modules
    assert "tf_keras" not in sys.modules
    assert os.environ.get("TF_USE_LEGACY_KERAS") == legacy_before
    assert keras.version().startswith("3.")
    np.testing.assert_array_equal(lrunet1.predict(images, verbose=0), before)
    # No training: the model that comes back computes the same function.
    assert np.abs(finetuned.predict(images, verbose=0) - before).max() < 1e-3
    # The file is what `export` writes for int8, with the QAT record in its spec.
    info = tflite.inspect(path)
    assert info["non_builtin_ops"] == []
    assert not {"QUANTIZE", "DEQUANTIZE"} & set(info["ops"])
    assert spec["input"]["dtype"] == "int8" and spec["output"]["dtype"] == "int8"
    assert info["spec"]["qat"]["epochs"] == 0
    assert info["spec"]["qat"]["train"] == f"{len(y)} given images"
    assert json.loads(Path(str(path)[:-len(".tflite")] + ".json").read_text())["qat"]


def test_qat_fine_tunes_on_a_dataset_and_keeps_kernels_shared(tmp_path):
    """A short real fine-tune of 2-LruNet-1x (random init, so the gradient steps matter):
    the trained weights come back changed, the file keeps each shared kernel once."""
    if data.prepared_counts("cifar10") is None:
        pytest.skip("CIFAR-10 is not prepared in TFDS (run `make data`)")
    model = LruNet(reuse=2, width=0.5, classes=10)
    path = tmp_path / "lrunet2.qat.int8.tflite"
    spec, finetuned = tflite.quantize_aware(model, "cifar10", path, epochs=1,
                                            train_images=128, batch_size=32,
                                            learning_rate=1e-3)
    history = spec["qat"]["history"]
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"][0])
    assert spec["qat"]["train"] == "128 images of cifar10/train"
    kernel = finetuned.get_layer("stage1").pointwise.kernel
    original = model.get_layer("stage1").pointwise.kernel
    assert not np.allclose(np.asarray(kernel), np.asarray(original))
    report = tflite.inspect(path)["sharing"]
    assert report["all_shared"]
    # Each block's depthwise and grouped 1x1 kernel: one tensor read by both reuses.
    assert sum(1 for reads in report["reads_by_shape"].values() if reads[0] == 2) == 8


@pytest.mark.parametrize("call, error, words", [
    (lambda m, p: tflite.quantize_aware(m, "cifar10", p, epochs=-1), ValueError, "epochs"),
    (lambda m, p: tflite.quantize_aware(m, "cifar10", p, learning_rate=0), ValueError,
     "learning_rate"),
    (lambda m, p: tflite.quantize_aware(m, "cifar100", p), ValueError, "100 classes"),
    (lambda m, p: tflite.quantize_aware(m, (np.zeros((4, 28, 28, 1)), np.zeros(4)), p),
     ValueError, "(n, 32, 32, 3)"),
    (lambda m, p: tflite.quantize_aware(m, (np.zeros((4, 32, 32, 3)), np.full(4, 10)), p),
     ValueError, "0..9"),
    (lambda m, p: tflite.quantize_aware(m, "imagenet", p), ValueError, "imagenet"),
    (lambda m, p: tflite.quantize_aware(m, "cifar10", p.parent), ValueError, "directory"),
])
def test_bad_arguments_are_refused_before_anything_runs(lrunet1, tmp_path, call, error, words):
    path = tmp_path / "out.tflite"
    with pytest.raises(error) as raised:
        call(lrunet1, path)
    assert words in str(raised.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("build, words", [
    (lambda: ConvMixer(64, 2, classes=10), "LruNet"),
    (lambda: LruNet(reuse=2, width=0.5, include_top=False), "LruNet"),
])
def test_models_other_than_a_zoo_lrunet_classifier_are_refused(build, words, tmp_path):
    with pytest.raises(UnsupportedModelError, match=words):
        tflite.quantize_aware(build(), "cifar10", tmp_path / "out.tflite")
    assert list(tmp_path.iterdir()) == []


def test_a_child_that_does_not_finish_is_reported_and_leaves_no_file(lrunet1, tmp_path):
    path = tmp_path / "out.tflite"
    with pytest.raises(tflite.QATError, match="did not finish within 1 s"):
        tflite.quantize_aware(lrunet1, "cifar10", path, timeout=1)
    assert list(tmp_path.iterdir()) == []


def test_cli_qat_writes_the_file_and_prints_its_spec(tmp_path, capsys):
    out = tmp_path / "lrunet1.qat.tflite"
    weights = tmp_path / "finetuned.weights.h5"
    assert main(["qat", "--weights", "lrunet1_1x.cifar10", "-o", str(out), "--epochs", "0",
                 "--train-images", "100", "--save-weights", str(weights), "--json"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec["file"] == out.name and spec["size_bytes"] == out.stat().st_size
    assert spec["qat"]["train"] == "100 images of cifar10/train"
    restored = LruNet(reuse=1, classes=10)
    restored.load_weights(weights)
    images = data.load_sample()[0][:8].astype(np.float32)
    original = LruNet(reuse=1, weights="cifar10")
    assert np.abs(restored.predict(images, verbose=0) -
                  original.predict(images, verbose=0)).max() < 1e-3


@pytest.mark.parametrize("argv, words", [
    (["--weights", "lrunet1_1x.cifar10", "-o", "x.tflite", "--epochs", "-1"], "--epochs"),
    (["--weights", "lrunet1_1x.cifar10", "-o", "x.tflite", "--learning-rate", "0"],
     "--learning-rate"),
    (["--weights", "lrunet1_1x.cifar10", "-o", "x.tflite", "--dataset", "cifar100"],
     "drop --dataset"),
    (["-o", "x.tflite"], "give a model"),
    (["--weights", "lrunet1_1x.cifar10", "-o", "x.tflite", "--save-weights", "w.h5"],
     ".weights.h5"),
])
def test_cli_qat_bad_arguments_exit_2_naming_the_argument(argv, words, capsys, tmp_path,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["qat", *argv]) == 2
    assert words in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


SHIPPED_MANIFEST = Path(__file__).resolve().parents[1] / "tflite" / "manifest.json"


def _post_training_int8_accuracy(weights):
    """The recorded full-test accuracy of the shipped post-training int8 file of `weights`
    (tests/test_tflite.py re-measures it within 0.02)."""
    rows = json.loads(SHIPPED_MANIFEST.read_text())["models"]
    return next(row["accuracy"] for row in rows
                if row["weights"] == weights and row["quantization"] == "int8")


@pytest.mark.slow
def test_qat_lrunet14_int8_file_beats_post_training_int8(tmp_path):
    """Issue 8's acceptance: the default short QAT fine-tune of the published 14-LruNet-1x
    (5,000 CIFAR-10 training images, 2 epochs) gives a full-integer file, kernels shared,
    whose full test accuracy is >= 89.1% and above the post-training int8 file's (89.01),
    and close to that of the fine-tuned float model it came from.

    Measured with these defaults (reruns give the same numbers): int8 89.10, its float model
    89.09 (float before: 89.34).
    """
    if data.prepared_counts("cifar10") is None:
        pytest.skip("CIFAR-10 is not prepared in TFDS (run `make data`)")
    from lru_keras import evaluate

    path = tmp_path / "lrunet14.qat.int8.tflite"
    spec, finetuned = tflite.quantize_aware(LruNet(reuse=14, weights="cifar10"), "cifar10",
                                            path)
    info = tflite.inspect(path)
    assert info["sharing"]["all_shared"] and info["non_builtin_ops"] == []
    assert not {"QUANTIZE", "DEQUANTIZE"} & set(info["ops"])
    assert spec["size_bytes"] <= 500_000
    result = tflite.evaluate(path, "cifar10", "test", progress=False)
    assert result["images"] == 10_000
    float_accuracy = evaluate.evaluate_dataset(finetuned, "cifar10", "test",
                                               progress=False)["accuracy"]
    post_training = _post_training_int8_accuracy("lrunet14_1x.cifar10")
    print(f"QAT int8 {result['accuracy']:.2f}, its float model {float_accuracy:.2f}, "
          f"post-training int8 {post_training:.2f}")
    assert result["accuracy"] >= 89.1 - 1e-9, result
    assert result["accuracy"] > post_training, (result, post_training)
    assert abs(result["accuracy"] - float_accuracy) <= 0.3, (result, float_accuracy)
