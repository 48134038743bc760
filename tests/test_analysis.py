"""Model accounting against the LruNet paper: parameter counts, conv parameters, MFLOPs.

The expected values are the paper's Tables 2, 5 and 6 (MFLOPs, within 15%: the paper counts
a little more than conv/dense multiply-accumulates) and the exact trainable parameter counts
of the authors' checkpoints (the tables round them to thousands).
"""

import functools

import keras
import pytest

from lru_keras import analysis
from lru_keras.layers import LRUBlock
from lru_keras.zoo import LruNet

# N: (trainable params, paper MFLOPs)
CIFAR10_1X = {  # Table 2: N-LruNet-1x on CIFAR-10
    1: (131402, 3.47), 2: (137162, 6.30), 4: (148682, 11.97), 6: (160202, 17.63),
    8: (171722, 23.29), 10: (183242, 28.95), 12: (194762, 34.61), 14: (206282, 40.27),
    16: (217802, 45.93),
}
CIFAR100_2X = {  # Table 5: N-LruNet-2x on CIFAR-100
    1: (513956, 10.44), 2: (525476, 19.77), 4: (548516, 38.44), 6: (571556, 57.10),
    8: (594596, 75.76), 10: (617636, 94.42), 12: (640676, 113.08), 14: (663716, 131.74),
    16: (686756, 150.40),
}
FASHION_MNIST_1X = {  # Table 6: N-LruNet-1x on Fashion-MNIST (28x28x1 input)
    1: (130250, 2.85), 2: (136010, 5.40), 4: (147530, 10.50), 6: (159050, 15.61),
    8: (170570, 20.71), 10: (182090, 25.81), 12: (193610, 30.92),
}
TABLES = {
    "cifar10": (dict(), CIFAR10_1X, 125_002),  # paper: "125k" conv params
    "cifar100": (dict(width=2.0, classes=100), CIFAR100_2X, 501_284),  # "501k"
    "fashion_mnist": (dict(input_shape=(28, 28, 1)), FASHION_MNIST_1X, 123_850),  # "124k"
}
ROWS = [(table, n) for table, (_, rows, _) in TABLES.items() for n in rows]


@functools.cache
def counts(table, reuse):
    """Parameter counts and MACs of the paper's model for one table row (built once)."""
    model = LruNet(reuse=reuse, **TABLES[table][0])
    return analysis.count_parameters(model), analysis.count_macs(model)


@pytest.mark.parametrize("table, reuse", ROWS)
def test_trainable_params_match_the_paper_exactly(table, reuse):
    params, _ = counts(table, reuse)
    assert params["trainable"] == TABLES[table][1][reuse][0]


@pytest.mark.parametrize("table, reuse", ROWS)
def test_conv_params_are_the_papers_and_independent_of_reuse(table, reuse):
    params, _ = counts(table, reuse)
    assert params["conv"] == TABLES[table][2]


@pytest.mark.parametrize("table, reuse", ROWS)
def test_mflops_within_15_percent_of_the_paper(table, reuse):
    _, macs = counts(table, reuse)
    paper = TABLES[table][1][reuse][1]
    assert abs(macs / 1e6 / paper - 1) <= 0.15, (macs / 1e6, paper)


def test_conv_macs_of_cifar10_lrunet_1x_by_hand():
    # stem 16*16*64*27 + per reuse (dw + grouped pw of the four stages) 2,498,560
    # + head 2*2*256*64 + classifier 2*2*10*256
    assert counts("cifar10", 1)[1] == 442_368 + 2_498_560 + 65_536 + 10_240 == 3_016_704
    assert counts("cifar10", 14)[1] == 3_016_704 + 13 * 2_498_560 == 35_497_984


def test_non_trainable_params_are_the_batchnorm_moving_statistics():
    params, _ = counts("cifar10", 1)
    # as many moving means and variances as BatchNorm gammas and betas
    assert params["non_trainable"] == params["trainable"] - params["conv"] == 6400


def test_stage_table_is_the_papers_table_1():
    model = LruNet(reuse=2)
    rows = analysis.stage_table(model)
    layout = [(r["name"], r["reuse"], r["output_shape"]) for r in rows]
    assert layout == [
        ("stem_conv", None, (16, 16, 64)),
        ("stage1", 2, (16, 16, 64)), ("stage1_pool", None, (8, 8, 64)),
        ("stage1_concat", None, (8, 8, 128)),
        ("stage2", 2, (8, 8, 128)), ("stage2_pool", None, (4, 4, 128)),
        ("stage2_concat", None, (4, 4, 256)),
        ("stage3", 2, (4, 4, 256)), ("stage3_concat", None, (4, 4, 512)),
        ("stage4", 2, (4, 4, 512)), ("stage4_pool", None, (2, 2, 512)),
        ("head_conv", None, (2, 2, 256)), ("classifier_conv", None, (2, 2, 10)),
        ("avg_pool", None, (10,)),
    ]
    assert rows[0]["kernel"] == "3x3/s2" and rows[1]["kernel"] == "dw 3x3, 1x1 g8"
    assert sum(r["params"] for r in rows) == analysis.count_parameters(model)["trainable"]
    assert sum(r["macs"] for r in rows) == analysis.count_macs(model)
    text = analysis.format_stage_table(rows)
    assert "stage4" in text and "137,162" in text and "5,515,264" in text


def test_a_reused_block_counts_macs_per_call_and_weights_once():
    inputs = keras.Input((8, 8, 16))
    block = LRUBlock(16, reuse=3, groups=4)
    model = keras.Model(inputs, block(inputs))
    per_call = 8 * 8 * 32 * 9 + 8 * 8 * 16 * (32 // 4)  # depthwise 16->32, grouped 1x1 32->16
    assert analysis.count_macs(model) == 3 * per_call
    conv = 3 * 3 * 32 + 8 * 16
    assert analysis.count_parameters(model) == {
        "trainable": conv + 3 * 2 * (32 + 16), "conv": conv, "non_trainable": 3 * 2 * (32 + 16)}


def test_a_layer_called_twice_in_a_graph_counts_twice_and_nested_models_are_walked():
    dense = keras.layers.Dense(4)
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    inputs = keras.Input((4,))
    model = keras.Model(inputs, inner(dense(dense(inputs))))
    assert analysis.count_macs(model) == 2 * 4 * 4 + 4 * 3
    assert analysis.count_parameters(model)["conv"] == (16 + 4) + (12 + 3)


def test_a_layer_it_cannot_see_into_is_an_error_not_a_silent_zero():
    class Hidden(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    inputs = keras.Input((3,))
    with pytest.raises(ValueError, match="cannot count layer"):
        analysis.count_macs(keras.Model(inputs, Hidden()(inputs)))
