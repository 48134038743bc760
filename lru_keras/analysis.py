"""Model accounting as the LruNet paper counts: parameters, conv parameters, MACs, stage table.

Conventions (those of the paper's Tables 1, 2 and 5-7):

- Params: trainable variables, each counted ONCE however often its layer is reused, BatchNorm
  gamma/beta included; BatchNorm moving statistics are `non_trainable` and not counted.
- Conv params: kernels and biases of convolution and dense layers only (the paper's "Conv.
  Params"): 125,002 for LruNet-1x on CIFAR-10, the same for every N.
- MFLOPs = millions of multiply-accumulates of convolution and dense layers (the usual
  convention of mobile-network papers); BatchNorm, ReLU, add, pooling, shuffle not counted.
  Counted per image, from the shapes each layer is called with; a layer called N times
  counts N times. These counts are 7-14% below the paper's MFLOPs on every row of its
  Tables 2, 5 and 6 (the paper does not say what else it counted).

The model is walked generically: every call in a functional graph, nested functional and
Sequential models, and `Reused` layers (which call their `reused_layers` `times` times).
"""

import math

import keras

from lru_keras.layers.reuse import Reused

_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_CONVOLUTION = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
# Layers whose multiply-accumulates are counted, and whose kernels/biases are "conv params".
COUNTED_LAYERS = _DEPTHWISE + _CONVOLUTION + (keras.layers.Dense,)
# Padding changes the shape but is folded into the next layer in the paper's Table 1.
_PADDING = (keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D)

MFLOPS_CONVENTION = (
    "MFLOPs = millions of multiply-accumulates of convolution and dense layers (the usual "
    "convention of mobile-network papers); BatchNorm, ReLU, add, pooling, shuffle not counted"
)


def count_parameters(model):
    """{"trainable", "conv", "non_trainable"} parameter counts; shared variables count once."""
    conv_weights = [
        w for layer in _all_layers(model)
        if isinstance(layer, COUNTED_LAYERS) or _counts_own_macs(layer)
        for w in layer.weights
    ]
    return {
        "trainable": _size(model.trainable_weights),
        "conv": _size(conv_weights),
        "non_trainable": _size(model.non_trainable_weights),
    }


def count_macs(model):
    """Multiply-accumulates per image of every conv/dense call in `model` (see module doc)."""
    return sum(_call_macs(layer, inputs, outputs) for layer, inputs, outputs in _calls(model))


def summary(model):
    """Name, input shape, parameter counts, MACs and MFLOPs of a model, as one dict."""
    macs = count_macs(model)
    return {
        "model": model.name,
        "input_shape": list(model.input_shape[1:]),
        "outputs": model.output_shape[-1],
        **{f"{kind}_params": n for kind, n in count_parameters(model).items()},
        "macs": macs,
        "mflops": macs / 1e6,
    }


def stage_table(model):
    """Rows like the paper's Table 1, one per top-level call that computes or reshapes.

    A call gets a row if it has MACs or changes the tensor shape (padding excepted). Each row
    is a dict: name, layer (class), kernel (e.g. "3x3/s2", "dw 3x3, 1x1 g8"), reuse (N of a
    `Reused` layer, else None), output_shape (without the batch axis), params (trainable,
    counted once) and macs. The params of calls without a row of their own (the BatchNorm
    after a conv) are added to the row before them, so the params column sums to the
    trainable count and the macs column to `count_macs(model)`.
    """
    rows, seen = [], set()
    for layer, inputs, outputs in _calls(model):
        new = [w for w in _unique(layer.trainable_weights) if id(w) not in seen]
        seen.update(id(w) for w in new)
        params, macs = _size(new), _call_macs(layer, inputs, outputs)
        first_input = inputs[0] if isinstance(inputs, list) else inputs
        reshapes = outputs != first_input and not isinstance(layer, _PADDING)
        if macs or reshapes or (params and not rows):
            rows.append({
                "name": layer.name,
                "layer": type(layer).__name__,
                "kernel": _kernel(layer),
                "reuse": layer.times if isinstance(layer, Reused) else None,
                "output_shape": outputs[1:] if isinstance(outputs, tuple) else outputs,
                "params": params,
                "macs": macs,
            })
        elif rows:
            rows[-1]["params"] += params
    return rows


def format_summary(info):
    """Text lines of a `summary()` dict, with the counting conventions spelled out."""
    shape = "x".join(map(str, info["input_shape"]))
    return "\n".join([
        f"model:         {info['model']} (input {shape}, {info['outputs']} outputs)",
        f"params:        {info['trainable_params']:,} trainable (BatchNorm gamma/beta "
        f"included, shared weights counted once)",
        f"conv params:   {info['conv_params']:,} (kernels and biases of conv/dense layers)",
        f"non-trainable: {info['non_trainable_params']:,} (BatchNorm moving statistics)",
        f"MFLOPs:        {info['mflops']:.2f} ({info['macs']:,} MACs per image)",
        f"               {MFLOPS_CONVENTION}",
    ])


def format_stage_table(rows):
    """A `stage_table()` as aligned text, with a total line."""
    body = [
        [row["name"], row["layer"], row["kernel"], "" if row["reuse"] is None else row["reuse"],
         "x".join(map(str, row["output_shape"])), f"{row['params']:,}", f"{row['macs']:,}"]
        for row in rows
    ]
    total = ["total", "", "", "", "", f"{sum(r['params'] for r in rows):,}",
             f"{sum(r['macs'] for r in rows):,}"]
    header = ["name", "layer", "kernel", "reuse", "output", "params", "MACs"]
    return format_table(header, body + [total], align_right=(3, 5, 6))


def format_table(header, rows, align_right=()):
    """Aligned plain-text table: a header, a rule, then the rows (cells made strings)."""
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row):
        return "  ".join(
            c.rjust(w) if i in align_right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def format_markdown_table(header, rows, align_right=()):
    """Markdown table: a header, the alignment row (columns in `align_right` right-aligned),
    then the rows (cells made strings)."""
    rule = "|" + "|".join("---:" if i in align_right else "---" for i in range(len(header))) + "|"
    return "\n".join(["| " + " | ".join(map(str, header)) + " |", rule,
                      *("| " + " | ".join(map(str, row)) + " |" for row in rows)])


def _calls(model):
    """(layer, input shape(s), output shape(s)) of every layer call in a functional model, in
    order.

    Keras keeps the call graph only privately (`_nodes_by_depth`: the deepest nodes are the
    inputs); this is the one place that reads it.
    """
    order = {id(layer): i for i, layer in enumerate(model.layers)}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        nodes = sorted(model._nodes_by_depth[depth], key=lambda n: order.get(id(n.operation), 0))
        for node in nodes:
            # keras.ops calls on symbolic tensors (e.g. a split) are graph nodes too, but not
            # layers: they hold no weights and do no multiply-accumulates.
            if not node.is_input and isinstance(node.operation, keras.layers.Layer):
                yield node.operation, _shapes(node.input_tensors), _shapes(node.output_tensors)


def _shapes(tensors):
    shapes = [tuple(t.shape) for t in tensors]
    return shapes[0] if len(shapes) == 1 else shapes


def _call_macs(layer, inputs, outputs):
    """MACs per image of one call of `layer`, including the layers it calls inside."""
    if isinstance(layer, Reused):
        once = _chain_macs(layer.reused_layers, inputs)
        between = 0 if layer.shuffle is None else _call_macs(layer.shuffle, inputs, inputs)
        return layer.times * once + (layer.times - 1) * between
    if isinstance(layer, keras.Sequential):
        return _chain_macs(layer.layers, inputs)
    if isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth"):  # functional
        return count_macs(layer)
    if isinstance(layer, COUNTED_LAYERS):
        return _leaf_macs(layer, inputs, outputs)
    if _counts_own_macs(layer):  # e.g. REAFConv2D: a conv layer that knows its own cost
        return layer.count_macs(inputs, outputs)
    if hasattr(layer, "kernel") or any(
        isinstance(sub, COUNTED_LAYERS) for sub in _all_layers(layer)
    ):
        raise ValueError(
            f"count_macs cannot count layer {layer.name!r} ({type(layer).__name__}): it is not "
            f"one of {[c.__name__ for c in COUNTED_LAYERS]}, and only functional models, "
            f"Sequential and Reused layers are walked inside."
        )
    return 0


def _chain_macs(layers, shape):
    """MACs of calling `layers` one after the other on an input of `shape`."""
    total = 0
    for layer in layers:
        out = tuple(layer.compute_output_shape(shape))
        total += _call_macs(layer, shape, out)
        shape = out
    return total


def _leaf_macs(layer, inputs, outputs):
    """Conv: outputs x window x input channels per group; depthwise: outputs x window."""
    if None in inputs[1:] or None in outputs[1:]:
        raise ValueError(
            f"count_macs needs fully known shapes; layer {layer.name!r} is called on "
            f"{inputs} -> {outputs}. Build the model with a fixed input_shape."
        )
    values = math.prod(outputs[1:])
    if isinstance(layer, keras.layers.Dense):
        return values * inputs[-1]
    window = math.prod(layer.kernel_size)
    if isinstance(layer, _DEPTHWISE):
        return values * window
    channels = inputs[-1] if layer.data_format == "channels_last" else inputs[1]
    return values * window * (channels // layer.groups)


def _kernel(layer):
    """Kernel text of a layer: "3x3/s2", "1x1 g8", "dw 3x3"; a Reused layer lists its own."""
    if isinstance(layer, Reused):
        return ", ".join(filter(None, (_kernel(sub) for sub in layer.reused_layers)))
    size = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None)
    if not size:
        return ""
    text = ("dw " if isinstance(layer, _DEPTHWISE) else "") + "x".join(map(str, size))
    strides = tuple(getattr(layer, "strides", None) or (1,))
    if set(strides) != {1}:
        text += "/s" + ("x".join(map(str, strides)) if len(set(strides)) > 1 else str(strides[0]))
    groups = getattr(layer, "groups", 1)
    if isinstance(groups, tuple):  # REAFConv2D: (G_I, G_M, G_O)
        text += (" REAF " + "-".join(map(str, groups))) if groups != (1, 1, 1) else ""
    elif groups > 1:
        text += f" g{layer.groups}"
    return text


def _counts_own_macs(layer):
    """True for conv-like layers with a `count_macs(input_shape, output_shape)` method."""
    return callable(getattr(layer, "count_macs", None)) and not isinstance(layer, keras.Model)


def _all_layers(layer):
    """Every layer inside `layer`, recursively, each once (Keras's own walk; private)."""
    return layer._flatten_layers(include_self=False, recursive=True)


def _unique(variables):
    found = {}
    for v in variables:
        found.setdefault(id(v), v)
    return list(found.values())


def _size(variables):
    return sum(math.prod(v.shape) for v in _unique(variables))
