"""LruNet (Köpüklü et al., "Convolutional Neural Networks with Layer Reuse", ICIP 2019).

Built exactly like the authors' reference network (okankop/CNN-layer-reuse), so their
checkpoints port to it and `classifier_activation=None` returns the reference network's
output. Layout for a 32x32 input and width 1 (paper Table 1):

    conv 3x3/s2 (64) -> BN -> ReLU                       16x16x64
    LRU block F=64, N reuses                             16x16x64
    maxpool 3x3/s2, concat with itself                    8x8x128
    LRU block F=128, N reuses                             8x8x128
    maxpool 3x3/s2, concat with itself                    4x4x256
    LRU block F=256, N reuses, concat with itself         4x4x512
    LRU block F=512, N reuses, maxpool 3x3/s2             2x2x512
    head: grouped 1x1 conv (256) -> BN -> ReLU -> dropout -> 1x1 conv (classes) -> ReLU
          -> average pool                                 classes
"""

import keras

from lru_keras.layers import GroupedPointwiseConv2D, LRUBlock
from lru_keras.layers.reuse import MAX_REUSES
from lru_keras.validation import require_bool, require_dropout, require_positive_int
from lru_keras.zoo import scaffold

STEM_FILTERS = 64
BASE_WIDTHS = (64, 128, 256, 512)
HEAD_GROUPS = 8
DEFAULT_INPUT_SHAPE = (32, 32, 3)
DEFAULT_CLASSES = 10


def stage_widths(width):
    """F of the four LRU blocks for a width multiplier; each must be a multiple of 8 (groups),
    and the widest layer (stage 4) within `scaffold.MAX_CHANNELS`."""
    first = BASE_WIDTHS[0] * scaffold.require_width(width, widest=BASE_WIDTHS[-1])
    if not (first == int(first) and int(first) % HEAD_GROUPS == 0):
        raise ValueError(
            f"`width` must be a positive multiple of 0.125 (so that 64*width is a multiple of "
            f"the 8 groups), got {width!r}."
        )
    return tuple(int(first) * 2**i for i in range(4))


def _max_pool(x, name):
    # The reference pads 1 with -inf; inputs here follow a ReLU (>= 0), so zeros never win the
    # max and zero padding + valid pooling gives the same windows (Keras "same" would not: it
    # pads only at the bottom/right).
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return keras.layers.MaxPooling2D(3, strides=2, padding="valid", name=name)(x)


def _double_channels(x, name):
    return keras.layers.Concatenate(axis=-1, name=name)([x, x])


@scaffold.builder
def LruNet(
    reuse=14,
    width=1.0,
    dropout=0.5,
    shuffle=True,
    **common,
):
    """Builds N-LruNet-(width)x, optionally with pretrained weights.

    Args:
        reuse: N, how many times each LRU block is reused (paper: 1..16; at most 64).
        width: width multiplier alpha (stage widths 64/128/256/512 x alpha), a multiple of 1/8
            (at most 8: `scaffold.MAX_CHANNELS` channels in stage 4).
        weights: None (random init), a dataset name with published weights ("cifar10",
            "cifar100", "fashion_mnist"; see `lru_keras.zoo.list_weights()`), or the path of a
            `.weights.h5` file saved from a model built with the same arguments.
        input_shape: (height, width, channels); default: the weights' shape, else (32, 32, 3).
        include_top: keep the classifier head; False returns the 2x2 feature map of stage 4
            (or a vector, with `pooling`).
        include_preprocessing: the model takes raw pixels in [0, 255] (True) or [0, 1] (False).
        classes: number of classes; default: the weights' classes, else 10.
        classifier_activation: activation on the class scores (None returns the pooled scores,
            which are the reference network's output).
        dropout: dropout rate before the last 1x1 conv (0.5 in the paper, 0.7 for CIFAR-100).
        shuffle: channel shuffle between reuses (paper Table 3).
        pooling: with include_top=False: None, "avg" or "max".
        input_tensor: optional Keras tensor to use as the model input.
        name: model name; default "lrunet{N}_{width}x".
        feature_extractor, feature_keys: return the stage outputs by name (`scaffold.start`):
            STEM_S2, STAGE1_S2, STAGE2_S4, STAGE3_S8, STAGE4_S8 (each LRU block's output,
            before its pool), then TOP.
    """
    reuse = require_positive_int("reuse", reuse, high=MAX_REUSES, unit="reuses per block")
    widths = stage_widths(width)
    width = float(width)  # a NumPy scalar too: the name and the weights lookup take floats
    dropout = require_dropout(dropout)
    shuffle = require_bool("shuffle", shuffle)
    start = scaffold.start(
        "LruNet", common, default_input_shape=DEFAULT_INPUT_SHAPE,
        default_classes=DEFAULT_CLASSES, min_size=16,
        architecture=dict(reuse=reuse, width=width, shuffle=shuffle))
    stem_filters = STEM_FILTERS if widths[0] % STEM_FILTERS == 0 else widths[0]
    pad, padding = scaffold.conv_padding(3, 2, "stem_pad")
    x = keras.layers.Conv2D(stem_filters, 3, strides=2, padding=padding, use_bias=False,
                            name="stem_conv")(pad(start.x))
    x = scaffold.batch_norm("stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    if widths[0] != stem_filters:  # width 2 in the reference: the stem output is repeated
        x = keras.layers.Concatenate(axis=-1, name="stem_repeat")(
            [x] * (widths[0] // stem_filters)
        )
    stride = 2
    x = start.feature("STEM", x, stride)
    for stage, filters in enumerate(widths, start=1):
        x = LRUBlock(filters, reuse=reuse, shuffle=shuffle, name=f"stage{stage}")(x)
        start.feature(f"STAGE{stage}", x, stride)
        if stage in (1, 2, 4):
            x = _max_pool(x, f"stage{stage}_pool")
            stride *= 2
        if stage in (1, 2, 3):
            x = _double_channels(x, f"stage{stage}_concat")

    def top(x):
        x = GroupedPointwiseConv2D(widths[-1] // 2, groups=HEAD_GROUPS, use_bias=False,
                                   name="head_conv")(x)
        x = scaffold.batch_norm("head_bn")(x)
        x = keras.layers.ReLU(name="head_relu")(x)
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
        x = keras.layers.Conv2D(start.classes, 1, name="classifier_conv")(x)
        x = keras.layers.ReLU(name="classifier_relu")(x)
        x = scaffold.global_pool(x, "avg")
        return scaffold.predictions(x, start.classifier_activation)

    return start.finish(x, top, name=f"lrunet{reuse}_{width:g}x")
