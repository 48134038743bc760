"""The layers and models under Keras's mixed-precision policies, and the round trip a user makes:
train under mixed precision (the GPU path is mixed_float16, the AVX-512 CPU path
mixed_bfloat16), save, then load, predict and export to TFLite in a plain float32 process.

Bounds are relative errors against the same layer or model in float32, with the same weights.
The unit roundoff is 2**-11 = 4.9e-4 in float16 and 2**-8 = 3.9e-3 in bfloat16; the bounds
below are about 3x the largest error measured over every case, both block formulations and
both oneDNN settings (`TF_ENABLE_ONEDNN_OPTS=0` and `=1`, AMD EPYC with AVX-512).
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras

from lru_keras.layers import GroupedPointwiseConv2D, LRUBlock, REAFConv2D, REAFPlusNormalization
from lru_keras.layers import Reused
from lru_keras.layers.channel_shuffle import ChannelShuffle

POLICIES = ("mixed_float16", "mixed_bfloat16")

LAYER_BOUND = {"mixed_float16": 7e-3, "mixed_bfloat16": 5e-2}  # measured max 2.3e-3, 1.6e-2


def _relative_error(actual, expected):
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


LAYERS = {
    "lru-1": (lambda dtype: LRUBlock(16, reuse=1, dtype=dtype), 16),
    "lru-3": (lambda dtype: LRUBlock(16, reuse=3, dtype=dtype), 16),
    "lru-4-gather-shuffle": (lambda dtype: LRUBlock(24, reuse=4, dtype=dtype), 24),
    "lru-2-groups4-no-shuffle": (
        lambda dtype: LRUBlock(32, reuse=2, groups=4, shuffle=False, dtype=dtype), 32),
    "reused-conv": (lambda dtype: Reused(
        keras.layers.Conv2D(8, 3, padding="same", dtype=dtype), times=3, residual=True,
        activation="relu", shuffle=ChannelShuffle(2, dtype=dtype), dtype=dtype), 8),
    "reaf-4-3-4": (lambda dtype: REAFConv2D(8, 3, groups=(4, 3, 4), padding="same",
                                            dtype=dtype), 8),
    "reaf-8-1-8": (lambda dtype: REAFConv2D(16, 3, strides=2, groups=(8, 1, 8), dtype=dtype),
                   16),
    "reaf-plus-4": (lambda dtype: REAFPlusNormalization(4, dtype=dtype), 6),
    "pointwise-g4": (lambda dtype: GroupedPointwiseConv2D(8, groups=4, dtype=dtype), 16),
}


# LRUBlock has two formulations (physical layout / literal block); the other layers one.
LAYER_CASES = [(case, formulation) for case in sorted(LAYERS)
               for formulation in (("physical", "literal") if case.startswith("lru") else
                                   ("physical",))]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("case, formulation", LAYER_CASES)
def test_layer_under_policy_agrees_with_float32(case, formulation, training, policy,
                                                cifar10_images, monkeypatch, randomize):
    """Same weights, same input: outputs in the policy's compute dtype, within half-precision
    error of float32, in inference and training mode; for LRUBlock in both formulations
    (`physical_call` and the literal `Reused.call`)."""
    import lru_keras.layers.reuse as reuse

    make, channels = LAYERS[case]
    monkeypatch.setattr(reuse, "use_tensorflow_grouped_conv",
                        lambda dtype: formulation == "physical")
    images = cifar10_images[0][:4, :9, :9, :].astype("float32") / 255.0
    x = np.concatenate([images * (1 + 0.1 * k) for k in range(-(-channels // 3))], -1)
    x = x[..., :channels]
    reference = make("float32")
    reference.build(x.shape)
    weights = randomize(reference, seed=len(case)).get_weights()
    half = make(policy)
    half.build(x.shape)
    half.set_weights(weights)
    expected = reference(x, training=training)
    out = half(x, training=training)
    assert keras.backend.standardize_dtype(out.dtype) == half.compute_dtype
    error = _relative_error(out, expected)
    print(f"{case} {policy} {formulation} training={training}: {error:.2e}")
    assert error < LAYER_BOUND[policy]


# Pretrained LruNets on the 500 sample images, each policy against float32 (measured with both
# oneDNN settings: relative error of the softmax outputs 2.1e-3 / 1.7e-3 in mixed_float16 and
# 1.5e-2 / 1.7e-2 in mixed_bfloat16 for 1- / 14-LruNet-1x; top-1 agreement >= 99.2%; accuracy
# within 0.4 points). Bounds: 3x the error; at least 10 images to change a verdict.
MODEL_BOUND = {"mixed_float16": 6e-3, "mixed_bfloat16": 5e-2}
MIN_AGREEMENT = 0.98
MAX_ACCURACY_CHANGE = 0.02


@pytest.fixture
def global_policy():
    """Sets Keras's global dtype policy for one test, and restores float32 after it."""
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("policy", POLICIES)
def test_pretrained_lrunet_predicts_and_evaluates_under_policy(policy, global_policy):
    """1-LruNet-1x (CIFAR-10). 14-LruNet-1x measured as well (numbers above; 50-80 s per
    policy on 2 cores, so not a test): the reuse chain is covered by the layer cases."""
    from lru_keras.data.sample import load_sample
    from lru_keras.zoo import LruNet

    x, y = load_sample()
    expected = LruNet(reuse=1, weights="cifar10").predict(x, batch_size=100, verbose=0)
    global_policy(policy)
    model = LruNet(reuse=1, weights="cifar10")
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    out = model.predict(x, batch_size=100, verbose=0)
    accuracy = model.evaluate(x, y, batch_size=100, verbose=0, return_dict=True)["accuracy"]
    assert _relative_error(out, expected) < MODEL_BOUND[policy]
    assert np.mean(out.argmax(1) == expected.argmax(1)) >= MIN_AGREEMENT
    assert abs(accuracy - np.mean(expected.argmax(1) == y)) <= MAX_ACCURACY_CHANGE


def _policies(layer):
    """(name, dtype policy name) of every computing sublayer of a model, nested ones
    included (not the input layer: it computes nothing)."""
    return [(sub.name, sub.dtype_policy.name)
            for sub in layer._flatten_layers(include_self=False)  # noqa: SLF001
            if not isinstance(sub, keras.layers.InputLayer)]


@pytest.mark.parametrize("policy", POLICIES)
def test_model_rebuilt_from_config_keeps_its_policy_in_every_sublayer(policy, global_policy):
    """A model built under `policy` and rebuilt from its config under float32 computes in
    `policy` everywhere: the LRU blocks' convolutions, shuffles and per-reuse BatchNorms
    included (only the float32 softmax layer differs, as built)."""
    from lru_keras.zoo import LruNet

    global_policy(policy)
    model = LruNet(reuse=2, width=0.5)
    global_policy("float32")
    rebuilt = keras.Model.from_config(model.get_config())
    for built in (model, rebuilt):
        policies = _policies(built)
        assert len(policies) > 30  # the blocks' sublayers are counted
        assert [(name, p) for name, p in policies if p != policy] == [
            ("predictions", "float32")]


_LOAD_IN_FLOAT32 = textwrap.dedent("""
    import json, sys
    import keras, numpy as np
    from lru_keras.data.sample import load_sample
    from lru_keras.tflite import TFLiteClassifier, export
    from lru_keras.zoo import LruNet

    run = sys.argv[1]
    x = load_sample()[0][::5]
    assert keras.mixed_precision.global_policy().name == "float32"
    loaded = keras.models.load_model(f"{run}/model.keras")
    rebuilt = LruNet(reuse=1, weights=f"{run}/model.weights.h5")
    result = {"keras_policies": sorted({layer.dtype_policy.name for layer in loaded.layers
                                        if layer.name not in ("image", "predictions")})}
    for name, model in (("keras", loaded), ("weights", rebuilt)):
        np.save(f"{run}/{name}.npy", model.predict(x, verbose=0))
        export(model, f"{run}/{name}.tflite")
        np.save(f"{run}/{name}.tflite.npy", TFLiteClassifier(f"{run}/{name}.tflite").predict(x))
    print(json.dumps(result))
""")


@pytest.mark.slow
@pytest.mark.parametrize("policy", POLICIES)
def test_model_fitted_under_policy_loads_predicts_and_exports_in_float32(
    policy, global_policy, tmp_path
):
    """Fine-tune 1-LruNet-1x (CIFAR-10) one epoch under `policy`, save `.keras` and
    `.weights.h5`; a fresh float32 process loads both, predicts, and exports each to a float32
    .tflite run by LiteRT. The `.keras` model computes in the policy it was saved with (so
    like the saved model); the float32 model built from `.weights.h5` and both .tflite files
    (exported as float32 graphs) are within half-precision error of it."""
    from lru_keras.data.sample import load_sample
    from lru_keras.zoo import LruNet

    x, y = load_sample()
    held_out = np.arange(len(x)) % 5 == 0
    global_policy(policy)
    model = LruNet(reuse=1, weights="cifar10")
    model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    model.fit(x[~held_out], y[~held_out], batch_size=50, epochs=1, verbose=0)
    assert any(np.abs(keras.ops.convert_to_numpy(w) - b).max() > 0 for w, b in
               zip(model.trainable_weights, before)), "the fit changed no weight"
    saved = model.predict(x[held_out], verbose=0)
    model.save(tmp_path / "model.keras")
    model.save_weights(tmp_path / "model.weights.h5")

    child = subprocess.run([sys.executable, "-c", _LOAD_IN_FLOAT32, str(tmp_path)],
                           capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["keras_policies"] == [policy]
    assert np.mean(saved.argmax(1) == y[held_out]) > 0.7  # a real classifier, not a toy
    np.testing.assert_allclose(np.load(tmp_path / "keras.npy"), saved, atol=1e-6)
    for name in ("weights", "keras.tflite", "weights.tflite"):
        out = np.load(tmp_path / f"{name}.npy")
        assert _relative_error(out, saved) < MODEL_BOUND[policy], name
        assert np.mean(out.argmax(1) == saved.argmax(1)) >= MIN_AGREEMENT, name
