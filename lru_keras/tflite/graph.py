"""The export-time model: the same network and weights, in a graph the TFLite converter keeps.

`LRUBlock.call` is tuned for TensorFlow on CPU: with oneDNN it tracks a physical channel
layout and, in inference, folds every BatchNorm into a per-reuse copy of the kernels. A
.tflite needs something else: the paper's literal block (`Reused.call`), written so that

- each shared kernel is ONE constant read by all N reuses;
- each per-reuse BatchNorm stays a separate op. The converter folds a per-channel
  multiply-add that directly follows a conv into that conv, which copies the shared kernel
  once per reuse (../shared/notes/stack.md). Applied on a 5-D view of the tensor,
  e.g. (batch, H, W, C/2, 2), it is neither folded nor turned into a 1x1 depthwise conv
  (BN_AFFINE_5D: MUL + ADD, per-tensor int8 constants, what int8 files use); written as a 1x1
  depthwise conv with bias it is not folded either (BN_DEPTHWISE: one op, for float files);
- the channel shuffle is reshape + split/concat + transpose, no GATHER: XNNPACK does not take
  GATHER, and one GATHER per reuse split the delegate into one partition per reuse;
- the depthwise conv (depth multiplier 2) runs as a multiplier-1 conv on a group-wise tiled
  input (`tiled_order`): XNNPACK's int8 multiplier-2 kernel took most of the time.

`export_model(model, share_weights)` clones a functional/Sequential Keras model with
`keras.models.clone_model`, replacing `LRUBlock`, `Reused` and `ChannelShuffle` layers by the
export versions below (identical weights), and gives each export block its constants. With
`share_weights=False` the BatchNorms are plain per-channel multiply-adds after the convs, so
the converter folds them (one kernel copy per reuse): the stock conversion, GATHER-free.

For int8 the constants can be rescaled without changing the function (`equalize`): each output
channel of a shared kernel is multiplied by one factor common to all reuses, and every reuse's
BatchNorm scale divided by it, so that the per-tensor int8 scale of the conv output fits all
its channels better (see `calibration.equalize_lru_block`).
"""

import keras
import numpy as np
import tensorflow as tf

from lru_keras.layers.batch_norm import folded_scale_offset
from lru_keras.layers.channel_shuffle import ChannelShuffle
from lru_keras.layers.reuse import LRUBlock, Reused

BN_FOLD = "fold"            # per-channel multiply-add after the conv: folded by the converter
BN_AFFINE_5D = "affine5d"    # multiply-add on a 5-D view: kept (MUL + ADD), kernel stored once
BN_DEPTHWISE = "depthwise"   # a 1x1 DEPTHWISE_CONV_2D with bias: kept, one op per BatchNorm
BN_FORMS = (BN_FOLD, BN_AFFINE_5D, BN_DEPTHWISE)


class UnsupportedModelError(ValueError):
    """The model (or one of its layers) cannot be exported as asked; the message says why."""


# ------------------------------------------------------------------------------------------
# Building blocks of the export graph (TensorFlow ops: the export path is TF-only).
# ------------------------------------------------------------------------------------------
def channel_view(channels):
    """The trailing shape of the 5-D view a per-channel multiply-add is applied on."""
    return (channels // 2, 2) if channels % 2 == 0 else (channels, 1)


def affine(x, scale, offset, form):
    """`x * scale + offset` per channel (last axis), in a form the converter keeps or folds."""
    channels = x.shape[-1]
    if form == BN_FOLD:
        return x * scale.astype(np.float32) + offset.astype(np.float32)
    if form == BN_DEPTHWISE and len(x.shape) == 4:
        kernel = scale.reshape(1, 1, channels, 1).astype(np.float32)
        return tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "VALID") + offset.astype(
            np.float32)
    view = channel_view(channels)
    spatial = list(x.shape[1:-1])
    y = tf.reshape(x, [-1, *spatial, *view])
    y = y * scale.reshape(view).astype(np.float32) + offset.reshape(view).astype(np.float32)
    return tf.reshape(y, [-1, *spatial, channels])


def tiled_order(channels, groups, multiplier):
    """Channel orders of the depthwise conv run as multiplier 1 on a group-wise tiled input.

    XNNPACK's int8 depthwise conv with depth multiplier 2 was the slowest op of 14-LruNet-1x
    (int8, one thread: 4.3 ms per image with it, 1.6 ms with this formulation). Tiling
    the input group by group, (groups, 1, C/groups) -> (groups, M, C/groups) with one
    CONCATENATION, gives physical channel e = (g, m, r) holding input channel g*C/groups + r,
    so a multiplier-1 conv computes the logical output channel (g*C/groups + r)*M + m there,
    and each group's M*C/groups channels stay side by side for the grouped 1x1 conv (as in
    `LRUBlock`'s fast path, `shuffle_layout.expanded_indices`).

    Returns (order, rows): `order[e]` is the logical depthwise output channel at physical
    position e; `rows[p]` the logical row (within a group) of the grouped 1x1 kernel that
    physical row p must hold.
    """
    size = channels // groups
    g, m, r = np.meshgrid(np.arange(groups), np.arange(multiplier), np.arange(size),
                          indexing="ij")
    order = ((g * size + r) * multiplier + m).reshape(-1)
    m, r = np.divmod(np.arange(multiplier * size), size)
    rows = r * multiplier + m
    return order, rows


def paper_shuffle(x, groups=2, swap_halves=True):
    """`ChannelShuffle(groups, swap_halves)` with reshape, split, concat and transpose only."""
    channels = x.shape[-1]
    spatial = list(x.shape[1:-1])
    y = tf.reshape(x, [-1, *spatial, groups, channels // groups])
    if swap_halves:
        if groups == 2:
            first, second = tf.split(y, 2, axis=-2)
            y = tf.concat([second, first], axis=-2)
        else:  # swap the channel halves first, in the flat view
            flat = tf.reshape(y, [-1, *spatial, 2, channels // 2])
            flat = tf.concat([flat[..., 1:, :], flat[..., :1, :]], axis=-2)
            y = tf.reshape(flat, [-1, *spatial, groups, channels // groups])
    rank = len(y.shape)
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    return tf.reshape(tf.transpose(y, perm), [-1, *spatial, channels])


def norm_constants(norm):
    """(scale, offset) numpy arrays of a BatchNorm in inference: `y = x * scale + offset`."""
    scale, offset = folded_scale_offset(norm)
    return np.asarray(scale, np.float64), np.asarray(offset, np.float64)


# ------------------------------------------------------------------------------------------
# Export layers.
# ------------------------------------------------------------------------------------------
class ExportLRUBlock(LRUBlock):
    """`LRUBlock` computed literally from frozen constants (see the module docstring).

    `freeze(form, equalize)` must run (eagerly, after the weights are set) before the block is
    traced; it stores the shared kernels once and the per-reuse BatchNorm scale/offset pairs.
    """

    def freeze(self, form, equalize=None):
        dw = np.asarray(self.depthwise.kernel, np.float64)   # (k, k, C, M)
        pw = np.asarray(self.pointwise.kernel, np.float64)   # (1, 1, M*C/groups, C)
        norms = [(norm_constants(self.norm(i, 0)), norm_constants(self.norm(i, 1)))
                 for i in range(self.times)]
        if equalize is not None:
            dw, pw, norms = equalize(self, dw, pw, norms)
        # Tiled layout (see `tiled_order`): the depthwise kernel and its BatchNorms in tiled
        # channel order, the grouped 1x1 kernel's rows permuted to match. Each kernel is still
        # one constant holding the same weights, only reordered once.
        order, rows = tiled_order(self.filters, self.groups, self.depth_multiplier)
        k = dw.shape[0]
        dw = dw.reshape(k, k, -1)[:, :, order][..., None]             # (k, k, M*C, 1)
        pw = pw[:, :, rows, :]
        norms = [((a[order], b[order]), gh) for (a, b), gh in norms]
        self.frozen = {"form": form, "dw": dw.astype(np.float32), "pw": pw.astype(np.float32),
                       "norms": norms}

    def call(self, x, training=None):
        """N reuses, literally; the op sequence of one reuse (shared kernels, int8 form):

        RESHAPE, CONCATENATION, RESHAPE (tile)   DEPTHWISE_CONV_2D (the shared kernel)
        RESHAPE, MUL, ADD, RESHAPE (BatchNorm)   CONV_2D (the shared grouped 1x1 kernel)
        RESHAPE, MUL, ADD, RESHAPE (BatchNorm, on the (2, C/2) view the shuffle uses)
        ADD + ReLU (residual)                    RESHAPE, SPLIT, CONCATENATION, TRANSPOSE,
                                                 RESHAPE (the paper's shuffle)
        The residual add stays 4-D: in int8 a 5-D ADD with a fused ReLU is left in float by
        the quantizer (and so is one whose input is a reshaped 5-D state).
        """
        frozen = self.frozen
        form = frozen["form"]
        dw = tf.constant(frozen["dw"])   # one constant for every reuse
        pw = tf.constant(frozen["pw"])
        channels, groups, multiplier = self.filters, self.groups, self.depth_multiplier
        spatial = list(x.shape[1:-1])
        flat, view = [-1, *spatial, channels], [-1, *spatial, 2, channels // 2]
        halves = channels % 2 == 0
        for i, ((dw_scale, dw_offset), (pw_scale, pw_offset)) in enumerate(frozen["norms"]):
            tiled = tf.reshape(x, [-1, groups, 1, channels // groups])
            tiled = tf.concat([tiled] * multiplier, axis=2)
            tiled = tf.reshape(tiled, [-1, *spatial, channels * multiplier])
            d = tf.nn.depthwise_conv2d(tiled, dw, [1, 1, 1, 1], "SAME")
            d = affine(d, dw_scale, dw_offset, form)
            z = tf.nn.conv2d(d, pw, 1, "VALID")   # grouped: pw's input depth is M*C/groups
            if form == BN_AFFINE_5D and halves:
                z = tf.reshape(z, view) * pw_scale.reshape(2, -1).astype(np.float32) \
                    + pw_offset.reshape(2, -1).astype(np.float32)
                z = tf.reshape(z, flat)
            else:
                z = affine(z, pw_scale, pw_offset, form)
            x = tf.nn.relu(z + x)
            if self.shuffle is None or i == self.times - 1:
                continue
            if self.shuffle.groups == 2 and self.shuffle.swap_halves and halves:
                first, second = tf.split(tf.reshape(x, view), 2, axis=-2)
                y = tf.concat([second, first], axis=-2)
                rank = len(y.shape)
                x = tf.reshape(tf.transpose(y, [*range(rank - 2), rank - 1, rank - 2]), flat)
            else:
                x = paper_shuffle(x, self.shuffle.groups, self.shuffle.swap_halves)
        return x


class ExportReused(Reused):
    """`Reused` with its per-reuse BatchNorms as export-form multiply-adds.

    The reused layers run their own `call` (their variables become one constant each); a
    BatchNorm is applied as `affine(..., form)`; a `ChannelShuffle` as `paper_shuffle`.
    """

    def freeze(self, form, equalize=None):
        del equalize  # only LRU blocks are equalized
        self.frozen = {"form": form, "norms": [norm_constants(n) for n in self.norms]}

    def call(self, x, training=None):
        form, norms = self.frozen["form"], self.frozen["norms"]
        k = len(self.reused_layers)
        for i in range(self.times):
            y = x
            for j, layer in enumerate(self.reused_layers):
                scale, offset = norms[i * k + j]
                y = affine(layer(y, training=False), scale, offset, form)
            if self.residual:
                y = y + x
            x = self.activation(y)
            if self.shuffle is not None and i < self.times - 1:
                x = _export_shuffle(self.shuffle, x)
        return x


class ExportBatchNormalization(keras.layers.BatchNormalization):
    """A BatchNorm after one call of a shared conv (kernel-sharing models: one conv layer
    called at several places, each call with its own BatchNorm), as an export-form
    multiply-add, so that the converter does not fold it into (a copy of) the shared kernel."""

    def freeze(self, form, equalize=None):
        del equalize
        self.frozen = {"form": form, "norm": norm_constants(self)}

    def call(self, inputs, training=None, mask=None):
        scale, offset = self.frozen["norm"]
        return affine(inputs, scale, offset, self.frozen["form"])


class ExportChannelShuffle(ChannelShuffle):
    """`ChannelShuffle` as reshape/slice/concat/transpose (no GATHER)."""

    def call(self, x):
        return paper_shuffle(x, self.groups, self.swap_halves)


def _export_shuffle(shuffle, x):
    if isinstance(shuffle, ChannelShuffle):
        return paper_shuffle(x, shuffle.groups, shuffle.swap_halves)
    return shuffle(x)


# ------------------------------------------------------------------------------------------
# The export model.
# ------------------------------------------------------------------------------------------
DEAD_CHANNEL_STD = 1e-4


def silence_dead_channels(model, threshold=DEAD_CHANNEL_STD):
    """Sets gamma = 0 in every BatchNorm channel whose output hardly varies; returns how many.

    A channel whose input variance is ~0 (a dead filter: moving variance down to 1e-45 in the
    published checkpoints) still gets the scale gamma / sqrt(var + eps), up to ~300 x gamma.
    In float that multiplies ~0 and the channel outputs beta; in int8 it multiplies the
    rounding error of the conv output and injects noise (10-LruNet-1x on Fashion-MNIST lost
    5.7 points in int8, with the plain folded conversion too). With gamma = 0 the channel
    outputs beta exactly. Criterion: the channel's output standard deviation in inference,
    |gamma| * sqrt(var / (var + eps)), below `threshold`. On the zoo's 14-LruNet-1x (148 of
    40,640 channels) and 10-LruNet-1x (550 of 29,120) the float outputs moved by < 1e-3 and
    no test prediction changed.
    """
    silenced = 0
    for layer in model._flatten_layers():  # noqa: SLF001  (nested BatchNorms of reuse blocks)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.scale:
            gamma = np.asarray(layer.gamma)
            variance = np.asarray(layer.moving_variance)
            std = np.abs(gamma) * np.sqrt(variance / (variance + layer.epsilon))
            dead = std < threshold
            if dead.any():
                layer.gamma.assign(np.where(dead, 0.0, gamma).astype(gamma.dtype))
                silenced += int(dead.sum())
    return silenced


def export_model(model, share_weights=True, equalize=None, form=None, silence_dead=False):
    """A clone of `model` (same weights) whose reuse blocks compute the export graph.

    Args:
        model: a functional or Sequential Keras model (any layers; reuse blocks are rewritten).
        share_weights: keep each shared kernel once (BatchNorms as unfoldable multiply-adds);
            False: BatchNorms as plain multiply-adds the converter folds (kernel copies).
        equalize: None, or a function `(block, dw, pw, norms) -> (dw, pw, norms)` applied to
            each LRU block's constants (see `calibration.equalize_lru_block`); must not
            change outputs.
        silence_dead: `silence_dead_channels` on the copy (for quantized files).
        form: how a kept per-reuse BatchNorm is written, with share_weights: BN_AFFINE_5D
            (default; MUL + ADD, what int8 needs: per-tensor int8 constants, 2 bytes per
            channel) or BN_DEPTHWISE (one 1x1 depthwise conv per BatchNorm: fewer ops, for
            float files; in int8 its per-channel quantization parameters cost ~29 bytes per
            channel and reuse, which doubled the file).
    """
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(
            f"export needs a keras.Model, got {type(model).__name__}.")
    if not (isinstance(model, keras.Sequential) or _is_functional(model)):
        raise UnsupportedModelError(
            f"model {model.name!r} is a subclassed keras.Model; export needs a functional or "
            f"Sequential model (its graph of layers is what gets rewritten).")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnsupportedModelError(
            f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} "
            f"outputs; export supports one image input and one output.")
    if not share_weights:
        form = BN_FOLD
    elif form is None:
        form = BN_AFFINE_5D
    elif form not in (BN_AFFINE_5D, BN_DEPTHWISE):
        raise ValueError(f"form={form!r}; with share_weights expected {BN_AFFINE_5D!r} or "
                         f"{BN_DEPTHWISE!r}")

    after_shared = set(id(layer) for layer in norms_after_shared_convs(model))

    def clone(layer):
        config = float32_config(layer.get_config())
        if id(layer) in after_shared:
            return ExportBatchNormalization.from_config(config)
        if isinstance(layer, LRUBlock):
            return ExportLRUBlock.from_config(config)
        if isinstance(layer, Reused):
            return ExportReused.from_config(config)
        if type(layer) is ChannelShuffle:
            return ExportChannelShuffle.from_config(config)
        return layer.__class__.from_config(config)

    try:
        copy = keras.models.clone_model(model, clone_function=clone)
    except Exception as error:  # noqa: BLE001  (any layer that cannot be rebuilt from config)
        raise UnsupportedModelError(
            f"model {model.name!r} cannot be rebuilt for export: {error}") from error
    copy.set_weights(model.get_weights())
    if silence_dead:
        silence_dead_channels(copy)
    for layer in _all_layers(copy):
        if isinstance(layer, (ExportLRUBlock, ExportReused)) and layer.times == 1:
            layer.freeze(BN_FOLD)  # called once: nothing to share, folding is smaller/faster
        elif isinstance(layer, (ExportLRUBlock, ExportReused, ExportBatchNormalization)):
            layer.freeze(form, equalize)
    return copy


HALF_PRECISION_POLICIES = ("mixed_float16", "mixed_bfloat16", "float16", "bfloat16")


def float32_config(config):
    """A layer config with every half-precision dtype policy (nested layers' too) replaced by
    float32: a model trained under mixed precision exports as a float32 graph, which the
    converter then stores in the requested precision."""
    if isinstance(config, list):
        return [float32_config(item) for item in config]
    if not isinstance(config, dict):
        return config
    out = {key: float32_config(value) for key, value in config.items()}
    policy = out.get("dtype")
    if isinstance(policy, (str, dict)) and _policy_name(policy) in HALF_PRECISION_POLICIES:
        out["dtype"] = "float32"
    return out


def _policy_name(policy):
    if isinstance(policy, str):
        return policy
    return policy.get("config", {}).get("name") if policy.get("class_name") == "DTypePolicy" \
        else None


def _is_functional(model):
    from keras.src.models.functional import Functional  # Keras 3's functional model class

    return isinstance(model, Functional)


def _all_layers(model):
    out = []
    for layer in model.layers:
        out.append(layer)
        if isinstance(layer, keras.Model):
            out.extend(_all_layers(layer))
    return out


CONV_TYPES = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D",
              "SeparableConv1D", "SeparableConv2D", "Dense", "GroupedPointwiseConv2D")


def is_conv_like(layer):
    """True for the layers a TFLite conv/matmul op comes from (by class, subclasses too)."""
    return any(cls.__name__ in CONV_TYPES for cls in type(layer).__mro__)


def shared_layers(model):
    """Conv-like layers the model calls at more than one place: {layer: number of calls}."""
    return {layer: len(layer._inbound_nodes) for layer in model.layers
            if is_conv_like(layer) and len(layer._inbound_nodes) > 1}


def norms_after_shared_convs(model):
    """BatchNormalization layers (channels last) whose input is the output of a shared conv."""
    shared = shared_layers(model)
    found = []
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or not layer._inbound_nodes:
            continue
        rank = len(layer._inbound_nodes[0].input_tensors[0].shape)
        if layer.axis not in (-1, rank - 1):
            continue
        for node in layer._inbound_nodes:
            if any(parent.operation in shared for parent in node.parent_nodes):
                found.append(layer)
                break
    return found


def reuse_blocks(model):
    """The reuse blocks (`Reused`, incl. `LRUBlock`) of a model, nested models included."""
    return [layer for layer in _all_layers(model) if isinstance(layer, Reused)]
