"""REAFConv2D and REAF+ (lru_keras.layers.reaf) against the paper's definitions, and the REAF
builders with the rest of the package: training, `.keras` files, int8 TFLite.

Inputs are real images: CIFAR-100 training images (../shared/data/cifar100_train_subset.npz),
as pixels or rearranged into more channels by a 2x2 space-to-depth. References are written
independently of the layer code: Eq. 6 as a float64 NumPy loop over output groups, Keras's
own Conv2D (plain and grouped), separate Keras BatchNorm layers for Eq. 8.
"""

import itertools
import math

import numpy as np
import pytest
import tensorflow as tf

import keras

from lru_keras import analysis
from lru_keras.layers import GroupedPointwiseConv2D, REAFConv2D, REAFPlusNormalization
from lru_keras.layers.reaf import reaf_combinations
from lru_keras.zoo import REAFPlusMobileNetV2, REAFResNet, REAFResNeXt, get_builder

IMPLEMENTATIONS = ("gather", "masked")


@pytest.fixture(scope="module")
def cifar100(test_set):
    """Real CIFAR-100 training images: 200 (every 25th, two per class) and their labels."""
    x, y = test_set("cifar100_train_subset.npz")
    x, y = x[::25], y[::25]
    assert x.shape == (200, 32, 32, 3) and len(set(y.tolist())) == 100
    return x, y


@pytest.fixture(scope="module")
def features(cifar100):
    """(8, 8, 8, 48) float32 feature maps from real images: [0, 1] pixels, 4x4 space-to-depth."""
    x = cifar100[0][:8].astype(np.float32) / 255.0
    return tf.nn.space_to_depth(x, 4).numpy()


# --------------------------------------------------------------------------------------------
# The reference: Eq. 6 in float64, one output group at a time
# --------------------------------------------------------------------------------------------
def np_conv_valid(x, kernel, stride):
    """Plain 'valid' conv, NHWC x (n, h, w, c), kernel (kh, kw, c, o), float64."""
    kh, kw = kernel.shape[:2]
    oh = (x.shape[1] - kh) // stride + 1
    ow = (x.shape[2] - kw) // stride + 1
    y = np.zeros((x.shape[0], oh, ow, kernel.shape[-1]))
    for a in range(kh):
        for b in range(kw):
            patch = x[:, a:a + stride * oh:stride, b:b + stride * ow:stride]
            y += np.einsum("nhwc,co->nhwo", patch, kernel[a, b])
    return y


def np_reaf_conv(x, kernel, groups, stride=1):
    """Eq. 6: output group l = conv of the concatenated input groups of the l-th combination
    (itertools order), with kernel rows in that concatenation order."""
    g_i, g_m, g_o = groups
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    width = x.shape[-1] // g_i
    per_group = kernel.shape[-1] // g_o
    outputs = []
    for l, combination in enumerate(itertools.combinations(range(g_i), g_m)):
        inputs = np.concatenate([x[..., g * width:(g + 1) * width] for g in combination], -1)
        outputs.append(np_conv_valid(inputs, kernel[..., l * per_group:(l + 1) * per_group],
                                     stride))
    return np.concatenate(outputs, -1)


def _reaf(filters, kernel_size, groups, implementation, strides=1, **kwargs):
    layer = REAFConv2D(filters, kernel_size, strides=strides, groups=groups,
                       implementation=implementation, **kwargs)
    return layer


# --------------------------------------------------------------------------------------------
# REAFConv2D semantics
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("groups, filters, kernel_size, strides", [
    ((4, 3, 4), 16, 3, 1), ((4, 3, 4), 12, 3, 2), ((4, 2, 6), 18, 3, 1),
    ((5, 2, 10), 20, 1, 1), ((8, 4, 70), 70, 1, 1), ((6, 3, 20), 40, 3, 2),
])
def test_reaf_conv_is_equation_6(features, groups, filters, kernel_size, strides,
                                 implementation):
    x = features[..., :48 // groups[0] * groups[0]]
    layer = _reaf(filters, kernel_size, groups, implementation, strides, use_bias=False)
    y = layer(x).numpy()
    expected = np_reaf_conv(x, layer.kernel.numpy(), groups, strides)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("kernel_size, strides", [(3, 1), (3, 2), (1, 1)])
def test_gm_1_with_gi_equal_go_is_a_grouped_conv_with_the_same_kernel(
        features, kernel_size, strides, implementation):
    reaf = _reaf(24, kernel_size, (4, 1, 4), implementation, strides, padding="same")
    keras_conv = keras.layers.Conv2D(24, kernel_size, strides=strides, padding="same",
                                     groups=4)
    y = reaf(features)
    keras_conv.build(features.shape)
    keras_conv.set_weights(reaf.get_weights())  # same shapes: (k, k, 48 / 4, 24), (24,)
    np.testing.assert_allclose(y, keras_conv(features), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("groups", [(1, 1, 1), (4, 4, 1), (3, 3, 1)])
def test_gm_equal_gi_is_a_plain_conv_with_the_same_kernel(features, groups, implementation):
    reaf = _reaf(10, 3, groups, implementation, 2, padding="valid")
    keras_conv = keras.layers.Conv2D(10, 3, strides=2, padding="valid")
    y = reaf(features)
    keras_conv.build(features.shape)
    keras_conv.set_weights(reaf.get_weights())
    np.testing.assert_allclose(y, keras_conv(features), rtol=1e-5, atol=1e-5)


def test_combinations_are_enumerated_in_itertools_order():
    assert reaf_combinations(4, 3) == [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)]
    assert reaf_combinations(4, 2) == list(itertools.combinations(range(4), 2))
    assert len(reaf_combinations(8, 4)) == 70


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_output_group_l_sees_exactly_the_input_groups_of_E_l(implementation):
    """Probe the connectivity: light one input channel, see which output channels respond."""
    groups, in_channels, filters = (4, 2, 6), 8, 12  # A = 2 input, B = 2 output channels
    layer = _reaf(filters, 1, groups, implementation, use_bias=False,
                  kernel_initializer="ones")
    combinations = reaf_combinations(4, 2)
    for channel in range(in_channels):
        x = np.zeros((1, 1, 1, in_channels), np.float32)
        x[..., channel] = 1.0
        responds = layer(x).numpy()[0, 0, 0] != 0
        expected = [channel // 2 in combinations[j // 2] for j in range(filters)]
        assert responds.tolist() == expected, channel


GROUPED_CONV_CHECK = """
import sys
import numpy as np
import tensorflow as tf

x = tf.constant(np.load(sys.argv[1]))
kernel = tf.constant(np.random.default_rng(0).normal(0, 0.1, size=(3, 3, 12, 16)), tf.float32)
for strides in (1, 2):
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, kernel])
        grouped = tf.nn.conv2d(x, kernel, strides, "SAME")
        per_group = tf.concat([
            tf.nn.conv2d(x[..., 12 * g:12 * (g + 1)], kernel[..., 4 * g:4 * (g + 1)],
                         strides, "SAME") for g in range(4)], -1)
        loss_grouped = tf.reduce_sum(grouped * tf.sin(grouped))
        loss_reference = tf.reduce_sum(per_group * tf.sin(per_group))
    np.testing.assert_allclose(grouped, per_group, rtol=1e-5, atol=1e-5)
    for got, want in zip(tape.gradient(loss_grouped, [x, kernel]),
                         tape.gradient(loss_reference, [x, kernel])):
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
print("exact")
"""


def test_grouped_tf_conv2d_with_onednn_is_exact_for_3x3_kernels_forward_and_gradients(
        features, tmp_path):
    """stack.md: `tf.nn.conv2d` with a grouped kernel (the "gather" path) must match a
    per-group reference in outputs and gradients for 3x3 kernels too, strides 1 and 2, with
    oneDNN on (TF_ENABLE_ONEDNN_OPTS=1: TensorFlow leaves it off on CPUs without AVX-512)."""
    import os
    import subprocess
    import sys

    np.save(tmp_path / "features.npy", features)
    environment = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", GROUPED_CONV_CHECK,
                             str(tmp_path / "features.npy")],
                            env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.split()[-1:] == ["exact"], result.stderr


@pytest.mark.parametrize("groups", [(4, 3, 4), (4, 1, 4), (5, 2, 10)])
def test_gather_and_masked_give_the_same_gradients(features, groups):
    x = tf.constant(features[..., :48 // groups[0] * groups[0]])
    layers = [_reaf(20, 3, groups, impl, 2, padding="same") for impl in IMPLEMENTATIONS]
    layers[0].build(x.shape)
    layers[1].build(x.shape)
    layers[1].set_weights(layers[0].get_weights())
    grads = []
    for layer in layers:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.sin(y))
        grads.append(tape.gradient(loss, [x, *layer.trainable_weights]))
    for a, b in zip(*grads):
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()


def test_auto_implementation_choice():
    def chosen(groups):
        layer = REAFConv2D(math.comb(groups[0], groups[1]) * 2, 3, groups=groups)
        layer.build((None, 8, 8, groups[0] * 2))
        return layer.resolved_implementation

    assert chosen((4, 3, 4)) == "masked"
    assert chosen((8, 4, 70)) == "masked"
    assert chosen((8, 1, 8)) == "gather"
    assert chosen((32, 1, 32)) == "gather"


def test_parameters_and_macs_are_the_reaf_counts():
    inputs = keras.Input((16, 16, 72))
    model = keras.Model(inputs, REAFConv2D(72, 3, groups="4-3-4", padding="same",
                                           use_bias=False)(inputs))
    assert analysis.count_parameters(model) == {
        "trainable": 3 * 18 * 72 * 9, "conv": 3 * 18 * 72 * 9, "non_trainable": 0}
    assert analysis.count_macs(model) == 16 * 16 * 72 * 9 * 3 * 18  # 3/4 of a plain conv
    assert "REAF 4-3-4" in analysis.stage_table(model)[0]["kernel"]


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("groups, message", [
    ((4, 3, 3), r"G_O must equal C\(G_I, G_M\) = C\(4, 3\) = 4, got G_O=3"),
    ("8-4-35", r"C\(8, 4\) = 70, got G_O=35"),
    ((3, 4, 1), r"G_M=4 groups cannot be drawn from G_I=3"),
    ("4-3", r"`groups` must be \(G_I, G_M, G_O\)"),
    ("a-b-c", r"`groups` must be \(G_I, G_M, G_O\).*'a-b-c'"),
    ((4, 0, 1), r"`groups` must be"),
    ((4.0, 3, 4), r"`groups` must be"),
    ((10**9, 5 * 10**8, 1), r"G_I=1000000000 is too large: at most 64 input groups"),
])
def test_bad_groups_raise_value_errors_naming_the_values(groups, message):
    with pytest.raises(ValueError, match=message):
        REAFConv2D(8, 3, groups=groups)


def test_channels_that_do_not_divide_raise_value_errors():
    with pytest.raises(ValueError, match=r"`filters`=10 must be a multiple of G_O=4"):
        REAFConv2D(10, 3, groups=(4, 3, 4))
    layer = REAFConv2D(8, 3, groups=(4, 3, 4), name="odd")
    with pytest.raises(ValueError, match=r"'odd'.*input channel count 6 must be a multiple "
                                         r"of G_I=4"):
        layer.build((None, 8, 8, 6))
    with pytest.raises(ValueError, match=r"`implementation` must be one of"):
        REAFConv2D(8, 3, groups=(4, 3, 4), implementation="loop")


def test_builder_arguments_are_checked():
    with pytest.raises(ValueError, match=r"`depth` must be one of \[18, 34, 50, 101\], got 42"):
        REAFResNet(42)
    with pytest.raises(ValueError, match=r"`stem` must be one of \['imagenet', 'cifar'\]"):
        REAFResNet(50, stem="mnist")
    with pytest.raises(ValueError, match=r"`config`='4-3-3'"):
        REAFResNet(50, config="4-3-3")
    with pytest.raises(ValueError, match=r"`out_width`=80 needs a bottleneck ResNet"):
        REAFResNet(18, out_width=80)
    with pytest.raises(ValueError, match=r"input channel count 70 must be a multiple of "
                                         r"G_I=4"):
        REAFResNet(50, config="4-3-4", base_width=70, out_width=72, stem="cifar")
    with pytest.raises(ValueError, match=r"`output_groups` must be one of"):
        REAFPlusMobileNetV2(3, stem="cifar")
    with pytest.raises(ValueError, match=r"`weights` must be None, a path"):
        REAFResNeXt(50, weights="imagenet")


# --------------------------------------------------------------------------------------------
# REAF+ (Eq. 8)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("training", [False, True])
def test_reaf_plus_normalization_is_g_separate_batchnorm_relu_pairs(features, training):
    x = features[..., :12]
    plus = REAFPlusNormalization(3, "relu")
    plus.build(x.shape)
    rng = np.random.default_rng(1)
    gamma, beta = rng.normal(size=36), rng.normal(size=36)
    mean, var = rng.normal(size=36) * 0.1, rng.uniform(0.5, 2, size=36)
    plus.batch_norm.set_weights([gamma, beta, mean, var])
    y = plus(x, training=training).numpy()
    assert y.shape == (*x.shape[:-1], 36)
    for l in range(3):
        bn = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
        bn.build(x.shape)
        part = slice(12 * l, 12 * (l + 1))
        bn.set_weights([gamma[part], beta[part], mean[part], var[part]])
        expected = keras.ops.relu(bn(x, training=training))
        np.testing.assert_allclose(y[..., part], expected, rtol=1e-5, atol=1e-5)
    assert len(plus.trainable_weights) == 2 and plus.count_params() == 4 * 36


def test_reaf_plus_conv_reads_pair_l_for_output_group_l(features):
    """REAFPlusNormalization(2) + a 2-group 1x1 conv: output group l = W_l * Relu_l(Bn_l(x))."""
    x = features[..., :16]
    plus = REAFPlusNormalization(2)
    conv = GroupedPointwiseConv2D(10, groups=2, use_bias=False)
    y = conv(plus(x, training=False)).numpy()
    gamma, beta, mean, var = (w.reshape(2, 16) for w in plus.batch_norm.get_weights())
    kernel = conv.kernel.numpy()[0, 0]  # (16, 10): output j < 5 reads copy 0, else copy 1
    for l in range(2):
        normalised = np.maximum((x - mean[l]) / np.sqrt(var[l] + 1e-5) * gamma[l] + beta[l], 0)
        np.testing.assert_allclose(y[..., 5 * l:5 * (l + 1)],
                                   normalised @ kernel[:, 5 * l:5 * (l + 1)],
                                   rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Serialization, training, export
# --------------------------------------------------------------------------------------------
def test_get_config_round_trip():
    for layer in (
        REAFConv2D(12, (3, 1), strides=2, groups="4-2-6", padding="same", use_bias=False,
                   kernel_regularizer="l2", implementation="gather", name="r"),
        REAFPlusNormalization(4, "relu6", momentum=0.8, epsilon=1e-4, name="p"),
    ):
        config = layer.get_config()
        assert type(layer).from_config(config).get_config() == config


def _small_reaf_model():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(24, 3, strides=2, padding="same")(inputs)
    x = REAFConv2D(24, 3, groups=(4, 3, 4), padding="same", implementation="gather")(x)
    x = REAFConv2D(24, 3, strides=2, groups=(4, 1, 4), implementation="masked")(x)
    x = REAFPlusNormalization(2)(x)
    x = GroupedPointwiseConv2D(16, groups=2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(100)(x))


def test_keras_file_round_trip(cifar100, tmp_path):
    model = _small_reaf_model()
    x = cifar100[0][:16].astype(np.float32) / 255.0
    plus = next(layer for layer in model.layers if isinstance(layer, REAFPlusNormalization))
    rng = np.random.default_rng(2)  # non-trivial statistics, so that they must be saved too
    plus.batch_norm.set_weights([rng.uniform(0.5, 2, 48), rng.normal(size=48),
                                 rng.normal(size=48), rng.uniform(0.5, 2, 48)])
    path = tmp_path / "reaf.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(model(x, training=False), loaded(x, training=False))
    kinds = [type(layer).__name__ for layer in loaded.layers]
    assert kinds.count("REAFConv2D") == 2 and "REAFPlusNormalization" in kinds


def test_weights_file_round_trip_with_and_without_top(cifar100, tmp_path):
    """`weights=<path>.weights.h5` loads strictly, also into a headless model."""
    x = cifar100[0][:4].astype(np.float32)
    model = REAFPlusMobileNetV2(2, stem="cifar")
    plus = model.get_layer("block_3_reaf_plus")
    plus.batch_norm.moving_mean.assign(np.linspace(-1, 1, plus.batch_norm.moving_mean.shape[0]))
    path = tmp_path / "reaf_plus.weights.h5"
    model.save_weights(path)
    again = REAFPlusMobileNetV2(2, stem="cifar", weights=str(path))
    np.testing.assert_array_equal(model(x, training=False), again(x, training=False))
    headless = REAFPlusMobileNetV2(2, stem="cifar", weights=str(path), include_top=False,
                                   pooling="avg")
    features = keras.Model(model.input, model.get_layer("avg_pool").output)
    np.testing.assert_allclose(features(x, training=False), headless(x, training=False),
                               rtol=1e-6, atol=1e-6)


def test_builders_are_registered():
    for name in ("REAFResNet", "WideResNet50", "REAFResNeXt", "REAFPlusMobileNetV2",
                 "REAFPlusResNeXt50"):
        assert callable(get_builder(name))


def test_fit_on_real_cifar100_images(cifar100):
    """A few optimizer steps of REAF-ResNet18 (CIFAR stem) on real CIFAR-100 images."""
    x, y = cifar100[0][:32], cifar100[1][:32]
    keras.utils.set_random_seed(0)
    model = REAFResNet(18, stem="cifar")
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss="sparse_categorical_crossentropy")
    before = [w.numpy().copy() for w in model.weights]
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.weights)]
    assert all(changed)  # every kernel, BatchNorm parameter and moving statistic moved


def _int8_interpreter(model, images):
    """Full-integer conversion (builtin int8 ops only, int8 in/out) and its interpreter."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    def representative_dataset():
        for image in images:
            yield [image[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    # Without the default (XNNPACK) delegate, so that the op list is the file's own and every
    # op runs on a builtin kernel.
    interpreter = Interpreter(
        model_content=converter.convert(),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    return interpreter


def test_int8_tflite_export_of_both_implementations_and_reaf_plus(cifar100):
    """The "gather" path exports as GATHER + grouped CONV_2D, the "masked" one as CONV_2D."""
    interpreter = _int8_interpreter(_small_reaf_model(), cifar100[0][:8].astype(np.float32))
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not {op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "DELEGATE")}, ops
    assert {"GATHER", "CONV_2D"} <= ops, ops


def test_int8_tflite_export_of_reaf_resnet18_uses_builtin_ops_only(cifar100):
    model = REAFResNet(18, stem="cifar")
    images = cifar100[0][:8].astype(np.float32)
    interpreter = _int8_interpreter(model, images)
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not {op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "DELEGATE")}, ops
    assert {"CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED", "SOFTMAX"} <= ops, ops
    # int8 in, int8 out, and the quantized model still computes something close to Keras's.
    input_details = interpreter.get_input_details()[0]
    output_details = interpreter.get_output_details()[0]
    assert input_details["dtype"] == np.int8 and output_details["dtype"] == np.int8
    scale, zero = input_details["quantization"]
    quantized = np.clip(np.round(images[:4] / scale + zero), -128, 127).astype(np.int8)
    outputs = []
    for image in quantized:
        interpreter.set_tensor(input_details["index"], image[None])
        interpreter.invoke()
        out_scale, out_zero = output_details["quantization"]
        outputs.append((interpreter.get_tensor(output_details["index"])[0].astype(np.float32)
                        - out_zero) * out_scale)
    expected = model.predict(images[:4], verbose=0)
    assert np.abs(np.array(outputs) - expected).max() < 0.02  # softmax probabilities
