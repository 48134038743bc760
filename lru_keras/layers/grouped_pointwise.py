"""A grouped 1x1 convolution that is fast on CPU.

Keras 3 (TensorFlow backend) runs `Conv2D(groups>1)` on CPU through a nested XLA function
that is ~10x slower than a plain conv (measured on 2 CPU cores), because Keras assumes
TensorFlow's grouped conv is broken on CPU. For 1x1 kernels it is not: `tf.nn.conv2d` with a
grouped kernel runs through oneDNN and its gradients equal those of the einsum formulation
(tests/test_layers.py checks both). Measured per call at batch 128 (forward + backward), it
was the fastest of einsum, batched matmul and block-diagonal matmul for 3 of the 4 LruNet
stages. Other backends use an einsum over (pixels, groups, channels-per-group), and so does
TensorFlow where its grouped conv has no CPU gradient (without oneDNN, for float16; see
tensorflow_grouped_conv.py).

The kernel keeps `keras.layers.Conv2D`'s layout, (1, 1, in_channels // groups, filters), so
weights move between the two layers unchanged and outputs are identical.
"""

import keras
from keras import ops

from lru_keras.layers.tensorflow_grouped_conv import use_tensorflow_grouped_conv


@keras.saving.register_keras_serializable(package="lru_keras")
class GroupedPointwiseConv2D(keras.layers.Conv2D):
    """`Conv2D(filters, 1, groups=groups)`, fast on CPU: TensorFlow's grouped conv where it
    trains, else a reshape + einsum (same outputs and gradients).

    Accepts every `Conv2D` argument; `kernel_size` must be 1 and `strides`/`dilation_rate`
    1, since only then is a grouped conv a per-pixel matrix product.
    """

    def __init__(self, filters, groups=1, kernel_size=1, **kwargs):
        super().__init__(filters, kernel_size, groups=groups, **kwargs)
        if self.kernel_size != (1, 1) or self.strides != (1, 1) or self.dilation_rate != (1, 1):
            raise ValueError(
                "GroupedPointwiseConv2D needs kernel_size=1, strides=1 and dilation_rate=1; got "
                f"kernel_size={self.kernel_size}, strides={self.strides}, "
                f"dilation_rate={self.dilation_rate}."
            )
        if self.data_format != "channels_last":
            raise ValueError("GroupedPointwiseConv2D supports data_format='channels_last' only.")

    def convolution_op(self, inputs, kernel):
        """TensorFlow's own grouped conv where it has a gradient here; otherwise, and for
        float16, the einsum."""
        return grouped_pointwise_conv(inputs, kernel, self.groups)

    def export_call(self, x, constants=None, affine=None):
        """The export form (see `export_form`): one TFLite CONV_2D with a grouped kernel."""
        del constants, affine  # reads its own kernel and bias
        outputs = grouped_pointwise_conv(x, self.kernel, self.groups, needs_gradient=False)
        if self.use_bias:
            outputs = ops.add(outputs, ops.reshape(self.bias, (1, 1, 1, self.filters)))
        return outputs if self.activation is None else self.activation(outputs)


def grouped_pointwise_conv(inputs, kernel, groups, needs_gradient=True):
    """Grouped 1x1 conv: TensorFlow's own (one CONV_2D in a .tflite) where it may be used
    (`use_tensorflow_grouped_conv`), else `grouped_pointwise_einsum`."""
    if use_tensorflow_grouped_conv(inputs.dtype, needs_gradient):
        import tensorflow as tf

        return tf.nn.conv2d(inputs, kernel, strides=1, padding="VALID")
    return grouped_pointwise_einsum(inputs, kernel, groups)


def grouped_pointwise_einsum(inputs, kernel, groups):
    """Grouped 1x1 conv as one einsum on a 3-D view (a 5-D "..." einsum is ~6x slower in TF).

    `kernel` has Conv2D's layout (1, 1, in/groups, filters); output channel `g*(filters/g)+j`
    reads the input channels of group g, as in `Conv2D(groups=groups)`.
    """
    in_per_group, filters = kernel.shape[2], kernel.shape[3]
    batch_shape = ops.shape(inputs)[:-1]
    grouped = ops.reshape(inputs, (-1, groups, in_per_group))
    weights = ops.reshape(kernel, (in_per_group, groups, filters // groups))
    outputs = ops.einsum("ngi,igo->ngo", grouped, weights)
    return ops.reshape(outputs, (*batch_shape, filters))
