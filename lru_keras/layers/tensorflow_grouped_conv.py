"""When a layer may call TensorFlow's own grouped convolution (`tf.nn.conv2d` with a kernel of
in_channels // groups input channels), and when it must not.

TensorFlow's grouped conv is fast on CPU and converts to one TFLite CONV_2D, but its gradient
exists on CPU only through oneDNN. TensorFlow leaves oneDNN off on CPUs without AVX-512 (e.g.
AMD EPYC) unless TF_ENABLE_ONEDNN_OPTS=1; there the backward pass raises "Gradients for
grouped convolutions are not supported on CPU"; nor has it a CPU float16 gradient. One tiny
probe per process decides (`tensorflow_grouped_conv_trains`). A layer's export form (see
`export_form`) needs no gradient, so it always uses the grouped conv (`needs_gradient=False`).
"""

import concurrent.futures
import functools

import keras


def use_tensorflow_grouped_conv(dtype, needs_gradient=True):
    """Whether a grouped conv on `dtype` inputs may go through `tf.nn.conv2d`."""
    return (
        keras.backend.backend() == "tensorflow"
        and keras.backend.standardize_dtype(dtype) != "float16"
        and (not needs_gradient or tensorflow_grouped_conv_trains())
    )


@functools.cache
def tensorflow_grouped_conv_trains():
    """Whether TensorFlow computes the gradient of a grouped conv here (once per process).

    The probe runs in a thread of its own: TensorFlow's execution context is per thread, so
    it runs eagerly even when first asked while a model is being traced (`tf.init_scope`
    would also stop the gradient tape).
    """
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(_grouped_conv_gradient_probe).result()


def _grouped_conv_gradient_probe():
    import tensorflow as tf

    inputs = tf.ones((1, 2, 2, 4))  # 4 channels, 2 groups
    kernel = tf.Variable(tf.ones((1, 1, 2, 2)))
    try:
        with tf.GradientTape() as tape:
            outputs = tf.nn.conv2d(inputs, kernel, strides=1, padding="VALID")
        tape.gradient(outputs, kernel).numpy()
    except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError):
        return False
    return True
