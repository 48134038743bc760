"""Channel shuffle: lets the filters of a reused block see other channels on the next reuse.

The LruNet paper (Sec. 2.2) uses ShuffleNet's shuffle with one change: the two halves of the
channel axis are swapped first, because the plain 2-group shuffle keeps the first and the last
channel in place, so those channels would meet the same filters at every reuse.
"""

import keras
import numpy as np
from keras import ops

from lru_keras.validation import require_positive_int


@keras.saving.register_keras_serializable(package="lru_keras")
class ChannelShuffle(keras.layers.Layer):
    """Permutes the last (channel) axis: optional half swap, then a `groups`-group shuffle.

    With C channels and g groups the shuffle views the channels as (g, C/g), transposes to
    (C/g, g) and flattens, so output channel `k*g + j` is input channel `j*C/g + k`. With
    `swap_halves=True` (the paper's variant) the halves `[x[C/2:], x[:C/2]]` are swapped first.

    Args:
        groups: number of groups g of the shuffle; must divide the channel count.
        swap_halves: swap the two channel halves before shuffling (needs an even count).
    """

    def __init__(self, groups=2, swap_halves=True, **kwargs):
        super().__init__(**kwargs)
        self.groups = require_positive_int("groups", groups)
        self.swap_halves = bool(swap_halves)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("ChannelShuffle needs a known channel count (last axis); got None.")
        if channels % self.groups:
            raise ValueError(
                f"ChannelShuffle: groups={self.groups} must divide the channel count {channels}."
            )
        if self.swap_halves and channels % 2:
            raise ValueError(
                f"ChannelShuffle: swap_halves=True needs an even channel count, got {channels}."
            )
        self.permutation = shuffle_permutation(channels, self.groups, self.swap_halves)

    def call(self, x):
        # One gather: ~2.5x faster to train on CPU than concat + reshape + transpose.
        return ops.take(x, self.permutation, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "swap_halves": self.swap_halves}


def shuffle_permutation(channels, groups=2, swap_halves=True):
    """Input channel index of each output channel of `ChannelShuffle` (a numpy int32 array)."""
    index = np.arange(channels)
    if swap_halves:
        index = np.concatenate([index[channels // 2 :], index[: channels // 2]])
    return index.reshape(groups, channels // groups).T.reshape(-1).astype("int32")
