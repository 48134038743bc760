"""Channel split: ShuffleNetV2's split of the channels into equal parts, as a layer (so that
model walkers that expect layers, e.g. the TFLite export's clone, see it as one)."""

import keras
from keras import ops

from lru_keras.validation import require_positive_int


@keras.saving.register_keras_serializable(package="lru_keras")
class ChannelSplit(keras.layers.Layer):
    """Splits the last (channel) axis into `parts` equal, consecutive parts; returns a list.

    Args:
        parts: number of parts; must divide the channel count.
    """

    def __init__(self, parts=2, **kwargs):
        super().__init__(**kwargs)
        self.parts = require_positive_int("parts", parts)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels % self.parts:
            raise ValueError(
                f"ChannelSplit: parts={self.parts} must divide the channel count, got "
                f"{channels}."
            )

    def call(self, x):
        return ops.split(x, self.parts, axis=-1)

    def compute_output_shape(self, input_shape):
        part = (*input_shape[:-1], input_shape[-1] // self.parts)
        return [part] * self.parts

    def get_config(self):
        return {**super().get_config(), "parts": self.parts}
