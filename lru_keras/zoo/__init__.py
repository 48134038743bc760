"""Model builders and the registry of pretrained weights."""

from lru_keras.zoo.builders import get_builder, list_builders
from lru_keras.zoo.lrunet import LruNet
from lru_keras.zoo.weights import get_weights, list_weights

__all__ = ["LruNet", "get_builder", "get_weights", "list_builders", "list_weights"]
