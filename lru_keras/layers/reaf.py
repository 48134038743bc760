"""REAF and REAF+ (Zhu, Al-Ars, Hofstee, "REAF: Reducing approximation of channels by reducing
feature reuse within convolution", IEEE Access 8, 2020, Sec. III).

REAF convolution, configuration G_I-G_M-G_O (Eq. 5-6)
-----------------------------------------------------
The C_in input channels are split into G_I consecutive groups of A = C_in / G_I channels, the
`filters` output channels into G_O consecutive groups of B = filters / G_O channels. Output
group l convolves the concatenation of the input groups of E_l, the l-th G_M-combination of
{0, ..., G_I - 1}, so G_O must equal C(G_I, G_M). The enumeration order is FIXED to that of
`itertools.combinations(range(G_I), G_M)` (lexicographic; within a combination the groups are
concatenated in increasing order). For 4-3-4: E_0 = (0, 1, 2), E_1 = (0, 1, 3),
E_2 = (0, 2, 3), E_3 = (1, 2, 3). `reaf_combinations(4, 3)` returns them.

The kernel has Conv2D's layout, (kh, kw, G_M * A, filters): kernel[:, :, m, j] is the weight
of output channel j (group l = j // B) on the m-th channel of its concatenated input, i.e. on
input channel E_l[m // A] * A + m % A. Hence
- G_M = 1, G_I = G_O = G is `Conv2D(filters, k, groups=G)` with the same kernel, and
- G_M = G_I (so G_O = 1) is a plain `Conv2D(filters, k)` with the same kernel.
Parameters: kh * kw * (G_M / G_I) * C_in * filters (+ filters with a bias); multiply-
accumulates per output value: kh * kw * G_M * A.

Two exact implementations (identical outputs and gradients, tests/test_reaf.py); neither runs
G_O separate convolutions:
- "gather": one channel gather (the G_O concatenations side by side, G_O * G_M * A channels;
  skipped when it is the identity, as for a grouped conv) and one grouped convolution with
  G_O groups.
- "masked": one dense convolution whose (kh, kw, C_in, filters) kernel is the compact kernel
  scattered by one constant-index gather, zeros where an input group is not in E_l. It
  performs G_I / G_M times the REAF multiply-accumulates but needs no activation gather.
"auto" (default) takes "gather" when the gathered tensor is smaller than the masked
overhead, G_O * G_M / G_I < G_I / G_M (e.g. grouped convs, 8-1-8), else "masked" (e.g. 4-3-4,
16-15-16, 8-4-70, whose gathered tensors are 3x, 15x and 35x the input). Measured on 2 CPU
cores, batch 64, forward + backward: 4-3-4 72->72 at 32x32 172 ms masked vs 248 ms gather;
8-4-70 88->70 214 ms vs 3.3 s; 8-1-8 224->224 at 8x8, stride 2: 58 ms gather vs 218 ms; a
32-group 3x3 128->128 (ResNeXt) at 32x32: 124 ms gather, 600 ms masked, 50 s through
`keras.layers.Conv2D(groups=32)`.

On the TensorFlow backend the grouped convolution calls `tf.nn.conv2d` with the grouped
kernel: with oneDNN it matches the per-group reference in outputs and gradients for 1x1 and
3x3 kernels, strides 1 and 2 (checked in tests/test_reaf.py). Keras's own `Conv2D(groups>1)`
avoids it on CPU and compiles a nested XLA function that is 10-400x slower (measured on
2 CPU cores). Where TensorFlow's grouped conv has no gradient (oneDNN off,
TensorFlow's default on CPUs without AVX-512; float16) and on other backends `keras.ops.conv`
is used (see tensorflow_grouped_conv.py). Both paths export to TFLite with
builtin ops only: GATHER + CONV_2D, or CONV_2D with the masked kernel folded into a constant.

REAF+ (Eq. 8)
-------------
`REAFPlusNormalization(output_groups=g_O)` replaces the BatchNorm + ReLU in front of a conv
by g_O BatchNorm + ReLU pairs, one per output group of that conv: it returns the g_O
normalised copies side by side (g_O * C channels, copy l = Relu_l(Bn_l(x))), computed as one
BatchNorm over the tiled input (BatchNorm is per channel, so this is exactly g_O separate
BatchNorms). The conv that follows reads copy l for output group l: a grouped conv with g_O
groups, e.g. `REAFConv2D(filters, k, groups=(g_O, 1, g_O))` or, for 1x1,
`GroupedPointwiseConv2D(filters, groups=g_O)`. It adds 2 * C * (g_O - 1) trainable
parameters and no multiply-accumulates to the conv.
"""

import itertools
import math

import keras
import numpy as np
from keras import ops

from lru_keras.layers.reuse import BN_EPSILON, BN_MOMENTUM
from lru_keras.layers.tensorflow_grouped_conv import use_tensorflow_grouped_conv
from lru_keras.validation import require_choice, require_positive_int

IMPLEMENTATIONS = ("auto", "gather", "masked")
# Input groups G_I of a REAF configuration, and output groups g_O of REAF+: the paper uses up to
# 16. G_O = C(G_I, G_M) grows combinatorially (C(64, 32) is 1.8e18), and REAF+ makes g_O copies
# of its input.
MAX_GROUPS = 64


def parse_reaf_groups(groups, name="groups"):
    """(G_I, G_M, G_O) from a 3-tuple/list of ints or a "G_I-G_M-G_O" string; ValueError if
    the values are not positive integers with G_I <= `MAX_GROUPS`, G_M <= G_I and
    G_O = C(G_I, G_M)."""
    given = groups
    if isinstance(groups, str):
        try:
            groups = tuple(int(part) for part in groups.split("-"))
        except ValueError:
            groups = None
    if (
        not isinstance(groups, (tuple, list)) or len(groups) != 3
        or any(isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1
               for g in groups)
    ):
        raise ValueError(
            f"`{name}` must be (G_I, G_M, G_O), three positive integers, or a string "
            f"'G_I-G_M-G_O' such as '4-3-4'; got {given!r}."
        )
    g_i, g_m, g_o = (int(g) for g in groups)
    if g_i > MAX_GROUPS:
        raise ValueError(f"`{name}`={given!r}: G_I={g_i} is too large: at most {MAX_GROUPS} "
                         f"input groups; allowed: 1 to {MAX_GROUPS}.")
    if g_m > g_i:
        raise ValueError(
            f"`{name}`={given!r}: G_M={g_m} groups cannot be drawn from G_I={g_i}; allowed "
            f"G_M: 1..{g_i}."
        )
    if math.comb(g_i, g_m) != g_o:
        raise ValueError(
            f"`{name}`={given!r}: G_O must equal C(G_I, G_M) = C({g_i}, {g_m}) = "
            f"{math.comb(g_i, g_m)}, got G_O={g_o}."
        )
    return g_i, g_m, g_o


def reaf_combinations(g_i, g_m):
    """E_0, ..., E_{G_O-1}: the input groups of each output group, itertools order."""
    return list(itertools.combinations(range(g_i), g_m))


def reaf_input_channels(in_channels, groups):
    """(G_O, G_M * A) int array: input channel read by each output group at each kernel row.

    Row l lists the channels of E_l's groups in order: `gathered = x[..., table.ravel()]` is
    the G_O concatenated inputs side by side, as the grouped conv of the "gather" path reads
    them.
    """
    g_i, g_m, _ = groups
    width = in_channels // g_i
    return np.array([
        [group * width + k for group in combination for k in range(width)]
        for combination in reaf_combinations(g_i, g_m)
    ], dtype=np.int32)


def choose_implementation(groups):
    """The "auto" choice for a configuration (see the module docstring)."""
    g_i, g_m, g_o = groups
    return "gather" if g_o * g_m * g_m < g_i * g_i else "masked"


@keras.saving.register_keras_serializable(package="lru_keras")
class REAFConv2D(keras.layers.Layer):
    """2-D convolution with the REAF scheme G_I-G_M-G_O (see the module docstring).

    Args:
        filters: output channels; a multiple of G_O.
        kernel_size: int or (kh, kw).
        strides: int or (sh, sw).
        groups: (G_I, G_M, G_O) or "G_I-G_M-G_O" with G_O = C(G_I, G_M). (1, 1, 1) is a plain
            conv, (G, 1, G) a grouped conv with G groups. The input channel count must be a
            multiple of G_I (checked when the layer is built).
        padding: "valid" or "same" (Keras semantics; builders pad explicitly to get
            PyTorch's symmetric padding on strided convs).
        use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, kernel_constraint, bias_constraint: as in `keras.layers.Conv2D`.
            The initializers see the compact kernel (fan-in kh * kw * G_M * A).
        implementation: "auto", "gather" or "masked"; all give the same results.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        groups=(1, 1, 1),
        padding="valid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        implementation="auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = require_positive_int("filters", filters)
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.strides = _pair("strides", strides)
        self.groups = parse_reaf_groups(groups)
        if self.filters % self.groups[2]:
            raise ValueError(
                f"`filters`={filters} must be a multiple of G_O={self.groups[2]} (the output "
                f"groups of groups={self.groups}); allowed: multiples of {self.groups[2]}."
            )
        self.padding = require_choice("padding", str(padding).lower(), ("valid", "same"))
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.implementation = require_choice("implementation", implementation, IMPLEMENTATIONS)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    # -- building --------------------------------------------------------------------------
    def build(self, input_shape):
        in_channels = input_shape[-1]
        g_i, g_m, g_o = self.groups
        if in_channels is None or in_channels % g_i:
            raise ValueError(
                f"REAFConv2D {self.name!r}: the input channel count {in_channels} must be a "
                f"multiple of G_I={g_i} (groups={self.groups}); allowed: multiples of {g_i}."
            )
        self.in_channels = int(in_channels)
        width = in_channels // g_i
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, g_m * width, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.filters,), initializer=self.bias_initializer,
                regularizer=self.bias_regularizer, constraint=self.bias_constraint,
            )
        self.resolved_implementation = (
            choose_implementation(self.groups) if self.implementation == "auto"
            else self.implementation
        )
        table = reaf_input_channels(in_channels, self.groups)
        # "gather": the channel order the grouped conv reads (None when it is the identity).
        flat = table.reshape(-1)
        self._gather_index = (
            None if len(flat) == in_channels and np.array_equal(flat, np.arange(in_channels))
            else flat
        )
        # "masked": index of each dense-kernel entry (c, j) in the compact kernel flattened
        # over (G_M * A + 1, G_O, B), the last row all zeros (read where c is not in E_l).
        per_group = self.filters // g_o
        rows = g_m * width
        position = np.full((in_channels, g_o), rows, dtype=np.int64)
        for l, channels in enumerate(table):
            position[channels, l] = np.arange(rows)
        self._dense_index = None
        if g_m != g_i:
            self._dense_index = (
                (position[:, :, None] * g_o + np.arange(g_o)[None, :, None]) * per_group
                + np.arange(per_group)[None, None, :]
            ).reshape(-1).astype(np.int32)
        self._rows = rows

    # -- computing -------------------------------------------------------------------------
    def dense_kernel(self):
        """The kernel as a plain conv's (kh, kw, C_in, filters), zeros where not connected."""
        if self._dense_index is None:
            return self.kernel
        kh, kw = self.kernel_size
        flat = ops.reshape(self.kernel, (kh, kw, self._rows * self.filters))
        flat = ops.concatenate(
            [flat, ops.zeros((kh, kw, self.filters), flat.dtype)], axis=-1
        )
        dense = ops.take(flat, self._dense_index, axis=-1)
        return ops.reshape(dense, (kh, kw, self.in_channels, self.filters))

    def call(self, inputs):
        return self._forward(inputs, needs_gradient=True)

    def export_call(self, x, constants=None, affine=None):
        """The export form (see `export_form`): the grouped conv as TensorFlow's own."""
        del constants, affine
        return self._forward(x, needs_gradient=False)

    def _forward(self, inputs, needs_gradient):
        if self.resolved_implementation == "masked":
            outputs = ops.conv(inputs, self.dense_kernel(), strides=self.strides,
                               padding=self.padding)
        else:
            x = inputs if self._gather_index is None else ops.take(
                inputs, self._gather_index, axis=-1)
            outputs = self._grouped_conv(x, self.kernel, needs_gradient)
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)
        return outputs

    def _grouped_conv(self, x, kernel, needs_gradient):
        if self.groups[2] > 1 and use_tensorflow_grouped_conv(x.dtype, needs_gradient):
            import tensorflow as tf

            return tf.nn.conv2d(x, kernel, strides=(1, *self.strides, 1),
                                padding=self.padding.upper())
        return ops.conv(x, kernel, strides=self.strides, padding=self.padding)

    def compute_output_shape(self, input_shape):
        spatial = []
        for size, k, s in zip(input_shape[1:3], self.kernel_size, self.strides):
            if size is None:
                spatial.append(None)
            elif self.padding == "same":
                spatial.append(-(-size // s))
            else:
                spatial.append((size - k) // s + 1)
        return (input_shape[0], *spatial, self.filters)

    def count_macs(self, input_shape, output_shape):
        """Multiply-accumulates per image of one call (the REAF count, not the "masked"
        implementation's): output values x kh x kw x G_M x A. Used by lru_keras.analysis."""
        g_i, g_m, _ = self.groups
        return (math.prod(output_shape[1:]) * math.prod(self.kernel_size)
                * g_m * (input_shape[-1] // g_i))

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "groups": self.groups,
            "padding": self.padding,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "implementation": self.implementation,
        }


@keras.saving.register_keras_serializable(package="lru_keras")
class REAFPlusNormalization(keras.layers.Layer):
    """REAF+ input normalisation (Eq. 8): g_O BatchNorm + activation pairs on one input.

    Returns (..., g_O * C): copy l is `activation(BatchNorm_l(x))`. Feed it to a conv with
    g_O groups (module docstring). The BatchNorm variables have shape (g_O * C,); pair l
    owns entries l * C .. (l + 1) * C - 1.

    Args:
        output_groups: g_O, the number of pairs (= output groups of the next conv); >= 1.
        activation: the activation of each pair ("relu"; "relu6" for MobileNetV2; None).
        momentum, epsilon: of the BatchNorms (PyTorch's defaults, as the other layers here).
    """

    def __init__(self, output_groups=2, activation="relu", momentum=BN_MOMENTUM,
                 epsilon=BN_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.output_groups = require_positive_int("output_groups", output_groups,
                                                  high=MAX_GROUPS, unit="groups")
        self.activation = keras.activations.get(activation)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.batch_norm = keras.layers.BatchNormalization(
            momentum=self.momentum, epsilon=self.epsilon, dtype=self.dtype_policy,
            name="batch_norm",
        )

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"REAFPlusNormalization {self.name!r} needs a known channel count (last axis)."
            )
        self.batch_norm.build((*input_shape[:-1], channels * self.output_groups))

    def call(self, inputs, training=None):
        x = inputs
        if self.output_groups > 1:
            x = ops.concatenate([inputs] * self.output_groups, axis=-1)
        return self.activation(self.batch_norm(x, training=training))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] * self.output_groups)

    def get_config(self):
        return {
            **super().get_config(),
            "output_groups": self.output_groups,
            "activation": keras.activations.serialize(self.activation),
            "momentum": self.momentum,
            "epsilon": self.epsilon,
        }


def _pair(name, value):
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2:
        raise ValueError(f"`{name}` must be an int or a pair of ints, got {value!r}.")
    for v in value:
        require_positive_int(name, v)
    return value
