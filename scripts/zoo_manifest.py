"""zoo/manifest.json as the two development tools that write it see it: the ported entries
(scripts/convert_reference.py) and the trained ones (scripts/register_trained.py).

What both need once: the input contract and layer names every zoo builder has, the model
card's hub header, and writing the entries of one provenance without touching the other's.
The package reads the manifest with lru_keras.zoo.weights; this module is not installed.
"""

import json
from pathlib import Path

from lru_keras.zoo.weights import MANIFEST

REPOSITORY = Path(__file__).resolve().parents[1]
ZOO = REPOSITORY / "zoo"
# The top-level license line: each entry also names its own author and license.
LICENSE_NOTE = ("per entry: ported weights MIT (zoo/LICENSE), Copyright (c) 2017 Okan "
                "Köpüklü; trained weights MIT, this project's license (setup.cfg)")
# The input contract every zoo builder has by default: raw pixels in [0, 255] (the model
# rescales them to [0, 1], as the authors' networks take pixel / 255).
INPUT_RANGE = (0, 255)
STEM_LAYER = "stem_conv"
CLASSIFIER_LAYER = {"LruNet": "classifier_conv"}  # the others end in Dense "classifier"
PROVENANCES = ("ported", "trained")  # the order of the entries in the manifest
HUB_DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
                     "fashion_mnist": "Fashion-MNIST"}


def layer_names(builder):
    """{"stem_layer", "classifier_layer"} of a model made by `builder`."""
    return {"stem_layer": STEM_LAYER,
            "classifier_layer": CLASSIFIER_LAYER.get(builder, "classifier")}


def hub_header(name, dataset, accuracy, tags=("lru_keras", "layer-reuse")):
    """The Hugging Face model card header (YAML metadata: license, library, datasets, the test
    accuracy as a model-index result), so that the weights publish on a hub as they are."""
    tag_lines = "".join(f"- {tag}\n" for tag in tags)
    return f"""---
license: mit
library_name: keras
pipeline_tag: image-classification
tags:
{tag_lines}datasets:
- {dataset}
metrics:
- accuracy
model-index:
- name: {name}
  results:
  - task:
      type: image-classification
    dataset:
      name: {HUB_DATASET_NAMES[dataset]}
      type: {dataset}
      split: test
    metrics:
    - type: accuracy
      value: {accuracy:.2f}
---

"""


def read_entries():
    """The manifest's entries (a list of dicts); [] if there is no manifest yet."""
    path = ZOO / MANIFEST
    return json.loads(path.read_text())["weights"] if path.is_file() else []


def write_entries(entries, replace):
    """Writes the manifest with `entries`, all of provenance `replace`, in place of the ones
    of that provenance; the others are kept. Entries are ordered by provenance, then as given
    (ported ones in the converter's order, trained ones by name)."""
    if replace not in PROVENANCES:
        raise ValueError(f"replace={replace!r}: allowed {PROVENANCES}")
    wrong = [e["name"] for e in entries if e["provenance"] != replace]
    if wrong:
        raise ValueError(f"entries {wrong} are not of provenance {replace!r}")
    kept = [e for e in read_entries() if e["provenance"] != replace]
    names = [e["name"] for e in kept + entries]
    if len(set(names)) != len(names):
        raise ValueError(f"a weights name is registered twice: {sorted(names)}")
    ordered = sorted(kept + entries, key=lambda e: PROVENANCES.index(e["provenance"]))
    manifest = {"license": LICENSE_NOTE, "weights": ordered}
    (ZOO / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
