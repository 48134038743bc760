"""Every public layer through Keras's own layer harness (`run_layer_test`), as Keras tests its
built-in layers: config and `.keras` serialization round trips, weights created by `build`,
symbolic and eager calls, a `fit` step, and a `dtype="mixed_float16"` instance whose outputs
must be in float16 and weights in float32.

The expected weight counts, parameter counts and output shapes come from each layer's
documented math (its docstring), not from the layer. The same module runs under the JAX and
torch backends in `test_layer_backends.py` (Keras's harness skips its mixed-precision step on
torch without CUDA).
"""

import numpy as np
import pytest

import keras
from keras.src import testing

from lru_keras.layers import (
    ChannelShuffle,
    ChannelSplit,
    GroupedPointwiseConv2D,
    LRUBlock,
    PixelPreprocessing,
    REAFConv2D,
    REAFPlusNormalization,
    Reused,
)
from lru_keras.layers.batch_norm import FusedBatchNormalization


def _conv_out(size, kernel, stride, padding):
    return -(-size // stride) if padding == "same" else (size - kernel) // stride + 1


def _lru_block_case(filters, reuse, groups=8, depth_multiplier=2, kernel_size=3, shuffle=True):
    """LRUBlock (paper Sec. 2.2): one k x k depthwise kernel (F*M channels), one grouped 1x1
    kernel (F*M/groups -> F) and, per reuse, a BatchNorm on F*M and one on F channels, each
    with gamma, beta (trainable) and moving mean/variance."""
    expanded = filters * depth_multiplier
    params = (kernel_size**2 * expanded + expanded // groups * filters
              + reuse * 4 * (expanded + filters))
    return dict(
        layer_cls=LRUBlock,
        init_kwargs=dict(filters=filters, reuse=reuse, groups=groups,
                         depth_multiplier=depth_multiplier, kernel_size=kernel_size,
                         shuffle=shuffle),
        input_shape=(2, 5, 5, filters),
        expected_output_shape=(2, 5, 5, filters),
        expected_num_trainable_weights=2 + 2 * 2 * reuse,
        expected_num_non_trainable_weights=2 * 2 * reuse,
        params=params,
    )


def _reused_conv_case(channels, times, residual, shuffle):
    """Reused([Conv2D(C, 3, same)], N): the conv's kernel and bias once, then per reuse one
    BatchNorm on C channels."""
    return dict(
        layer_cls=Reused,
        init_kwargs=dict(
            layers=[keras.layers.Conv2D(channels, 3, padding="same")], times=times,
            residual=residual, activation="relu",
            shuffle=ChannelShuffle(2) if shuffle else None,
        ),
        input_shape=(2, 4, 4, channels),
        expected_output_shape=(2, 4, 4, channels),
        expected_num_trainable_weights=2 + 2 * times,
        expected_num_non_trainable_weights=2 * times,
        params=9 * channels * channels + channels + times * 4 * channels,
    )


def _reused_dense_pair_case(units, times):
    """Reused([Dense(U), Dense(U)], N) on vectors: 2 kernels + 2 biases, 2 BatchNorms per
    reuse."""
    return dict(
        layer_cls=Reused,
        init_kwargs=dict(layers=[keras.layers.Dense(units), keras.layers.Dense(units)],
                         times=times, residual=True, activation="tanh"),
        input_shape=(3, units),
        expected_output_shape=(3, units),
        expected_num_trainable_weights=4 + 2 * 2 * times,
        expected_num_non_trainable_weights=2 * 2 * times,
        params=2 * (units * units + units) + times * 2 * 4 * units,
    )


def _reaf_case(filters, kernel, strides, groups, in_channels, size, padding, use_bias=True,
               implementation="auto"):
    """REAFConv2D G_I-G_M-G_O (REAF paper Eq. 5-6): kh*kw*(G_M/G_I)*C_in*filters weights,
    plus a bias per filter."""
    g_i, g_m, _ = groups
    out = _conv_out(size, kernel, strides, padding)
    return dict(
        layer_cls=REAFConv2D,
        init_kwargs=dict(filters=filters, kernel_size=kernel, strides=strides, groups=groups,
                         padding=padding, use_bias=use_bias, implementation=implementation),
        input_shape=(2, size, size, in_channels),
        expected_output_shape=(2, out, out, filters),
        expected_num_trainable_weights=2 if use_bias else 1,
        expected_num_non_trainable_weights=0,
        params=kernel * kernel * g_m * in_channels // g_i * filters + (filters if use_bias else 0),
    )


def _reaf_plus_case(output_groups, channels, activation="relu"):
    """REAFPlusNormalization (REAF paper Eq. 8): g_O BatchNorm + activation pairs, returned
    side by side (g_O * C channels), as one BatchNorm over g_O * C channels."""
    return dict(
        layer_cls=REAFPlusNormalization,
        init_kwargs=dict(output_groups=output_groups, activation=activation),
        input_shape=(2, 3, 3, channels),
        expected_output_shape=(2, 3, 3, output_groups * channels),
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=2,
        params=4 * output_groups * channels,
    )


def _grouped_pointwise_case(filters, groups, in_channels, use_bias):
    """GroupedPointwiseConv2D = Conv2D(filters, 1, groups): (C_in / groups) * filters
    weights, plus a bias per filter."""
    return dict(
        layer_cls=GroupedPointwiseConv2D,
        init_kwargs=dict(filters=filters, groups=groups, use_bias=use_bias),
        input_shape=(2, 3, 3, in_channels),
        expected_output_shape=(2, 3, 3, filters),
        expected_num_trainable_weights=2 if use_bias else 1,
        expected_num_non_trainable_weights=0,
        params=in_channels // groups * filters + (filters if use_bias else 0),
    )


CASES = {
    "shuffle-paper-8": dict(
        layer_cls=ChannelShuffle, init_kwargs=dict(groups=2, swap_halves=True),
        input_shape=(2, 3, 3, 8), expected_output_shape=(2, 3, 3, 8),
        expected_num_trainable_weights=0, expected_num_non_trainable_weights=0, params=0),
    "shuffle-4groups-12": dict(
        layer_cls=ChannelShuffle, init_kwargs=dict(groups=4, swap_halves=False),
        input_shape=(2, 12), expected_output_shape=(2, 12),
        expected_num_trainable_weights=0, expected_num_non_trainable_weights=0, params=0),
    # The harness's fit step takes one output tensor; a split returns a list (and has nothing
    # to train), so its training check is off.
    "split-2": dict(
        layer_cls=ChannelSplit, init_kwargs=dict(parts=2),
        input_shape=(2, 3, 3, 8), expected_output_shape=[(2, 3, 3, 4)] * 2,
        expected_num_trainable_weights=0, expected_num_non_trainable_weights=0, params=0,
        run_training_check=False),
    "pixels-0-255": dict(
        layer_cls=PixelPreprocessing, init_kwargs=dict(input_range=(0, 255)),
        input_shape=(2, 3, 3, 3), expected_output_shape=(2, 3, 3, 3),
        expected_num_trainable_weights=0, expected_num_non_trainable_weights=0, params=0),
    "pixels-standardized": dict(
        layer_cls=PixelPreprocessing,
        init_kwargs=dict(input_range=(0, 255), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)),
        input_shape=(2, 3, 3, 3), expected_output_shape=(2, 3, 3, 3),
        expected_num_trainable_weights=0, expected_num_non_trainable_weights=0, params=0),
    "pointwise-g4": _grouped_pointwise_case(8, 4, 16, use_bias=False),
    "pointwise-g2-bias": _grouped_pointwise_case(12, 2, 8, use_bias=True),
    "pointwise-g1": _grouped_pointwise_case(6, 1, 4, use_bias=True),
    "reaf-4-3-4-same": _reaf_case(8, 3, 1, (4, 3, 4), 8, 6, "same"),
    "reaf-8-1-8-stride2": _reaf_case(16, 3, 2, (8, 1, 8), 16, 8, "valid", use_bias=False),
    "reaf-4-2-6-gather": _reaf_case(12, 1, 1, (4, 2, 6), 8, 4, "valid",
                                    implementation="gather"),
    "reaf-1-1-1-plain": _reaf_case(4, 3, 1, (1, 1, 1), 3, 5, "same"),
    "reaf-plus-1": _reaf_plus_case(1, 6),
    "reaf-plus-2-relu6": _reaf_plus_case(2, 4, activation="relu6"),
    "reaf-plus-4": _reaf_plus_case(4, 3),
    "fused-batch-norm": dict(
        layer_cls=FusedBatchNormalization, init_kwargs=dict(momentum=0.9, epsilon=1e-5),
        input_shape=(4, 3, 3, 5), expected_output_shape=(4, 3, 3, 5),
        expected_num_trainable_weights=2, expected_num_non_trainable_weights=2, params=20),
    "reused-conv-1": _reused_conv_case(4, 1, residual=False, shuffle=False),
    "reused-conv-3-residual-shuffle": _reused_conv_case(4, 3, residual=True, shuffle=True),
    "reused-dense-pair-2": _reused_dense_pair_case(5, 2),
    "lru-1": _lru_block_case(16, 1),
    "lru-3": _lru_block_case(16, 3),
    "lru-4-gather-shuffle": _lru_block_case(24, 4),
    "lru-2-groups4": _lru_block_case(32, 2, groups=4),
    "lru-3-no-shuffle": _lru_block_case(16, 3, shuffle=False),
    "lru-2-multiplier3-kernel5": _lru_block_case(16, 2, groups=4, depth_multiplier=3,
                                                 kernel_size=5),
}


# The harness's own `fit` step warns about its generator and, for a layer without weights,
# that nothing is trainable: both about the harness, not the layers.
pytestmark = [
    pytest.mark.filterwarnings("ignore:`shuffle=True` was passed:UserWarning"),
    pytest.mark.filterwarnings("ignore:The model does not have any trainable weights"),
]


class _Harness(testing.TestCase):
    __test__ = False  # a helper for the tests below, not a test case of its own

    def runTest(self):  # unittest needs a test method to instantiate the case
        pass


@pytest.fixture
def harness():
    case = _Harness()
    case.setUp()
    yield case
    case.doCleanups()


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_passes_keras_layer_harness(case, harness):
    spec = dict(CASES[case])
    params = spec.pop("params")
    training = spec.pop("run_training_check", True)
    harness.run_layer_test(
        **spec, run_training_check=training, run_mixed_precision_check=True
    )
    layer = spec["layer_cls"](**spec["init_kwargs"])
    layer(np.zeros(spec["input_shape"], "float32"))
    assert layer.count_params() == params


def test_cases_cover_every_public_layer():
    import lru_keras.layers as layers

    public = {getattr(layers, name) for name in layers.__all__} | {FusedBatchNormalization}
    assert public == {spec["layer_cls"] for spec in CASES.values()}


def test_runs_on_the_backend_asked_for():
    """KERAS_BACKEND picks the backend (test_layer_backends.py runs this module under each)."""
    import os

    assert keras.backend.backend() == os.environ.get("KERAS_BACKEND", "tensorflow")
