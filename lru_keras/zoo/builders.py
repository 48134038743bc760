"""The registry of model builders: name -> function, as keras.applications/timm users expect."""

from lru_keras.zoo.convmixer import ConvMixer
from lru_keras.zoo.lrunet import LruNet
from lru_keras.zoo.reaf_plus import REAFPlusMobileNetV2, REAFPlusResNeXt50
from lru_keras.zoo.reaf_resnet import REAFResNet, REAFResNeXt, WideResNet50
from lru_keras.zoo.se_resnet import SEResNet

BUILDERS = {"LruNet": LruNet}
BUILDERS["ConvMixer"] = ConvMixer
BUILDERS["SEResNet"] = SEResNet
BUILDERS["REAFResNet"] = REAFResNet
BUILDERS["WideResNet50"] = WideResNet50
BUILDERS["REAFResNeXt"] = REAFResNeXt
BUILDERS["REAFPlusMobileNetV2"] = REAFPlusMobileNetV2
BUILDERS["REAFPlusResNeXt50"] = REAFPlusResNeXt50


def get_builder(name):
    """The builder function called `name`; ValueError listing the registered builders."""
    if name not in BUILDERS:
        raise ValueError(f"Unknown model builder {name!r}; registered: {sorted(BUILDERS)}.")
    return BUILDERS[name]


def list_builders():
    """Names of all registered model builders."""
    return sorted(BUILDERS)
