"""The registry of pretrained weights, and loading them safely.

Model code and weight metadata are kept apart (as in timm): `zoo/manifest.json`, written by
`zoo/convert_reference.py`, lists every weights file with the builder arguments it fits, its
dataset, input contract (shape, pixel range), the names of its stem and classifier layers,
sha256 and recorded accuracy. The files ship inside the package (`lru_keras.weights`,
mapped from the top-level `zoo/` folder by setup.cfg), so `weights="cifar10"` resolves offline.
Loading checks the sha256 first (a user's own file: against its `.sha256` sidecar, when it
has one) and refuses a corrupt or mismatched file, naming it, before any variable is touched;
`save_weights` writes a user's file with its sidecar. This module imports no model family: a headless load gets its builder from
`lru_keras.zoo.registry`.
"""

import dataclasses
import json
import os
import tempfile
from pathlib import Path

from lru_keras import atomic, checksums
from lru_keras.zoo import registry

MANIFEST = "manifest.json"


@dataclasses.dataclass(frozen=True)
class WeightsEntry:
    """One weights file: what it fits (builder + arguments), where it is, how good it is.

    The input contract is what the model built by `describe()` takes: `input_shape` (height,
    width, channels) and `input_range`, the (low, high) of its pixels (e.g. (0, 255): the
    model rescales them itself). `stem_layer` and `classifier_layer` name the first conv and
    the layer holding the class weights, for export and fine-tuning code. Entries made for a
    user's own `.weights.h5` file leave them None. `provenance` says where registered weights
    come from: "ported" (another framework's published checkpoint, converted) or "trained"
    (trained with this package); `author` and `license` are the weights' own.
    """

    name: str
    builder: str
    dataset: str
    arguments: dict
    classes: int
    input_shape: tuple
    file: str
    input_range: tuple = None
    stem_layer: str = None
    classifier_layer: str = None
    sha256: str = None
    accuracy: float = None
    card: str = None
    source: str = None
    provenance: str = None
    author: str = None
    license: str = None

    def path(self):
        """Absolute path of the weights file."""
        return Path(self.file) if os.path.isabs(self.file) else weights_dir() / self.file

    def describe(self):
        """Builder call that these weights fit, e.g. `LruNet(reuse=14, width=1.0)`."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items())
        return f"{self.builder}({args})"

    def model_info(self):
        """How a file made from these weights presents them (a .tflite's standard metadata):
        {name, description, version, author, license}."""
        accuracy = f"; {self.accuracy}% {self.dataset} test accuracy" if self.accuracy else ""
        return {
            "name": self.name,
            "description": f"{self.describe()} for {self.dataset}{accuracy}"
                           + (f" ({self.provenance} weights)" if self.provenance else ""),
            "version": f"weights sha256 {self.sha256[:12]}" if self.sha256 else "",
            "author": self.author or "", "license": self.license or "",
        }

    def conflicts(self, arguments):
        """The builder arguments among `arguments` that differ from the ones these weights
        fit, as {name: (given, fitting)}; arguments the entry does not record never conflict
        (tuples equal the manifest's lists)."""
        return {
            k: (v, self.arguments[k]) for k, v in arguments.items()
            if k in self.arguments and _plain(v) != _plain(self.arguments[k])
        }


def _plain(value):
    """`value` as JSON stores it: tuples become lists."""
    return json.loads(json.dumps(value))


def weights_dir():
    """The folder holding the weights: installed package data, else the source tree's zoo/.

    A (non-editable) install puts zoo/ at lru_keras/weights (setup.cfg's package_dir);
    a source checkout or editable install reads the top-level zoo/ folder itself.
    """
    package = Path(__file__).resolve().parents[1]
    installed = package / "weights"
    return installed if (installed / MANIFEST).is_file() else package.parent / "zoo"


def list_weights(builder=None, dataset=None):
    """All registered weights, optionally only those of one builder and/or dataset."""
    manifest = json.loads((weights_dir() / MANIFEST).read_text())
    entries = [
        WeightsEntry(**{**item, "input_shape": tuple(item["input_shape"]),
                        "input_range": tuple(item["input_range"])})
        for item in manifest["weights"]
    ]
    return [
        e for e in entries
        if (builder is None or e.builder == builder) and (dataset is None or e.dataset == dataset)
    ]


def get_weights(name):
    """The entry called `name` (e.g. "lrunet14_1x.cifar10"); ValueError listing the names."""
    for entry in list_weights():
        if entry.name == name:
            return entry
    names = [e.name for e in list_weights()]
    raise ValueError(f"Unknown weights name {name!r}; registered names: {names}.")


def resolve(weights, builder, include_top, classes, input_shape, **architecture):
    """Finds the weights entry for a builder call, or raises a ValueError naming what fits.

    `weights` is a dataset name of the registry, a registered weights name, or a path to a
    `.weights.h5` file (the user's own checkpoint: checked against its `.sha256` sidecar
    when it has one, as `save_weights` and training runs write).
    """
    entries = list_weights(builder=builder)
    datasets = sorted({e.dataset for e in entries})
    if isinstance(weights, (str, os.PathLike)) and str(weights).endswith(".weights.h5"):
        if not os.path.isfile(weights):
            problem = "is not a file" if os.path.exists(weights) else "does not exist"
            raise ValueError(f"`weights` file {str(weights)!r} {problem}.")
        return WeightsEntry(
            name=os.path.basename(str(weights)), builder=builder, dataset=None,
            arguments=architecture, classes=classes, input_shape=input_shape,
            file=os.path.abspath(weights),
        )
    names = {e.name: e for e in entries}
    if weights in names:
        candidates = [names[weights]]
    elif weights in datasets:
        candidates = [e for e in entries if e.dataset == weights]
    else:
        raise ValueError(
            f"`weights` must be None, a path to a .weights.h5 file, one of the datasets "
            f"{datasets} or one of {sorted(names)}; got {weights!r}."
        )
    matching = [e for e in candidates if not e.conflicts(architecture)]
    if not matching:
        fits = "; ".join(e.describe() for e in candidates)
        given = ", ".join(f"{k}={v!r}" for k, v in architecture.items())
        raise ValueError(
            f"No {builder} weights {weights!r} for {given}. Weights {weights!r} exist for: {fits}."
        )
    entry = matching[0]
    if include_top and classes is not None and classes != entry.classes:
        raise ValueError(
            f"`classes`={classes} does not fit weights {entry.name!r}, which have "
            f"{entry.classes} classes. Use classes={entry.classes} (or None), or "
            f"include_top=False to reuse the backbone."
        )
    if input_shape is not None:
        input_shape = tuple(input_shape)
        if include_top and input_shape != entry.input_shape:
            raise ValueError(
                f"`input_shape`={input_shape} does not fit weights {entry.name!r} "
                f"(input_shape={entry.input_shape}); with include_top=False only the channel "
                f"count ({entry.input_shape[-1]}) must match."
            )
        if not include_top and input_shape[-1] != entry.input_shape[-1]:
            raise ValueError(
                f"`input_shape`={input_shape} has {input_shape[-1]} channels; weights "
                f"{entry.name!r} need {entry.input_shape[-1]}."
            )
    return entry


def verify(entry):
    """The path of the entry's file if it exists and has the sha256 recorded for it (in the
    manifest for registered weights, in a `.sha256` sidecar for a user's file that has one),
    else a ValueError naming the file (`checksums.ChecksumError` for other bytes)."""
    path = entry.path()
    if not path.is_file():
        raise ValueError(f"Weights file for {entry.name!r} is missing: {path}.")
    if entry.sha256 is not None:
        try:
            checksums.check(path, entry.sha256, "registered weights file")
        except checksums.ChecksumError as error:
            raise checksums.ChecksumError(f"{error} Reinstall lru_keras.") from None
    checksums.check_sidecar(path, "weights file")
    return path


def load_into(model, entry, include_top=True):
    """Verifies `entry` and loads it into `model`, strictly (every variable, every shape).

    A headless model (include_top=False) is filled from a full model built with the same
    arguments, layer by layer, so one weights file serves both.
    """
    path = verify(entry)
    if include_top:
        _load_strict(model, path)
        return
    full = registry.get_builder(entry.builder)(
        **entry.arguments, classes=entry.classes, input_shape=model.input_shape[1:],
        include_top=True, weights=None,
    )
    _load_strict(full, path)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(full.get_layer(layer.name).get_weights())


def save_weights(model, path):
    """Saves `model`'s weights to the `.weights.h5` file `path`, atomically, and beside it
    the `.sha256` sidecar that every load checks (a flipped byte in an HDF5 weights file
    loads without complaint otherwise). `path` is checked first (`check_save_path`).
    Returns it as a Path. (A crash between the two writes leaves the complete new file,
    without a sidecar or with the old one, which loading then refuses, naming the file.)"""
    path = check_save_path(path)
    with atomic.replacing(path) as temporary:
        model.save_weights(temporary)
    checksums.write_sidecar(path)
    return path


def check_save_path(path, what="weights file"):
    """`path` as a Path if a weights file and its sidecar can be written there, else a
    ValueError naming `what` and the path: before any long work whose result goes there."""
    path = Path(os.fspath(path))
    if not path.name.endswith(".weights.h5"):
        raise ValueError(f"{what} {str(path)!r} must end in .weights.h5 (Keras's weights "
                         f"format).")
    return atomic.check_writable_file(path, what, companions=[checksums.sidecar_path(path)])


def _load_strict(model, path):
    """`model.load_weights` that refuses a file whose variables differ in any way.

    Keras ignores variables a file has but the model lacks (e.g. weights of N=2 load into
    N=1 without a word), so the file's variable layout is compared first with the layout the
    model itself saves. The error names the file and the first layer (in the model's order)
    whose variables differ.
    """
    with tempfile.TemporaryDirectory() as tmp:
        reference = os.path.join(tmp, "layout.weights.h5")
        model.save_weights(reference)
        expected, model_layers = _h5_layout(reference)
    stored, file_layers = _h5_layout(path)
    # A file saved from a compiled model also holds the optimizer's state (Keras saves it in
    # `.weights.h5`): that is not part of the network, and a built model has none to receive.
    stored = {key: shape for key, shape in stored.items() if not key.startswith("optimizer/")}
    if stored != expected:
        missing = sorted(set(expected) - set(stored))[:3]
        extra = sorted(set(stored) - set(expected))[:3]
        shapes = sorted(k for k in set(stored) & set(expected) if stored[k] != expected[k])[:3]
        layer, detail = _first_difference(model, expected, stored, model_layers, file_layers)
        raise ValueError(
            f"Weights file {path} does not fit model {model.name!r}: nothing was loaded. The "
            f"first layer that differs is {layer!r}: {detail}. Variables missing from the "
            f"file: {missing}; not in the model: {extra}; shape differences: "
            f"{[(k, stored[k], expected[k]) for k in shapes]}."
        )
    try:
        model.load_weights(path)
    except (OSError, KeyError, RuntimeError, ValueError) as error:
        raise ValueError(f"Weights file {path} could not be read: {error}. Check it, or load "
                         f"another copy.") from None


def _first_difference(model, expected, stored, model_layers, file_layers):
    """(layer name, what differs) of the first layer, in `model.layers` order, whose
    variables differ between the model's layout `expected` and the file's `stored`.

    Keras addresses a layer in a weights file by its class and position
    ("layers/lru_block_1/..."), and records the layer's name beside it; the name comes from
    the model where it has that address, else from the file.
    """
    def group(key):
        return "/".join(key.split("/")[:2])

    differing = {group(k) for k in set(expected) ^ set(stored)}
    differing |= {group(k) for k in set(expected) & set(stored) if expected[k] != stored[k]}
    order = {layer.name: i for i, layer in enumerate(model.layers)}

    def name(address):
        return model_layers.get(address) or file_layers.get(address) or address

    first = min(differing, key=lambda address: (order.get(name(address), len(order)), address))
    in_model = {k: v for k, v in expected.items() if group(k) == first}
    in_file = {k: v for k, v in stored.items() if group(k) == first}
    if not in_file:
        return name(first), "the file has no weights for it"
    if not in_model:
        return name(first), "the model has no such layer"
    parts = []
    missing, extra = set(in_model) - set(in_file), set(in_file) - set(in_model)
    if missing:
        parts.append(f"{len(missing)} of its {len(in_model)} variables are not in the file")
    if extra:
        parts.append(f"the file holds {len(extra)} more variables for it than the model has")
    reshaped = sorted(k for k in set(in_model) & set(in_file) if in_model[k] != in_file[k])
    if reshaped:
        key = reshaped[0]
        parts.append(f"{key[len(first) + 1:]} has shape {in_file[key]} in the file, "
                     f"{in_model[key]} in the model")
    return name(first), "; ".join(parts)


def _h5_layout(path):
    """({variable path: shape}, {layer address: layer name}) of a Keras .weights.h5 file;
    ValueError naming it if it is not one (not HDF5, truncated, damaged)."""
    import h5py

    layout, names = {}, {}

    def visit(key, item):
        if isinstance(item, h5py.Dataset):
            layout[key] = item.shape
        elif key.endswith("/vars") and "name" in item.attrs:
            names[key[:-len("/vars")]] = str(item.attrs["name"])

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except (OSError, KeyError, RuntimeError, ValueError) as error:
        raise ValueError(f"Weights file {path} is not a readable .weights.h5 file: "
                         f"{error}") from None
    return layout, names
