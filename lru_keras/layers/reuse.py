"""Layer reuse (LRU): the same layer objects called N times, with a new BatchNorm per call.

The LruNet paper reuses one block N times instead of stacking N blocks: the convolution
weights are shared by every call, while each call gets its own BatchNorm because the
feature distribution differs from one reuse to the next (paper Sec. 2.2). The trainable
parameter count therefore grows with N only by the BatchNorms' gamma and beta.

One reuse is written once (`reuse_step`), and the recurrence twice over it: unrolled
(`reuse_chain`) and as one loop over the reuse counter (`reuse_loop`, for the export form
that TensorFlow Lite Micro runs in a RAM arena independent of N). Each formulation (the
literal `Reused.call`, `LRUBlock`'s fast path on a physical channel layout, the export forms,
the quantization-aware copy in `lru_keras.tflite`) only says how it computes one layer, one
BatchNorm, the merge with the residual and the move between reuses.
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
from lru_keras.layers.channel_order import (
    expanded_indices,
    plan_shuffles,
    shuffle_channels,
    tile_groups,
    unshuffle_channels,
)
from lru_keras.layers.channel_shuffle import ChannelShuffle
from lru_keras.layers.export_form import ExportConstants, export_forward
from lru_keras.layers.grouped_pointwise import (
    GroupedPointwiseConv2D,
    grouped_pointwise_conv,
    grouped_pointwise_einsum,
)
from lru_keras.layers.tensorflow_grouped_conv import use_tensorflow_grouped_conv
from lru_keras.validation import require_positive_int

# PyTorch's BatchNorm2d defaults (momentum 0.1 there is 0.9 here), as in the reference network.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
# Reuses of one block: the paper uses 1..16. Every reuse adds BatchNorm layers and a pass over
# the block to the graph (64 reuses build LruNet in seconds); 10**6 would build for hours.
MAX_REUSES = 64


def reuse_step(i, x, depth, layer, norm, merge):
    """One reuse, the body of every formulation: `y = norm(i, j, layer(i, j, y))` for the
    block's layers j = 0..depth-1, starting from y = x, then `merge(i, y, x)` (residual and
    activation). `i` is the reuse's index: a Python int, or an int32 scalar tensor inside
    `reuse_loop`."""
    y = x
    for j in range(depth):
        y = norm(i, j, layer(i, j, y))
    return merge(i, y, x)


def reuse_chain(x, times, depth, layer, norm, merge, move):
    """The recurrence of a reuse block, unrolled: `reuse_step` for i = 0..times-1, with
    `move(i, x)` (the shuffle) between reuses, not after the last."""
    for i in range(times):
        x = reuse_step(i, x, depth, layer, norm, merge)
        if i < times - 1:
            x = move(i, x)
    return x


def reuse_loop(x, times, depth, layer, norm, merge, move, unmove):
    """`reuse_chain` as ONE loop (`keras.ops.while_loop`) over the reuse counter, so that a
    graph holds the ops of one reuse whatever `times` is. The callbacks receive `i` as an
    int32 scalar tensor and must read per-reuse values with it. The loop body cannot leave
    out the move after the last reuse (a loop has one body), so it moves after every reuse
    and `unmove` (the inverse of `move`) undoes the last move after the loop; the result is
    `reuse_chain`'s."""

    def body(i, x):
        return i + 1, move(i, reuse_step(i, x, depth, layer, norm, merge))

    counter = ops.convert_to_tensor(0, "int32")
    _, x = ops.while_loop(lambda i, x: i < times, body, (counter, x))
    return unmove(x)


def norm_constants(norm):
    """(scale, offset) float64 numpy arrays of a BatchNorm in inference: `x * scale + offset`."""
    scale, offset = folded_scale_offset(norm)
    return np.asarray(scale, np.float64), np.asarray(offset, np.float64)


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
        times: number of reuses N, 1 to `MAX_REUSES`.
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
        # The reused layers and the per-call BatchNorms take this layer's dtype policy, as the
        # sublayers of Keras's composite layers do.
        self.reused_layers = list(layers) if isinstance(layers, (list, tuple)) else [layers]
        self.times = require_positive_int("times", times, high=MAX_REUSES, unit="reuses")
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
        # Wrapped layers (and the shuffle) may compute in another dtype than this layer's
        # policy; the reuse chain stays in this layer's compute dtype.
        dtype = self.compute_dtype

        def layer(i, j, y):
            return ops.cast(self.reused_layers[j](y, training=training), dtype)

        def move(i, x):
            return x if self.shuffle is None else ops.cast(self.shuffle(x), dtype)

        return reuse_chain(
            x, self.times, len(self.reused_layers), layer,
            lambda i, j, y: self.norm(i, j)(y, training=training), self._merge, move,
        )

    def _merge(self, i, y, x):
        return self.activation(y + x if self.residual else y)

    def export_constants(self):
        """The export constants (see `export_form`): the reused layers' kernels (read as
        they are by the export form) and every per-reuse BatchNorm as (scale, offset)."""
        kernels, depthwise = {}, set()
        for layer in self.reused_layers:
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                                  keras.layers.Dense)):
                kernels[layer.name] = np.asarray(layer.kernel)
                if isinstance(layer, keras.layers.DepthwiseConv2D):
                    depthwise.add(layer.name)
        norms = tuple(tuple(norm_constants(self.norm(i, j))
                            for j in range(len(self.reused_layers)))
                      for i in range(self.times))
        return ExportConstants(kernels, norms, frozenset(depthwise))

    def export_call(self, x, constants, affine):
        """The export form: the reused layers run their own export form (each variable
        becomes one constant read by every reuse); each BatchNorm is `affine`."""

        def move(i, x):
            return x if self.shuffle is None else export_forward(self.shuffle, x)

        return reuse_chain(
            x, self.times, len(self.reused_layers),
            lambda i, j, y: export_forward(self.reused_layers[j], y),
            lambda i, j, y: affine(y, *constants.norms[i][j], None), self._merge, move,
        )

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
        filters = require_positive_int("filters", filters)
        groups = require_positive_int("groups", groups)
        depth_multiplier = require_positive_int("depth_multiplier", depth_multiplier)
        kernel_size = require_positive_int("kernel_size", kernel_size)
        if filters % groups:
            raise ValueError(f"LRUBlock: groups={groups} must divide filters={filters}.")
        # The sublayers take this block's dtype policy (what Layer.__init__ will resolve).
        policy = keras.dtype_policies.get(kwargs.get("dtype"))
        depthwise = keras.layers.DepthwiseConv2D(
            kernel_size, depth_multiplier=depth_multiplier, padding="same", use_bias=False,
            dtype=policy, name="dw",
        )
        pointwise = GroupedPointwiseConv2D(
            filters, groups=groups, use_bias=False, dtype=policy, name="pw"
        )
        super().__init__(
            [depthwise, pointwise],
            reuse,
            residual=True,
            activation="relu",
            shuffle=ChannelShuffle(2, swap_halves=True, dtype=policy) if shuffle else None,
            norm_momentum=BN_MOMENTUM,
            norm_epsilon=BN_EPSILON,
            **kwargs,
        )
        self.filters, self.groups = filters, groups
        self.depth_multiplier, self.kernel_size = depth_multiplier, kernel_size
        self.depthwise, self.pointwise = depthwise, pointwise

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
        run it as an einsum (oneDNN off, float16); bench/keras_throughput.py measures both.
        Both compute the same function (tests check it).
        """
        if keras.backend.backend() == "tensorflow" and not use_tensorflow_grouped_conv(
            self.compute_dtype
        ):
            return Reused.call(self, x, training=training)
        return self.physical_call(x, training=training)

    def physical_call(self, x, training=None):
        """N reuses on the physical channel layout (see `channel_order`), fast with oneDNN.

        Mathematically the paper's block: `Reused.call` is the literal version, and tests
        check that both agree. Differences in formulation: the depth-multiplier-2 depthwise
        conv runs as a multiplier-1 depthwise conv on the input tiled group by group; the
        shuffle is a transpose; in inference each BatchNorm's scale is folded into the conv
        before it and both offsets into one offset after the 1x1 conv (the depthwise
        BatchNorm's offset is a constant per channel, so it passes through the linear 1x1
        conv), which saves a pass over the largest tensor of the reuse.
        """
        dtype = self.compute_dtype
        kernels = [self._physical_kernels(i) for i in range(self.times)]
        if training:
            norm = self._normalize_batch
        else:
            kernels = [self._folded(i, dw, pw) for i, (dw, pw) in enumerate(kernels)]
            offsets = [offset for _, _, offset in kernels]

            def norm(i, j, y):
                return y if j == 0 else _add_channel_offset(y, ops.cast(offsets[i], dtype))

        def layer(i, j, y):
            if j == 0:
                return ops.depthwise_conv(self._tile(y), ops.cast(kernels[i][0], y.dtype), 1,
                                          padding="same")
            return self.pointwise.convolution_op(y, ops.cast(kernels[i][1], y.dtype))

        def move(i, x):
            if self.moves[i] is None:
                return x
            kind, index = self.moves[i]
            if kind == "transpose":
                return shuffle_channels(x, 2, swap_halves=False)
            return ops.take(x, index, axis=-1)

        x = reuse_chain(x, self.times, 2, layer, norm, residual_relu, move)
        if self.final_gather is not None:
            x = ops.take(x, self.final_gather, axis=-1)
        return x

    def _tile(self, x):
        return tile_groups(x, self.groups, self.depth_multiplier)

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

    def _folded(self, i, dw, pw):
        """Reuse i's kernels with both BatchNorms folded in inference: (dw, pw, offset)."""
        depthwise_index = self.expanded[i][0]
        dw_scale, dw_offset = folded_scale_offset(self.norm(i, 0))
        pw_scale, pw_offset = folded_scale_offset(self.norm(i, 1))
        dw = dw * ops.reshape(ops.take(dw_scale, depthwise_index), (1, 1, -1, 1))
        pw = pw * ops.take(pw_scale, self.inverse_layouts[i])
        dw_offset = ops.reshape(ops.take(dw_offset, depthwise_index), (1, -1))
        offset = ops.take(pw_offset, self.inverse_layouts[i]) + ops.reshape(
            grouped_pointwise_einsum(dw_offset, pw, self.groups), (-1,)
        )
        return dw, pw, offset

    def _normalize_batch(self, i, j, y):
        """Training-mode BatchNorm j of reuse i on the physical layout (parameters and
        statistics gathered to and from that layout)."""
        norm = self.norm(i, j)
        if j == 0:
            depthwise_index, depthwise_position, _ = self.expanded[i]
            to_physical, to_logical = depthwise_index, depthwise_position
        else:
            to_physical, to_logical = self.inverse_layouts[i], self.layouts[i]
        y, mean, variance = normalize_batch(
            y, ops.take(norm.gamma, to_physical), ops.take(norm.beta, to_physical),
            norm.epsilon,
        )
        update_moving_statistics(
            norm, ops.take(mean, to_logical), ops.take(variance, to_logical)
        )
        return y

    def export_constants(self, rescale=None):
        """The export constants (see `export_form`): the depthwise kernel as a multiplier-1
        kernel on the group-wise tiled input (k, k, M*C, 1), the grouped 1x1 kernel with its
        rows in the matching order, and per reuse the two BatchNorms' (scale, offset), the
        depthwise one in tiled order. Each kernel is reordered once, shared by all reuses.

        `rescale`: optional factors (s per depthwise output channel, t per 1x1 output
        channel, logical order); each kernel output channel is multiplied and its BatchNorm
        scales divided by its factor, which keeps the function (int8 equalization).
        """
        depthwise_index, _, pointwise_index = expanded_indices(
            np.arange(self.filters), self.filters // self.groups, self.depth_multiplier)
        dw = np.asarray(self.depthwise.kernel, np.float64)   # (k, k, C, M)
        pw = np.asarray(self.pointwise.kernel, np.float64)   # (1, 1, M*C/groups, C)
        norms = [(norm_constants(self.norm(i, 0)), norm_constants(self.norm(i, 1)))
                 for i in range(self.times)]
        if rescale is not None:
            s, t = rescale
            dw = (dw.reshape(*dw.shape[:2], -1) * s).reshape(dw.shape)
            pw = pw * t
            norms = [((a / s, b), (g / t, h)) for (a, b), (g, h) in norms]
        k = dw.shape[0]
        dw = dw.reshape(k, k, -1)[:, :, depthwise_index][..., None]
        pw = pw.reshape(-1)[pointwise_index].reshape(pw.shape)
        norms = tuple(((a[depthwise_index], b[depthwise_index]), pair)
                      for (a, b), pair in norms)
        return ExportConstants({"depthwise": dw.astype(np.float32),
                                "pointwise": pw.astype(np.float32)},
                               norms, frozenset({"depthwise"}))

    def load_export_constants(self, constants):
        """Sets the weights so that the block computes `constants` (the inverse of
        `export_constants`): kernels back to Keras's layout, each BatchNorm's (scale, offset)
        as gamma = scale, beta = offset, moving mean 0, moving variance 1 - epsilon."""
        depthwise_index, _, pointwise_index = expanded_indices(
            np.arange(self.filters), self.filters // self.groups, self.depth_multiplier)
        dw = constants.kernels["depthwise"]
        flat = np.empty((*dw.shape[:2], dw.shape[2]), np.float32)
        flat[:, :, depthwise_index] = dw[..., 0]
        self.depthwise.kernel.assign(flat.reshape(self.depthwise.kernel.shape))
        pw = np.empty(int(np.prod(self.pointwise.kernel.shape)), np.float32)
        pw[pointwise_index] = constants.kernels["pointwise"].reshape(-1)
        self.pointwise.kernel.assign(pw.reshape(self.pointwise.kernel.shape))
        for i, ((dw_scale, dw_offset), pw_pair) in enumerate(constants.norms):
            logical = [np.empty_like(dw_scale), np.empty_like(dw_offset)]
            logical[0][depthwise_index], logical[1][depthwise_index] = dw_scale, dw_offset
            set_affine(self.norm(i, 0), *logical)
            set_affine(self.norm(i, 1), *pw_pair)

    def export_call(self, x, constants, affine):
        """The export form: the literal block on constants. Each kernel is ONE constant read
        by every reuse; the depthwise conv runs on the tiled input; each BatchNorm is
        `affine`, the 1x1 conv's on the (2, C/2) view that the shuffle reshapes to anyway;
        the shuffle is reshape/split/concat/transpose. The residual add stays 4-D: in int8 a
        5-D ADD with a fused ReLU is left in float by the quantizer."""

        def norm(i, j, y):
            return affine(y, *constants.norms[i][j], self._norm_view(j))

        return reuse_chain(x, self.times, 2, self._export_layer(constants), norm,
                           residual_relu, self._export_move)

    def loop_export_call(self, x, constants, affine):
        """`export_call` as ONE loop over the N reuses (`reuse_loop`): the converter writes a
        WHILE op whose body holds one reuse's ops, so a TensorFlow Lite Micro arena holds
        one set of per-op data (each int8 conv's per-channel requantization) whatever N is.
        Each BatchNorm's scales and offsets are stacked into (N, C) constant tables and the
        loop reads row i with `slice` (a gather would add an op TFLM lacks); the shuffle
        runs after every reuse and the last one is undone after the loop."""
        # tables[j][k]: BatchNorm j's scales (k = 0) or offsets (k = 1), one row per reuse
        tables = [[ops.convert_to_tensor(np.stack([reuse[j][k] for reuse in constants.norms])
                                         .astype(np.float32)) for k in (0, 1)]
                  for j in (0, 1)]

        def norm(i, j, y):
            scale, offset = (_table_row(table, i) for table in tables[j])
            return affine(y, scale, offset, self._norm_view(j))

        def unmove(x):
            if self.shuffle is None:
                return x
            return unshuffle_channels(x, self.shuffle.groups, self.shuffle.swap_halves)

        return reuse_loop(x, self.times, 2, self._export_layer(constants), norm, residual_relu,
                          self._export_move, unmove)

    def _export_layer(self, constants):
        """`layer(i, j, y)` of the export forms: the depthwise conv (j = 0) on the tiled
        input and the grouped 1x1 conv (j = 1), each reading its kernel as one constant."""
        dw = ops.convert_to_tensor(constants.kernels["depthwise"])
        pw = ops.convert_to_tensor(constants.kernels["pointwise"])

        def layer(i, j, y):
            if j == 0:
                return ops.depthwise_conv(self._tile(y), dw, 1, padding="same")
            return grouped_pointwise_conv(y, pw, self.groups, needs_gradient=False)

        return layer

    def _norm_view(self, j):
        """The 5-D view of BatchNorm j's kept multiply-add in the export forms: None
        (the default) after the depthwise conv, the shuffle's (2, C/2) after the 1x1 conv."""
        if j == 0 or self.filters % 2:
            return None
        return (2, self.filters // 2)

    def _export_move(self, i, x):
        """The move between reuses in the export forms: the paper's shuffle, gather-free."""
        if self.shuffle is None:
            return x
        return shuffle_channels(x, self.shuffle.groups, self.shuffle.swap_halves)

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


def residual_relu(i, y, x):
    """The merge of an LRU block's reuse, in every formulation: ReLU(y + x)."""
    del i  # the same at every reuse
    return ops.relu(y + x)


def _table_row(table, i):
    """Row `i` (an int32 scalar tensor) of a (reuses, C) table, as a (C,) tensor, with a
    slice (TFLite SLICE), not a gather."""
    channels = table.shape[1]
    return ops.reshape(ops.slice(table, ops.stack([i, 0]), (1, channels)), (channels,))


def set_affine(norm, scale, offset):
    """Makes a BatchNorm compute `x * scale + offset` in inference."""
    norm.gamma.assign(scale)
    norm.beta.assign(offset)
    norm.moving_mean.assign(np.zeros_like(scale))
    norm.moving_variance.assign(np.full_like(scale, 1.0 - norm.epsilon))


def _add_channel_offset(x, offset):
    """`x + offset` over the last axis; TensorFlow's BiasAdd on the TF backend, which was
    faster than the broadcast add there (24 vs 29 ms per stage-1 reuse at batch 256)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.nn.bias_add(x, offset)
    return x + offset
