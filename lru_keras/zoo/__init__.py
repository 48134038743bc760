"""Model builders and the registry of pretrained weights."""

from lru_keras.zoo.builders import get_builder, list_builders
from lru_keras.zoo.convmixer import ConvMixer
from lru_keras.zoo.lrunet import LruNet
from lru_keras.zoo.reaf_plus import REAFPlusMobileNetV2, REAFPlusResNeXt50
from lru_keras.zoo.reaf_resnet import REAFResNet, REAFResNeXt, WideResNet50
from lru_keras.zoo.se_resnet import SEResNet
from lru_keras.zoo.weights import get_weights, list_weights

__all__ = ["LruNet", "get_builder", "get_weights", "list_builders", "list_weights"]
__all__ += ["ConvMixer", "SEResNet"]
__all__ += [
    "REAFPlusMobileNetV2", "REAFPlusResNeXt50", "REAFResNeXt", "REAFResNet", "WideResNet50",
]
