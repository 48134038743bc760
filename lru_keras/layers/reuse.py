"""Layer reuse (LRU): the same layer objects called N times, with a new BatchNorm per call.

The LruNet paper reuses one block N times instead of stacking N blocks: the convolution
weights are shared by every call, while each call gets its own BatchNorm because the
feature distribution differs from one reuse to the next (paper Sec. 2.2). The trainable
parameter count therefore grows with N only by the BatchNorms' gamma and beta.
"""

import keras
import numpy as np
from keras import ops

from lru_keras.layers.batch_norm import (
    FusedBatchNormalization,
    folded_scale_offset,
    normalize_batch,
    update_moving_statistics,
)
from lru_keras.layers.channel_shuffle import ChannelShuffle
from lru_keras.layers.grouped_pointwise import GroupedPointwiseConv2D, grouped_pointwise_einsum
from lru_keras.layers.shuffle_layout import expanded_indices, plan_shuffles
from lru_keras.layers.tensorflow_grouped_conv import use_tensorflow_grouped_conv
from lru_keras.validation import require_positive_int

# PyTorch's BatchNorm2d defaults (momentum 0.1 there is 0.9 here), as in the reference network.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="lru_keras")
class Reused(keras.layers.Layer):
    """Applies a sequence of shape-preserving layers `times` times, sharing their weights.

    One reuse computes, for the sequence `layers = [f_1, ..., f_k]`,
    `y = bn_{i,k}(f_k(... bn_{i,1}(f_1(x))))`, then `y = activation(y + x)` if `residual`
    (else `activation(y)`), then `shuffle(y)` unless it is the last reuse. `bn_{i,j}` is a
    BatchNorm owned by reuse i and layer j: never shared. The `layers` themselves are single
    objects, so their weights exist once whatever `times` is.

    Args:
        layers: a layer or a list of layers applied in order at every reuse.
        times: number of reuses N (>= 1).
        residual: add the reuse's input to its output before the activation.
        activation: activation applied at the end of each reuse (name or callable), or None.
        shuffle: a layer applied between reuses (not after the last), e.g. `ChannelShuffle()`.
        norm_momentum, norm_epsilon: settings of the per-call BatchNorms.
    """

    def __init__(
        self,
        layers,
        times,
        residual=False,
        activation=None,
        shuffle=None,
        norm_momentum=BN_MOMENTUM,
        norm_epsilon=BN_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._set_reuse(layers, times, residual, activation, shuffle, norm_momentum,
                        norm_epsilon)

    def _set_reuse(self, layers, times, residual, activation, shuffle, norm_momentum,
                   norm_epsilon):
        """Stores the reuse arguments and creates the per-call BatchNorms, in this layer's
        dtype policy (after `Layer.__init__`, as Keras's composite layers do)."""
        self.reused_layers = list(layers) if isinstance(layers, (list, tuple)) else [layers]
        self.times = require_positive_int("times", times)
        self.residual = bool(residual)
        self.activation = keras.activations.get(activation)
        self.shuffle = shuffle
        self.norm_momentum = norm_momentum
        self.norm_epsilon = norm_epsilon
        # norms[i * len(layers) + j] follows layer j at reuse i.
        self.norms = [
            FusedBatchNormalization(
                momentum=norm_momentum, epsilon=norm_epsilon, dtype=self.dtype_policy,
                name=f"bn_{i}_{j}",
            )
            for i in range(self.times)
            for j in range(len(self.reused_layers))
        ]

    def norm(self, reuse, position):
        """The BatchNorm that follows layer `position` at reuse `reuse`."""
        return self.norms[reuse * len(self.reused_layers) + position]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for j, layer in enumerate(self.reused_layers):
            if not layer.built:  # from_config / .keras loading builds sublayers already
                layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))
            for i in range(self.times):
                self.norm(i, j).build(shape)
        if shape[-1] != input_shape[-1]:
            raise ValueError(
                f"Reused: the layers must keep the channel count to be called again, "
                f"got {input_shape[-1]} -> {shape[-1]}."
            )
        if self.shuffle is not None:
            self.shuffle.build(shape)

    def call(self, x, training=None):
        for i in range(self.times):
            y = x
            for j, layer in enumerate(self.reused_layers):
                # Wrapped layers (and the shuffle) may compute in another dtype than this
                # layer's policy; the reuse chain stays in this layer's compute dtype.
                y = ops.cast(layer(y, training=training), self.compute_dtype)
                y = self.norm(i, j)(y, training=training)
            if self.residual:
                y = y + x
            x = self.activation(y)
            if self.shuffle is not None and i < self.times - 1:
                x = ops.cast(self.shuffle(x), self.compute_dtype)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            **super().get_config(),
            "layers": [serialize(layer) for layer in self.reused_layers],
            "times": self.times,
            "residual": self.residual,
            "activation": serialize(self.activation),
            "shuffle": None if self.shuffle is None else serialize(self.shuffle),
            "norm_momentum": self.norm_momentum,
            "norm_epsilon": self.norm_epsilon,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        deserialize = keras.saving.deserialize_keras_object
        config["layers"] = [deserialize(layer) for layer in config["layers"]]
        if config.get("shuffle") is not None:
            config["shuffle"] = deserialize(config["shuffle"])
        config["activation"] = deserialize(config["activation"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="lru_keras")
class LRUBlock(Reused):
    """The LruNet block, reused N times (paper Sec. 2.2, Fig. 3).

    ONE depthwise 3x3 conv (F -> 2F channels, depth multiplier 2, no bias) and ONE grouped 1x1
    conv (2F -> F, `groups` groups, no bias), each followed by a BatchNorm of its own at every
    reuse; residual add; ReLU; the paper's channel shuffle between reuses (not after the last).

    Args:
        filters: F, the block's input and output channel count.
        reuse: number of reuses N.
        groups: groups of the 1x1 conv (8 in the paper); must divide F.
        depth_multiplier: channel expansion of the depthwise conv (2 in the paper).
        kernel_size: depthwise kernel size (3 in the paper).
        shuffle: apply the channel shuffle between reuses (paper Table 3 compares both).
    """

    def __init__(
        self, filters, reuse, groups=8, depth_multiplier=2, kernel_size=3, shuffle=True, **kwargs
    ):
        # Layer.__init__ first: the sublayers take this block's dtype policy.
        keras.layers.Layer.__init__(self, **kwargs)
        self.filters = require_positive_int("filters", filters)
        self.groups = require_positive_int("groups", groups)
        self.depth_multiplier = require_positive_int("depth_multiplier", depth_multiplier)
        self.kernel_size = require_positive_int("kernel_size", kernel_size)
        if filters % groups:
            raise ValueError(f"LRUBlock: groups={groups} must divide filters={filters}.")
        policy = self.dtype_policy
        self.depthwise = keras.layers.DepthwiseConv2D(
            kernel_size, depth_multiplier=depth_multiplier, padding="same", use_bias=False,
            dtype=policy, name="dw",
        )
        self.pointwise = GroupedPointwiseConv2D(
            filters, groups=groups, use_bias=False, dtype=policy, name="pw"
        )
        self._set_reuse(
            [self.depthwise, self.pointwise],
            reuse,
            residual=True,
            activation="relu",
            shuffle=ChannelShuffle(2, swap_halves=True, dtype=policy) if shuffle else None,
            norm_momentum=BN_MOMENTUM,
            norm_epsilon=BN_EPSILON,
        )

    def build(self, input_shape):
        if input_shape[-1] != self.filters:
            raise ValueError(
                f"LRUBlock(filters={self.filters}) got an input with {input_shape[-1]} channels."
            )
        super().build(input_shape)
        group_size = self.filters // self.groups
        layouts, self.moves, self.final_gather = plan_shuffles(
            self.filters, group_size, self.times, shuffle=self.shuffle is not None
        )
        self.layouts = [layout.astype("int32") for layout in layouts]
        self.inverse_layouts = [np.argsort(layout).astype("int32") for layout in layouts]
        self.expanded = [
            expanded_indices(layout, group_size, self.depth_multiplier) for layout in layouts
        ]

    def call(self, x, training=None):
        """The N reuses, in the formulation that is faster where the model runs.

        `physical_call` where the grouped 1x1 conv goes through TensorFlow's own conv
        (oneDNN) and on other backends; the literal `Reused.call` where TensorFlow has to
        run it as an einsum (oneDNN off, float16). Measured on 2 AMD EPYC cores,
        14-LruNet-1x, physical vs literal: with oneDNN off 116 vs 120 images/s in inference
        and 24.8 vs 23.5 in training; with oneDNN on 255 vs 54 and 49 vs 12.5
        (bench/keras_throughput.py). Both compute the same function (tests check it).
        """
        if keras.backend.backend() == "tensorflow" and not use_tensorflow_grouped_conv(
            self.compute_dtype
        ):
            return Reused.call(self, x, training=training)
        return self.physical_call(x, training=training)

    def physical_call(self, x, training=None):
        """N reuses on the physical channel layout (see `shuffle_layout`), fast with oneDNN.

        Mathematically the paper's block: `Reused.call` is the literal version, and tests
        check that both agree. Differences in formulation, each measured on 2 CPU cores:
        the depth-multiplier-2 depthwise conv runs as a multiplier-1 depthwise conv on the
        input tiled group by group (oneDNN's multiplier-2 kernel was ~10x slower); the
        shuffle is a transpose; in inference each BatchNorm's scale is folded into the conv
        before it and both offsets into one offset after the 1x1 conv.
        """
        for i in range(self.times):
            if training:
                x = self._reuse_training(i, x)
            else:
                x = self._reuse_inference(i, x)
            if i < self.times - 1 and self.moves[i] is not None:
                kind, index = self.moves[i]
                x = _transpose_channels(x) if kind == "transpose" else ops.take(x, index, axis=-1)
        if self.final_gather is not None:
            x = ops.take(x, self.final_gather, axis=-1)
        return x

    def _tile_groups(self, x):
        """(…, C) -> (…, M * C): each group of channels repeated M times, side by side.

        A concatenation of M views rather than `repeat`: 27 vs 31 ms per stage-1 reuse
        (batch 256, oneDNN on, 2 cores)."""
        groups, multiplier = self.groups, self.depth_multiplier
        batch_shape = ops.shape(x)[:-1]
        x = ops.reshape(x, (*batch_shape, groups, 1, self.filters // groups))
        x = ops.concatenate([x] * multiplier, axis=-2)
        return ops.reshape(x, (*batch_shape, self.filters * multiplier))

    def _physical_kernels(self, i):
        """Depthwise (multiplier 1, on the tiled input) and grouped 1x1 kernels in reuse i's
        physical channel order, in float32 (the BatchNorm folding is done in float32 under
        every dtype policy; callers cast the result to the compute dtype)."""
        depthwise_index, _, pointwise_index = self.expanded[i]
        kernel = ops.cast(self.depthwise.kernel, "float32")
        dw = ops.reshape(kernel, (*kernel.shape[:2], -1))
        dw = ops.expand_dims(ops.take(dw, depthwise_index, axis=2), -1)
        pw = ops.cast(self.pointwise.kernel, "float32")
        pw = ops.take(ops.reshape(pw, (-1,)), pointwise_index)
        return dw, ops.reshape(pw, self.pointwise.kernel.shape)

    def _reuse_inference(self, i, x):
        """One reuse with both BatchNorms folded: the depthwise BN's offset is a constant
        per channel, so it passes through the (linear) grouped 1x1 conv into one offset
        after it, which saves a pass over the largest tensor of the reuse."""
        dtype = self.compute_dtype
        depthwise_index = self.expanded[i][0]
        dw, pw = self._physical_kernels(i)
        dw_scale, dw_offset = folded_scale_offset(self.norm(i, 0))
        pw_scale, pw_offset = folded_scale_offset(self.norm(i, 1))
        dw = dw * ops.reshape(ops.take(dw_scale, depthwise_index), (1, 1, -1, 1))
        pw = pw * ops.take(pw_scale, self.inverse_layouts[i])
        dw_offset = ops.reshape(ops.take(dw_offset, depthwise_index), (1, -1))
        offset = ops.take(pw_offset, self.inverse_layouts[i]) + ops.reshape(
            grouped_pointwise_einsum(dw_offset, pw, self.groups), (-1,)
        )
        d = ops.depthwise_conv(self._tile_groups(x), ops.cast(dw, dtype), 1, padding="same")
        z = self.pointwise.convolution_op(d, ops.cast(pw, dtype))
        return ops.relu(_add_channel_offset(z, ops.cast(offset, dtype)) + x)

    def _reuse_training(self, i, x):
        dw_norm, pw_norm = self.norm(i, 0), self.norm(i, 1)
        depthwise_index, depthwise_position, _ = self.expanded[i]
        inverse, layout = self.inverse_layouts[i], self.layouts[i]
        dw, pw = self._physical_kernels(i)
        d = ops.depthwise_conv(self._tile_groups(x), ops.cast(dw, x.dtype), 1, padding="same")
        d, mean, variance = normalize_batch(
            d, ops.take(dw_norm.gamma, depthwise_index), ops.take(dw_norm.beta, depthwise_index),
            dw_norm.epsilon,
        )
        update_moving_statistics(
            dw_norm, ops.take(mean, depthwise_position), ops.take(variance, depthwise_position)
        )
        z = self.pointwise.convolution_op(d, ops.cast(pw, d.dtype))
        z, mean, variance = normalize_batch(
            z, ops.take(pw_norm.gamma, inverse), ops.take(pw_norm.beta, inverse), pw_norm.epsilon
        )
        update_moving_statistics(pw_norm, ops.take(mean, layout), ops.take(variance, layout))
        return ops.relu(z + x)

    def get_config(self):
        # The block's own arguments; the sublayers are rebuilt from them.
        return {
            **keras.layers.Layer.get_config(self),
            "filters": self.filters,
            "reuse": self.times,
            "groups": self.groups,
            "depth_multiplier": self.depth_multiplier,
            "kernel_size": self.kernel_size,
            "shuffle": self.shuffle is not None,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _add_channel_offset(x, offset):
    """`x + offset` over the last axis; TensorFlow's BiasAdd on the TF backend, which was
    faster than the broadcast add there (24 vs 29 ms per stage-1 reuse at batch 256)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.nn.bias_add(x, offset)
    return x + offset


def _transpose_channels(x):
    """The 2-group channel transpose (C channels viewed as (2, C/2) -> (C/2, 2))."""
    channels = x.shape[-1]
    batch_shape = ops.shape(x)[:-1]
    x = ops.reshape(x, (*batch_shape, 2, channels // 2))
    return ops.reshape(ops.swapaxes(x, -1, -2), (*batch_shape, channels))
