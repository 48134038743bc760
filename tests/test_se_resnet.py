"""SE-ResNet with per-stage kernel sharing (issue 6; ../shared/papers/kernel-sharing.md, 3.3).

The paper gives rounded parameter counts ("~12.1M") and, more precisely, the ratios between
them ("9.7 times fewer"); both are checked, on CIFAR-10 and CIFAR-100.
"""

import functools
import re

import keras
import numpy as np
import pytest

from lru_keras import analysis
from lru_keras.zoo import SEResNet, get_builder
from test_sharing import assert_keras_round_trip, loss_gradients

# (depth, share_stages, classes) -> the paper's parameter count.
PAPER_PARAMS = {
    (8, (), 10): 12_100_000,         # optimum baseline, CIFAR-10
    (4, (1, 2, 3), 10): 1_200_000,   # all stages, optimum d4
    (4, (2, 3), 10): 1_400_000,      # stages 2-3, optimum d4
    (6, (3,), 10): 3_100_000,        # stage 3 only, optimum d6
    (8, (), 100): 12_100_000,        # CIFAR-100 optimum baseline
    (4, (1, 2, 3), 100): 1_300_000,  # all stages, d4
    (3, (2, 3), 100): 1_400_000,     # stages 2-3, d3
    (6, (3,), 100): 3_100_000,       # stage 3 only, d6
}
# "... N times fewer trainable parameters" than the d8 baseline of the same dataset.
PAPER_RATIOS = {
    (4, (1, 2, 3), 10): 9.7, (4, (2, 3), 10): 8.3, (6, (3,), 10): 3.9,
    (4, (1, 2, 3), 100): 9.6, (3, (2, 3), 100): 8.64, (6, (3,), 100): 3.9,
}


@functools.cache
def params(depth, share_stages=(), classes=10):
    model = SEResNet(depth, share_stages=share_stages, classes=classes)
    return analysis.count_parameters(model)["trainable"]


@pytest.fixture(scope="module")
def images(cifar10_images):
    x, y = cifar10_images
    return x[:16].astype(np.float32), y[:16]


@pytest.mark.parametrize("key", sorted(PAPER_PARAMS, key=str), ids=str)
def test_trainable_params_within_5_percent_of_the_paper(key):
    assert params(*key) == pytest.approx(PAPER_PARAMS[key], rel=0.05)


@pytest.mark.parametrize("key", sorted(PAPER_RATIOS, key=str), ids=str)
def test_reduction_ratios_equal_the_papers(key):
    digits = len(str(PAPER_RATIOS[key]).split(".")[1])
    ratio = params(8, (), key[2]) / params(*key)
    # The paper truncates 8.647 to 8.64; the others are rounded.
    assert PAPER_RATIOS[key] in (round(ratio, digits), int(ratio * 10**digits) / 10**digits)


def test_d6_sharing_stage_3_saves_28_percent_over_the_d3_baseline():
    # Sec. 3.3: "save approximately 28% trainable parameters without any drop in accuracy".
    assert round(1 - params(6, (3,)) / params(3), 2) == 0.28


def test_layout_and_sharing_of_one_stage():
    model = SEResNet(3, widths=(8, 16, 32), share_stages=(2,), input_shape=(32, 32, 3))
    names = [layer.name for layer in model.layers]
    shared = model.get_layer("stage2_shared_conv")
    # one 3x3 kernel: conv2 of blocks 1..3 and conv1 of blocks 2..3
    assert len(shared._inbound_nodes) == 2 * 3 - 1
    assert not [n for n in names if re.match(r"stage2_block[23]_conv[12]$", n)]
    assert "stage2_block1_conv1" in names and "stage2_block1_shortcut_conv" in names
    # stages 1 and 3 are not shared: one conv per place
    assert all(f"stage{s}_block{b}_conv{c}" in names
               for s in (1, 3) for b in (1, 2, 3) for c in (1, 2))
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 1 + 3 * (2 * 3 + 1)  # stem, 2 per block, 1 per projection shortcut
    for stage, size in ((1, 32), (2, 16), (3, 8)):
        assert model.get_layer(f"stage{stage}_block3_out").output.shape[1:] == \
            (size, size, (8, 16, 32)[stage - 1])
    se = model.get_layer("stage3_block1_se_reduce")
    assert se.kernel.shape == (32, 2) and not se.use_bias  # reduction 16, no bias


def test_shared_kernel_gradient_is_the_sum_of_its_per_use_gradients(images, randomize):
    x, y = images
    shared = randomize(SEResNet(2, widths=(8, 16, 32), share_stages=(2,)), seed=1,
                       kernel_noise=0.05)
    unshared = SEResNet(2, widths=(8, 16, 32), share_stages=())
    uses = ["stage2_block1_conv2", "stage2_block2_conv1", "stage2_block2_conv2"]
    for layer in unshared.layers:
        if layer.weights:
            source = "stage2_shared_conv" if layer.name in uses else layer.name
            layer.set_weights(shared.get_layer(source).get_weights())

    p_shared, g_shared = loss_gradients(shared, x, y)
    p_unshared, g_unshared = loss_gradients(unshared, x, y)
    np.testing.assert_allclose(p_shared, p_unshared, rtol=1e-5, atol=1e-7)
    per_use = [g_unshared[f"{name}/kernel"] for name in uses]
    assert all(np.abs(g).max() > 0 for g in per_use)
    total = g_shared["stage2_shared_conv/kernel"]
    np.testing.assert_allclose(total, sum(per_use), rtol=1e-4, atol=1e-5 * np.abs(total).max())


def test_keras_round_trip_gives_identical_outputs(images, tmp_path, randomize):
    model = randomize(SEResNet(2, widths=(8, 16, 32), share_stages=(1, 2, 3)), seed=2,
                      kernel_noise=0.05)
    assert_keras_round_trip(model, images[0], tmp_path / "se_resnet.keras")


@pytest.mark.parametrize("kwargs, argument", [
    (dict(share_stages=(4,)), "share_stages"), (dict(share_stages=(0,)), "share_stages"),
    (dict(share_stages=3), "share_stages"),
    (dict(widths=(64, 128)), "widths"), (dict(depth=0), "depth"),
    (dict(pooling="sum", include_top=False), "pooling"), (dict(weights="cifar10"), "weights"),
])
def test_invalid_arguments_are_named(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        SEResNet(**{"depth": 2, **kwargs})


def test_include_top_false_and_registration():
    model = SEResNet(2, widths=(8, 16, 32), include_top=False)
    assert model.output_shape == (None, 8, 8, 32)
    assert SEResNet(2, widths=(8, 16, 32), include_top=False, pooling="avg").output_shape == \
        (None, 32)
    assert get_builder("SEResNet") is SEResNet
