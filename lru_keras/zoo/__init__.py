"""Model builders, the registry of pretrained weights, `create(name)`, and keras.applications'
`preprocess_input` and `decode_predictions`.

The builders (`LruNet`, `ConvMixer`, `SEResNet`, `REAFResNet`, ...) are attributes of this
package, imported on first use from the family modules of `registry.FAMILIES`: importing
`lru_keras.zoo.weights` or `lru_keras.zoo.registry` alone imports no model family.
"""

import importlib.util

from lru_keras.zoo.applications import decode_predictions, preprocess_input
from lru_keras.zoo.factory import create
from lru_keras.zoo.registry import get_builder, list_builders
from lru_keras.zoo.weights import get_weights, list_weights

_FUNCTIONS = ["create", "decode_predictions", "get_builder", "get_weights", "list_builders",
              "list_weights", "preprocess_input"]


def __getattr__(name):
    if name == "__all__":
        return _FUNCTIONS + list_builders()
    # Submodule names (and private ones) fall through to the import system untouched.
    if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is not None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in list_builders():
        return get_builder(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(list_builders()))
