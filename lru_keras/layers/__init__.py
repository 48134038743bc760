"""Layers for parameter-sharing CNNs: layer reuse, channel shuffle and split, fast grouped 1x1
conv, REAF, and the input contract (pixel range) of a model."""

from lru_keras.layers.channel_shuffle import ChannelShuffle
from lru_keras.layers.channel_split import ChannelSplit
from lru_keras.layers.grouped_pointwise import GroupedPointwiseConv2D
from lru_keras.layers.preprocessing import PixelPreprocessing
from lru_keras.layers.reaf import REAFConv2D, REAFPlusNormalization
from lru_keras.layers.reuse import LRUBlock, Reused

__all__ = ["ChannelShuffle", "ChannelSplit", "GroupedPointwiseConv2D", "LRUBlock", "Reused"]
__all__ += ["PixelPreprocessing", "REAFConv2D", "REAFPlusNormalization"]
