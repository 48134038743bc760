"""The export-time model: the same network and weights, in a graph the TFLite converter keeps.

Each layer that needs it owns its export form (`lru_keras.layers.export_form`): `LRUBlock`,
`Reused`, `ChannelShuffle`, `GroupedPointwiseConv2D` and `REAFConv2D` say how they compute
inside a .tflite. This module only rewrites a model generically (`export_model`): it clones
the model in float32, replaces each layer that has an export form by an `ExportedLayer`
calling it on constants read once, and chooses how a kept BatchNorm is written (`affine`):

- a per-channel multiply-add directly after a conv is folded by the converter into that conv,
  which copies a shared kernel once per call (`BN_FOLD`: the stock conversion);
- applied on a 5-D view of the tensor, e.g. (batch, H, W, C/2, 2), it is neither folded nor
  turned into a 1x1 depthwise conv (`BN_AFFINE_5D`: MUL + ADD with per-tensor int8
  constants, what int8 files use);
- written as a 1x1 depthwise conv with bias it is not folded either (`BN_DEPTHWISE`: one op,
  for float files).

A BatchNorm that follows a conv layer called at several places (kernel sharing between
isomorphic layers) is kept the same way, so that the shared kernel is stored once.

LRU blocks can also be written as one loop over their reuses (`loops`, see
`LRUBlock.loop_export_call`): one WHILE op whose body subgraph holds the ops of one reuse,
each BatchNorm's per-reuse scales and offsets read from a table at the loop counter (so the
`affine` forms also take tensors). TensorFlow Lite Micro keeps per-op data for every op, so
only the loop keeps its RAM arena independent of the number of reuses.

For int8 the constants can be rescaled without changing the function (`equalize`): each output
channel of a shared kernel is multiplied by one factor common to all reuses, and every reuse's
BatchNorm scale divided by it, so that the per-tensor int8 scale of the conv output fits all
its channels better (see `equalization`).
"""

import keras
import numpy as np
import tensorflow as tf

from lru_keras.layers.reuse import LRUBlock, norm_constants
from lru_keras.tflite.errors import UnsupportedModelError

BN_FOLD = "fold"            # per-channel multiply-add after the conv: folded by the converter
BN_AFFINE_5D = "affine5d"    # multiply-add on a 5-D view: kept (MUL + ADD), kernel stored once
BN_DEPTHWISE = "depthwise"   # a 1x1 DEPTHWISE_CONV_2D with bias: kept, one op per BatchNorm


def affine_in(form):
    """`affine(x, scale, offset, view)` in `form`: how an export form applies a BatchNorm."""

    def affine(x, scale, offset, view=None):
        """`x * scale + offset` per channel (last axis); with BN_AFFINE_5D on the 5-D view
        `view` (two trailing axes; default (C/2, 2), or (C, 1) for an odd channel count).
        `scale` and `offset` are numpy vectors, or (C,) tensors: a loop export form reads
        each reuse's row of a table inside the loop (`LRUBlock.loop_export_call`)."""
        channels = x.shape[-1]
        if form == BN_FOLD:
            return x * _on_view(scale, (channels,)) + _on_view(offset, (channels,))
        if form == BN_DEPTHWISE and len(x.shape) == 4:
            kernel = _on_view(scale, (1, 1, channels, 1))
            return tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "VALID") + _on_view(
                offset, (channels,))
        view = view or ((channels // 2, 2) if channels % 2 == 0 else (channels, 1))
        spatial = list(x.shape[1:-1])
        y = tf.reshape(x, [-1, *spatial, *view])
        y = y * _on_view(scale, view) + _on_view(offset, view)
        return tf.reshape(y, [-1, *spatial, channels])

    return affine


def _on_view(values, shape):
    """A BatchNorm's per-channel `values` as float32 of `shape`: a numpy constant (float64
    from `norm_constants`), or a tensor (a table row read inside a loop) reshaped in the
    graph."""
    if tf.is_tensor(values):
        return tf.reshape(tf.cast(values, tf.float32), shape)
    return np.reshape(values, shape).astype(np.float32)


class ExportedLayer(keras.layers.Layer):
    """A layer's export form (`layer.export_call`, or with `loop` its `loop_export_call`: one
    loop over the reuses) on constants read once, eagerly, before the model is traced.
    Holds the layer without tracking it: its variables are not read."""

    def __init__(self, layer, constants, form, loop=False, **kwargs):
        super().__init__(name=layer.name, dtype="float32", **kwargs)
        self.loop = bool(loop)
        self._export_call = layer.loop_export_call if self.loop else layer.export_call
        self._output_shape = layer.compute_output_shape
        self.times = getattr(layer, "times", 1)
        self.constants, self.form = constants, form

    def call(self, x, training=None, mask=None):
        del training, mask  # inference only; the arguments of the layer it replaces
        return self._export_call(x, self.constants, affine_in(self.form))

    def compute_output_shape(self, input_shape):
        return self._output_shape(input_shape)


class KeptBatchNorm(keras.layers.Layer):
    """A BatchNorm after one call of a shared conv, as an `affine` in a kept form."""

    def __init__(self, norm, form, **kwargs):
        super().__init__(name=norm.name, dtype="float32", **kwargs)
        self.scale, self.offset = norm_constants(norm)
        self.form = form

    def call(self, x, training=None, mask=None):
        del training, mask  # inference only; the arguments of the BatchNorm it replaces
        return affine_in(self.form)(x, self.scale, self.offset)


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


def loop_blocks(model):
    """Names of the model's LRU blocks (nested models' too), in order: the layers that
    `export_model(loops=...)` can export as one loop over their reuses."""
    return [layer.name for layer in all_layers(model) if isinstance(layer, LRUBlock)]


def resolve_loops(model, loops, argument="loops"):
    """The block names `loops` selects: False -> [], True -> every LRU block, or a list of
    LRU block names (checked). ValueError naming `argument`, the value and what is allowed;
    asking for loops in a model without LRU blocks is an error too."""
    if loops is False or loops is None:
        return []
    blocks = loop_blocks(model)
    if not blocks:
        raise ValueError(f"{argument}={loops!r}: model {model.name!r} has no LRU blocks to "
                         f"export as loops (only LRUBlock layers have a loop form).")
    if loops is True:
        return blocks
    if isinstance(loops, str) or not isinstance(loops, (list, tuple)) or not loops or \
            not all(isinstance(name, str) for name in loops):
        raise ValueError(f"{argument}={loops!r}; expected False, True, or a non-empty list of "
                         f"LRU block names of model {model.name!r}: {blocks}")
    unknown = [name for name in loops if name not in blocks]
    if unknown:
        raise ValueError(f"{argument}: {unknown} are not LRU blocks of model {model.name!r}; "
                         f"its LRU blocks are {blocks}")
    return [name for name in blocks if name in loops]


def export_model(model, share_weights=True, equalize=None, form=None, silence_dead=False,
                 loops=False):
    """A float32 clone of `model` (same weights) whose layers compute their export forms.

    Args:
        model: a functional or Sequential Keras model (any layers; those with an export form,
            see `lru_keras.layers.export_form`, are rewritten).
        share_weights: keep each shared kernel once (BatchNorms as unfoldable multiply-adds);
            False: BatchNorms as plain multiply-adds the converter folds (kernel copies).
        equalize: None, or a function `layer -> rescale factors or None` (see
            `equalization.equalization_factors`) for the layers whose `export_constants`
            takes `rescale`; must not change outputs.
        silence_dead: `silence_dead_channels` on the copy (for quantized files).
        form: how a kept per-reuse BatchNorm is written, with share_weights: BN_AFFINE_5D
            (default; MUL + ADD, what int8 needs: per-tensor int8 constants, 2 bytes per
            channel) or BN_DEPTHWISE (one 1x1 depthwise conv per BatchNorm: fewer ops, for
            float files; in int8 its per-channel quantization parameters cost ~29 bytes per
            channel and reuse, which doubled the file).
        loops: LRU blocks exported as one loop over their reuses (`LRUBlock.loop_export_call`:
            one WHILE op, the ops of one reuse in its body): False (none, the default), True
            (all, see `loop_blocks`) or a list of block names. Needs share_weights (a loop
            reads one kernel; folding would need one per reuse).
    """
    loop_names = set(resolve_loops(model, loops))
    if loop_names and not share_weights:
        raise ValueError(f"loops={loops!r} needs share_weights=True: a loop reads one kernel "
                         f"at every reuse; the folded form has a kernel copy per reuse.")
    copy, constants, form = prepare(model, share_weights, equalize, form, silence_dead)
    after_shared = {id(layer) for layer in norms_after_shared_convs(copy)}

    originals = []  # (clone, layer of `copy`) of the layers kept as they are

    def rewrite(layer):
        if layer.name in constants or hasattr(layer, "export_call"):
            times = getattr(layer, "times", 1)
            # A block called once has nothing to share: folding is smaller and faster.
            return ExportedLayer(layer, constants.get(layer.name),
                                 BN_FOLD if times == 1 else form,
                                 loop=layer.name in loop_names)
        if id(layer) in after_shared:
            return KeptBatchNorm(layer, form)
        clone = layer.__class__.from_config(layer.get_config())
        originals.append((clone, layer))
        return clone

    exported = keras.models.clone_model(copy, clone_function=rewrite, recursive=True)
    for clone, layer in originals:
        clone.set_weights(layer.get_weights())
    return exported


def prepare(model, share_weights=True, equalize=None, form=None, silence_dead=False):
    """What `export_model` rewrites (same arguments): (a float32 copy of the model with the
    same weights, dead channels silenced as asked; {layer name: its ExportConstants},
    equalized as asked; the BatchNorm form)."""
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
    try:
        copy = keras.models.clone_model(
            model, recursive=True, clone_function=lambda layer: layer.__class__.from_config(
                float32_config(layer.get_config())))
    except Exception as error:  # noqa: BLE001  (any layer that cannot be rebuilt from config)
        raise UnsupportedModelError(
            f"model {model.name!r} cannot be rebuilt for export: {error}") from error
    copy.set_weights(model.get_weights())
    if silence_dead:
        silence_dead_channels(copy)
    constants = {}
    for layer in all_layers(copy):
        if not hasattr(layer, "export_constants"):
            continue
        factors = equalize(layer) if equalize and getattr(layer, "times", 1) > 1 else None
        constants[layer.name] = (layer.export_constants() if factors is None
                                 else layer.export_constants(rescale=factors))
    return copy, constants, form


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
    try:
        return keras.dtype_policies.get(policy).name
    except (ValueError, TypeError):
        return None


def _is_functional(model):
    from keras.src.models.functional import Functional  # Keras 3's functional model class

    return isinstance(model, Functional)


def all_layers(model):
    """The layers of a model, those of nested models included."""
    out = []
    for layer in model.layers:
        out.append(layer)
        if isinstance(layer, keras.Model):
            out.extend(all_layers(layer))
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
