"""ConvMixer (Trockman & Kolter, "Patches are all you need?", 2022), with inter-layer kernel
sharing (Azadbakht et al., "Drastically reducing the number of trainable parameters in deep
CNNs by inter-layer kernel-sharing").

Layout of ConvMixer-`width`/`depth` (channels_last):

    stem:   conv patch x patch / stride patch (width, bias) -> GELU -> BN
    block:  x + BN(GELU(depthwise k x k "same" (bias)(x)))          (residual)
            BN(GELU(pointwise 1x1 (width, bias)(x)))
            ... `depth` blocks
    head:   global average pool -> Dense(classes, bias)

Kernel sharing (paper Sec. 3.1): the `depth` blocks are split into K/2 consecutive runs; all
depthwise convs of a run are ONE layer object (kernel and bias), and so are all pointwise convs
of a run. K = 2 ("full") is the paper's two-kernel model, K = 4 and 8 its four- and
eight-kernel models. Every call keeps its own BatchNorm (BatchNorms are never shared), so the
trainable count grows with depth only by 4 x width per block. Counts (CIFAR-10, kernel 9,
patch 1) are the paper's exactly, e.g. Table 1: ConvMixer-128/4 112,138, shared
ConvMixer-283/4 112,644.
"""

import numbers

import keras

from lru_keras.validation import require_choice, require_positive_int
from lru_keras.zoo import scaffold

DEFAULT_INPUT_SHAPE = (32, 32, 3)
DEFAULT_CLASSES = 10
SHARING_NAMES = ("none", "full")
# Size limits, far above the paper's models (depth 8..32, kernel 3..9, patch 1..14; width is
# bounded by `scaffold.MAX_CHANNELS`), so that a typo is refused before the model is built:
# 128 blocks build in seconds; the depthwise kernel's weights grow with its area, and a kernel
# much larger than the feature map convolves mostly padding.
MAX_DEPTH = 128
MAX_KERNEL_SIZE = 31
MAX_PATCH_SIZE = 64


def sharing_runs(depth, sharing):
    """Block indices (0-based) of each sharing run: one list per shared pair of kernels.

    "none" gives `depth` runs of one block (no sharing); "full" = 2 kernels = one run of every
    block; K kernels = K/2 consecutive runs, as equal as possible (the first `depth % (K/2)`
    runs are one block longer). K/2 = depth is allowed and equals the baseline (paper Fig. 3:
    "the eight-kernel model with a depth of four is the same as the baseline").
    """
    if sharing == "none":
        return [[i] for i in range(depth)]
    kernels = 2 if sharing == "full" else sharing
    if (isinstance(kernels, bool) or not isinstance(kernels, numbers.Integral) or kernels < 2
            or kernels % 2 or kernels // 2 > depth):
        raise ValueError(
            f"`sharing` must be 'none', 'full' or an even number of kernels K with "
            f"2 <= K <= 2 * depth ({2 * depth} for depth={depth}; the paper uses 2, 4 and 8), "
            f"got {sharing!r}."
        )
    kernels = int(kernels)
    runs, extra = divmod(depth, kernels // 2)
    bounds, start = [], 0
    for r in range(kernels // 2):
        size = runs + (1 if r < extra else 0)
        bounds.append(list(range(start, start + size)))
        start += size
    return bounds


@scaffold.builder
def ConvMixer(
    width,
    depth,
    kernel_size=9,
    patch_size=1,
    sharing="none",
    **common,
):
    """Builds ConvMixer-`width`/`depth`, optionally with kernels shared between blocks.

    Args:
        width: channels of every layer after the stem (paper: 128..1152; 384 in Fig. 3); at
            most `scaffold.MAX_CHANNELS`.
        depth: number of blocks (one depthwise + one pointwise conv each), at most 128.
        kernel_size: depthwise kernel size (9 in the paper's CIFAR experiments), at most 31.
        patch_size: stem patch size and stride (1 in the paper's CIFAR experiments), at most
            64 and at most the input's height and width.
        sharing: "none" (baseline), "full" (= 2: one depthwise and one pointwise conv for all
            blocks) or an even number of kernels K (4, 8 in the paper): K/2 consecutive runs
            of blocks, each run sharing one depthwise and one pointwise conv. BatchNorms are
            never shared.
        weights, input_shape, input_tensor, include_top, include_preprocessing, classes,
            classifier_activation, pooling: keras.applications' (`scaffold.start`);
            `weights="cifar10"` loads the weights trained here for ConvMixer-128/8, kernel 5,
            patch 4, sharing "none" or "full" (`zoo.list_weights("ConvMixer")`), or a
            `.weights.h5` path. Defaults:
            input (32, 32, 3), 10 classes; include_top=False returns the last block's feature
            map.
        name: model name; default "convmixer{width}_{depth}" plus "_shared{K}" when shared.
        feature_extractor, feature_keys: return the outputs by name (`scaffold.start`): the
            network is isotropic, so every block is a "stage", all at the patch stride p:
            STEM_Sp, BLOCK1_Sp, ..., BLOCK{depth}_Sp, then TOP with include_top=True or
            `pooling`.
    """
    width = scaffold.require_channels("width", width)
    depth = require_positive_int("depth", depth, high=MAX_DEPTH, unit="blocks")
    kernel_size = require_positive_int("kernel_size", kernel_size, high=MAX_KERNEL_SIZE,
                                       unit="pixels")
    patch_size = require_positive_int("patch_size", patch_size, high=MAX_PATCH_SIZE,
                                      unit="pixels")
    if isinstance(sharing, str):
        require_choice("sharing", sharing, SHARING_NAMES)
    runs = sharing_runs(depth, sharing)
    sharing = sharing if isinstance(sharing, str) else 2 * len(runs)
    start = scaffold.start(
        "ConvMixer", common, default_input_shape=DEFAULT_INPUT_SHAPE,
        default_classes=DEFAULT_CLASSES, min_size=patch_size,
        architecture=dict(width=width, depth=depth, kernel_size=kernel_size,
                          patch_size=patch_size, sharing=sharing))
    kernels = 2 * len(runs)
    name = f"convmixer{width}_{depth}" + ("" if sharing == "none" else f"_shared{kernels}")

    x = keras.layers.Conv2D(width, patch_size, strides=patch_size, name="stem_conv")(start.x)
    x = keras.layers.Activation("gelu", name="stem_gelu")(x)
    x = start.feature("STEM", scaffold.batch_norm("stem_bn")(x), patch_size)

    for r, blocks in enumerate(runs, start=1):
        # One layer object per run, called by every block of the run: its kernel and bias are
        # shared, and Keras sums their gradients over the calls.
        prefix = f"block{blocks[0] + 1}" if len(blocks) == 1 else f"shared{r}"
        depthwise = keras.layers.DepthwiseConv2D(
            kernel_size, padding="same", name=f"{prefix}_depthwise"
        )
        pointwise = keras.layers.Conv2D(width, 1, name=f"{prefix}_pointwise")
        for i in blocks:
            block = f"block{i + 1}"
            y = depthwise(x)
            y = keras.layers.Activation("gelu", name=f"{block}_depthwise_gelu")(y)
            y = scaffold.batch_norm(f"{block}_depthwise_bn")(y)
            x = keras.layers.Add(name=f"{block}_add")([x, y])
            x = pointwise(x)
            x = keras.layers.Activation("gelu", name=f"{block}_pointwise_gelu")(x)
            x = scaffold.batch_norm(f"{block}_pointwise_bn")(x)
            start.feature(f"BLOCK{i + 1}", x, patch_size)

    return start.finish(x, start.dense_classifier, name=name)
