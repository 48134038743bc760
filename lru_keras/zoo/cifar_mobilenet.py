"""MobileNet and MobileNetV2 as the LruNet authors sized them for 32x32 and 28x28 inputs: the
baselines of the paper's Table 7 (Köpüklü et al., ICIP 2019), with their published weights.

These are not `keras.applications.MobileNet` / `MobileNetV2` (ImageNet networks for 224x224):
- No early downsampling: the stem conv has stride 1, and MobileNetV2's c=64 row stride 1, so a
  32x32 (or 28x28) image ends on a 4x4 map after three stride-2 layers (total stride 8, not
  32).
- Every stride-2 conv pads one pixel on every side, as PyTorch does (see
  `scaffold.conv_padding`).
- The head is global average pooling, Dropout(0.2) and one Dense layer; MobileNetV2's last
  1x1 conv keeps 1280 channels for width <= 1 (as the ImageNet network does).
- Widths are `int(c * width)`, truncated (0.4x gives 25 channels where Keras would round).

Layouts (all convs without bias, each followed by a BatchNorm):

    CifarMobileNet:    3x3 conv (s1) -> ReLU; 13 x [3x3 depthwise (s) -> ReLU ->
                       1x1 conv -> ReLU]; avg pool -> dropout -> Dense
    CifarMobileNetV2:  3x3 conv (s1) -> ReLU6; 17 inverted residual blocks [1x1 expand (t) ->
                       ReLU6 -> 3x3 depthwise (s) -> ReLU6 -> 1x1 project (linear), + x when the
                       shape is kept]; 1x1 conv (1280) -> ReLU6; avg pool -> dropout -> Dense

Parameter counts and multiply-accumulates equal the authors' networks exactly (e.g. 215,642
and 249,122 trainable parameters for the 0.25x CIFAR-10 models).
"""

import keras

from lru_keras.validation import require_dropout
from lru_keras.zoo import scaffold

DEFAULT_INPUT_SHAPE = (32, 32, 3)
DEFAULT_CLASSES = 10
MIN_SIZE = 8  # three stride-2 layers leave a 1x1 map

# (output channels at width 1, stride) of MobileNet's 13 depthwise-separable blocks.
MOBILENET_BLOCKS = ((64, 2), (128, 2), (128, 1), (256, 1), (256, 1), (512, 2),
                    *[(512, 1)] * 5, (1024, 1), (1024, 1))
# MobileNetV2's rows (expansion t, channels c at width 1, blocks n, stride of the first block).
MOBILENET_V2_ROWS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 1),
                     (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
MOBILENET_V2_LAST = 1280


def _channels(width, base, argument="width"):
    """int(base * width) (truncated, as the reference); ValueError if that leaves none."""
    channels = int(base * width)
    if channels < 1:
        raise ValueError(f"`{argument}`={width!r} is too small: {base} channels x {width} "
                         f"leaves none.")
    return channels


@scaffold.builder
def CifarMobileNet(width=0.25, dropout=0.2, **common):
    """Builds the LruNet paper's MobileNet baseline (see the module docstring).

    Args:
        width: width multiplier (0.25: the CIFAR-10 and Fashion-MNIST weights; 0.4:
            CIFAR-100); at most 4 (1024 x width channels, `scaffold.MAX_CHANNELS`).
        dropout: dropout rate before the classifier (0.2, as trained).
        weights, input_shape, input_tensor, include_top, include_preprocessing, classes,
            classifier_activation, pooling: keras.applications' (`scaffold.start`): raw pixels
            in [0, 255] by default; `classifier_activation=None` returns the reference
            network's logits; include_top=False returns the last block's feature map (4x4
            for 32x32 and 28x28 inputs).
        name: model name; default "cifar_mobilenet_{width}x".
        feature_extractor, feature_keys: return the stage outputs by name (`scaffold.start`;
            the stages cut at the strided blocks 2 and 6): STEM_S1, STAGE1_S2, STAGE2_S4,
            STAGE3_S8, then TOP.
    """
    width = scaffold.require_width(width, widest=MOBILENET_BLOCKS[-1][0])
    dropout = require_dropout(dropout)
    widths = [_channels(width, c) for c, _ in MOBILENET_BLOCKS]
    start = scaffold.start(
        "CifarMobileNet", common, default_input_shape=DEFAULT_INPUT_SHAPE,
        default_classes=DEFAULT_CLASSES, min_size=MIN_SIZE, architecture=dict(width=width))
    x = scaffold.conv_bn(start.x, _channels(width, 32), 3, "stem_conv")
    x = start.feature("STEM", x, 1)
    ends = scaffold.stage_ends([strides for _, strides in MOBILENET_BLOCKS])
    for i, (filters, (_, strides)) in enumerate(zip(widths, MOBILENET_BLOCKS), start=1):
        x = scaffold.conv_bn(x, None, 3, f"block{i}_dw", strides=strides, depthwise=True)
        x = scaffold.conv_bn(x, filters, 1, f"block{i}_pw")
        if i in ends:
            stage, stride = ends[i]
            start.feature(stage, x, stride)
    return start.finish(x, lambda f: start.dense_classifier(f, dropout),
                        name=f"cifar_mobilenet_{width:g}x")


def _inverted_residual(x, expansion, filters, strides, name):
    """MobileNetV2's block: [1x1 expand -> ReLU6] -> 3x3 depthwise -> ReLU6 -> 1x1 project,
    plus the input when stride 1 keeps the channel count (no activation after either)."""
    channels = x.shape[-1]
    y = x
    if expansion != 1:
        y = scaffold.conv_bn(y, channels * expansion, 1, f"{name}_expand", activation="relu6")
    y = scaffold.conv_bn(y, None, 3, f"{name}_dw", strides=strides, depthwise=True,
                         activation="relu6")
    y = scaffold.conv_bn(y, filters, 1, f"{name}_project", activation=None)
    if strides == 1 and channels == filters:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


@scaffold.builder
def CifarMobileNetV2(width=0.25, dropout=0.2, **common):
    """Builds the LruNet paper's MobileNetV2 baseline (see the module docstring).

    Args:
        width: width multiplier (0.25: the CIFAR-10 and Fashion-MNIST weights; 0.4:
            CIFAR-100). The last 1x1 conv has 1280 channels for width <= 1, int(1280 * width)
            above, at most `scaffold.MAX_CHANNELS` (so width <= 3.2).
        dropout: dropout rate before the classifier (0.2, as trained).
        weights, input_shape, input_tensor, include_top, include_preprocessing, classes,
            classifier_activation, pooling: keras.applications' (`scaffold.start`): raw pixels
            in [0, 255] by default; `classifier_activation=None` returns the reference
            network's logits; include_top=False returns the last 1x1 conv's feature map
            (4x4 for 32x32 and 28x28 inputs), as keras.applications' MobileNetV2 does.
        name: model name; default "cifar_mobilenetv2_{width}x".
        feature_extractor, feature_keys: return the stage outputs by name (`scaffold.start`;
            the stages cut at the strided rows 2, 3 and 6): STEM_S1, STAGE1_S1,
            STAGE2_S2, STAGE3_S4, STAGE4_S8, then TOP (the last 1x1 conv's map without the
            head).
    """
    width = scaffold.require_width(width, widest=MOBILENET_V2_LAST)
    dropout = require_dropout(dropout)
    rows = [(t, _channels(width, c), n, s) for t, c, n, s in MOBILENET_V2_ROWS]
    last = MOBILENET_V2_LAST if width <= 1 else _channels(width, MOBILENET_V2_LAST)
    start = scaffold.start(
        "CifarMobileNetV2", common, default_input_shape=DEFAULT_INPUT_SHAPE,
        default_classes=DEFAULT_CLASSES, min_size=MIN_SIZE, architecture=dict(width=width))
    x = scaffold.conv_bn(start.x, _channels(width, 32), 3, "stem_conv", activation="relu6")
    x = start.feature("STEM", x, 1)
    ends = scaffold.stage_ends([strides for *_, strides in rows])
    block = 0
    for row, (expansion, filters, blocks, strides) in enumerate(rows, start=1):
        for i in range(blocks):
            block += 1
            x = _inverted_residual(x, expansion, filters, strides if i == 0 else 1,
                                   f"block{block}")
        if row in ends:
            stage, stride = ends[row]
            start.feature(stage, x, stride)
    x = scaffold.conv_bn(x, last, 1, "head_conv", activation="relu6")
    return start.finish(x, lambda f: start.dense_classifier(f, dropout),
                        name=f"cifar_mobilenetv2_{width:g}x")
