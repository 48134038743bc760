"""What every zoo builder shares around its architecture: the model input, the classifier
head, the PyTorch-style padded conv (alone, or with its BatchNorm and activation), the
BatchNorm, the named stage outputs and finishing the model.

The builders follow keras.applications' contract: besides its architecture arguments, every
builder takes the keyword arguments of `COMMON_ARGUMENTS` (declared once, here). A builder is

    @scaffold.builder
    def LruNet(reuse=14, width=1.0, ..., **common):
        <validate the architecture arguments>
        start = scaffold.start("LruNet", common, ..., architecture=dict(reuse=reuse, ...))
        x = start.feature("STEM", <the stem>(start.x), stride=2)
        for each stage: x = start.feature(f"STAGE{i}", <the stage>(x), stride=<its stride>)
        return start.finish(x, top=<the classifier head of x>, name=<default>)

`start` checks every common argument, resolves the weights (whose entry supplies the default
classes and input shape), checks the input shape, makes the input and the pixel preprocessing;
`feature` names the stem's and each stage's output by its total stride ("STAGE2_S4"; a chain
of blocks without stages of its own is cut by resolution, `stage_ends`), so that
feature_extractor=True models return them as a dict, as kimm's do; `finish` applies the head
(or, with include_top=False, `pooling`), builds the `keras.Model` and loads the weights. A
builder checks its architecture arguments before it calls `start`, and `start` checks the
common ones before it makes the input: a bad argument is refused before any layer exists.
Sizes are bounded (`MAX_CHANNELS`, `MAX_CLASSES`, `MAX_IMAGE_SIZE`, `MAX_INPUT_CHANNELS`;
`require_width` and `require_channels` for the builders' widths).
"""

import dataclasses
import functools
import inspect
import numbers

import keras

from lru_keras.layers import GroupedPointwiseConv2D, PixelPreprocessing
from lru_keras.layers.reuse import BN_EPSILON, BN_MOMENTUM
from lru_keras.validation import (
    require_bool,
    require_choice,
    require_finite_positive,
    require_positive_int,
)
from lru_keras.zoo import registry
from lru_keras.zoo import weights as weights_registry

POOLINGS = (None, "avg", "max")
# Size limits shared by every builder. Each is far above any model of the zoo's papers and
# refuses a typo (an extra zero, 10**6) before a model of unbounded size is built; the
# builders bound their depths (reuses, blocks) themselves.
# Channels of any one layer: the widest layers of the papers' models have 2048 (ResNet50's
# conv5, ShuffleNetV2 2x's head conv); a 3x3 conv of 4096 -> 4096 channels already holds
# 151M weights (600 MB).
MAX_CHANNELS = 4096
# ImageNet-21k, the largest label set in common use, has 21,843 classes; the classifier holds
# classes x features weights.
MAX_CLASSES = 100_000
# Height and width of an input image: the activations grow with its area (a 4096x4096 image
# gives LruNet's stem 1 GB of activations per image).
MAX_IMAGE_SIZE = 4096
# Channels of an input image: hyperspectral images have a few hundred bands.
MAX_INPUT_CHANNELS = 1024
# What include_preprocessing=True models take: raw 8-bit pixels.
PIXEL_RANGE = (0, 255)
# The keras.applications arguments of every builder, and kimm's feature_extractor and
# feature_keys, with their defaults (see `start`).
COMMON_ARGUMENTS = {
    "weights": None, "input_shape": None, "input_tensor": None, "include_top": True,
    "include_preprocessing": True, "classes": None, "classifier_activation": "softmax",
    "pooling": None, "name": None, "feature_extractor": False, "feature_keys": None,
}
# The key, in a feature_extractor=True model's outputs, of the usual output (see `Start.finish`).
TOP_KEY = "TOP"


def builder(function):
    """Decorator of a builder `def Family(<architecture arguments>, **common)`: registers it
    (`registry.register_builder`) with `COMMON_ARGUMENTS` as keyword-only arguments of its
    signature. `common` then always holds all of them (defaults filled in); an unknown
    argument is a TypeError, as for any function."""
    signature = inspect.signature(function)
    own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    signature = signature.replace(parameters=own + [
        inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=default)
        for key, default in COMMON_ARGUMENTS.items()
    ])

    @functools.wraps(function)
    def build(*args, **kwargs):
        call = signature.bind(*args, **kwargs)
        call.apply_defaults()
        return function(**call.arguments)

    build.__signature__ = signature
    return registry.register_builder(build)


def batch_norm(name):
    """The zoo's BatchNorm (PyTorch's momentum and epsilon, as the ported weights expect)."""
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def conv_padding(kernel_size, strides, pad_name):
    """How a conv pads as PyTorch's padding=k // 2 does: returns (pad, the conv's padding),
    `pad` a function to apply to the conv's input.

    Stride 1 keeps "same" (equal for odd kernels) and `pad` does nothing. A strided conv gets
    k // 2 zeros on every side (a ZeroPadding2D called `pad_name`) and "valid": Keras "same"
    would pad only at the bottom/right, shifting its windows against PyTorch's and against a
    strided 1x1 shortcut.
    """
    if strides == 1 or not kernel_size // 2:
        return _unchanged, "same" if strides == 1 else "valid"
    return keras.layers.ZeroPadding2D(kernel_size // 2, name=pad_name), "valid"


def _unchanged(x):
    return x


def conv_bn(x, filters, kernel_size, name, strides=1, groups=1, depthwise=False,
            activation="relu"):
    """Conv (no bias; padded as PyTorch's k // 2, see `conv_padding`) -> BatchNorm
    "{name}_bn" -> `activation` ("relu", "relu6" or None) "{name}_relu".

    The conv is called `name`: a `DepthwiseConv2D` (multiplier 1) with `depthwise`, a
    `GroupedPointwiseConv2D` for a grouped 1x1, else a `Conv2D`.
    """
    pad, padding = conv_padding(kernel_size, strides, f"{name}_pad")
    if depthwise:
        conv = keras.layers.DepthwiseConv2D(kernel_size, strides=strides, padding=padding,
                                            use_bias=False, name=name)
    elif groups > 1 and kernel_size == 1 and strides == 1:
        conv = GroupedPointwiseConv2D(filters, groups=groups, use_bias=False, name=name)
    else:
        conv = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                                   groups=groups, use_bias=False, name=name)
    x = batch_norm(f"{name}_bn")(conv(pad(x)))
    if activation is None:
        return x
    require_choice("activation", activation, ("relu", "relu6"))
    return keras.layers.ReLU(max_value=6.0 if activation == "relu6" else None,
                             name=f"{name}_relu")(x)


def global_pool(x, pooling):
    """`pooling` None (x itself), "avg" (layer "avg_pool") or "max" (layer "max_pool")."""
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def predictions(x, classifier_activation):
    """The activation on the class scores, as its own float32 layer "predictions" (so mixed
    precision models return float32 probabilities); None returns the scores."""
    if classifier_activation is None:
        return x
    return keras.layers.Activation(classifier_activation, dtype="float32",
                                   name="predictions")(x)


def stage_ends(strides, stride=1):
    """Where the stages of a chain of blocks (or of rows of blocks, each strided by its first
    block) with these `strides` end, for `Start.feature`: {the 1-based number of a stage's
    last block or row: (stage name, its output's total stride)}, `stride` being the chain
    input's. For architectures without stages of their own (MobileNet's): a stage is a run
    at one resolution, so a new one starts at every strided block or row after the first,
    and each feature is the last map at its resolution."""
    ends = {}
    for number, step in enumerate(strides, start=1):
        stride *= step
        if number == len(strides) or strides[number] > 1:
            ends[number] = (f"STAGE{len(ends) + 1}", stride)
    return ends


@dataclasses.dataclass
class Start:
    """The resolved common arguments of one builder call, and the model input.

    `x` is the tensor the architecture starts from (the input, preprocessed if asked);
    `entry` the weights entry to load (None without weights); `features` the tensors the
    builder named with `feature`, by key, in the order named.
    """

    inputs: object
    x: object
    classes: int
    entry: object
    include_top: bool
    pooling: str
    classifier_activation: object
    name: str
    feature_extractor: bool
    feature_keys: tuple
    features: dict = dataclasses.field(default_factory=dict)

    def feature(self, stage, x, stride):
        """Names `x`, the output of the stem (`stage` "STEM") or of a stage ("STAGE1", ...),
        "{stage}_S{stride}" (e.g. "STAGE2_S4"), and returns it. `stride` is x's total
        downsampling against the model input, which only the architecture knows (a
        variable-size input has no sizes to divide), so that a feature map of an HxW image
        is H/stride x W/stride. A feature_extractor=True model returns the named tensors
        (see `finish`); they cost nothing otherwise."""
        self.features[f"{stage}_S{stride}"] = x
        return x

    def dense_classifier(self, features, dropout=0.0):
        """The head of ConvMixer, SE-ResNet and the baselines: "avg_pool" -> (Dropout
        "head_dropout" if `dropout`) -> Dense "classifier" -> "predictions" (see
        `predictions`)."""
        x = global_pool(features, "avg")
        if dropout:
            x = keras.layers.Dropout(dropout, name="head_dropout")(x)
        x = keras.layers.Dense(self.classes, name="classifier")(x)
        return predictions(x, self.classifier_activation)

    def finish(self, features, top, name):
        """The model: `top(features)` with include_top, else `features` pooled as `pooling`
        says; called as the `name` argument says, else `name`; the weights loaded (strictly,
        after their sha256 is checked).

        With feature_extractor=True the outputs are a dict instead: the tensors named with
        `feature` (those of `feature_keys`, in that order, if given; else all, in the order
        named), then `TOP_KEY` ("TOP"): the usual output, unless it is one of the named
        tensors already (include_top=False and pooling=None, when `features` is the last
        stage's output). The layers, and so the weights, are the same as without.
        """
        outputs = top(features) if self.include_top else global_pool(features, self.pooling)
        if self.feature_extractor:
            outputs = self._feature_outputs(outputs)
        model = keras.Model(self.inputs, outputs, name=self.name or name)
        if self.entry is not None:
            weights_registry.load_into(model, self.entry, include_top=self.include_top)
        return model

    def _feature_outputs(self, top):
        keys = list(self.features) if self.feature_keys is None else self.feature_keys
        unknown = [key for key in keys if key not in self.features]
        if unknown:
            raise ValueError(
                f"`feature_keys` {unknown} are not features of this model; available: "
                f"{list(self.features)} (the usual output is always returned as "
                f"{TOP_KEY!r})."
            )
        outputs = {key: self.features[key] for key in keys}
        if not any(top is tensor for tensor in self.features.values()):
            outputs[TOP_KEY] = top
        return outputs


def start(builder, common, *, default_input_shape, default_classes, min_size, pixel_stats=None,
          architecture=None):
    """Checks and resolves the keras.applications arguments of a `builder` call, before any
    layer is made; returns a `Start`.

    Args:
        builder: the registered builder name (to find its weights).
        common: the builder's `COMMON_ARGUMENTS` by name:
            - `weights`: None, a weights name or dataset of the registry, or a `.weights.h5`
              path; its entry gives the default classes and input shape.
            - `input_shape`: None: the `input_tensor`'s shape, else the weights', else
              `default_input_shape`. Height and width must be in [`min_size`,
              `MAX_IMAGE_SIZE`] (or None), channels in [1, `MAX_INPUT_CHANNELS`].
            - `input_tensor`: a Keras tensor to build on, its shape checked as
              `input_shape` (which, if given too, must equal it); the model's inputs are
              then its source inputs (`keras.utils.get_source_inputs`), as in
              keras.applications.
            - `classes`: None: the weights' classes, else `default_classes`; at most
              `MAX_CLASSES`; only with include_top=True.
            - `include_preprocessing`: prepend the pixel preprocessing: raw pixels in
              [0, 255] to [0, 1] (layer "rescaling"), or with `pixel_stats` = (mean, std) per
              channel of [0, 1] pixels, standardised (layer "normalization", one multiply-add;
              the input must then have that many channels).
            - `include_top`: False leaves out the classifier head (see `Start.finish`).
            - `classifier_activation`: the activation on the class scores (a Keras
              activation name or a callable); None: none.
            - `pooling`: with include_top=False, None, "avg" or "max".
            - `name`: the model's name; None: the builder's default.
            - `feature_extractor`: True returns, as kimm's models do, a dict of the stem's
              and every stage's output by name ("STEM_S2", "STAGE1_S4", ...: the stage and
              its total stride) plus "TOP", the usual output (see `Start.finish`); for dense
              tasks (detection, segmentation) on the same layers and weights.
            - `feature_keys`: None (every feature), or a non-empty list or tuple of the
              feature names to return, in that order; only with feature_extractor=True.
        architecture: the builder arguments the weights must fit.
    """
    include_top = require_bool("include_top", common["include_top"])
    include_preprocessing = require_bool("include_preprocessing",
                                         common["include_preprocessing"])
    pooling = _check_pooling(common["pooling"], include_top)
    classes = _check_classes(common["classes"], include_top)
    classifier_activation = _check_activation(common["classifier_activation"])
    name = _check_name(common["name"])
    feature_extractor = require_bool("feature_extractor", common["feature_extractor"])
    feature_keys = _check_feature_keys(common["feature_keys"], feature_extractor)
    input_shape, requested = _requested_shape(common["input_shape"], common["input_tensor"],
                                              min_size)
    entry = None
    if common["weights"] is not None:
        entry = weights_registry.resolve(
            common["weights"], builder=builder, include_top=include_top, classes=classes,
            input_shape=input_shape, **(architecture or {}),
        )
        classes = entry.classes if classes is None else classes
        input_shape = entry.input_shape if input_shape is None else input_shape
    classes = default_classes if classes is None else classes
    if input_shape is None:  # the default must fit the architecture too (ConvMixer's patch)
        input_shape = _check_shape(
            default_input_shape, min_size,
            f"{builder}'s default input shape {tuple(default_input_shape)} (give `input_shape`)")
    if include_preprocessing and pixel_stats is not None:
        _check_standardised_channels(builder, input_shape, requested, len(pixel_stats[0]))
    input_tensor = common["input_tensor"]
    if input_tensor is None:
        inputs = x = keras.Input(input_shape, name="image")
    else:
        inputs, x = keras.utils.get_source_inputs(input_tensor), input_tensor
    if include_preprocessing:
        x = _preprocessing(pixel_stats)(x)
    return Start(inputs=inputs, x=x, classes=classes, entry=entry, include_top=include_top,
                 pooling=pooling, classifier_activation=classifier_activation, name=name,
                 feature_extractor=feature_extractor, feature_keys=feature_keys)


def require_width(value, widest, name="width"):
    """`value` as a float if it is a width multiplier the builders can take: finite, > 0,
    and small enough that the widest layer, `widest` channels at width 1, has at most
    `MAX_CHANNELS`; else a ValueError naming `name` and the allowed range."""
    return require_finite_positive(
        name, value, high=MAX_CHANNELS / widest,
        unit=f"(the widest layer has {widest} x {name} channels, at most {MAX_CHANNELS})")


def require_channels(name, value, widest_per_unit=1):
    """`value` as an int if it is a channel count >= 1 small enough that the widest layer,
    `widest_per_unit` x `value` channels (e.g. 8 for a ResNet's base width, doubled three
    times), has at most `MAX_CHANNELS`; else a ValueError naming `name` and the range."""
    high = MAX_CHANNELS // widest_per_unit
    unit = "channels" if widest_per_unit == 1 else (
        f"(the widest layer has {widest_per_unit} x {name} channels, at most {MAX_CHANNELS})")
    return require_positive_int(name, value, high=high, unit=unit)


def _check_pooling(pooling, include_top):
    pooling = require_choice("pooling", pooling, POOLINGS)
    if pooling is not None and include_top:
        raise ValueError(
            f"`pooling`={pooling!r} needs include_top=False: it pools the feature map that "
            f"replaces the classifier head (which pools by itself); drop `pooling` or set "
            f"include_top=False."
        )
    return pooling


def _check_classes(classes, include_top):
    if classes is None:
        return None
    classes = require_positive_int("classes", classes, high=MAX_CLASSES, unit="classes")
    if not include_top:
        raise ValueError(
            f"`classes`={classes} needs include_top=True: without the classifier head the "
            f"model has no classes; drop `classes` or set include_top=True."
        )
    return classes


def activation_names():
    """The names `keras.activations.get` takes (a `classifier_activation` may be one)."""
    return sorted(name for name in dir(keras.activations)
                  if not name.startswith("_") and name not in ("get", "serialize", "deserialize"))


def _check_activation(activation):
    if activation is None or callable(activation) or activation in activation_names():
        return activation
    raise ValueError(
        f"`classifier_activation` must be None, a callable or a Keras activation name, one of "
        f"{activation_names()}; got {activation!r}."
    )


def _check_name(name):
    if name is not None and not (isinstance(name, str) and name and "/" not in name):
        raise ValueError(f"`name` must be None or a non-empty string without '/', got "
                         f"{name!r}.")
    return name


def _check_feature_keys(keys, feature_extractor):
    """`keys` as a tuple (None stays None); whether the model has them is known only once it
    is built (`Start.finish`)."""
    if keys is None:
        return None
    if not (isinstance(keys, (list, tuple)) and keys
            and all(isinstance(key, str) for key in keys) and len(set(keys)) == len(keys)):
        raise ValueError(
            f"`feature_keys` must be None or a non-empty list or tuple of distinct feature "
            f"names (e.g. ['STAGE1_S4', 'STAGE2_S8']), got {keys!r}."
        )
    if not feature_extractor:
        raise ValueError(
            f"`feature_keys`={keys!r} needs feature_extractor=True: it picks the features "
            f"that such a model returns; drop `feature_keys` or set feature_extractor=True."
        )
    return tuple(keys)


def _requested_shape(input_shape, input_tensor, min_size):
    """The checked (height, width, channels) the call asks for, and how to name it in a
    message: `input_tensor`'s shape (`input_shape`, if given too, must equal it), else
    `input_shape`; (None, None) if neither is given."""
    requested = None
    if input_shape is not None:
        requested = f"`input_shape`={input_shape!r}"
        input_shape = _check_shape(input_shape, min_size, requested)
    if input_tensor is None:
        return input_shape, requested
    if not keras.utils.is_keras_tensor(input_tensor):
        raise ValueError(
            f"`input_tensor` must be a Keras tensor (e.g. `keras.Input((32, 32, 3))` or a "
            f"layer's output), got {type(input_tensor).__name__}."
        )
    shape = tuple(input_tensor.shape)
    tensor_shape = _check_shape(shape[1:], min_size, f"`input_tensor` of shape {shape}")
    if input_shape is not None and input_shape != tensor_shape:
        raise ValueError(
            f"{requested} disagrees with `input_tensor`, whose shape is {shape} (image shape "
            f"{tensor_shape}); give one or the other."
        )
    return tensor_shape, f"`input_tensor` of shape {shape}"


def _check_shape(shape, min_size, what):
    """`shape` as a tuple of ints (None for a variable height or width) if it is a valid
    image shape, else a ValueError starting with `what`."""
    dims = None if isinstance(shape, (str, bytes)) else _as_tuple(shape)
    if dims is None or len(dims) != 3:
        raise ValueError(
            f"{what}: an input shape is 3 values (height, width, channels), channels last and "
            f"without the batch axis, e.g. (32, 32, 3)."
        )
    limits = (("height", min_size, MAX_IMAGE_SIZE), ("width", min_size, MAX_IMAGE_SIZE),
              ("channels", 1, MAX_INPUT_CHANNELS))
    for value, (axis, low, high) in zip(dims, limits):
        variable = axis != "channels"
        if value is None and variable:
            continue
        if not (_is_integer(value) and low <= value <= high):
            raise ValueError(
                f"{what}: {axis} must be an integer in [{low}, {high}]"
                f"{' or None' if variable else ''}, got {value!r}."
            )
    return tuple(None if d is None else int(d) for d in dims)


def _as_tuple(value):
    try:
        return tuple(value)
    except TypeError:
        return None


def _is_integer(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_standardised_channels(builder, input_shape, requested, channels):
    if input_shape[-1] != channels:
        raise ValueError(
            f"{requested or f'The input shape {input_shape}'} has {input_shape[-1]} "
            f"channel(s), but {builder}'s input standardisation (include_preprocessing=True) "
            f"has a mean and std for {channels}: give {channels}-channel images, or "
            f"include_preprocessing=False and standardised inputs."
        )


def _preprocessing(pixel_stats):
    """The zoo's input contract: raw pixels in [0, 255] (see `PixelPreprocessing`)."""
    if pixel_stats is None:
        return PixelPreprocessing(PIXEL_RANGE, name="rescaling")
    mean, std = pixel_stats
    return PixelPreprocessing(PIXEL_RANGE, mean=mean, std=std, name="normalization")
