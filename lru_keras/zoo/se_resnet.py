"""SE-ResNet for CIFAR (Hu et al., "Squeeze-and-excitation networks", 2018) as used by the
kernel-sharing paper (Azadbakht et al., "Drastically reducing the number of trainable
parameters in deep CNNs by inter-layer kernel-sharing", Sec. 3.3), with inter-layer kernel
sharing per stage.

Layout of SE-ResNet-d`depth` with stage widths (64, 128, 256) (channels_last):

    stem:   conv 3x3 (16, no bias) -> BN -> ReLU
    stage s = 1, 2, 3 (stride 1, 2, 2): `depth` post-activation SE basic blocks
        block:  conv 3x3/stride (no bias) -> BN -> ReLU -> conv 3x3 (no bias) -> BN
                -> SE (global average pool -> FC C/16 (no bias) -> ReLU -> FC C (no bias)
                -> sigmoid -> scale) -> + shortcut -> ReLU
        shortcut: identity, or 1x1 conv/stride (no bias) + BN when channels or stride change
    head:   global average pool -> Dense(classes, bias)

Kernel sharing in a stage (`share_stages`): ONE 3x3 kernel serves the second conv of every
block and the first conv of blocks 2..depth (the isomorphic width -> width convs); the first
conv of block 1 and the shortcut change the shape and keep their own kernels. Every call keeps
its own BatchNorm. The paper's figures (CIFAR-10): d8 baseline ~12.1M, d4 shared in all stages
~1.2M, d4 shared in stages 2-3 ~1.4M, d6 shared in stage 3 ~3.1M trainable parameters.
"""

import keras

from lru_keras.validation import require_int, require_positive_int
from lru_keras.zoo import scaffold
from lru_keras.zoo.scaffold import batch_norm

STEM_FILTERS = 16
DEFAULT_WIDTHS = (64, 128, 256)
STAGE_STRIDES = (1, 2, 2)
SE_REDUCTION = 16
DEFAULT_INPUT_SHAPE = (32, 32, 3)
DEFAULT_CLASSES = 10
# Blocks per stage: the paper uses 2..10. Far above, so that a typo is refused before the
# model is built (3 x 64 blocks build in about 10 s; 10**4 would take hours).
MAX_DEPTH = 64


def _conv3x3(filters, strides, name):
    """A 3x3 conv without bias, as a function of its input (padded as PyTorch pads, see
    `scaffold.conv_padding`)."""
    pad, padding = scaffold.conv_padding(3, strides, f"{name}_pad")
    conv = keras.layers.Conv2D(filters, 3, strides=strides, padding=padding, use_bias=False,
                               name=name)
    return lambda x: conv(pad(x))


def _squeeze_excite(x, channels, reduction, name):
    hidden = max(1, channels // reduction)
    # The FCs act on the pooled (batch, channels) matrix: on a (batch, 1, 1, channels) tensor
    # the TFLite converter wraps each Dense in a dozen SHAPE/GATHER/RESHAPE ops.
    s = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    s = keras.layers.Dense(hidden, use_bias=False, name=f"{name}_reduce")(s)
    s = keras.layers.ReLU(name=f"{name}_relu")(s)
    s = keras.layers.Dense(channels, use_bias=False, name=f"{name}_expand")(s)
    s = keras.layers.Activation("sigmoid", name=f"{name}_sigmoid")(s)
    s = keras.layers.Reshape((1, 1, channels), name=f"{name}_reshape")(s)
    return keras.layers.Multiply(name=f"{name}_scale")([x, s])


def _block(x, filters, strides, conv1, conv2, name, reduction):
    """One post-activation SE basic block; conv1/conv2 are callables (maybe a shared layer)."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=strides, use_bias=False, name=f"{name}_shortcut_conv"
        )(x)
        shortcut = batch_norm(f"{name}_shortcut_bn")(shortcut)
    y = conv1(x)
    y = batch_norm(f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = conv2(y)
    y = batch_norm(f"{name}_bn2")(y)
    y = _squeeze_excite(y, filters, reduction, f"{name}_se")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


@scaffold.builder
def SEResNet(
    depth=8,
    widths=DEFAULT_WIDTHS,
    share_stages=(1, 2, 3),
    se_reduction=SE_REDUCTION,
    **common,
):
    """Builds SE-ResNet-d`depth`, optionally with one shared 3x3 kernel per chosen stage.

    Args:
        depth: blocks per stage (the paper: 2..10; d8 is its best baseline on CIFAR), at most
            64.
        widths: channels of the three stages ((64, 128, 256) in the paper), each at most
            `scaffold.MAX_CHANNELS`.
        share_stages: stages (1-based) whose isomorphic 3x3 convs share one kernel: () is the
            baseline, (1, 2, 3) the paper's all-stages sharing, (2, 3) and (3,) its other two.
        se_reduction: reduction ratio of the SE bottleneck (16; the bottleneck keeps at least
            one unit), at most `scaffold.MAX_CHANNELS`.
        weights, input_shape, input_tensor, include_top, include_preprocessing, classes,
            classifier_activation, pooling: keras.applications' (`scaffold.start`); no
            SE-ResNet weights are published, `weights` takes a `.weights.h5` path. Defaults:
            input (32, 32, 3), 10 classes; include_top=False returns the stage-3 feature map.
        name: model name; default "se_resnet_d{depth}" plus "_shared{stages}" when shared.
        feature_extractor, feature_keys: return the stage outputs by name (`scaffold.start`):
            STEM_S1, STAGE1_S1, STAGE2_S2, STAGE3_S4, then TOP with include_top=True or
            `pooling`.
    """
    depth = require_positive_int("depth", depth, high=MAX_DEPTH, unit="blocks per stage")
    if isinstance(widths, (str, bytes)) or not hasattr(widths, "__len__") or (
            len(widths) != len(STAGE_STRIDES)):
        raise ValueError(f"`widths` must give {len(STAGE_STRIDES)} stage widths, e.g. "
                         f"{DEFAULT_WIDTHS}, got {widths!r}.")
    widths = tuple(scaffold.require_channels("widths", w) for w in widths)
    if isinstance(share_stages, (str, bytes)) or not hasattr(share_stages, "__iter__"):
        raise ValueError(
            f"`share_stages` must be a tuple of stage numbers in [1, 2, 3] (e.g. (2, 3)), got "
            f"{share_stages!r}."
        )
    share_stages = tuple(sorted({require_int("share_stages", s, 1, high=len(widths),
                                             unit="(the stage numbers are 1, 2, 3)")
                                 for s in share_stages}))
    # A ratio of C or more leaves an SE bottleneck on C channels one unit (C // ratio, at
    # least 1): one above the widest layer the builders make changes nothing.
    se_reduction = require_positive_int("se_reduction", se_reduction, high=scaffold.MAX_CHANNELS,
                                        unit="(the widest layer's channels)")
    start = scaffold.start(
        "SEResNet", common, default_input_shape=DEFAULT_INPUT_SHAPE,
        default_classes=DEFAULT_CLASSES, min_size=4,
        architecture=dict(depth=depth, widths=widths, share_stages=share_stages,
                          se_reduction=se_reduction))
    name = f"se_resnet_d{depth}" + (
        "_shared" + "".join(map(str, share_stages)) if share_stages else ""
    )

    x = keras.layers.Conv2D(STEM_FILTERS, 3, padding="same", use_bias=False,
                            name="stem_conv")(start.x)
    x = batch_norm("stem_bn")(x)
    x = start.feature("STEM", keras.layers.ReLU(name="stem_relu")(x), 1)

    stride = 1
    for s, (filters, strides) in enumerate(zip(widths, STAGE_STRIDES), start=1):
        stride *= strides
        # The stage's shared kernel: one layer object called by every isomorphic conv.
        shared = (keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                      name=f"stage{s}_shared_conv")
                  if s in share_stages else None)
        for b in range(1, depth + 1):
            block = f"stage{s}_block{b}"
            if b == 1:
                conv1 = _conv3x3(filters, strides, f"{block}_conv1")
            else:
                conv1 = shared or _conv3x3(filters, 1, f"{block}_conv1")
            conv2 = shared or _conv3x3(filters, 1, f"{block}_conv2")
            x = _block(x, filters, strides if b == 1 else 1, conv1, conv2, block, se_reduction)
        start.feature(f"STAGE{s}", x, stride)

    return start.finish(x, start.dense_classifier, name=name)
