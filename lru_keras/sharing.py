"""Inter-layer kernel sharing for any functional Keras model (Azadbakht et al., "Drastically
reducing the number of trainable parameters in deep CNNs by inter-layer kernel-sharing").

Isomorphic layers (same class, same configuration, same weight shapes: for convolutions the
same kernel size, strides, padding, dilation, filters, groups, bias and input channels) can
use one kernel. In Keras that is one layer object called at every place: its variables exist
once, and backpropagation sums the gradients of all calls (the paper's Eq. 1) by itself.

`share_kernels(model, policy)` returns an equivalent model in which each sharing group of
layers is replaced by ONE layer object, called at every place a member was called. Everything
else, every BatchNorm in particular, stays a layer of its own. The shared layer takes the
first member's name and weights; every other layer keeps its weights. The input model is left
untouched (the result has new variables).

The "stage" policy, precisely (`plan_sharing(model, "stage")`):

1. The candidates are the convolution layers (`Conv1D/2D/3D` and subclasses,
   `DepthwiseConv1D/2D`, `SeparableConv1D/2D`, `Conv1D/2D/3DTranspose`) called directly by the
   model (layers inside nested models or custom layers are not looked into).
2. Only shape-preserving calls take part: a call whose output shape equals its input shape
   (batch axis excluded). Shape-changing convs (a stem, a strided or channel-changing conv,
   a projection shortcut) are never shared by this policy.
3. The shape-preserving calls, in the model's topological order (Keras's node depths, ties
   broken by layer order), are cut into stages wherever the input shape differs from the
   previous call's. A stage is thus a consecutive run of calls at one resolution and width;
   projection shortcuts, squeeze-excitation branches, pools and activations in between do not
   cut it, a conv at another shape does.
4. Within a stage, isomorphic layers form one sharing group. A layer that is already called
   at several places joins the groups of all its calls (groups that meet are merged).
   Groups of a single layer are dropped.

On ConvMixer this gives the two-kernel ("full") model: one stage, one group of depthwise and
one of pointwise convs. On SE-ResNet it gives the paper's all-stages sharing: per stage, the
second conv of every block and the first conv of blocks 2..d.

Explicit groups: `policy` = a list of lists of layer names; each inner list becomes one shared
layer with the weights and name of its FIRST name. Any isomorphic layers with weights may be
grouped (not normalization layers: the paper found sharing them hurts, and every BatchNorm is
kept separate here), e.g. the K-kernel ConvMixer:
`share_kernels(m, [[f"block{i}_depthwise" for i in run] for run in runs] + [...])`.
"""

import json

import keras

CONV_LAYERS = (
    keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
    keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D, keras.layers.SeparableConv2D,
    keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose,
)
NORMALIZATION_LAYERS = (
    keras.layers.BatchNormalization, keras.layers.LayerNormalization,
    keras.layers.GroupNormalization, keras.layers.UnitNormalization,
)
POLICIES = ("stage",)


def share_kernels(model, policy="stage", name=None):
    """A copy of `model` in which each sharing group uses one layer object (see module doc).

    Args:
        model: a functional Keras model (a built Sequential model is accepted too).
        policy: "stage" (automatic, see the module doc) or a list of sharing groups, each a
            list of at least two layer names of `model`.
        name: name of the new model; default: `model.name`.

    Returns:
        A new functional model with the same inputs, outputs and call graph; shared layers
        carry the first member's weights, all other layers (BatchNorms included) their own.
    """
    model = _as_functional(model)
    groups = plan_sharing(model, policy)
    representative = {}
    for group in groups:
        first = model.get_layer(group[0])
        for layer_name in group:
            representative[id(model.get_layer(layer_name))] = first

    clones = {}

    def clone_function(layer):
        source = representative.get(id(layer), layer)
        if id(source) not in clones:
            clones[id(source)] = source.__class__.from_config(source.get_config())
        return clones[id(source)]

    shared = keras.models.clone_model(model, clone_function=clone_function)
    # Shared layers get their first member's weights (the others' are dropped); every other
    # layer gets its own. Moving statistics are weights too and are copied the same way.
    for layer in model.layers:
        if layer.weights and representative.get(id(layer), layer) is layer:
            clones[id(layer)].set_weights(layer.get_weights())
    if name is not None and name != shared.name:
        shared = keras.Model(shared.inputs, shared.outputs, name=name)
    return shared


def plan_sharing(model, policy="stage"):
    """The sharing groups `share_kernels` would use: a list of lists of layer names.

    Each group lists distinct layers of `model` in topological order of their first call
    (explicit groups: in the order given); the first name gives the shared layer its weights.
    Raises ValueError for an unknown policy, unknown or repeated names, or layers that are
    not isomorphic.
    """
    model = _as_functional(model)
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise ValueError(
                f"`policy` must be one of {list(POLICIES)} or a list of lists of layer names, "
                f"got {policy!r}."
            )
        return _stage_groups(model)
    return _explicit_groups(model, policy)


def isomorphism_key(layer):
    """What must be equal for two layers to share weights: class, configuration without the
    name and initializers, and weight shapes (these carry the input channels)."""
    config = {
        k: v for k, v in layer.get_config().items()
        if k != "name" and not k.endswith("_initializer")
    }
    return (
        type(layer).__module__ + "." + type(layer).__qualname__,
        json.dumps(config, sort_keys=True, default=repr),
        tuple(tuple(w.shape) for w in layer.weights),
    )


def _as_functional(model):
    if isinstance(model, keras.Sequential):
        if not model.built or not model.inputs:
            raise ValueError(
                f"`model` {model.name!r} is a Sequential model without a known input: build it "
                f"with an `Input` first."
            )
        return keras.Model(model.inputs, model.outputs, name=model.name)
    if not hasattr(model, "_nodes_by_depth") or not isinstance(model, keras.Model):
        raise ValueError(
            f"`model` must be a functional (or Sequential) Keras model, got "
            f"{type(model).__name__} {getattr(model, 'name', model)!r}: a subclassed model has "
            f"no call graph to rebuild."
        )
    return model


def _calls(model):
    """(layer, input shapes, output shapes) of every call of `model`, in topological order.

    Keras keeps the call graph only privately (`_nodes_by_depth`; the inputs are deepest).
    """
    order = {id(layer): i for i, layer in enumerate(model.layers)}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        nodes = sorted(model._nodes_by_depth[depth], key=lambda n: order.get(id(n.operation), 0))
        for node in nodes:
            if not node.is_input:
                yield (
                    node.operation,
                    [tuple(t.shape[1:]) for t in node.input_tensors],
                    [tuple(t.shape[1:]) for t in node.output_tensors],
                )


def _stage_groups(model):
    stages, previous = [], None
    for layer, inputs, outputs in _calls(model):
        if not isinstance(layer, CONV_LAYERS):
            continue
        if len(inputs) != 1 or inputs != outputs:
            continue  # shape-changing convs are never shared by the stage policy
        if inputs[0] != previous:
            stages.append([])
            previous = inputs[0]
        stages[-1].append(layer)

    # Union-find over layers: isomorphic layers of one stage are joined; a layer called in
    # several stages joins them all.
    parent, first_seen = {}, {}

    def find(key):
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for stage in stages:
        by_key = {}
        for layer in stage:
            first_seen.setdefault(id(layer), (len(first_seen), layer))
            parent.setdefault(id(layer), id(layer))
            by_key.setdefault(isomorphism_key(layer), []).append(id(layer))
        for members in by_key.values():
            for other in members[1:]:
                a, b = find(members[0]), find(other)
                if a != b:
                    # the root is the member seen first, so it is the group's first layer
                    if first_seen[a][0] > first_seen[b][0]:
                        a, b = b, a
                    parent[b] = a
    groups = {}
    for key, (index, layer) in sorted(first_seen.items(), key=lambda item: item[1][0]):
        groups.setdefault(find(key), []).append(layer.name)
    return [names for names in groups.values() if len(names) > 1]


def _explicit_groups(model, policy):
    if not isinstance(policy, (list, tuple)) or not all(
        isinstance(group, (list, tuple)) and all(isinstance(n, str) for n in group)
        for group in policy
    ):
        raise ValueError(
            f"`policy` must be one of {list(POLICIES)} or a list of lists of layer names, "
            f"got {policy!r}."
        )
    layers = {layer.name: layer for layer in model.layers}
    seen, groups = {}, []
    for g, group in enumerate(policy):
        names = list(dict.fromkeys(group))
        if len(names) < 2:
            raise ValueError(
                f"`policy` group {g} must name at least two distinct layers, got {list(group)!r}."
            )
        unknown = [n for n in names if n not in layers]
        if unknown:
            candidates = [n for n, layer in layers.items() if isinstance(layer, CONV_LAYERS)]
            raise ValueError(
                f"`policy` group {g} names layers that model {model.name!r} does not have "
                f"(at its top level): {unknown}. Its convolution layers are: {candidates}."
            )
        for n in names:
            if n in seen:
                raise ValueError(
                    f"`policy`: layer {n!r} is in group {seen[n]} and in group {g}; a layer can "
                    f"be in one group only."
                )
            seen[n] = g
            layer = layers[n]
            if isinstance(layer, NORMALIZATION_LAYERS):
                raise ValueError(
                    f"`policy` group {g}: {n!r} is a {type(layer).__name__}; normalization "
                    f"layers are never shared (each call keeps its own statistics)."
                )
            if isinstance(layer, keras.Model) or not layer.trainable_weights:
                raise ValueError(
                    f"`policy` group {g}: {n!r} ({type(layer).__name__}) is not a layer with "
                    f"trainable weights of its own, so it has no kernel to share."
                )
        first = layers[names[0]]
        for n in names[1:]:
            _check_isomorphic(first, layers[n], g)
        groups.append(names)
    return groups


def _check_isomorphic(first, other, group):
    key_a, key_b = isomorphism_key(first), isomorphism_key(other)
    if key_a == key_b:
        return
    if key_a[0] != key_b[0]:
        what = f"classes differ: {type(first).__name__} vs {type(other).__name__}"
    elif key_a[2] != key_b[2]:
        what = f"weight shapes differ: {list(key_a[2])} vs {list(key_b[2])}"
    else:
        a, b = json.loads(key_a[1]), json.loads(key_b[1])
        diff = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
        what = f"configurations differ: {diff}"
    raise ValueError(
        f"`policy` group {group}: layers {first.name!r} and {other.name!r} are not isomorphic "
        f"({what}); only layers with the same class, configuration and weight shapes can share "
        f"a kernel."
    )
