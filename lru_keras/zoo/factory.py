"""`create(name, **overrides)`: the one way to get a zoo model by name (as timm's
`create_model`): a registered weights name builds the model those weights fit, with them; a
builder name calls the builder.
"""

from lru_keras.zoo import registry
from lru_keras.zoo import weights as weights_registry


def create(name, **overrides):
    """The model called `name`.

    Args:
        name: a registered weights name (`list_weights()`, e.g. "lrunet14_1x.cifar10"): its
            builder with the entry's arguments, classes and input shape, and the pretrained
            weights; or a builder name (`list_builders()`, e.g. "LruNet"): the builder called
            with `overrides` only.
        overrides: further builder arguments. With a weights name they may change what the
            weights leave open (`include_top`, `pooling`, `classifier_activation`,
            `include_preprocessing`, `input_tensor`, `name`, ...; with include_top=False the
            input size too) and `weights=None` builds the same architecture without loading;
            arguments that contradict the weights (another `reuse`, `classes`, ...) raise a
            ValueError.
    """
    if name in registry.list_builders():
        return registry.get_builder(name)(**overrides)
    entries = {e.name: e for e in weights_registry.list_weights()}
    if not isinstance(name, str) or name not in entries:
        raise ValueError(
            f"Unknown model {name!r}: neither a registered weights name {sorted(entries)} "
            f"nor a builder name {registry.list_builders()}."
        )
    entry = entries[name]
    weights = overrides.pop("weights", name)
    if weights not in (None, name):
        raise ValueError(
            f"`weights`={weights!r} contradicts {name!r}, which names its weights; "
            f"allowed: None (the same architecture, not loaded) or {name!r}."
        )
    # The registry's own checks, also when nothing is loaded: the name fixes the model.
    weights_registry.resolve(
        name, builder=entry.builder, include_top=overrides.get("include_top", True),
        classes=overrides.get("classes"), input_shape=overrides.get("input_shape"),
        **{k: v for k, v in overrides.items() if k in entry.arguments},
    )
    arguments = dict(entry.arguments)
    if overrides.get("include_top", True):  # headless, the model has no classes
        arguments["classes"] = entry.classes
    if "input_tensor" not in overrides:
        arguments["input_shape"] = entry.input_shape
    arguments.update(overrides, weights=weights)
    return registry.get_builder(entry.builder)(**arguments)
