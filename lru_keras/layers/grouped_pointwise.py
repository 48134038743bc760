"""A grouped 1x1 convolution that is fast on CPU.

Keras 3 (TensorFlow backend) runs `Conv2D(groups>1)` on CPU through a nested XLA function
that is ~10x slower than a plain conv (../shared/notes/stack.md). A grouped 1x1 conv is a
batched matrix product, so this layer computes it as one einsum. The kernel keeps
`keras.layers.Conv2D`'s layout, (1, 1, in_channels // groups, filters), so weights move
between the two layers unchanged and outputs are identical.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="lru_keras")
class GroupedPointwiseConv2D(keras.layers.Conv2D):
    """`Conv2D(filters, 1, groups=groups)` computed as reshape + einsum.

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
        groups = self.groups
        in_per_group = kernel.shape[2]
        out_per_group = self.filters // groups
        batch_shape = ops.shape(inputs)[:-1]
        grouped = ops.reshape(inputs, (*batch_shape, groups, in_per_group))
        # kernel (1, 1, in/g, filters) -> (in/g, g, filters/g): output o = g*(filters/g) + j
        weights = ops.reshape(kernel, (in_per_group, groups, out_per_group))
        outputs = ops.einsum("...gi,igo->...go", grouped, weights)
        return ops.reshape(outputs, (*batch_shape, self.filters))
