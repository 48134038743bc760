"""The zoo models' input contract as a layer: which pixel range the model takes, and how it
maps those pixels to what its first conv expects.

A `Rescaling` alone says how it scales, not what range its input has; export code then has to
guess (a [0, 255] model calibrated as if it took [0, 1] reached 2% int8 agreement).
`PixelPreprocessing` keeps the range itself (`input_range`, in the layer's config, so a saved
model keeps it too), and `lru_keras.tflite.export` reads it.
"""

import math

import keras

from lru_keras.validation import require_range


@keras.saving.register_keras_serializable(package="lru_keras")
class PixelPreprocessing(keras.layers.Rescaling):
    """Maps pixels in `input_range` linearly onto [0, 1], then optionally standardizes them.

    Args:
        input_range: (low, high) of the input pixels, e.g. (0, 255) for raw 8-bit pixels.
        mean, std: per-channel mean and standard deviation of the [0, 1] pixels (both or
            neither; the input must have one channel per value); with them the output is
            (u - mean) / std, u in [0, 1].
    """

    def __init__(self, input_range=(0, 255), mean=None, std=None, **kwargs):
        low, high = require_range("input_range", input_range)
        if (mean is None) != (std is None):
            raise ValueError("PixelPreprocessing: give both `mean` and `std`, or neither.")
        span = high - low
        if mean is None:
            scale, offset = 1.0 / span, -low / span
        else:
            mean, std = [float(m) for m in mean], [float(s) for s in std]
            if (len(mean) != len(std) or not all(math.isfinite(m) for m in mean)
                    or not all(0 < s < math.inf for s in std)):
                raise ValueError(f"PixelPreprocessing: `mean` and `std` need one finite value "
                                 f"per channel and std > 0; got {mean!r}, {std!r}.")
            scale = [1.0 / (span * s) for s in std]
            offset = [-(low / span + m) / s for m, s in zip(mean, std)]
        super().__init__(scale=scale, offset=offset, **kwargs)
        self.input_range, self.mean, self.std = (low, high), mean, std

    def build(self, input_shape):
        # Rescaling would broadcast 3 per-channel factors over a 1-channel image (3 channels
        # out of 1) without a word.
        channels = input_shape[-1]
        if self.mean is not None and channels is not None and channels != len(self.mean):
            raise ValueError(
                f"PixelPreprocessing {self.name!r}: the input has {channels} channels, "
                f"but `mean` and `std` are given for {len(self.mean)}."
            )
        super().build(input_shape)

    def get_config(self):
        config = super().get_config()
        del config["scale"], config["offset"]
        return {**config, "input_range": list(self.input_range), "mean": self.mean,
                "std": self.std}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Rescaling's own from_config reads "scale" and "offset", derived here.
        return cls(**config)


def declared_input_range(model):
    """The (low, high) pixel range a model declares: that of a `PixelPreprocessing` layer
    reading its input directly (every zoo model built with include_preprocessing=True), else
    None."""
    for layer in model.layers[:2]:
        if isinstance(layer, PixelPreprocessing):
            return tuple(layer.input_range)
    return None
