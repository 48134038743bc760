"""Layer reuse (LRU): the same layer objects called N times, with a new BatchNorm per call.

The LruNet paper reuses one block N times instead of stacking N blocks: the convolution
weights are shared by every call, while each call gets its own BatchNorm because the
feature distribution differs from one reuse to the next (paper Sec. 2.2). The trainable
parameter count therefore grows with N only by the BatchNorms' gamma and beta.
"""

import keras
from keras import ops

from lru_keras.layers.batch_norm import FusedBatchNormalization, folded_scale_offset
from lru_keras.layers.channel_shuffle import ChannelShuffle
from lru_keras.layers.grouped_pointwise import GroupedPointwiseConv2D
from lru_keras.layers.validation import require_positive_int

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
                momentum=norm_momentum, epsilon=norm_epsilon, name=f"bn_{i}_{j}"
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
                y = self.norm(i, j)(layer(y), training=training)
            if self.residual:
                y = y + x
            x = self.activation(y)
            if self.shuffle is not None and i < self.times - 1:
                x = self.shuffle(x)
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
        self.filters = require_positive_int("filters", filters)
        self.groups = require_positive_int("groups", groups)
        self.depth_multiplier = require_positive_int("depth_multiplier", depth_multiplier)
        self.kernel_size = require_positive_int("kernel_size", kernel_size)
        if filters % groups:
            raise ValueError(f"LRUBlock: groups={groups} must divide filters={filters}.")
        self.depthwise = keras.layers.DepthwiseConv2D(
            kernel_size, depth_multiplier=depth_multiplier, padding="same", use_bias=False,
            name="dw",
        )
        self.pointwise = GroupedPointwiseConv2D(filters, groups=groups, use_bias=False, name="pw")
        super().__init__(
            layers=[self.depthwise, self.pointwise],
            times=reuse,
            residual=True,
            activation="relu",
            shuffle=ChannelShuffle(2, swap_halves=True) if shuffle else None,
            **kwargs,
        )

    def build(self, input_shape):
        if input_shape[-1] != self.filters:
            raise ValueError(
                f"LRUBlock(filters={self.filters}) got an input with {input_shape[-1]} channels."
            )
        super().build(input_shape)

    def call(self, x, training=None):
        if training:
            return super().call(x, training=training)
        return self.folded_call(x)

    def folded_call(self, x):
        """Inference with every BatchNorm folded into the conv before it.

        Same result as the training-graph path up to float rounding (~1e-6), with two fewer
        elementwise passes per reuse: the per-reuse BatchNorm scale multiplies the shared
        kernel (a few thousand numbers) instead of the activations, and TensorFlow's
        remapper fuses conv + bias (+ residual add + ReLU) into one kernel.
        """
        dtype = self.compute_dtype
        dw_kernel = self.depthwise.kernel
        pw_kernel = self.pointwise.kernel
        for i in range(self.times):
            dw_scale, dw_offset = folded_scale_offset(self.norm(i, 0))
            pw_scale, pw_offset = folded_scale_offset(self.norm(i, 1))
            kernel = dw_kernel * ops.reshape(dw_scale, dw_kernel.shape[2:])
            y = ops.depthwise_conv(x, ops.cast(kernel, dtype), 1, padding="same")
            y = y + ops.cast(dw_offset, dtype)
            y = self.pointwise.convolution_op(y, ops.cast(pw_kernel * pw_scale, dtype))
            x = ops.relu(y + ops.cast(pw_offset, dtype) + x)
            if self.shuffle is not None and i < self.times - 1:
                x = self.shuffle(x)
        return x

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
