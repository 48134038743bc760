"""REAF+ models of the REAF paper's Table 7 (Zhu et al., IEEE Access 2020, Sec. III-E, IV-D):
REAF+-MobileNetV2 and REAF+-ResNeXt50, and (with output_groups=None) their baselines.

REAF+ with g_O = `output_groups` is applied to the third conv of every bottleneck (the second
pointwise conv): the BatchNorm + ReLU(6) in front of it becomes g_O pairs, one per output
group of that conv (`lru_keras.layers.REAFPlusNormalization`), and the conv reads pair l's
copy for its output group l (a 1x1 conv with g_O groups on the g_O copies, the same weights
and multiply-accumulates as the plain conv). Each bottleneck gains 2 * (g_O - 1) * hidden
BatchNorm parameters: +14,272 on MobileNetV2, +15,104 on ResNeXt50 (32x4d) for g_O = 2.

MobileNetV2, stem "imagenet": torchvision's mobilenet_v2 (3.50M; 3x3/2 stem, no conv biases,
no expansion conv in the t = 1 block, dropout 0.2 before the classifier). Stem "cifar":
pytorch-cifar100's MobileNetV2, whose 2,369,380 parameters are the paper's 2.37M: a 1x1 stem
conv on the 1-padded image (34x34 maps), biases on every conv, an expansion conv in the t = 1
block too, strides 1, 2, 2, 2, 1, 1, 1 (final maps 5x5), no dropout.

ResNeXt50: the usual 32x4d (bottleneck width 128 at conv2, the 3x3 conv in 32 groups; 25.03M
on ImageNet, the paper's 23.18M on CIFAR-100), built by `reaf_resnet.resnet_features`.
"""

import keras

from lru_keras.layers import GroupedPointwiseConv2D
from lru_keras.layers.reaf import REAFPlusNormalization
from lru_keras.validation import require_choice, require_dropout, require_positive_int
from lru_keras.zoo import scaffold
from lru_keras.zoo.reaf_resnet import (
    PLAIN, STRIDED_CONVS, classifier, require_groups, require_stage_width, resnet_features,
    start_model,
)
from lru_keras.zoo.scaffold import batch_norm

# (expansion t, output channels c, repeats n, stride s) of MobileNetV2's bottleneck stages.
MOBILENETV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                      (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
CIFAR_STRIDES = (1, 2, 2, 2, 1, 1, 1)  # pytorch-cifar100
MOBILENETV2_STEM, MOBILENETV2_HEAD = 32, 1280
# g_O must divide every bottleneck's output width (gcd 8 for MobileNetV2).
MOBILENETV2_OUTPUT_GROUPS = (None, 1, 2, 4, 8)


def _output_groups(value, allowed=None):
    if value is None:
        return 1
    if allowed is not None:
        require_choice("output_groups", value, allowed)
    return require_positive_int("output_groups", value)


def _mobilenet_conv(x, filters, stride, use_bias, name, kernel_size=1, groups=1):
    if groups > 1:
        return GroupedPointwiseConv2D(filters, groups=groups, use_bias=use_bias, name=name)(x)
    pad, padding = scaffold.conv_padding(kernel_size, stride, f"{name}_pad")
    return keras.layers.Conv2D(filters, kernel_size, strides=stride, padding=padding,
                               use_bias=use_bias, name=name)(pad(x))


def _inverted_residual(x, expansion, filters, stride, cifar, plus_groups, name):
    channels = x.shape[-1]
    hidden = channels * expansion
    y = x
    if expansion != 1 or cifar:
        y = _mobilenet_conv(y, hidden, 1, cifar, f"{name}_expand")
        y = batch_norm(f"{name}_expand_bn")(y)
        y = keras.layers.ReLU(6.0, name=f"{name}_expand_relu")(y)
    pad, padding = scaffold.conv_padding(3, stride, f"{name}_pad")
    y = keras.layers.DepthwiseConv2D(3, strides=stride, padding=padding, use_bias=cifar,
                                     name=f"{name}_depthwise")(pad(y))
    if plus_groups > 1:
        y = REAFPlusNormalization(plus_groups, "relu6", name=f"{name}_reaf_plus")(y)
    else:
        y = batch_norm(f"{name}_depthwise_bn")(y)
        y = keras.layers.ReLU(6.0, name=f"{name}_depthwise_relu")(y)
    y = _mobilenet_conv(y, filters, 1, cifar, f"{name}_project", groups=plus_groups)
    y = batch_norm(f"{name}_project_bn")(y)
    if stride == 1 and channels == filters:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


@scaffold.builder
def REAFPlusMobileNetV2(
    output_groups=2,
    stem="imagenet",
    dropout=None,
    **common,
):
    """REAF+-MobileNetV2 (paper Table 7), or MobileNetV2 with output_groups=None.

    Args:
        output_groups: g_O of REAF+ on every bottleneck's project conv (2 in the paper), one
            of None/1 (baseline), 2, 4, 8.
        stem: "imagenet" (torchvision's model, 224x224) or "cifar" (pytorch-cifar100's, 32x32);
            see the module docstring.
        dropout: before the classifier; default 0.2 ("imagenet") / 0 ("cifar").
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, include_preprocessing, name, feature_extractor, feature_keys:
            as `REAFResNet`. The features (stages cut at the strided rows): "imagenet"
            STEM_S2, STAGE1_S2, STAGE2_S4, STAGE3_S8, STAGE4_S16, STAGE5_S32; "cifar" STEM_S1,
            STAGE1_S1, STAGE2_S2, STAGE3_S4, STAGE4_S8 (on the 1-padded image: an HxW input
            gives ceil((H + 2) / stride) rows); then TOP (the head conv's map without the
            head).
    """
    plus_groups = _output_groups(output_groups, MOBILENETV2_OUTPUT_GROUPS)
    cifar = stem == "cifar"
    if dropout is None:
        dropout = 0.0 if cifar else 0.2
    dropout = require_dropout(dropout)
    start = start_model("REAFPlusMobileNetV2", common,
                        dict(output_groups=output_groups, stem=stem))
    name = ("reaf_plus_" if plus_groups > 1 else "") + "mobilenetv2" + (
        f"_g{plus_groups}" if plus_groups > 1 else "") + ("_cifar" if cifar else "")

    stem_stride = 1 if cifar else 2
    if cifar:
        pad = keras.layers.ZeroPadding2D(1, name="stem_pad")
        x = keras.layers.Conv2D(MOBILENETV2_STEM, 1, name="stem_conv")(pad(start.x))
    else:
        x = _mobilenet_conv(start.x, MOBILENETV2_STEM, stem_stride, False, "stem_conv",
                            kernel_size=3)
    x = batch_norm("stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    x = start.feature("STEM", x, stem_stride)
    strides = CIFAR_STRIDES if cifar else [s for *_, s in MOBILENETV2_STAGES]
    ends = scaffold.stage_ends(strides, stem_stride)
    block = 0
    for row, ((expansion, filters, repeats, _), stride) in enumerate(
            zip(MOBILENETV2_STAGES, strides), start=1):
        for i in range(repeats):
            x = _inverted_residual(x, expansion, filters, stride if i == 0 else 1, cifar,
                                   plus_groups, f"block_{block}")
            block += 1
        if row in ends:
            stage, total_stride = ends[row]
            start.feature(stage, x, total_stride)
    x = _mobilenet_conv(x, MOBILENETV2_HEAD, 1, cifar, "head_conv")
    x = batch_norm("head_bn")(x)
    x = keras.layers.ReLU(6.0, name="head_relu")(x)
    return start.finish(x, classifier(start, dropout), name=name)


@scaffold.builder
def REAFPlusResNeXt50(
    output_groups=2,
    cardinality=32,
    base_width=128,
    stem="imagenet",
    strided_conv="3x3",
    **common,
):
    """REAF+-ResNeXt50 (paper Table 7), or ResNeXt50 (32x4d) with output_groups=None.

    Args:
        output_groups: g_O of REAF+ on every bottleneck's third conv (2 in the paper); None or
            1 for the baseline. Must divide 256.
        cardinality: groups of the 3x3 convs (32).
        base_width: bottleneck width at conv2 (128 = 32 x 4d).
        the rest: as `REAFResNet`.
    """
    plus_groups = _output_groups(output_groups)
    if 256 % plus_groups:
        raise ValueError(
            f"`output_groups`={output_groups!r} must divide the 256 output channels of the "
            f"first stage's third conv; allowed: None or a divisor of 256."
        )
    base_width = require_stage_width("base_width", base_width)
    cardinality = require_groups("cardinality", cardinality, base_width)
    require_choice("strided_conv", strided_conv, STRIDED_CONVS)
    start = start_model("REAFPlusResNeXt50", common, dict(
        output_groups=output_groups, cardinality=cardinality, base_width=base_width,
        stem=stem, strided_conv=strided_conv))
    name = ("reaf_plus_" if plus_groups > 1 else "") + (
        f"resnext50_{cardinality}x{base_width // cardinality}d") + (
        f"_g{plus_groups}" if plus_groups > 1 else "")
    x = resnet_features(
        start, depth=50, base_width=base_width, out_width=base_width,
        groups={"conv1": PLAIN, "conv2": (cardinality, 1, cardinality), "conv3": PLAIN},
        plus_groups=plus_groups, stem=stem, strided_conv=strided_conv)
    return start.finish(x, classifier(start), name=name)
