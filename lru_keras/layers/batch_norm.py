"""BatchNorm that trains ~2x faster on CPU, and BatchNorm folding for inference.

Keras 3's BatchNormalization computes moments and normalises with separate ops; TensorFlow's
fused kernel does forward and backward in one pass each. Measured on 2 CPU cores (batch 128,
forward + backward of one BatchNorm on LruNet's shapes): 18.1 -> 7.9 ms at 16x16x128,
10.1 -> 4.0 ms at 4x4x1024. A reused block has 2N BatchNorms per stage, so this matters.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="lru_keras")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` using TensorFlow's fused kernel when training.

    Same variables, arguments and inference results as the Keras layer. In training (TF
    backend, channels-last 4-D input) the batch statistics come from the fused kernel; the
    moving variance is updated with the unbiased batch variance, as PyTorch (and the LruNet
    reference) do. Other backends and cases fall back to the Keras implementation.
    """

    def call(self, inputs, training=None, mask=None):
        if not (
            training
            and keras.backend.backend() == "tensorflow"
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and mask is None
            and self.center
            and self.scale
            and not self.synchronized
        ):
            return super().call(inputs, training=training, mask=mask)
        outputs, mean, variance = normalize_batch(inputs, self.gamma, self.beta, self.epsilon)
        update_moving_statistics(self, mean, variance)
        return ops.cast(outputs, self.compute_dtype)


def folded_scale_offset(norm):
    """(scale, offset) with `norm(x) == x * scale + offset` in inference mode."""
    scale = norm.gamma * ops.rsqrt(norm.moving_variance + norm.epsilon)
    return scale, norm.beta - norm.moving_mean * scale


def normalize_batch(x, gamma, beta, epsilon):
    """Training-mode batch normalisation over all but the last axis.

    Returns (normalised x, batch mean, unbiased batch variance). Uses TensorFlow's fused
    kernel on the TF backend (4-D input), `keras.ops.moments` elsewhere.
    """
    if keras.backend.backend() == "tensorflow" and len(x.shape) == 4:
        import tensorflow as tf

        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            ops.cast(x, "float32"), gamma, beta, epsilon=epsilon, is_training=True
        )
        return ops.cast(y, x.dtype), mean, variance
    axes = list(range(len(x.shape) - 1))
    mean, variance = ops.moments(ops.cast(x, "float32"), axes)
    count = ops.cast(ops.prod(ops.shape(x)[:-1]), "float32")
    y = (ops.cast(x, "float32") - mean) * ops.rsqrt(variance + epsilon) * gamma + beta
    return ops.cast(y, x.dtype), mean, variance * count / ops.maximum(count - 1.0, 1.0)


def update_moving_statistics(norm, mean, variance):
    """Exponential moving averages of a BatchNorm layer, as Keras updates them."""
    norm.moving_mean.assign(norm.moving_mean * norm.momentum + mean * (1.0 - norm.momentum))
    norm.moving_variance.assign(
        norm.moving_variance * norm.momentum + variance * (1.0 - norm.momentum)
    )
