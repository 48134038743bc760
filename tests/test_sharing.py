"""`lru_keras.sharing.share_kernels`: kernel sharing for any functional Keras model (issue 6).

Promises: on a baseline ConvMixer it gives the `sharing="full"` model (parameter count exactly
the paper's Table 1) and that model trains; explicit groups give the K-kernel models; the
gradient of a shared kernel is the sum of its per-use gradients; BatchNorms stay separate;
the input model is untouched; `.keras` round trips are identical. Real CIFAR-10 images.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lru_keras import analysis
from lru_keras.sharing import plan_sharing, share_kernels
from lru_keras.zoo import ConvMixer, SEResNet
from lru_keras.zoo.convmixer import sharing_runs


def trainable(model):
    return analysis.count_parameters(model)["trainable"]


def loss_gradients(model, x, y):
    """The model's probabilities on `x` in training mode and the gradient of the
    cross-entropy on `y` for each trainable variable, by path (all as arrays)."""
    with tf.GradientTape() as tape:
        probabilities = model(x, training=True)
        loss = keras.losses.sparse_categorical_crossentropy(y, probabilities)
    variables = {v.path: v for v in model.trainable_weights}
    grads = tape.gradient(loss, list(variables.values()))
    return np.asarray(probabilities), {k: np.asarray(g) for k, g in zip(variables, grads)}


def assert_keras_round_trip(model, images, path):
    """Saving `model` to the `.keras` file `path` and loading it back gives the same
    outputs on `images` and the same parameter counts; returns the loaded model."""
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0),
                                  model.predict(images, verbose=0))
    assert analysis.count_parameters(loaded) == analysis.count_parameters(model)
    return loaded


@pytest.fixture(scope="module")
def images(cifar10_images):
    x, y = cifar10_images
    return x[:16].astype(np.float32), y[:16]


def test_stage_policy_on_baseline_convmixer_gives_table_1_shared_count():
    baseline = ConvMixer(283, 4)
    assert plan_sharing(baseline) == [
        [f"block{i}_depthwise" for i in range(1, 5)],
        [f"block{i}_pointwise" for i in range(1, 5)],
    ]
    shared = share_kernels(baseline)
    assert trainable(shared) == trainable(ConvMixer(283, 4, sharing="full")) == 112_644
    assert analysis.count_macs(shared) == analysis.count_macs(baseline)


def test_stage_policy_on_baseline_se_resnet_gives_all_stages_sharing():
    baseline = SEResNet(4, share_stages=())
    groups = plan_sharing(baseline)
    assert groups[1] == ["stage2_block1_conv2"] + [
        f"stage2_block{b}_conv{c}" for b in (2, 3, 4) for c in (1, 2)
    ]
    assert len(groups) == 3
    assert trainable(share_kernels(baseline)) == trainable(SEResNet(4, share_stages=(1, 2, 3)))


@pytest.mark.parametrize("depth, kernels", [(16, 8), (20, 4)])
def test_explicit_groups_give_the_k_kernel_convmixer(depth, kernels):
    groups = [
        [f"block{i + 1}_{kind}" for i in run]
        for run in sharing_runs(depth, kernels) for kind in ("depthwise", "pointwise")
    ]
    shared = share_kernels(ConvMixer(384, depth), groups)
    assert trainable(shared) == trainable(ConvMixer(384, depth, sharing=kernels))
    # the paper's ~748K (eight kernels, depth 16) and ~395K (four kernels, depth 20)
    assert trainable(shared) == pytest.approx({8: 748_000, 4: 395_000}[kernels], rel=0.05)


def test_stage_policy_merges_an_already_shared_model_into_full_sharing():
    four = ConvMixer(32, 4, kernel_size=3, sharing=4)
    assert plan_sharing(four) == [["shared1_depthwise", "shared2_depthwise"],
                                  ["shared1_pointwise", "shared2_pointwise"]]
    assert trainable(share_kernels(four)) == trainable(ConvMixer(32, 4, kernel_size=3,
                                                                 sharing="full"))


def test_stages_are_cut_where_the_shape_changes():
    # Three isomorphic 3x3 16->16 convs at 16x16, then at 8x8, then at 16x16 again: the
    # stage policy never shares across the pool and the upsampling.
    inputs = keras.Input((16, 16, 16))
    x = inputs
    for i in (1, 2):
        x = keras.layers.Conv2D(16, 3, padding="same", name=f"a{i}")(x)
        x = keras.layers.BatchNormalization(name=f"a{i}_bn")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    for i in (1, 2):
        x = keras.layers.Conv2D(16, 3, padding="same", name=f"b{i}")(x)
    x = keras.layers.UpSampling2D(name="up")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="c1")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="c2")(x)  # not iso
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="down")(x)  # shape change
    model = keras.Model(inputs, x)
    assert plan_sharing(model) == [["a1", "a2"], ["b1", "b2"]]
    shared = share_kernels(model)
    assert [layer.name for layer in shared.layers if isinstance(layer, keras.layers.Conv2D)] \
        == ["a1", "b1", "c1", "c2", "down"]
    assert {"a1_bn", "a2_bn"} <= {layer.name for layer in shared.layers}


def test_sequential_models_are_accepted():
    model = keras.Sequential([keras.Input((8, 8, 4))] + [
        keras.layers.Conv2D(4, 3, padding="same", name=f"conv{i}") for i in range(3)
    ])
    assert plan_sharing(model) == [["conv0", "conv1", "conv2"]]
    assert trainable(share_kernels(model)) == 4 * 4 * 9 + 4


def test_result_equals_the_model_with_the_first_members_weights_and_leaves_it_untouched(
        images, randomize):
    baseline = randomize(ConvMixer(16, 3, kernel_size=3), seed=1, kernel_noise=0.05)
    before = [w.copy() for w in baseline.get_weights()]
    shared = share_kernels(baseline, name="shared")
    assert shared.name == "shared"
    np.testing.assert_array_equal(shared.get_layer("block1_depthwise").get_weights()[0],
                                  baseline.get_layer("block1_depthwise").get_weights()[0])
    for a, b in zip(before, baseline.get_weights()):
        np.testing.assert_array_equal(a, b)  # the input model is not modified
    assert not {id(v) for v in shared.weights} & {id(v) for v in baseline.weights}
    # Give every member the first member's weights: the shared model computes the same.
    for i in (2, 3):
        for kind in ("depthwise", "pointwise"):
            baseline.get_layer(f"block{i}_{kind}").set_weights(
                baseline.get_layer(f"block1_{kind}").get_weights())
    np.testing.assert_allclose(shared.predict(images[0], verbose=0),
                               baseline.predict(images[0], verbose=0), rtol=1e-5, atol=1e-7)
    # ... BatchNorms (moving statistics included) kept their own weights.
    for i in (1, 2, 3):
        for a, b in zip(shared.get_layer(f"block{i}_pointwise_bn").get_weights(),
                        baseline.get_layer(f"block{i}_pointwise_bn").get_weights()):
            np.testing.assert_array_equal(a, b)


def test_shared_kernel_gradient_is_the_sum_of_its_per_use_gradients(images, randomize):
    x, y = images
    unshared = randomize(ConvMixer(8, 3, kernel_size=3), seed=2, kernel_noise=0.05)
    for i in (2, 3):  # an unshared copy with identical weights in every use
        for kind in ("depthwise", "pointwise"):
            unshared.get_layer(f"block{i}_{kind}").set_weights(
                unshared.get_layer(f"block1_{kind}").get_weights())
    shared = share_kernels(unshared)

    (_, g_shared), (_, g_unshared) = loss_gradients(shared, x, y), loss_gradients(unshared, x, y)
    assert len(g_shared) == len(g_unshared) - 2 * 2 * 2  # 2 kernels + 2 biases twice fewer
    for kind in ("depthwise", "pointwise"):
        for variable in ("kernel", "bias"):
            per_use = [g_unshared[f"block{i}_{kind}/{variable}"] for i in (1, 2, 3)]
            total = g_shared[f"block1_{kind}/{variable}"]
            assert not np.allclose(per_use[0], total, rtol=1e-3)  # not just the first use
            np.testing.assert_allclose(total, sum(per_use), rtol=1e-4,
                                       atol=1e-5 * np.abs(total).max())


def test_shared_baseline_convmixer_trains_on_real_images(cifar10_images):
    x, y = cifar10_images  # 64 real CIFAR-10 test images
    keras.utils.set_random_seed(0)
    shared = share_kernels(ConvMixer(16, 4, kernel_size=5))
    assert trainable(shared) == trainable(ConvMixer(16, 4, kernel_size=5, sharing="full"))
    kernel = shared.get_layer("block1_depthwise").kernel
    start = kernel.numpy().copy()
    # the paper's optimizer and learning rate (AdamW, 0.01); 16 steps of batch 32
    shared.compile(optimizer=keras.optimizers.AdamW(1e-2),
                   loss="sparse_categorical_crossentropy")
    history = shared.fit(x.astype(np.float32), y, batch_size=32, epochs=8, verbose=0,
                         shuffle=False)
    losses = history.history["loss"]  # measured: 2.40 -> 1.84
    assert np.isfinite(losses).all() and losses[-1] < 0.9 * losses[0]
    assert not np.allclose(kernel.numpy(), start)  # the shared kernel itself learned
    assert sum(v is kernel for v in shared.trainable_weights) == 1


def test_keras_round_trip_of_a_shared_model_gives_identical_outputs(images, tmp_path, randomize):
    shared = share_kernels(randomize(ConvMixer(16, 4, kernel_size=5), seed=3,
                                     kernel_noise=0.05))
    loaded = assert_keras_round_trip(shared, images[0], tmp_path / "shared.keras")
    assert len(loaded.get_layer("block1_depthwise")._inbound_nodes) == 4


@pytest.mark.parametrize("policy, message", [
    ("all", "`policy` must be one of"),
    ([["block1_depthwise"]], "at least two distinct layers"),
    ([["block1_depthwise", "nope"]], r"does not have .*\['nope'\]"),
    ([["block1_depthwise", "block1_pointwise"]], "not isomorphic .*classes differ"),
    ([["stem_conv", "block1_pointwise"]], "not isomorphic .*weight shapes differ"),
    ([["block1_depthwise", "block2_depthwise"], ["block2_depthwise", "block3_depthwise"]],
     "in group 0 and in group 1"),
    ([["block1_depthwise_bn", "block2_depthwise_bn"]], "normalization layers are never shared"),
    ([["block1_add", "block2_add"]], "no kernel to share"),
])
def test_invalid_policies_are_explained(policy, message):
    with pytest.raises(ValueError, match=message):
        share_kernels(ConvMixer(8, 3, kernel_size=3), policy)


def test_non_isomorphic_configurations_are_named():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", dilation_rate=2, name="b")(x)
    with pytest.raises(ValueError, match="dilation_rate"):
        share_kernels(keras.Model(inputs, x), [["a", "b"]])
    assert plan_sharing(keras.Model(inputs, x)) == []


def test_subclassed_models_are_refused():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional"):
        share_kernels(Net())
