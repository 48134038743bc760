"""ShuffleNet and ShuffleNetV2 as the LruNet authors sized them for 32x32 and 28x28 inputs: the
baselines of the paper's Table 7 (Köpüklü et al., ICIP 2019), with their published weights.

As in the authors' code, and unlike the ImageNet networks of the ShuffleNet papers:
- The stem is one stride-1 3x3 conv with no max pool, so a 32x32 (or 28x28) image ends on a
  4x4 map after the three stages (total stride 8, not 32).
- Every stride-2 layer pads one pixel on every side, as PyTorch does; ShuffleNet's shortcut
  average pool counts the padding zeros in its mean (divisor 9).
- ShuffleNet: the first 1x1 conv of the first stage is grouped too, and a ReLU follows the
  depthwise conv's BatchNorm.
- ShuffleNetV2: widths 0.25 and 0.75 are the authors' additions to the paper's table; the head
  pools the 4x4 map with global average pooling (the reference's fixed 4x4 pool, equal on
  32x32 and 28x28 inputs).
- The channel shuffle is ShuffleNet's (`ChannelShuffle(groups, swap_halves=False)`), not
  LruNet's, which swaps the channel halves first.

Layouts (all convs without bias, each followed by a BatchNorm):

    CifarShuffleNet:    3x3 conv -> ReLU; 3 stages of 4, 8, 4 units [grouped 1x1 -> ReLU ->
                        shuffle -> 3x3 depthwise (s) -> ReLU -> grouped 1x1], the first unit of
                        each stage concat[unit(x), avg pool(x)] -> ReLU, the others
                        ReLU(unit(x) + x); avg pool -> Dense
    CifarShuffleNetV2:  3x3 conv (24) -> ReLU; 3 stages of one down unit (two branches on x,
                        concatenated, shuffled) and 3, 7, 3 basic units (half the channels
                        through 1x1 -> ReLU -> 3x3 depthwise -> 1x1 -> ReLU, concatenated after
                        the untouched half, shuffled); 1x1 conv (1024) -> ReLU; avg pool ->
                        Dense
"""

import keras

from lru_keras.layers import ChannelShuffle, ChannelSplit
from lru_keras.validation import require_choice, require_finite_positive
from lru_keras.zoo import scaffold

DEFAULT_INPUT_SHAPE = (32, 32, 3)
DEFAULT_CLASSES = 10
MIN_SIZE = 8  # three stride-2 layers leave a 1x1 map

# ShuffleNet: (stem, stage 1, stage 2, stage 3) channels at width 1, by groups (the authors'
# code defines groups 3 and 8), and the units per stage.
SHUFFLENET_WIDTHS = {3: (24, 240, 480, 960), 8: (24, 384, 768, 1536)}
SHUFFLENET_UNITS = (4, 8, 4)
# ShuffleNetV2: (stage 1, stage 2, stage 3, head) channels by width, a lookup table as in the
# authors' code; the stem has 24 channels at every width.
SHUFFLENET_V2_WIDTHS = {0.25: (32, 64, 128, 1024), 0.5: (48, 96, 192, 1024),
                        0.75: (60, 120, 240, 1024), 1.0: (116, 232, 464, 1024),
                        1.5: (176, 352, 704, 1024), 2.0: (224, 488, 976, 2048)}
SHUFFLENET_V2_STEM = 24
SHUFFLENET_V2_UNITS = (3, 7, 3)  # basic units after each stage's down unit


def shufflenet_channels(width, groups):
    """ShuffleNet's (stem, stage widths) for `width` and `groups`; ValueError when a grouped
    conv would not divide its channels."""
    stem, *stages = [int(c * width) for c in SHUFFLENET_WIDTHS[groups]]
    # Every grouped 1x1 conv reads or writes the stem's or a stage's channels (or their
    # difference), and the first unit's bottleneck (stage 1 - stem) // (4 groups) * groups
    # must keep at least one channel per group.
    if any(c % groups for c in (stem, *stages)) or stages[0] - stem < 4 * groups:
        raise ValueError(
            f"`width`={width!r} does not fit groups={groups}: the stem ({stem} channels) and "
            f"the stage widths {stages} must be multiples of the groups, and stage 1 at least "
            f"{4 * groups} channels wider than the stem; the authors use 0.5 and 0.75."
        )
    return stem, stages


def _unit(x, out_channels, groups, strides, name):
    """ShuffleNet's bottleneck branch: grouped 1x1 -> ReLU -> shuffle -> 3x3 depthwise (s) ->
    ReLU -> grouped 1x1 (no activation); bottleneck width (out // 4g) * g."""
    bottleneck = (out_channels // (4 * groups)) * groups
    y = scaffold.conv_bn(x, bottleneck, 1, f"{name}_conv1", groups=groups)
    y = ChannelShuffle(groups, swap_halves=False, name=f"{name}_shuffle")(y)
    y = scaffold.conv_bn(y, None, 3, f"{name}_conv2", strides=strides, depthwise=True)
    return scaffold.conv_bn(y, out_channels, 1, f"{name}_conv3", groups=groups,
                            activation=None)


@scaffold.builder
def CifarShuffleNet(width=0.5, groups=3, **common):
    """Builds the LruNet paper's ShuffleNet (v1) baseline (see the module docstring).

    Args:
        width: width multiplier (0.5: the CIFAR-10 and Fashion-MNIST weights; 0.75:
            CIFAR-100); stage 3 (960 or 1536 x width channels) at most
            `scaffold.MAX_CHANNELS`.
        groups: groups of the 1x1 convs and of the shuffle, 3 (all weights) or 8.
        weights, input_shape, input_tensor, include_top, include_preprocessing, classes,
            classifier_activation, pooling: keras.applications' (`scaffold.start`): raw pixels
            in [0, 255] by default; `classifier_activation=None` returns the reference
            network's logits; include_top=False returns the last stage's feature map (4x4
            for 32x32 and 28x28 inputs).
        name: model name; default "cifar_shufflenet_{width}x".
        feature_extractor, feature_keys: return the stage outputs by name (`scaffold.start`):
            STEM_S1, STAGE1_S2, STAGE2_S4, STAGE3_S8, then TOP.
    """
    groups = int(require_choice("groups", groups, tuple(SHUFFLENET_WIDTHS)))
    width = scaffold.require_width(width, widest=SHUFFLENET_WIDTHS[groups][-1])
    stem, stages = shufflenet_channels(width, groups)
    start = scaffold.start(
        "CifarShuffleNet", common, default_input_shape=DEFAULT_INPUT_SHAPE,
        default_classes=DEFAULT_CLASSES, min_size=MIN_SIZE,
        architecture=dict(width=width, groups=groups))
    x = scaffold.conv_bn(start.x, stem, 3, "stem_conv")
    x = start.feature("STEM", x, 1)
    for stage, (channels, units) in enumerate(zip(stages, SHUFFLENET_UNITS), start=1):
        for unit in range(units):
            name = f"stage{stage}_unit{unit}"
            if unit == 0:
                branch = _unit(x, channels - x.shape[-1], groups, 2, name)
                pooled = keras.layers.ZeroPadding2D(1, name=f"{name}_pool_pad")(x)
                pooled = keras.layers.AveragePooling2D(3, 2, name=f"{name}_pool")(pooled)
                x = keras.layers.Concatenate(name=f"{name}_concat")([branch, pooled])
            else:
                branch = _unit(x, channels, groups, 1, name)
                x = keras.layers.Add(name=f"{name}_add")([branch, x])
            x = keras.layers.ReLU(name=f"{name}_relu")(x)
        start.feature(f"STAGE{stage}", x, 2**stage)
    return start.finish(x, start.dense_classifier, name=f"cifar_shufflenet_{width:g}x")


def _shuffle_concat(parts, name):
    x = keras.layers.Concatenate(name=f"{name}_concat")(parts)
    return ChannelShuffle(2, swap_halves=False, name=f"{name}_shuffle")(x)


def _down_unit(x, channels, name):
    """ShuffleNetV2's stride-2 unit: both branches read x; each gives half the channels."""
    half = channels // 2
    left = scaffold.conv_bn(x, None, 3, f"{name}_left_dw", strides=2, depthwise=True,
                            activation=None)
    left = scaffold.conv_bn(left, half, 1, f"{name}_left_pw")
    right = scaffold.conv_bn(x, half, 1, f"{name}_right_pw1")
    right = scaffold.conv_bn(right, None, 3, f"{name}_right_dw", strides=2, depthwise=True,
                             activation=None)
    right = scaffold.conv_bn(right, half, 1, f"{name}_right_pw2")
    return _shuffle_concat([left, right], name)


def _basic_unit(x, name):
    """ShuffleNetV2's stride-1 unit: the second half of the channels goes through the branch,
    and is concatenated after the untouched first half."""
    kept, y = ChannelSplit(2, name=f"{name}_split")(x)
    half = y.shape[-1]
    y = scaffold.conv_bn(y, half, 1, f"{name}_pw1")
    y = scaffold.conv_bn(y, None, 3, f"{name}_dw", depthwise=True, activation=None)
    y = scaffold.conv_bn(y, half, 1, f"{name}_pw2")
    return _shuffle_concat([kept, y], name)


@scaffold.builder
def CifarShuffleNetV2(width=0.25, **common):
    """Builds the LruNet paper's ShuffleNetV2 baseline (see the module docstring).

    Args:
        width: one of the authors' widths 0.25, 0.5, 0.75, 1.0, 1.5, 2.0 (0.25: the CIFAR-10
            and Fashion-MNIST weights; 0.75: CIFAR-100).
        weights, input_shape, input_tensor, include_top, include_preprocessing, classes,
            classifier_activation, pooling: keras.applications' (`scaffold.start`): raw pixels
            in [0, 255] by default; `classifier_activation=None` returns the reference
            network's logits; include_top=False returns the last 1x1 conv's feature map (4x4
            for 32x32 and 28x28 inputs).
        name: model name; default "cifar_shufflenetv2_{width}x".
        feature_extractor, feature_keys: return the stage outputs by name (`scaffold.start`):
            STEM_S1, STAGE1_S2, STAGE2_S4, STAGE3_S8, then TOP (the last 1x1 conv's map
            without the head).
    """
    width = require_choice("width", require_finite_positive("width", width),
                           tuple(SHUFFLENET_V2_WIDTHS))
    *stages, last = SHUFFLENET_V2_WIDTHS[width]
    start = scaffold.start(
        "CifarShuffleNetV2", common, default_input_shape=DEFAULT_INPUT_SHAPE,
        default_classes=DEFAULT_CLASSES, min_size=MIN_SIZE, architecture=dict(width=width))
    x = scaffold.conv_bn(start.x, SHUFFLENET_V2_STEM, 3, "stem_conv")
    x = start.feature("STEM", x, 1)
    for stage, (channels, units) in enumerate(zip(stages, SHUFFLENET_V2_UNITS), start=1):
        x = _down_unit(x, channels, f"stage{stage}_unit0")
        for unit in range(1, units + 1):
            x = _basic_unit(x, f"stage{stage}_unit{unit}")
        start.feature(f"STAGE{stage}", x, 2**stage)
    x = scaffold.conv_bn(x, last, 1, "head_conv")
    return start.finish(x, start.dense_classifier, name=f"cifar_shufflenetv2_{width:g}x")
