"""int8 equalization of shared kernels (`equalization_factors`).

Full-integer int8 gives every activation tensor ONE scale. In a reuse block the output of a shared conv has a different BatchNorm at every reuse, and its
channels' ranges before that BatchNorm differ strongly (per reuse, the largest channel standard
deviation of a depthwise output is 20-100x the smallest in 14-LruNet-1x), so small channels get
few int8 levels. Each output channel c of a shared kernel is therefore multiplied by a factor
s_c and every reuse's BatchNorm scale divided by s_c: the function is unchanged, the kernel is
still stored once, and channel ranges come closer together. s_c = 1 / max over reuses of the
channel's range, estimated from the BatchNorm's own moving statistics (|mean| + 4 std of the
conv output).

The factors are computed here; the layer applies them to its own export constants
(`LRUBlock.export_constants(rescale=...)`). Measured on 14-LruNet-1x, CIFAR-10 test set
(float 89.34%), kernels shared; "agree" = share of test images whose int8 prediction
equals the Keras prediction (steadier than accuracy):

| ranges  | equalization               | accuracy | agree  |
|---------|----------------------------|----------|--------|
| min/max | none                       | 88.36    | 95.46  |
| min/max | max range (this module)    | 88.57    | 95.89  |
| 99.99%  | max range                  | 88.76    | 96.48  |
| MSE     | none                       | 88.81    | 96.78  |
| MSE     | geometric mean of BN scale | 88.76    | 96.58  |
| MSE     | max range (the default)    | 88.90    | 97.11  |
| (plain folded conversion, MSE)       | 89.04    | 98.00  |

(Measured before the final graph: tiled depthwise conv, split/concat shuffle, and dead
BatchNorm channels silenced, `graph.silence_dead_channels`; with all of these the default
export scores 89.01, the folded one 88.98.) The dead channels mattered most on
10-LruNet-1x / Fashion-MNIST: 87.74% int8 (Keras 93.46) before, 92.86 after (folded: 93.37).

Not kept, measured the same way: a per-reuse rescale of the block input before the shared
depthwise conv (81.5%: the rescaled input itself quantizes badly), equalizing the grouped
conv's input channels (88.19% with min/max), bias correction of the per-reuse offsets for the
weight rounding error (88.75% vs 88.99% with min/max).
"""

import numpy as np

from lru_keras.layers.reuse import LRUBlock

RANGE_STDS = 4.0  # a channel's range: |mean| + RANGE_STDS * std, from BatchNorm statistics


def _channel_ranges(block, position):
    """(reuses, channels): |moving mean| + RANGE_STDS * std of a shared conv's output."""
    ranges = []
    for i in range(block.times):
        norm = block.norm(i, position)
        mean = np.asarray(norm.moving_mean, np.float64)
        std = np.sqrt(np.asarray(norm.moving_variance, np.float64) + norm.epsilon)
        ranges.append(np.abs(mean) + RANGE_STDS * std)
    return np.stack(ranges)


def _normalized(factors):
    factors = np.where(np.isfinite(factors) & (factors > 0), factors, 1.0)
    return factors / np.exp(np.log(factors).mean())


def equalization_factors(layer):
    """(s, t): factors per output channel of an LRU block's shared depthwise and 1x1 kernels
    (see the module doc), or None for any other layer."""
    if not isinstance(layer, LRUBlock):
        return None
    s = _normalized(1.0 / _channel_ranges(layer, 0).max(axis=0))   # per dw output channel
    t = _normalized(1.0 / _channel_ranges(layer, 1).max(axis=0))   # per pw output channel
    return s, t
