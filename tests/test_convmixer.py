"""ConvMixer with inter-layer kernel sharing (issue 6; ../shared/papers/kernel-sharing.md).

Parameter counts are checked against every figure the paper gives: Table 1 exactly, the
"~216K"-style figures of Sec. 3.2 within 5%, and the "N times fewer" ratios it states, which
pin the counts down much more tightly than the rounded figures. Gradients, round trips and the
TFLite check run on real CIFAR-10 test images.
"""

import functools
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from lru_keras import analysis, zoo
from lru_keras.zoo import ConvMixer, get_builder
from lru_keras.zoo.convmixer import sharing_runs
from test_sharing import assert_keras_round_trip, loss_gradients

# Table 1 (CIFAR-10, kernel 9, patch 1): (width, depth, sharing) -> (params, GFLOPs).
TABLE_1 = {
    (128, 4, "none"): (112_138, 0.22),
    (283, 4, "full"): (112_644, 0.86),
    (128, 8, "none"): (222_218, 0.46),
    (410, 8, "full"): (221_820, 3.36),
}
# Sec. 3.2, the optimum ConvMixer-384/N of Fig. 3: (depth, sharing, classes) -> params.
SECTION_3_2 = {
    (20, 2, 10): 216_000, (20, 4, 10): 395_000, (16, 8, 10): 748_000,
    (16, "none", 10): 2_900_000,
    (20, 2, 100): 250_000, (16, 4, 100): 424_000, (12, 8, 100): 776_000,
    (16, "none", 100): 2_900_000,
}
# "... with N times fewer parameters" than the optimum baseline (depth 16): the ratios as the
# paper rounds them.
RATIOS = {
    (20, 2, 10): 13.4, (20, 4, 10): 7.3, (16, 8, 10): 3.9,
    (20, 2, 100): 11.7, (16, 4, 100): 6.9, (12, 8, 100): 3.8,
}


@functools.cache
def counts(width, depth, sharing, classes=10):
    model = ConvMixer(width, depth, sharing=sharing, classes=classes)
    return analysis.count_parameters(model)["trainable"], analysis.count_macs(model)


@pytest.fixture(scope="module")
def images(cifar10_images):
    """16 real CIFAR-10 test images (float32 pixels in [0, 255]) and their labels."""
    x, y = cifar10_images
    return x[:16].astype(np.float32), y[:16]


@pytest.mark.parametrize("key", sorted(TABLE_1), ids=str)
def test_trainable_params_equal_table_1_exactly(key):
    assert counts(*key)[0] == TABLE_1[key][0]


@pytest.mark.parametrize("key", sorted(TABLE_1), ids=str)
def test_gflops_within_5_percent_of_table_1(key):
    # The paper's GFLOPs are 2 x multiply-accumulates of convs and dense layers (0.3-4.5% more:
    # it evidently counts some element-wise work too).
    gflops = 2 * counts(*key)[1] / 1e9
    assert gflops == pytest.approx(TABLE_1[key][1], rel=0.05)


@pytest.mark.parametrize("key", sorted(SECTION_3_2, key=str), ids=str)
def test_convmixer_384_params_within_5_percent_of_section_3_2(key):
    depth, sharing, classes = key
    assert counts(384, depth, sharing, classes)[0] == pytest.approx(SECTION_3_2[key], rel=0.05)


@pytest.mark.parametrize("key", sorted(RATIOS, key=str), ids=str)
def test_reduction_ratios_equal_the_papers(key):
    depth, sharing, classes = key
    baseline = counts(384, 16, "none", classes)[0]
    assert round(baseline / counts(384, depth, sharing, classes)[0], 1) == RATIOS[key]


def test_two_kernel_384_20_and_baseline_384_16_gflops_are_the_papers():
    # Sec. 3.2: "7.4 GFLOPs vs. 6 GFLOPs".
    assert 2 * counts(384, 20, 2)[1] / 1e9 == pytest.approx(7.4, rel=0.05)
    assert 2 * counts(384, 16, "none")[1] / 1e9 == pytest.approx(6.0, rel=0.05)


def test_full_sharing_calls_one_depthwise_and_one_pointwise_layer_with_a_batchnorm_each():
    model = ConvMixer(16, 5, kernel_size=3, sharing="full")
    depthwise = [layer for layer in model.layers
                 if isinstance(layer, keras.layers.DepthwiseConv2D)]
    pointwise = [layer for layer in model.layers
                 if type(layer) is keras.layers.Conv2D and layer.name != "stem_conv"]
    assert [layer.name for layer in depthwise] == ["shared1_depthwise"]
    assert [layer.name for layer in pointwise] == ["shared1_pointwise"]
    assert len(depthwise[0]._inbound_nodes) == len(pointwise[0]._inbound_nodes) == 5
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 1 + 2 * 5  # stem + one per conv call: never shared
    # MACs do not change with sharing: the same convolutions run.
    assert analysis.count_macs(model) == analysis.count_macs(ConvMixer(16, 5, kernel_size=3))


@pytest.mark.parametrize("depth, sharing, runs", [
    (20, "full", [20]), (20, 2, [20]), (20, 4, [10, 10]), (16, 8, [4, 4, 4, 4]),
    (12, 8, [3, 3, 3, 3]), (10, 8, [3, 3, 2, 2]), (4, 8, [1, 1, 1, 1]), (3, "none", [1, 1, 1]),
    (20, np.int64(4), [10, 10]),
])
def test_k_kernels_split_depth_into_k_over_2_consecutive_runs(depth, sharing, runs):
    split = sharing_runs(depth, sharing)
    assert [len(run) for run in split] == runs
    assert sum(split, []) == list(range(depth))


def test_eight_kernels_at_depth_4_is_the_baseline():
    # Paper, Fig. 3: "the eight-kernel model with a depth of four is the same as the baseline".
    assert counts(384, 4, 8)[0] == counts(384, 4, "none")[0]


@pytest.mark.parametrize("sharing", [3, 0, 10, "half", True, 2.0])
def test_invalid_sharing_names_argument_and_allowed_values(sharing):
    with pytest.raises(ValueError, match="`sharing`"):
        ConvMixer(16, 4, sharing=sharing)


def test_shared_kernel_gradient_is_the_sum_of_its_per_use_gradients(images, randomize):
    x, y = images
    shared = randomize(ConvMixer(8, 3, kernel_size=3, sharing="full"), seed=1,
                       kernel_noise=0.05)
    unshared = ConvMixer(8, 3, kernel_size=3)
    for layer in unshared.layers:  # the unshared copy: every block gets the shared weights
        if layer.weights:
            source = re.sub(r"^block\d+_(depthwise|pointwise)$", r"shared1_\1", layer.name)
            layer.set_weights(shared.get_layer(source).get_weights())

    p_shared, g_shared = loss_gradients(shared, x, y)
    p_unshared, g_unshared = loss_gradients(unshared, x, y)
    np.testing.assert_allclose(p_shared, p_unshared, rtol=1e-5, atol=1e-7)
    for kind in ("depthwise", "pointwise"):
        for variable in ("kernel", "bias"):
            per_use = [g_unshared[f"block{i}_{kind}/{variable}"] for i in (1, 2, 3)]
            assert all(np.abs(g).max() > 0 for g in per_use)
            assert not np.allclose(per_use[0], per_use[1])  # each use contributes its own
            total = g_shared[f"shared1_{kind}/{variable}"]
            np.testing.assert_allclose(total, sum(per_use), rtol=1e-4,
                                       atol=1e-5 * np.abs(total).max())
    # BatchNorms are not shared: each has the same gradient as its unshared counterpart.
    name = "block2_pointwise_bn/gamma"
    np.testing.assert_allclose(g_shared[name], g_unshared[name], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("sharing", ["full", 4])
def test_keras_round_trip_gives_identical_outputs_and_keeps_sharing(sharing, images, tmp_path,
                                                                    randomize):
    model = randomize(ConvMixer(16, 4, kernel_size=5, sharing=sharing), seed=2,
                      kernel_noise=0.05)
    loaded = assert_keras_round_trip(model, images[0], tmp_path / "convmixer.keras")
    uses = 4 if sharing == "full" else 2  # 4 kernels: two runs of two blocks
    assert len(loaded.get_layer("shared1_depthwise")._inbound_nodes) == uses


def test_weights_file_round_trip_and_include_top_false(images, tmp_path, randomize):
    model = randomize(ConvMixer(16, 2, kernel_size=3, sharing="full"), seed=3,
                      kernel_noise=0.05)
    path = tmp_path / "convmixer.weights.h5"
    model.save_weights(path)
    again = ConvMixer(16, 2, kernel_size=3, sharing="full", weights=str(path))
    np.testing.assert_array_equal(again.predict(images[0], verbose=0),
                                  model.predict(images[0], verbose=0))
    features = ConvMixer(16, 2, kernel_size=3, sharing="full", weights=str(path),
                         include_top=False, pooling="avg")
    assert features.output_shape == (None, 16)
    # Registered weights of another architecture: refused, naming the ones that exist.
    with pytest.raises(ValueError, match=r"No ConvMixer weights 'cifar10' for width=16, depth=2"
                                         r".*exist for: ConvMixer\(width=128, depth=8"):
        ConvMixer(16, 2, weights="cifar10")


@pytest.mark.parametrize("sharing, name", [
    ("none", "convmixer128_8_k5_p4_trained.cifar10"),
    ("full", "convmixer128_8_k5_p4_shared2_trained.cifar10"),
])
def test_weights_cifar10_loads_the_trained_twin_of_the_architecture(sharing, name, images):
    model = ConvMixer(128, 8, kernel_size=5, patch_size=4, sharing=sharing, weights="cifar10")
    np.testing.assert_array_equal(model.predict(images[0], verbose=0),
                                  zoo.create(name).predict(images[0], verbose=0))


def test_include_top_false_and_patches():
    model = ConvMixer(16, 2, kernel_size=3, patch_size=2, include_top=False)
    assert model.output_shape == (None, 16, 16, 16)
    assert ConvMixer(16, 2, include_top=False, pooling="max").output_shape == (None, 16)
    assert ConvMixer(16, 2, classes=100, classifier_activation=None).output_shape == (None, 100)


def test_include_preprocessing_true_on_pixels_equals_false_on_unit_range(images, randomize):
    raw = randomize(ConvMixer(8, 2, kernel_size=3), seed=4, kernel_noise=0.05)
    unit = ConvMixer(8, 2, kernel_size=3, include_preprocessing=False)
    unit.set_weights(raw.get_weights())
    np.testing.assert_allclose(raw.predict(images[0], verbose=0),
                               unit.predict(images[0] / 255.0, verbose=0), rtol=1e-5, atol=1e-6)


def test_registered_as_a_builder():
    assert get_builder("ConvMixer") is ConvMixer


def test_stock_tflite_converter_stores_each_shared_kernel_once(images, randomize):
    """Issue 6 asks that a kernel-shared ConvMixer exports with each shared kernel stored once.

    This checks what the stock converter does (float32, builtin ops only): in ConvMixer a GELU
    sits between each conv and its BatchNorm, so the converter cannot fold the per-use
    BatchNorms into the shared kernel (they become MUL + ADD) and keeps one kernel and one
    bias tensor, read by every DEPTHWISE_CONV_2D / CONV_2D op.
    """
    interpreter_module = pytest.importorskip("ai_edge_litert.interpreter")
    depth, width, kernel = 4, 16, 5
    model = randomize(ConvMixer(width, depth, kernel_size=kernel, sharing="full"), seed=5,
                      kernel_noise=0.05)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = interpreter_module.Interpreter(
        model_content=converter.convert(),
        experimental_op_resolver_type=interpreter_module.OpResolverType
        .BUILTIN_WITHOUT_DEFAULT_DELEGATES,  # a delegate would hide the ops
    )
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()
    produced = {i for op in ops for i in op["outputs"]}
    inputs = {d["index"] for d in interpreter.get_input_details()}
    shapes = {d["index"]: tuple(int(n) for n in d["shape"])
              for d in interpreter.get_tensor_details()}
    constants = {i for i in shapes if i not in produced and i not in inputs}

    def kernels_of(op_name):
        return [op["inputs"][1] for op in ops if op["op_name"] == op_name]

    depthwise = kernels_of("DEPTHWISE_CONV_2D")
    pointwise = [i for i in kernels_of("CONV_2D") if shapes[i] == (width, 1, 1, width)]
    assert len(depthwise) == len(pointwise) == depth
    for uses, shape in ((depthwise, (1, kernel, kernel, width)),
                        (pointwise, (width, 1, 1, width))):
        stored = [i for i in constants if shapes[i] == shape]
        assert len(stored) == 1, f"{len(stored)} copies of the shared {shape} kernel"
        assert set(uses) == set(stored)
    np.testing.assert_allclose(
        interpreter.get_tensor(depthwise[0])[0],
        model.get_layer("shared1_depthwise").get_weights()[0][:, :, :, 0], rtol=1e-6,
    )
    # ... and the file computes what the Keras model does.
    runner = interpreter.get_signature_runner()
    (output,) = runner(image=images[0][:4]).values()
    np.testing.assert_allclose(output, model.predict(images[0][:4], verbose=0), atol=1e-5)
