"""The registry of model builders: name -> function, as keras.applications/timm users expect."""

from lru_keras.zoo.lrunet import LruNet

BUILDERS = {"LruNet": LruNet}


def get_builder(name):
    """The builder function called `name`; ValueError listing the registered builders."""
    if name not in BUILDERS:
        raise ValueError(f"Unknown model builder {name!r}; registered: {sorted(BUILDERS)}.")
    return BUILDERS[name]


def list_builders():
    """Names of all registered model builders."""
    return sorted(BUILDERS)
