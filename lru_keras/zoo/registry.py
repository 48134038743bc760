"""The registry of model builders: name -> builder function, as keras.applications and timm
users expect (`get_builder("LruNet")`, `list_builders()`).

A family module registers its builders with `@register_builder` (through
`scaffold.builder`, which also gives them the keras.applications arguments). This module
imports no family when it is imported (the weights registry depends on it, and the families
depend on the weights registry); the first lookup imports the modules listed in `FAMILIES`,
so a new family is its own module plus one entry there.
"""

import importlib

# The modules of lru_keras.zoo that hold model families (builders registered on import).
FAMILIES = ("lrunet", "cifar_mobilenet", "cifar_shufflenet", "convmixer", "se_resnet",
            "reaf_resnet", "reaf_plus")

_BUILDERS = {}


def register_builder(builder):
    """Decorator: registers `builder` under its function name and returns it unchanged."""
    name = builder.__name__
    if _BUILDERS.get(name, builder) is not builder:
        raise ValueError(f"A model builder named {name!r} is already registered "
                         f"({_BUILDERS[name].__module__}).")
    _BUILDERS[name] = builder
    return builder


def _load_families():
    for family in FAMILIES:
        importlib.import_module(f"{__package__}.{family}")


def get_builder(name):
    """The builder function called `name`; ValueError listing the registered builders."""
    _load_families()
    if not isinstance(name, str) or name not in _BUILDERS:
        raise ValueError(f"Unknown model builder {name!r}; registered: {sorted(_BUILDERS)}.")
    return _BUILDERS[name]


def list_builders():
    """Names of all registered model builders, sorted."""
    _load_families()
    return sorted(_BUILDERS)
