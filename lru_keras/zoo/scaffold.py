"""What every zoo builder shares around its architecture: the model input, the classifier
head, the PyTorch-style padded conv (alone, or with its BatchNorm and activation), the
BatchNorm and finishing the model.

The builders follow keras.applications' contract: besides its architecture arguments, every
builder takes the keyword arguments of `COMMON_ARGUMENTS` (declared once, here). A builder is

    @scaffold.builder
    def LruNet(reuse=14, width=1.0, ..., **common):
        <validate the architecture arguments>
        start = scaffold.start("LruNet", common, ..., architecture=dict(reuse=reuse, ...))
        features = <the architecture>(start.x)
        return start.finish(features, top=<the classifier head of features>, name=<default>)

`start` checks every common argument, resolves the weights (whose entry supplies the default
classes and input shape), checks the input shape, makes the input and the pixel preprocessing;
`finish` applies the head (or, with include_top=False, `pooling`), builds the `keras.Model` and
loads the weights. A builder checks its architecture arguments before it calls `start`, and
`start` checks the common ones before it makes the input: a bad argument is refused before
any layer exists. Sizes are bounded (`MAX_CHANNELS`, `MAX_CLASSES`, `MAX_IMAGE_SIZE`,
`MAX_INPUT_CHANNELS`; `require_width` and `require_channels` for the builders' widths).
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
    require_int,
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
# The keras.applications arguments of every builder, with their defaults (see `start`).
COMMON_ARGUMENTS = {
    "weights": None, "input_shape": None, "input_tensor": None, "include_top": True,
    "include_preprocessing": True, "classes": None, "classifier_activation": "softmax",
    "pooling": None, "name": None,
}


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


@dataclasses.dataclass
class Start:
    """The resolved common arguments of one builder call, and the model input.

    `x` is the tensor the architecture starts from (the input, preprocessed if asked);
    `entry` the weights entry to load (None without weights).
    """

    inputs: object
    x: object
    classes: int
    entry: object
    include_top: bool
    pooling: str
    classifier_activation: object
    name: str

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
        after their sha256 is checked)."""
        outputs = top(features) if self.include_top else global_pool(features, self.pooling)
        model = keras.Model(self.inputs, outputs, name=self.name or name)
        if self.entry is not None:
            weights_registry.load_into(model, self.entry, include_top=self.include_top)
        return model


def start(builder, common, *, default_input_shape, default_classes, min_size, pixel_stats=None,
          architecture=None):
    """Resolves the keras.applications arguments of a `builder` call; returns a `Start`.

    Args:
        builder: the registered builder name (to find its weights).
        common: the builder's `COMMON_ARGUMENTS` by name:
            - `weights`: None, a weights name or dataset of the registry, or a `.weights.h5`
              path; its entry gives the default classes and input shape.
            - `input_shape`: None: the `input_tensor`'s shape, else the weights', else
              `default_input_shape`. Height and width must be >= `min_size` (or None).
            - `input_tensor`: a Keras tensor to build on; the model's inputs are then its
              source inputs (`keras.utils.get_source_inputs`), as in keras.applications.
            - `classes`: None: the weights' classes, else `default_classes`.
            - `include_preprocessing`: prepend the pixel preprocessing: raw pixels in
              [0, 255] to [0, 1] (layer "rescaling"), or with `pixel_stats` = (mean, std) per
              channel of [0, 1] pixels, standardised (layer "normalization", one multiply-add).
            - `include_top`: False leaves out the classifier head (see `Start.finish`).
            - `classifier_activation`: the activation on the class scores; None: none.
            - `pooling`: with include_top=False, None, "avg" or "max".
            - `name`: the model's name; None: the builder's default.
        architecture: the builder arguments the weights must fit.
    """
    pooling = require_choice("pooling", common["pooling"], POOLINGS)
    include_top, classes = common["include_top"], common["classes"]
    input_shape, input_tensor = common["input_shape"], common["input_tensor"]
    if input_tensor is not None:
        input_shape = _tensor_shape(input_tensor, input_shape)
    entry = None
    if common["weights"] is not None:
        entry = weights_registry.resolve(
            common["weights"], builder=builder, include_top=include_top, classes=classes,
            input_shape=input_shape, **(architecture or {}),
        )
        classes = entry.classes if classes is None else classes
        input_shape = entry.input_shape if input_shape is None else input_shape
    classes = require_positive_int("classes", default_classes if classes is None else classes)
    input_shape = _check_shape(default_input_shape if input_shape is None else input_shape,
                               min_size)
    if input_tensor is None:
        inputs = x = keras.Input(input_shape, name="image")
    else:
        inputs, x = keras.utils.get_source_inputs(input_tensor), input_tensor
    if common["include_preprocessing"]:
        x = _preprocessing(pixel_stats)(x)
    return Start(inputs=inputs, x=x, classes=classes, entry=entry, include_top=include_top,
                 pooling=pooling, classifier_activation=common["classifier_activation"],
                 name=common["name"])


def _tensor_shape(input_tensor, input_shape):
    if not keras.utils.is_keras_tensor(input_tensor):
        raise ValueError(
            f"`input_tensor` must be a Keras tensor (e.g. `keras.Input((32, 32, 3))` or a "
            f"layer's output), got {type(input_tensor).__name__}."
        )
    shape = tuple(input_tensor.shape[1:])
    if input_shape is not None and tuple(input_shape) != shape:
        raise ValueError(
            f"`input_shape`={tuple(input_shape)} disagrees with the shape {shape} of "
            f"`input_tensor`; give one or the other."
        )
    return shape


def _check_shape(input_shape, min_size):
    input_shape = tuple(input_shape)
    if not (len(input_shape) == 3 and _is_size(input_shape[2], 1)
            and all(d is None or _is_size(d, min_size) for d in input_shape[:2])):
        raise ValueError(
            f"`input_shape` must be (height, width, channels) with height and width >= "
            f"{min_size} (or None), got {input_shape!r}."
        )
    return input_shape


def _is_size(value, low):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low


def _preprocessing(pixel_stats):
    """The zoo's input contract: raw pixels in [0, 255] (see `PixelPreprocessing`)."""
    if pixel_stats is None:
        return PixelPreprocessing(PIXEL_RANGE, name="rescaling")
    mean, std = pixel_stats
    return PixelPreprocessing(PIXEL_RANGE, mean=mean, std=std, name="normalization")
