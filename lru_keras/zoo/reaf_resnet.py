"""REAF-ResNet, REAF-WideResNet50, REAF-ResNeXt and their baselines (Zhu et al., IEEE Access
2020, Tables 1-6), all from one ResNet builder.

Layout (channels_last; stage s = 0..3 is the paper's conv2..conv5, stride 1, 2, 2, 2):

    stem "imagenet": conv 7x7/2 (64) -> BN -> ReLU -> max pool 3x3/2        (torchvision)
    stem "cifar":    conv 3x3 (64) -> BN -> ReLU, no pooling                (weiaicunzai/
                     pytorch-cifar100, whose ResNet18/34/50/101 counts are exactly the paper's
                     CIFAR-100 baselines and whose schedule is the paper's: 200 epochs, lr x0.2
                     at 60/120/160)
    bottleneck (depth 50, 101), width W = C * 2^s, W' = C' * 2^s, F = 256 * 2^s:
        1x1 (W) -> BN -> ReLU -> 3x3 (W -> W') -> BN -> ReLU -> 1x1 (F) -> BN
        + shortcut (identity, or 1x1/stride (F) -> BN) -> ReLU
    basic block (depth 18, 34), W = C * 2^s, F = 64 * 2^s:
        3x3 (W) -> BN -> ReLU -> 3x3 (F) -> BN + shortcut -> ReLU
    head: global average pool -> Dense(classes)

The stride of a downsampling bottleneck is on the 3x3 conv (torchvision's "ResNet v1.5", and
pytorch-cifar100's) unless `strided_conv="1x1"` (the original ResNet, keras.applications).
Parameter counts do not depend on it; MACs do: the paper's ResNet50/101 GFLOPs match "1x1"
and its WideResNet50 and CIFAR ResNeXt/REAF rows match "3x3" (tests/test_reaf_tables.py).

Where REAF goes (read off the paper's parameter counts, tests/test_reaf_tables.py):
- `REAFResNet` (Tables 1, 3, 4, 5): the 3x3 conv of each bottleneck (C -> C', Sec. III-C);
  in basic blocks the first 3x3 conv (in -> C), which reproduces REAF-ResNet18 on ImageNet.
- `REAFResNeXt` (Tables 2, 6): all three convs of every bottleneck, base width 64; the
  ResNeXt baseline (`config=None`) groups all three with G = 4 at base width 128 (the paper's
  20.89M / 19.04M / 33.60M; its Table 2 prints 64, which gives 10.05M).
- Shortcut convs, stem and classifier are plain.

`REAFResNet(config=None)` is the plain ResNet, `WideResNet50()` torchvision's
wide_resnet50_2, `REAFResNeXt(config=None)` the G = 4 ResNeXt; no pretrained weights exist.
"""

import keras

from lru_keras.layers import GroupedPointwiseConv2D
from lru_keras.layers.reaf import REAFConv2D, REAFPlusNormalization, parse_reaf_groups
from lru_keras.validation import require_choice, require_positive_int
from lru_keras.zoo import scaffold
from lru_keras.zoo.scaffold import batch_norm

STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
# Widths double at each stage after conv2: conv5's are conv2's x 8.
LAST_STAGE_SCALE = 8
STEM_FILTERS = 64
STEMS = ("imagenet", "cifar")
DEFAULT_INPUT_SHAPE = {"imagenet": (224, 224, 3), "cifar": (32, 32, 3)}
DEFAULT_CLASSES = {"imagenet": 1000, "cifar": 100}
# Per-channel mean/std of the paper's input normalisation: ImageNet's (torchvision) and
# CIFAR-100's training set (pytorch-cifar100).
PIXEL_STATS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar": ((0.5070751592371323, 0.48654887331495095, 0.4409178433670343),
              (0.2673342858792401, 0.2564384629170883, 0.27615047132568404)),
}
STRIDED_CONVS = ("3x3", "1x1")
PLAIN = (1, 1, 1)


def conv_init():
    """torchvision's ResNet init (kaiming normal, fan_out), on the compact REAF kernels."""
    return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


def parse_config(config, name="config"):
    """None (plain convs) or (G_I, G_M, G_O) from "4-3-4" / a 3-tuple (see REAFConv2D)."""
    return None if config is None else parse_reaf_groups(config, name)


def config_text(groups):
    return "-".join(map(str, groups))


def require_stage_width(name, value):
    """A width at conv2 (`base_width`, `out_width`) as an int; ValueError unless conv5's,
    `LAST_STAGE_SCALE` times it, stays within `scaffold.MAX_CHANNELS` (so at most 512; the
    paper's widest is 136)."""
    return scaffold.require_channels(name, value, widest_per_unit=LAST_STAGE_SCALE)


def require_groups(name, groups, width):
    """Groups of a grouped conv on `width` channels at conv2 (doubled later) as an int;
    ValueError unless they divide `width` (which bounds them too)."""
    groups = require_positive_int(name, groups)
    if width % groups:
        raise ValueError(f"`{name}`={groups} must divide base_width={width} (every group "
                         f"takes the same number of channels); allowed: the divisors of "
                         f"{width}.")
    return groups


# ------------------------------------------------------------------------------------------
# Pieces shared with reaf_plus.py
# ------------------------------------------------------------------------------------------
def conv(x, filters, kernel_size, strides, groups, name, use_bias=False):
    """A conv with REAF `groups` (G_I, G_M, G_O): plain Conv2D for (1, 1, 1), the fast grouped
    1x1 for (G, 1, G), else REAFConv2D; padded as PyTorch pads (`scaffold.conv_padding`)."""
    groups = tuple(groups)
    pad, padding = scaffold.conv_padding(kernel_size, strides, f"{name}_pad")
    x = pad(x)
    options = dict(use_bias=use_bias, kernel_initializer=conv_init(), name=name)
    if groups == PLAIN:
        layer = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                                    **options)
    elif kernel_size == 1 and strides == 1 and groups[1] == 1 and groups[0] == groups[2]:
        layer = GroupedPointwiseConv2D(filters, groups=groups[0], **options)
    else:
        layer = REAFConv2D(filters, kernel_size, strides=strides, groups=groups,
                           padding=padding, **options)
    return layer(x)


def start_model(builder, common, architecture):
    """`scaffold.start` for the REAF paper's models: defaults, minimum input size and input
    standardisation of their stem (`architecture["stem"]`, "imagenet" or "cifar")."""
    stem = require_choice("stem", architecture["stem"], STEMS)
    return scaffold.start(
        builder, common, default_input_shape=DEFAULT_INPUT_SHAPE[stem],
        default_classes=DEFAULT_CLASSES[stem], min_size=32 if stem == "imagenet" else 4,
        pixel_stats=PIXEL_STATS[stem], architecture=architecture)


def classifier(start, dropout=0.0):
    """The head of the paper's models: "avg_pool" -> (Dropout "dropout") -> Dense
    "predictions" with the classifier activation inside."""
    def top(x):
        x = scaffold.global_pool(x, "avg")
        if dropout:
            x = keras.layers.Dropout(dropout, name="dropout")(x)
        return keras.layers.Dense(start.classes, activation=start.classifier_activation,
                                  name="predictions")(x)
    return top


# ------------------------------------------------------------------------------------------
# The ResNet family
# ------------------------------------------------------------------------------------------
def _bottleneck(x, width, out_width, filters, strides, groups, plus_groups, strided_conv,
                name):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv(x, filters, 1, strides, PLAIN, f"{name}_0_conv")
        shortcut = batch_norm(f"{name}_0_bn")(shortcut)
    y = conv(x, width, 1, strides if strided_conv == "1x1" else 1, groups["conv1"],
             f"{name}_1_conv")
    y = batch_norm(f"{name}_1_bn")(y)
    y = keras.layers.ReLU(name=f"{name}_1_relu")(y)
    y = conv(y, out_width, 3, strides if strided_conv == "3x3" else 1, groups["conv2"],
             f"{name}_2_conv")
    conv3_groups = groups["conv3"]
    if plus_groups > 1:  # REAF+ (Eq. 8) on the third conv: g_O BN + ReLU pairs on its input
        y = REAFPlusNormalization(plus_groups, "relu", name=f"{name}_2_reaf_plus")(y)
        conv3_groups = (plus_groups, 1, plus_groups)
    else:
        y = batch_norm(f"{name}_2_bn")(y)
        y = keras.layers.ReLU(name=f"{name}_2_relu")(y)
    y = conv(y, filters, 1, 1, conv3_groups, f"{name}_3_conv")
    y = batch_norm(f"{name}_3_bn")(y)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def _basic_block(x, width, filters, strides, groups, name):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv(x, filters, 1, strides, PLAIN, f"{name}_0_conv")
        shortcut = batch_norm(f"{name}_0_bn")(shortcut)
    y = conv(x, width, 3, strides, groups["conv1"], f"{name}_1_conv")
    y = batch_norm(f"{name}_1_bn")(y)
    y = keras.layers.ReLU(name=f"{name}_1_relu")(y)
    y = conv(y, filters, 3, 1, groups["conv2"], f"{name}_2_conv")
    y = batch_norm(f"{name}_2_bn")(y)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet_features(start, *, depth, base_width, out_width, groups, plus_groups=1, stem,
                    strided_conv):
    """The ResNet on the (preprocessed) input `start.x`, up to conv5; `groups` maps
    "conv1"/"conv2"/"conv3" to REAF groups. Names the features (`Start.feature`): STEM (the
    stem's ReLU, before the max pool) and STAGE1..4 (conv2..conv5)."""
    x = start.x
    if stem == "imagenet":
        pad, padding = scaffold.conv_padding(7, 2, "conv1_pad")
        x = keras.layers.Conv2D(STEM_FILTERS, 7, strides=2, padding=padding, use_bias=False,
                                kernel_initializer=conv_init(), name="conv1_conv")(pad(x))
    else:
        x = keras.layers.Conv2D(STEM_FILTERS, 3, padding="same", use_bias=False,
                                kernel_initializer=conv_init(), name="conv1_conv")(x)
    x = batch_norm("conv1_bn")(x)
    x = keras.layers.ReLU(name="conv1_relu")(x)
    stride = 2 if stem == "imagenet" else 1
    x = start.feature("STEM", x, stride)
    if stem == "imagenet":
        # The input is >= 0 (after ReLU), so zero padding = PyTorch's -inf padding here.
        x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
        stride *= 2
    bottleneck = depth >= 50
    for stage, blocks in enumerate(STAGE_BLOCKS[depth]):
        scale = 2**stage  # LAST_STAGE_SCALE at conv5
        filters = STEM_FILTERS * scale * (4 if bottleneck else 1)
        stage_stride = 2 if stage > 0 else 1
        stride *= stage_stride
        for block in range(blocks):
            strides = stage_stride if block == 0 else 1
            block_name = f"conv{stage + 2}_block{block + 1}"
            if bottleneck:
                x = _bottleneck(x, base_width * scale, out_width * scale, filters, strides,
                                groups, plus_groups, strided_conv, block_name)
            else:
                x = _basic_block(x, base_width * scale, filters, strides, groups, block_name)
        start.feature(f"STAGE{stage + 1}", x, stride)
    return x


@scaffold.builder
def REAFResNet(
    depth=50,
    config="4-3-4",
    base_width=None,
    out_width=None,
    stem="imagenet",
    strided_conv="3x3",
    **common,
):
    """REAF-ResNet-`depth` (paper Tables 1, 3, 4, 5), or the plain ResNet with config=None.

    Args:
        depth: 18, 34 (basic blocks), 50 or 101 (bottlenecks).
        config: REAF configuration "G_I-G_M-G_O" (or a 3-tuple) of the 3x3 conv of each
            bottleneck / the first 3x3 conv of each basic block; None: plain ResNet.
        base_width: the paper's C, the width of that conv's input at conv2 (doubled per
            stage); default 72 with a config (the paper's REAF-ResNets), 64 without (ResNet).
        out_width: the paper's C', the REAF conv's output width at conv2 (bottlenecks only);
            default C. E.g. Table 3's "C=88, C'=70, 8-4-70".
        stem: "imagenet" (7x7/2 conv + max pool, 224x224 inputs) or "cifar" (3x3 conv, 32x32).
        strided_conv: "3x3" (torchvision / ResNet v1.5) or "1x1" (original ResNet): which
            bottleneck conv carries the stride of a downsampling block.
        include_top: keep the classifier; False returns the conv5 feature map (or a vector,
            with `pooling`).
        weights: None (random init) or the path of a `.weights.h5` file saved from a model
            built with the same arguments (no published weights exist).
        input_tensor: optional Keras tensor to use as the model input.
        input_shape: (height, width, channels); default (224, 224, 3) / (32, 32, 3).
        pooling: with include_top=False: None, "avg" or "max".
        classes: default 1000 ("imagenet" stem) / 100 ("cifar").
        classifier_activation: activation of the Dense classifier (None returns logits).
        include_preprocessing: the model takes raw pixels in [0, 255] and standardises them
            with the dataset's per-channel mean/std (True), or takes standardised inputs.
        name: model name; default e.g. "reaf_resnet50_72-72_4-3-4" or "resnet50".
        feature_extractor, feature_keys: return the stage outputs by name (`scaffold.start`):
            STEM_S2 (before the max pool), STAGE1_S4, STAGE2_S8, STAGE3_S16, STAGE4_S32
            ("imagenet"); STEM_S1, STAGE1_S1, STAGE2_S2, STAGE3_S4, STAGE4_S8 ("cifar"); then
            TOP with include_top=True or `pooling`.
    """
    depth = int(require_choice("depth", depth, tuple(STAGE_BLOCKS)))
    groups = parse_config(config)
    require_choice("strided_conv", strided_conv, STRIDED_CONVS)
    base_width = require_stage_width(
        "base_width", (72 if groups else 64) if base_width is None else base_width)
    if out_width is not None and depth < 50 and out_width != base_width:
        raise ValueError(
            f"`out_width`={out_width!r} needs a bottleneck ResNet (depth 50 or 101); in the "
            f"basic blocks of depth {depth} the REAF conv's output width is base_width. "
            f"Allowed: None or {base_width}."
        )
    out_width = require_stage_width("out_width",
                                    base_width if out_width is None else out_width)
    reaf = groups or PLAIN
    layout = ({"conv1": PLAIN, "conv2": reaf, "conv3": PLAIN} if depth >= 50
              else {"conv1": reaf, "conv2": PLAIN})
    start = start_model("REAFResNet", common, dict(
        depth=depth, config=None if groups is None else config_text(groups),
        base_width=base_width, out_width=out_width, stem=stem, strided_conv=strided_conv))
    widths = f"{base_width}" + (f"-{out_width}" if depth >= 50 else "")
    name = (f"reaf_resnet{depth}_{widths}_{config_text(groups)}" if groups
            else f"resnet{depth}" + ("" if base_width == 64 else f"_{base_width}"))
    x = resnet_features(start, depth=depth, base_width=base_width, out_width=out_width,
                        groups=layout, stem=stem, strided_conv=strided_conv)
    return start.finish(x, classifier(start), name=name)


@scaffold.builder
def WideResNet50(
    config=None,
    base_width=None,
    out_width=None,
    stem="imagenet",
    strided_conv="3x3",
    **common,
):
    """WideResNet50 (widen 2.0: bottleneck width 128 at conv2, torchvision's
    wide_resnet50_2, 68.88M) or, with a config, REAF-WideResNet50 (paper Table 5:
    "C=136, 4-3-4", 63.11M). `base_width` defaults to 128 without a config and 136 with one;
    the other arguments are REAFResNet's."""
    groups = parse_config(config)
    if base_width is None:
        base_width = 136 if groups else 128
    common["name"] = common["name"] or (
        f"reaf_wide_resnet50_{base_width}_{config_text(groups)}" if groups
        else "wide_resnet50_2" if base_width == 128 else f"wide_resnet50_{base_width}")
    return REAFResNet(50, config=config, base_width=base_width, out_width=out_width, stem=stem,
                      strided_conv=strided_conv, **common)


@scaffold.builder
def REAFResNeXt(
    depth=50,
    config="4-3-4",
    groups=4,
    base_width=None,
    stem="imagenet",
    strided_conv="3x3",
    **common,
):
    """REAF-ResNet with REAF on all three bottleneck convs (paper Tables 2 and 6), or with
    config=None the ResNeXt baseline of those tables: all three convs grouped.

    Args:
        depth: 50 or 101.
        config: "G_I-G_M-G_O" of all three bottleneck convs ("4-3-4"), or None: ResNeXt.
        groups: G of the ResNeXt baseline's grouped convs (4); ignored with a config.
        base_width: bottleneck width at conv2; default 64 with a config, 128 for ResNeXt
            (the paper's counts: 20.39M and 20.89M on ImageNet).
        the rest: as REAFResNet.
    """
    depth = int(require_choice("depth", depth, (50, 101)))
    reaf = parse_config(config)
    if base_width is None:
        base_width = 64 if reaf else 128
    base_width = require_stage_width("base_width", base_width)
    groups = require_groups("groups", groups, base_width)
    conv_groups = reaf or (groups, 1, groups)
    require_choice("strided_conv", strided_conv, STRIDED_CONVS)
    start = start_model("REAFResNeXt", common, dict(
        depth=depth, config=None if reaf is None else config_text(reaf), groups=groups,
        base_width=base_width, stem=stem, strided_conv=strided_conv))
    name = (f"reaf_resnext{depth}_{base_width}_{config_text(reaf)}" if reaf
            else f"resnext{depth}_{groups}x{base_width // groups}d_all")
    x = resnet_features(
        start, depth=depth, base_width=base_width, out_width=base_width,
        groups={"conv1": conv_groups, "conv2": conv_groups, "conv3": conv_groups},
        stem=stem, strided_conv=strided_conv)
    return start.finish(x, classifier(start), name=name)
