"""An upper bound on N-LruNet-1x throughput from TensorFlow's convolution kernels alone.

Each reuse of an LruNet block must run its depthwise 3x3 conv (depth multiplier 2) and its
8-group 1x1 conv; everything else in the block (BatchNorm, residual add, ReLU, shuffle, the
tiling for the multiplier-1 depthwise kernel) only adds time. This module times, per stage of
LruNet-1x, only those two convolutions on ready inputs, in each way TensorFlow can run them:

- "m1 depthwise on tiled input + grouped 1x1": the shipped physical formulation's kernels;
- "m2 depthwise + grouped 1x1": TensorFlow's depth-multiplier-2 kernel directly;
- "grouped 3x3": the depthwise and 1x1 kernels multiplied into one 8-group 3x3 conv, for
  inference only: in training the depthwise BatchNorm normalises with the batch statistics of
  the depthwise output between the two convs, so they cannot be merged.

For inference it runs the forward convs at batch 256; for training, the forward convs plus the
gradients with respect to their input and kernels, at batch 128. The fastest way per stage,
times N reuses per stage, gives the least time any formulation built on these kernels can take
(the stem and the head are left out too), hence the most images/s it can reach. The grouped
convs go through TensorFlow's conv where it has them (oneDNN on) and through the block's
einsum otherwise, as in `GroupedPointwiseConv2D`.
"""

import statistics

import numpy as np
import tensorflow as tf

from lru_keras.layers.grouped_pointwise import GroupedPointwiseConv2D
from timing import call_seconds

# (spatial size, channels F) of the four LruNet-1x stages for 32x32 input.
STAGES = ((16, 64), (8, 128), (4, 256), (4, 512))
GROUPS = 8


def stage_candidates(size, channels, batch, training):
    """{name: (inputs, kernels, convs)} for one stage: `convs(inputs, kernels)` is one reuse's
    convolutions in that formulation (only those valid in training when `training`)."""
    rng = np.random.default_rng(0)

    def tensor(*shape):
        return tf.constant(rng.standard_normal(shape).astype("float32"))

    pointwise = GroupedPointwiseConv2D(channels, groups=GROUPS)
    group_in = 2 * channels // GROUPS

    def depthwise_then_pointwise(x, kernels):
        depthwise, pointwise_kernel = kernels
        d = tf.nn.depthwise_conv2d(x, depthwise, [1, 1, 1, 1], "SAME")
        return pointwise.convolution_op(d, pointwise_kernel)

    def grouped_3x3(x, kernels):
        return tf.nn.conv2d(x, kernels[0], 1, "SAME")

    candidates = {
        "m1 depthwise on tiled input + grouped 1x1": (
            tensor(batch, size, size, 2 * channels),
            (tensor(3, 3, 2 * channels, 1), tensor(1, 1, group_in, channels)),
            depthwise_then_pointwise,
        ),
        "m2 depthwise + grouped 1x1": (
            tensor(batch, size, size, channels),
            (tensor(3, 3, channels, 2), tensor(1, 1, group_in, channels)),
            depthwise_then_pointwise,
        ),
        "grouped 3x3": (
            tensor(batch, size, size, channels),
            (tensor(3, 3, channels // GROUPS, channels),),
            grouped_3x3,
        ),
    }
    if training:
        del candidates["grouped 3x3"]
    return candidates


def time_candidate(inputs, kernels, convs, training, repeats, calls=4):
    """Seconds per reuse of `convs`: forward only, or forward and input/kernel gradients."""
    variables = [tf.Variable(kernel) for kernel in kernels]

    @tf.function
    def forward(x):
        return convs(x, variables)

    @tf.function
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = convs(x, variables)
        return tape.gradient(y, [x, *variables])

    step = forward_backward if training else forward

    def run():
        for _ in range(calls):
            outputs = step(inputs)
        tf.nest.map_structure(lambda t: t.numpy(), outputs)

    try:
        return statistics.median(call_seconds(run, repeats)) / calls
    except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError):
        return None  # TensorFlow has no such kernel in this setting


def conv_floor(reuse=14, repeats=3, infer_batch=256, train_batch=128):
    """Per-stage conv times (ms per reuse) and the images/s bound for inference and training."""
    report = {"reuse": reuse}
    for phase, batch, training in (("inference", infer_batch, False),
                                   ("training", train_batch, True)):
        stages, total = [], 0.0
        for size, channels in STAGES:
            times = {
                name: time_candidate(*candidate, training=training, repeats=repeats)
                for name, candidate in stage_candidates(size, channels, batch, training).items()
            }
            best = min((t, name) for name, t in times.items() if t is not None)
            total += reuse * best[0]
            stages.append({"size": size, "channels": channels, "best": best[1],
                           "ms_per_reuse": {name: None if t is None else round(1e3 * t, 2)
                                            for name, t in times.items()}})
        report[phase] = {"batch": batch, "stages": stages,
                         "bound_images_per_s": round(batch / total, 1)}
    return report
