"""Tests of lru_keras.layers against plain NumPy references of the paper's definitions.

The references below are written in PyTorch's NCHW layout from the reference README
(../shared/reference/cnn-layer-reuse/README.md), in float64, independently of the layers'
code; kernels are moved into Keras layout with explicit index loops. Where real data is
cheap (the 14-reuse checkpoint, CIFAR-10 test images) it is used instead of random numbers.
"""

import numpy as np
import pytest
import tensorflow as tf

import keras

from lru_keras.layers import (
    ChannelShuffle,
    GroupedPointwiseConv2D,
    LRUBlock,
    PixelPreprocessing,
    Reused,
)
from lru_keras.layers.channel_order import (
    shuffle_channels,
    shuffle_permutation,
    unshuffle_channels,
)
from lru_keras.layers.grouped_pointwise import grouped_pointwise_einsum
from lru_keras.layers.reuse import MAX_REUSES

EPS = 1e-5


# --------------------------------------------------------------------------------------------
# NumPy references (NCHW, PyTorch semantics)
# --------------------------------------------------------------------------------------------
def nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def nchw(x):
    return np.transpose(x, (0, 3, 1, 2))


def np_conv(x, weight, stride=1, padding=0, groups=1, bias=None):
    """torch.nn.functional.conv2d in NumPy: x (N, C, H, W), weight (O, C/groups, kh, kw)."""
    x = np.asarray(x, np.float64)
    weight = np.asarray(weight, np.float64)
    n, c, h, w = x.shape
    out, in_per_group, kh, kw = weight.shape
    out_per_group = out // groups
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (w + 2 * padding - kw) // stride + 1
    y = np.zeros((n, out, oh, ow))
    for o in range(out):
        g = o // out_per_group
        src = xp[:, g * in_per_group:(g + 1) * in_per_group]
        for a in range(kh):
            for b in range(kw):
                patch = src[:, :, a:a + stride * oh:stride, b:b + stride * ow:stride]
                y[:, o] += np.einsum("nchw,c->nhw", patch, weight[o, :, a, b])
    if bias is not None:
        y += np.asarray(bias, np.float64)[None, :, None, None]
    return y


def np_batch_norm(x, gamma, beta, mean, var, eps=EPS):
    """Inference-mode BatchNorm2d on NCHW (or on (N, C) when x is 2-D)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    return (x - np.reshape(mean, shape)) * np.reshape(scale, shape) + np.reshape(beta, shape)


def np_shuffle_nchw(x):
    """The reference's shuffle: swap halves, view (2, C/2), transpose, flatten (NCHW)."""
    n, c = x.shape[:2]
    x = np.concatenate([x[:, c // 2:], x[:, :c // 2]], axis=1)
    return x.reshape(n, 2, c // 2, *x.shape[2:]).swapaxes(1, 2).reshape(x.shape)


def np_lru_block(x, dw_weight, pw_weight, dw_bns, pw_bns, groups=8):
    """The reference block (README): N iterations sharing dw/pw, a BatchNorm pair per call."""
    channels = x.shape[1]
    reuse = len(dw_bns)
    for i in range(reuse):
        y = np_batch_norm(np_conv(x, dw_weight, padding=1, groups=channels), *dw_bns[i])
        y = np_batch_norm(np_conv(y, pw_weight, groups=groups), *pw_bns[i])
        y = np.maximum(y + x, 0)
        if i < reuse - 1:
            y = np_shuffle_nchw(y)
        x = y
    return x


def keras_depthwise_kernel(weight):
    """PyTorch depthwise weight (C*m, 1, kh, kw) -> Keras (kh, kw, C, m), by index."""
    out, _, kh, kw = weight.shape
    kernel = np.zeros((kh, kw, out // 2, 2), np.float32)
    multiplier = 2
    for j in range(out):  # PyTorch output channel j reads input channel j // m
        kernel[:, :, j // multiplier, j % multiplier] = weight[j, 0]
    return kernel


def keras_conv_kernel(weight):
    """PyTorch conv weight (O, I, kh, kw) -> Keras (kh, kw, I, O), by index."""
    out, inp, kh, kw = weight.shape
    kernel = np.zeros((kh, kw, inp, out), np.float32)
    for o in range(out):
        for i in range(inp):
            kernel[:, :, i, o] = weight[o, i]
    return kernel


def random_bn(rng, channels):
    """Non-trivial inference statistics: [gamma, beta, moving_mean, moving_variance]."""
    return [
        rng.uniform(0.5, 1.5, channels).astype(np.float32),
        rng.normal(0, 0.3, channels).astype(np.float32),
        rng.normal(0, 0.5, channels).astype(np.float32),
        rng.uniform(0.3, 2.0, channels).astype(np.float32),
    ]


def real_activations(images, channels, spatial):
    """A real, non-negative NHWC feature batch: CIFAR pixels in [0, 1], tiled to `channels`."""
    x = images[:, :spatial, :spatial, :].astype(np.float32) / 255.0
    reps = -(-channels // x.shape[-1])
    tiled = np.concatenate([x * (1 + 0.1 * k) for k in range(reps)], axis=-1)
    return tiled[..., :channels]


# --------------------------------------------------------------------------------------------
# ChannelShuffle
# --------------------------------------------------------------------------------------------
def test_channel_shuffle_paper_order_on_literal_examples():
    # C=4: swap -> [2,3,0,1]; view (2,2) [[2,3],[0,1]]; transpose; flatten -> [2,0,3,1]
    x4 = np.arange(4, dtype=np.float32).reshape(1, 1, 1, 4)
    np.testing.assert_array_equal(np.asarray(ChannelShuffle()(x4))[0, 0, 0], [2, 0, 3, 1])
    x8 = np.arange(8, dtype=np.float32).reshape(1, 1, 1, 8)
    np.testing.assert_array_equal(
        np.asarray(ChannelShuffle()(x8))[0, 0, 0], [4, 0, 5, 1, 6, 2, 7, 3]
    )
    # The paper's reason for the swap: the plain shuffle keeps the first and last channels.
    np.testing.assert_array_equal(
        np.asarray(ChannelShuffle(swap_halves=False)(x8))[0, 0, 0], [0, 4, 1, 5, 2, 6, 3, 7]
    )


@pytest.mark.parametrize("channels", [2, 4, 6, 16, 64, 128])
def test_channel_shuffle_equals_reference_definition(channels, cifar10_images):
    x = real_activations(cifar10_images[0][:3], channels, 5)
    expected = nhwc(np_shuffle_nchw(nchw(x)))
    np.testing.assert_array_equal(np.asarray(ChannelShuffle()(x)), expected)


@pytest.mark.parametrize("groups, channels", [(3, 12), (4, 12), (4, 32), (8, 64), (1, 6)])
def test_channel_shuffle_other_groups_follow_index_formula(groups, channels):
    x = np.arange(2 * 3 * channels, dtype=np.float32).reshape(2, 1, 3, channels)
    per_group = channels // groups
    # output channel k*g + j is input channel j*C/g + k
    order = [j * per_group + k for k in range(per_group) for j in range(groups)]
    out = np.asarray(ChannelShuffle(groups, swap_halves=False)(x))
    np.testing.assert_array_equal(out, x[..., order])
    if channels % 2 == 0:
        swapped = np.concatenate([x[..., channels // 2:], x[..., :channels // 2]], axis=-1)
        out = np.asarray(ChannelShuffle(groups, swap_halves=True)(x))
        np.testing.assert_array_equal(out, swapped[..., order])


def test_channel_shuffle_is_a_permutation_without_fixed_end_channels():
    for channels in (8, 64, 512):
        x = np.arange(channels, dtype=np.float32).reshape(1, 1, 1, channels)
        out = np.asarray(ChannelShuffle()(x))[0, 0, 0]
        assert sorted(out.tolist()) == list(range(channels))
        assert out[0] != 0 and out[-1] != channels - 1


@pytest.mark.parametrize("groups, swap_halves, channels",
                         [(2, True, 16), (2, False, 16), (4, True, 32), (4, False, 12),
                          (3, False, 12), (2, True, 2)])
def test_unshuffle_channels_inverts_the_shuffle(groups, swap_halves, channels,
                                                cifar10_images):
    x = real_activations(cifar10_images[0][:2], channels, 5)
    shuffled = shuffle_channels(x, groups, swap_halves)
    np.testing.assert_array_equal(np.asarray(unshuffle_channels(shuffled, groups, swap_halves)),
                                  x)
    # and it is the inverse permutation, not just any map that undoes this one input
    inverse = np.argsort(shuffle_permutation(channels, groups, swap_halves))
    np.testing.assert_array_equal(np.asarray(unshuffle_channels(x, groups, swap_halves)),
                                  x[..., inverse])


def test_channel_shuffle_rejects_indivisible_channels():
    with pytest.raises(ValueError, match=r"groups=3 must divide the channel count 8"):
        ChannelShuffle(3)(np.zeros((1, 2, 2, 8), np.float32))
    with pytest.raises(ValueError, match=r"swap_halves=True needs an even channel count, got 9"):
        ChannelShuffle(3, swap_halves=True)(np.zeros((1, 2, 2, 9), np.float32))
    with pytest.raises(ValueError, match="groups"):
        ChannelShuffle(0)
    # odd count without the swap is fine when the groups divide it
    out = ChannelShuffle(3, swap_halves=False)(np.arange(9, dtype=np.float32).reshape(1, 1, 1, 9))
    np.testing.assert_array_equal(np.asarray(out)[0, 0, 0], [0, 3, 6, 1, 4, 7, 2, 5, 8])


# --------------------------------------------------------------------------------------------
# GroupedPointwiseConv2D
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "in_channels, filters, groups", [(16, 8, 8), (32, 16, 8), (12, 6, 3), (8, 8, 1), (64, 256, 4)]
)
def test_grouped_pointwise_equals_keras_conv2d_and_numpy(
    in_channels, filters, groups, cifar10_images
):
    rng = np.random.default_rng(in_channels * filters + groups)
    x = real_activations(cifar10_images[0][:4], in_channels, 6)
    kernel = rng.normal(0, 0.5, (1, 1, in_channels // groups, filters)).astype(np.float32)
    bias = rng.normal(0, 0.5, filters).astype(np.float32)

    fast = GroupedPointwiseConv2D(filters, groups=groups)
    fast.build(x.shape)
    fast.set_weights([kernel, bias])
    plain = keras.layers.Conv2D(filters, 1, groups=groups)
    plain.build(x.shape)
    plain.set_weights([kernel, bias])
    assert [w.shape for w in fast.weights] == [w.shape for w in plain.weights]

    out = np.asarray(fast(x))
    np.testing.assert_allclose(out, np.asarray(plain(x)), rtol=1e-5, atol=1e-5)
    torch_weight = np.transpose(kernel, (3, 2, 0, 1))  # (O, I/g, 1, 1)
    expected = nhwc(np_conv(nchw(x), torch_weight, groups=groups, bias=bias))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_grouped_pointwise_without_bias_and_with_activation(cifar10_images):
    rng = np.random.default_rng(1)
    x = real_activations(cifar10_images[0][:2], 16, 4)
    kernel = rng.normal(0, 1, (1, 1, 2, 8)).astype(np.float32)
    layer = GroupedPointwiseConv2D(8, groups=8, use_bias=False, activation="relu")
    layer.build(x.shape)
    assert len(layer.weights) == 1
    layer.set_weights([kernel])
    expected = np.maximum(nhwc(np_conv(nchw(x), np.transpose(kernel, (3, 2, 0, 1)), groups=8)), 0)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-5)


def test_grouped_pointwise_gradients_equal_einsum_formulation(cifar10_images):
    """The TF fast path (tf.nn.conv2d with a grouped kernel) and the einsum agree, with grads."""
    rng = np.random.default_rng(2)
    x = tf.constant(real_activations(cifar10_images[0][:4], 32, 8))
    layer = GroupedPointwiseConv2D(16, groups=8, use_bias=False)
    layer.build(x.shape)
    layer.set_weights([rng.normal(0, 0.5, (1, 1, 4, 16)).astype(np.float32)])
    probe = tf.constant(rng.normal(0, 1, (4, 8, 8, 16)).astype(np.float32))

    def grads(fn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(fn() * probe)
        return [g.numpy() for g in tape.gradient(loss, [x, layer.kernel.value])]

    fast = grads(lambda: layer(x, training=True))
    reference = grads(lambda: grouped_pointwise_einsum(x, layer.kernel.value, 8))
    np.testing.assert_allclose(
        np.asarray(layer(x)), np.asarray(grouped_pointwise_einsum(x, layer.kernel, 8)),
        rtol=1e-5, atol=1e-5,
    )
    for a, b in zip(fast, reference):
        assert np.abs(a).max() > 0
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


TRAIN_ONE_STEP = """
import numpy as np, keras
from lru_keras.layers import GroupedPointwiseConv2D
from lru_keras.layers.tensorflow_grouped_conv import tensorflow_grouped_conv_trains
inputs = keras.Input((4, 4, 16))
model = keras.Model(inputs, GroupedPointwiseConv2D(8, groups=8)(inputs))
model.compile("sgd", "mse")
x = np.linspace(-1, 1, 2 * 4 * 4 * 16, dtype="float32").reshape(2, 4, 4, 16)
loss = model.fit(x, np.zeros((2, 4, 4, 8), "float32"), epochs=1, verbose=0).history["loss"][0]
print(tensorflow_grouped_conv_trains(), np.isfinite(loss))
"""


@pytest.mark.parametrize("onednn, tensorflow_trains", [("0", "False"), ("1", "True")])
def test_grouped_pointwise_trains_with_and_without_onednn(onednn, tensorflow_trains):
    """Without oneDNN TensorFlow has no CPU gradient for a grouped conv (the default on CPUs
    without AVX-512): the layer then takes the einsum, and model.fit works either way."""
    import os
    import subprocess
    import sys

    environment = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", TRAIN_ONE_STEP], env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == [tensorflow_trains, "True"]


@pytest.mark.parametrize(
    "kwargs, word",
    [({"kernel_size": 3}, "kernel_size"), ({"strides": 2}, "strides"),
     ({"dilation_rate": 2}, "dilation_rate"), ({"data_format": "channels_first"}, "channels_last")],
)
def test_grouped_pointwise_rejects_non_pointwise_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        GroupedPointwiseConv2D(8, groups=2, **kwargs)


def test_grouped_pointwise_rejects_groups_not_dividing_channels():
    with pytest.raises(ValueError):
        GroupedPointwiseConv2D(8, groups=3)
    layer = GroupedPointwiseConv2D(9, groups=3)
    with pytest.raises(ValueError):
        layer.build((None, 4, 4, 8))


# --------------------------------------------------------------------------------------------
# LRUBlock
# --------------------------------------------------------------------------------------------
def random_block_weights(rng, filters, reuse, groups=8):
    """PyTorch-layout weights of one reference block with non-trivial BatchNorms."""
    dw = rng.normal(0, 0.4, (2 * filters, 1, 3, 3)).astype(np.float32)
    pw = rng.normal(0, 0.4, (filters, 2 * filters // groups, 1, 1)).astype(np.float32)
    dw_bns = [random_bn(rng, 2 * filters) for _ in range(reuse)]
    pw_bns = [random_bn(rng, filters) for _ in range(reuse)]
    return dw, pw, dw_bns, pw_bns


def load_block(block, dw, pw, dw_bns, pw_bns):
    block.depthwise.set_weights([keras_depthwise_kernel(dw)])
    block.pointwise.set_weights([keras_conv_kernel(pw)])
    for i, (dw_bn, pw_bn) in enumerate(zip(dw_bns, pw_bns)):
        block.norm(i, 0).set_weights(dw_bn)
        block.norm(i, 1).set_weights(pw_bn)


# (filters, groups, reuse); (24, 8, 4) and (48, 8, 6) take the block's exact-gather shuffle
# path, the others its transpose path (lru_keras/layers/channel_order.py).
BLOCK_CASES = [(16, 8, 1), (16, 8, 3), (32, 8, 4), (64, 8, 2), (24, 8, 4), (48, 8, 6),
               (32, 4, 5), (16, 2, 4), (16, 16, 3)]


@pytest.mark.parametrize("filters, groups, reuse", BLOCK_CASES)
def test_lru_block_equals_reference_block_in_inference(filters, groups, reuse, cifar10_images):
    rng = np.random.default_rng(filters * 10 + reuse)
    x = real_activations(cifar10_images[0][:3], filters, 7)
    weights = random_block_weights(rng, filters, reuse, groups)
    block = LRUBlock(filters, reuse=reuse, groups=groups)
    block.build(x.shape)
    load_block(block, *weights)

    expected = nhwc(np_lru_block(nchw(x), *weights, groups=groups))
    out = np.asarray(block(x, training=False))
    assert np.abs(expected).max() > 1.0 and (expected > 0).mean() > 0.2  # not a trivial output
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_lru_block_with_real_14_reuse_weights_equals_reference(reference_state, cifar10_images):
    """Stage 1 of the authors' 14-LruNet-1x (CIFAR-10) on the real stem output of 4 images."""
    state = reference_state("cifar10-lru14-ckpt-08934")
    images = cifar10_images[0][:4].astype(np.float64) / 255.0
    stem = np_conv(nchw(images), state["features.0.weight"], stride=2, padding=1)
    stem = np.maximum(np_batch_norm(stem, *bn_from(state, "features.1")), 0)  # (4, 64, 16, 16)
    reuse = 14
    dw_bns = [bn_from(state, f"stage1.dw_bn_list.{i}") for i in range(reuse)]
    pw_bns = [bn_from(state, f"stage1.pw_bn_list.{i}") for i in range(reuse)]
    weights = state["stage1.dw.weight"], state["stage1.pw.weight"], dw_bns, pw_bns
    expected = nhwc(np_lru_block(stem, *weights))

    block = LRUBlock(64, reuse=reuse)
    x = nhwc(stem).astype(np.float32)
    block.build(x.shape)
    load_block(block, *weights)
    out = np.asarray(block(x, training=False))
    assert np.abs(expected).max() > 1.0
    np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def bn_from(state, prefix):
    return [state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]


def test_lru_block_shuffle_false_skips_the_shuffle(cifar10_images):
    rng = np.random.default_rng(5)
    x = real_activations(cifar10_images[0][:2], 16, 5)
    dw, pw, dw_bns, pw_bns = random_block_weights(rng, 16, 2)
    block = LRUBlock(16, reuse=2, shuffle=False)
    block.build(x.shape)
    load_block(block, dw, pw, dw_bns, pw_bns)
    ref = nchw(x).astype(np.float64)
    for i in range(2):
        y = np_batch_norm(np_conv(ref, dw, padding=1, groups=16), *dw_bns[i])
        ref = np.maximum(np_batch_norm(np_conv(y, pw, groups=8), *pw_bns[i]) + ref, 0)
    np.testing.assert_allclose(np.asarray(block(x)), nhwc(ref), rtol=1e-4, atol=1e-4)


def test_lru_block_parameters_grow_with_reuse_only_by_batchnorm():
    filters = 16
    shared = 3 * 3 * filters * 2 + (2 * filters // 8) * filters  # dw + grouped pw kernels
    for reuse in range(1, 6):
        block = LRUBlock(filters, reuse=reuse)
        block.build((None, 8, 8, filters))
        trainable = sum(int(np.prod(v.shape)) for v in block.trainable_weights)
        frozen = sum(int(np.prod(v.shape)) for v in block.non_trainable_weights)
        # gamma + beta of a 2F BatchNorm and an F BatchNorm per reuse
        assert trainable == shared + reuse * 2 * (2 * filters + filters)
        assert frozen == reuse * 2 * (2 * filters + filters)  # moving mean + variance


@pytest.mark.parametrize("reuse", [1, 5])
def test_lru_block_depthwise_and_pointwise_kernels_are_one_variable_each(reuse):
    block = LRUBlock(16, reuse=reuse, name="blk")
    block.build((None, 8, 8, 16))
    paths = [v.path for v in block.weights]
    assert paths.count("blk/dw/kernel") == 1
    assert paths.count("blk/pw/kernel") == 1
    kernels = [p for p in paths if p.endswith("kernel")]
    assert kernels == ["blk/dw/kernel", "blk/pw/kernel"]
    assert len([p for p in paths if "/bn_" in p]) == reuse * 2 * 4
    assert len(block.trainable_weights) == 2 + reuse * 2 * 2


@pytest.mark.parametrize("training", [False, True])
def test_lru_block_shared_kernel_gradient_is_sum_of_per_call_gradients(training, cifar10_images):
    """d loss / d shared kernel == sum over reuses of the gradient of an unshared copy."""
    rng = np.random.default_rng(7)
    filters, reuse = 16, 3
    x = tf.constant(real_activations(cifar10_images[0][:2], filters, 6))
    weights = random_block_weights(rng, filters, reuse)
    block = LRUBlock(filters, reuse=reuse)
    block.build(x.shape)
    load_block(block, *weights)
    probe = tf.constant(rng.normal(0, 1, (2, 6, 6, filters)).astype(np.float32))

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(block(x, training=training) * probe)
    shared = tape.gradient(loss, [block.depthwise.kernel.value, block.pointwise.kernel.value])

    # The same computation with a separate copy of each kernel per reuse.
    dw_copies = [tf.Variable(block.depthwise.kernel.numpy()) for _ in range(reuse)]
    pw_copies = [tf.Variable(block.pointwise.kernel.numpy()) for _ in range(reuse)]
    shuffle = ChannelShuffle()
    with tf.GradientTape() as tape:
        h = x
        for i in range(reuse):
            y = tf.nn.depthwise_conv2d(h, dw_copies[i], [1, 1, 1, 1], "SAME")
            y = block.norm(i, 0)(y, training=training)
            y = grouped_pointwise_einsum(y, pw_copies[i], 8)
            y = block.norm(i, 1)(y, training=training)
            h = tf.nn.relu(y + h)
            if i < reuse - 1:
                h = shuffle(h)
        unrolled_loss = tf.reduce_sum(h * probe)
    per_call = tape.gradient(unrolled_loss, dw_copies + pw_copies)
    np.testing.assert_allclose(float(unrolled_loss), float(loss), rtol=1e-5)
    for got, copies in ((shared[0], per_call[:reuse]), (shared[1], per_call[reuse:])):
        assert all(np.abs(g.numpy()).max() > 0 for g in copies)
        np.testing.assert_allclose(got.numpy(), sum(g.numpy() for g in copies),
                                   rtol=1e-4, atol=1e-4)


def np_batch_norm_train(x, gamma, beta, mean, var, momentum=0.9, eps=EPS):
    """Training-mode BatchNorm2d (PyTorch): batch statistics normalise, the moving statistics
    move by 1 - momentum towards the batch mean and the UNBIASED batch variance."""
    batch_mean = x.mean(axis=(0, 2, 3))
    batch_var = x.var(axis=(0, 2, 3))
    count = x.size // x.shape[1]
    y = np_batch_norm(x, gamma, beta, batch_mean, batch_var, eps)
    new_mean = momentum * np.asarray(mean, np.float64) + (1 - momentum) * batch_mean
    new_var = (momentum * np.asarray(var, np.float64)
               + (1 - momentum) * batch_var * count / (count - 1))
    return y, (new_mean, new_var)


def np_lru_block_train(x, dw_weight, pw_weight, dw_bns, pw_bns, groups=8):
    """One training step of the reference block: output and every BatchNorm's new statistics."""
    channels = x.shape[1]
    reuse = len(dw_bns)
    stats = []
    for i in range(reuse):
        y, dw_stats = np_batch_norm_train(
            np_conv(x, dw_weight, padding=1, groups=channels), *dw_bns[i])
        y, pw_stats = np_batch_norm_train(np_conv(y, pw_weight, groups=groups), *pw_bns[i])
        stats += [dw_stats, pw_stats]
        y = np.maximum(y + x, 0)
        x = np_shuffle_nchw(y) if i < reuse - 1 else y
    return x, stats


@pytest.mark.parametrize("filters, groups, reuse", [(16, 8, 3), (24, 8, 4), (48, 8, 3)])
def test_lru_block_training_step_equals_reference_train_mode(
    filters, groups, reuse, cifar10_images
):
    rng = np.random.default_rng(31 + filters)
    x = real_activations(cifar10_images[0][:8], filters, 6)
    weights = random_block_weights(rng, filters, reuse, groups)
    block = LRUBlock(filters, reuse=reuse, groups=groups)
    block.build(x.shape)
    load_block(block, *weights)

    expected, stats = np_lru_block_train(nchw(x), *weights, groups=groups)
    out = np.asarray(block(x, training=True))
    np.testing.assert_allclose(out, nhwc(expected), rtol=1e-4, atol=1e-4)
    for i in range(reuse):
        for j in range(2):
            norm = block.norm(i, j)
            new_mean, new_var = stats[2 * i + j]
            np.testing.assert_allclose(norm.moving_mean.numpy(), new_mean, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(norm.moving_variance.numpy(), new_var,
                                       rtol=1e-4, atol=1e-5)
    # each call's BatchNorm saw different features: the statistics differ between reuses
    assert not np.allclose(block.norm(0, 1).moving_mean.numpy(),
                           block.norm(1, 1).moving_mean.numpy())


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("filters, groups, reuse", [(16, 8, 3), (24, 8, 4), (32, 4, 2)])
def test_lru_block_physical_call_equals_literal_reused_call(
    filters, groups, reuse, training, cifar10_images
):
    """LRUBlock.physical_call (physical channel layout, folded BN) == Reused.call (the literal
    block)."""
    rng = np.random.default_rng(41 + filters)
    x = real_activations(cifar10_images[0][:4], filters, 6)
    weights = random_block_weights(rng, filters, reuse, groups)
    physical, literal = LRUBlock(filters, reuse=reuse, groups=groups), \
        LRUBlock(filters, reuse=reuse, groups=groups)
    for block in (physical, literal):
        block.build(x.shape)
        load_block(block, *weights)
    out = np.asarray(physical.physical_call(x, training=training))
    expected = np.asarray(Reused.call(literal, x, training=training))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    for a, b in zip(physical.weights, literal.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)


@pytest.mark.parametrize("tensorflow_conv, expected", [(True, "physical"), (False, "literal")])
def test_lru_block_call_picks_the_formulation_by_the_grouped_conv_it_gets(
    tensorflow_conv, expected, monkeypatch
):
    """Physical layout where TensorFlow's grouped conv runs (oneDNN), literal where it would be
    an einsum: the physical layout's transposes and tiles cost more than they save there."""
    import lru_keras.layers.reuse as reuse

    calls = []
    monkeypatch.setattr(reuse, "use_tensorflow_grouped_conv", lambda dtype: tensorflow_conv)
    monkeypatch.setattr(LRUBlock, "physical_call", lambda self, x, training=None: calls.append(
        "physical") or x)
    monkeypatch.setattr(Reused, "call", lambda self, x, training=None: calls.append(
        "literal") or x)
    block = LRUBlock(16, reuse=2)
    block.build((None, 4, 4, 16))
    block(np.zeros((1, 4, 4, 16), "float32"))
    assert calls == [expected]


def test_lru_block_rejects_bad_arguments():
    with pytest.raises(ValueError, match="groups=8 must divide filters=12"):
        LRUBlock(12, reuse=1)
    with pytest.raises(ValueError, match="times"):
        LRUBlock(16, reuse=0)
    with pytest.raises(ValueError, match="filters"):
        LRUBlock(-16, reuse=1)
    with pytest.raises(ValueError, match=r"LRUBlock\(filters=16\) got an input with 32 channels"):
        LRUBlock(16, reuse=1).build((None, 8, 8, 32))


# --------------------------------------------------------------------------------------------
# Reused (generic wrapper)
# --------------------------------------------------------------------------------------------
def dense_reused(rng, times=3):
    layer = Reused(keras.layers.Dense(8, name="dense"), times=times, residual=True, activation="relu",
                   name="reused_dense")
    layer.build((None, 8))
    kernel = rng.normal(0, 0.5, (8, 8)).astype(np.float32)
    bias = rng.normal(0, 0.2, 8).astype(np.float32)
    layer.reused_layers[0].set_weights([kernel, bias])
    bns = [random_bn(rng, 8) for _ in range(times)]
    for i, bn in enumerate(bns):
        layer.norm(i, 0).set_weights(bn)
    return layer, kernel, bias, bns


def test_reused_dense_three_times_equals_numpy_and_shares_weights(cifar10_images):
    rng = np.random.default_rng(11)
    layer, kernel, bias, bns = dense_reused(rng)
    x = cifar10_images[0][:6, 0, :8, 0].astype(np.float32) / 255.0  # real pixels, (6, 8)
    expected = x.astype(np.float64)
    for bn in bns:
        expected = np.maximum(np_batch_norm(expected @ kernel + bias, *bn) + expected, 0)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-5)
    paths = [v.path for v in layer.trainable_weights]
    assert paths.count("reused_dense/dense/kernel") == 1 and len(paths) == 2 + 3 * 2
    assert len(layer.norms) == 3 and len({id(n) for n in layer.norms}) == 3


def test_reused_conv2d_with_shuffle_equals_numpy(cifar10_images):
    rng = np.random.default_rng(12)
    times = 3
    layer = Reused(keras.layers.Conv2D(4, 3, padding="same"), times=times, activation="tanh",
                   shuffle=ChannelShuffle())
    x = real_activations(cifar10_images[0][:2], 4, 6)
    layer.build(x.shape)
    kernel = rng.normal(0, 0.5, (3, 3, 4, 4)).astype(np.float32)
    bias = rng.normal(0, 0.2, 4).astype(np.float32)
    layer.reused_layers[0].set_weights([kernel, bias])
    bns = [random_bn(rng, 4) for _ in range(times)]
    for i, bn in enumerate(bns):
        layer.norm(i, 0).set_weights(bn)

    ref = nchw(x).astype(np.float64)
    for i, bn in enumerate(bns):
        ref = np.tanh(np_batch_norm(
            np_conv(ref, np.transpose(kernel, (3, 2, 0, 1)), padding=1, bias=bias), *bn))
        if i < times - 1:
            ref = np_shuffle_nchw(ref)
    np.testing.assert_allclose(np.asarray(layer(x)), nhwc(ref), rtol=1e-5, atol=1e-5)
    assert len([v for v in layer.weights if v.path.endswith("kernel")]) == 1


def test_reused_config_round_trip(cifar10_images):
    rng = np.random.default_rng(13)
    layer, *_ = dense_reused(rng)
    config = layer.get_config()
    clone = Reused.from_config(config)
    clone.build((None, 8))
    clone.set_weights(layer.get_weights())
    assert clone.get_config() == config
    assert clone.times == 3 and clone.residual and len(clone.norms) == 3
    x = cifar10_images[0][:6, 0, :8, 0].astype(np.float32) / 255.0
    np.testing.assert_array_equal(np.asarray(clone(x)), np.asarray(layer(x)))


def test_reused_rejects_bad_arguments():
    with pytest.raises(ValueError, match="times"):
        Reused(keras.layers.Dense(4), times=0)
    with pytest.raises(ValueError, match=f"`times`=100000 is too large: at most {MAX_REUSES}"):
        Reused(keras.layers.Dense(4), times=100_000)
    with pytest.raises(ValueError, match="keep the channel count"):
        Reused(keras.layers.Dense(4), times=2).build((None, 8))


# --------------------------------------------------------------------------------------------
# PixelPreprocessing
# --------------------------------------------------------------------------------------------
def test_pixel_preprocessing_refuses_an_input_of_other_channels_than_its_statistics():
    """Rescaling would broadcast the 3 per-channel factors over 1 channel: 3 channels out."""
    layer = PixelPreprocessing(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), name="stats")
    with pytest.raises(ValueError, match=r"'stats': the input has 1 channels, but `mean` and "
                                         r"`std` are given for 3"):
        layer(np.zeros((1, 2, 2, 1), np.float32))
    assert PixelPreprocessing()(np.full((1, 2, 2, 1), 255.0, np.float32)).shape == (1, 2, 2, 1)


@pytest.mark.parametrize("mean, std", [((np.nan,), (0.2,)), ((0.5,), (np.inf,)),
                                       ((0.5,), (0.0,)), ((0.5, 0.5), (0.2,))])
def test_pixel_preprocessing_refuses_statistics_that_are_not_finite_per_channel(mean, std):
    with pytest.raises(ValueError, match="one finite value per channel and std > 0"):
        PixelPreprocessing(mean=mean, std=std)


# --------------------------------------------------------------------------------------------
# Serialization
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "layer_class, name",
    [(LRUBlock, "lru_keras>LRUBlock"), (Reused, "lru_keras>Reused"),
     (ChannelShuffle, "lru_keras>ChannelShuffle"),
     (GroupedPointwiseConv2D, "lru_keras>GroupedPointwiseConv2D")],
)
def test_layers_are_registered_under_package_lru_keras(layer_class, name):
    assert keras.saving.get_registered_name(layer_class) == name
    assert keras.saving.get_registered_object(name) is layer_class


@pytest.mark.parametrize(
    "layer",
    [lambda: LRUBlock(32, reuse=3, groups=4, shuffle=False, name="b"),
     lambda: ChannelShuffle(4, swap_halves=False, name="s"),
     lambda: GroupedPointwiseConv2D(16, groups=4, use_bias=False, name="g")],
    ids=["LRUBlock", "ChannelShuffle", "GroupedPointwiseConv2D"],
)
def test_layer_config_round_trip(layer):
    original = layer()
    config = original.get_config()
    clone = type(original).from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(original)
    assert keras.saving.deserialize_keras_object(serialized).get_config() == config


def small_model(images):
    """A functional model with every custom layer, non-trivial weights and BN statistics."""
    rng = np.random.default_rng(21)
    inputs = keras.Input(images.shape[1:])
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(16, 3, strides=4, padding="same", name="stem")(x)
    x = LRUBlock(16, reuse=2, name="block")(x)
    x = ChannelShuffle(4, swap_halves=False, name="shuffle")(x)
    x = GroupedPointwiseConv2D(8, groups=4, name="pointwise")(x)
    x = Reused(keras.layers.Conv2D(8, 3, padding="same"), times=2, residual=True,
               activation="relu", shuffle=ChannelShuffle(), name="reused_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = Reused([keras.layers.Dense(8), keras.layers.Dense(8)], times=3, activation="tanh",
               name="reused_dense")(x)
    model = keras.Model(inputs, x)
    model.set_weights([
        rng.uniform(0.3, 2.0, w.shape).astype(np.float32) if "variance" in w.path
        else rng.normal(0, 0.5, w.shape).astype(np.float32)
        for w in model.weights
    ])
    return model


def test_keras_file_round_trip_of_model_with_all_custom_layers(tmp_path, cifar10_images):
    images = cifar10_images[0][:8].astype(np.float32)
    model = small_model(images)
    expected = model.predict(images, verbose=0)
    assert np.std(expected) > 1e-2

    path = tmp_path / "custom_layers.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), expected)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    assert len(loaded.weights) == len(model.weights)
    block = loaded.get_layer("block")
    assert [v.path for v in block.weights if v.path.endswith("kernel")] == \
        ["block/dw/kernel", "block/pw/kernel"]
