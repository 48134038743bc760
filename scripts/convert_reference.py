"""Ports the LruNet authors' published checkpoints to Keras weights files (the conversion record):
the six LruNets and the paper's 12 baselines (MobileNet, MobileNetV2, ShuffleNet, ShuffleNetV2).

Input: the authors' release (PyTorch state_dicts, MIT License, Copyright (c) 2017 Okan
Köpüklü; see zoo/LICENSE) as NumPy archives with their `checkpoints.json` record, in the
folder given by --reference. Output, in the repository's zoo/ folder (the registry that
setup.cfg installs as lru_keras.weights; this script is a development tool, not installed): one `<name>.weights.h5` per checkpoint,
`manifest.json` (the registry read by lru_keras.zoo.weights: builder arguments, input contract,
stem and classifier layer names, sha256 of input and output, recorded accuracy) and a model
card `cards/<name>.md` each. Trained entries (scripts/register_trained.py) are kept.

Run from the repository root:  python scripts/convert_reference.py [--reference DIR]
"""

import argparse
import hashlib
import json
import re
from pathlib import Path

import keras
import numpy as np

from lru_keras import zoo
from lru_keras.checksums import sha256_of
from zoo_manifest import (CLASSIFIER_LAYER, INPUT_RANGE, REPOSITORY, STEM_LAYER, ZOO, hub_header,
                          layer_names, write_entries)

DEFAULT_REFERENCE = REPOSITORY.parent / "shared" / "reference" / "cnn-layer-reuse"
SOURCE = "okankop/CNN-layer-reuse (commit 1dd8d42), pretrained/{checkpoint}.t7, MIT License"
AUTHOR = "Okan Köpüklü (okankop/CNN-layer-reuse); ported to Keras by lru_keras"
LICENSE = "MIT"

CIFAR = (32, 32, 3)
FASHION = (28, 28, 1)
# name -> (checkpoint, dataset, builder, builder arguments, classes, input shape)
CHECKPOINTS = {
    "lrunet1_1x.cifar10": ("cifar10-lru1-ckpt-08391", "cifar10", "LruNet", dict(reuse=1, width=1.0), 10, CIFAR),
    "lrunet14_1x.cifar10": ("cifar10-lru14-ckpt-08934", "cifar10", "LruNet", dict(reuse=14, width=1.0), 10, CIFAR),
    "lrunet1_2x.cifar100": ("cifar100-lru1-2x-ckpt-06322", "cifar100", "LruNet", dict(reuse=1, width=2.0), 100, CIFAR),
    "lrunet14_2x.cifar100": ("cifar100-lru14-2x-ckpt-06884", "cifar100", "LruNet", dict(reuse=14, width=2.0), 100, CIFAR),
    "lrunet1_1x.fashion_mnist": ("fashionmnist-lru1-ckpt-09117", "fashion_mnist", "LruNet", dict(reuse=1, width=1.0), 10, FASHION),
    "lrunet10_1x.fashion_mnist": ("fashionmnist-lru10-ckpt-09346", "fashion_mnist", "LruNet", dict(reuse=10, width=1.0), 10, FASHION),
    "cifar_mobilenet_0.25x.cifar10": ("cifar10-mobilenet-025x-ckpt-08472", "cifar10", "CifarMobileNet", dict(width=0.25), 10, CIFAR),
    "cifar_mobilenetv2_0.25x.cifar10": ("cifar10-mobilenetv2-025x-ckpt-08957", "cifar10", "CifarMobileNetV2", dict(width=0.25), 10, CIFAR),
    "cifar_shufflenet_0.5x.cifar10": ("cifar10-shufflenet-05x-ckpt-090320", "cifar10", "CifarShuffleNet", dict(width=0.5, groups=3), 10, CIFAR),
    "cifar_shufflenetv2_0.25x.cifar10": ("cifar10-shufflenetv2-025x-ckpt-089310", "cifar10", "CifarShuffleNetV2", dict(width=0.25), 10, CIFAR),
    "cifar_mobilenet_0.4x.cifar100": ("cifar100-mobilenet-0.4x-ckpt-06054", "cifar100", "CifarMobileNet", dict(width=0.4), 100, CIFAR),
    "cifar_mobilenetv2_0.4x.cifar100": ("cifar100-mobilenetv2-0.4x-ckpt-06995", "cifar100", "CifarMobileNetV2", dict(width=0.4), 100, CIFAR),
    "cifar_shufflenet_0.75x.cifar100": ("cifar100-shufflenet-075x-ckpt-06997", "cifar100", "CifarShuffleNet", dict(width=0.75, groups=3), 100, CIFAR),
    "cifar_shufflenetv2_0.75x.cifar100": ("cifar100-shufflenetv2-075x-ckpt-06915", "cifar100", "CifarShuffleNetV2", dict(width=0.75), 100, CIFAR),
    "cifar_mobilenet_0.25x.fashion_mnist": ("fmnist-mobilenet-025x-ckpt-09063", "fashion_mnist", "CifarMobileNet", dict(width=0.25), 10, FASHION),
    "cifar_mobilenetv2_0.25x.fashion_mnist": ("fmnist-mobilenetv2-025x-ckpt-09343", "fashion_mnist", "CifarMobileNetV2", dict(width=0.25), 10, FASHION),
    "cifar_shufflenet_0.5x.fashion_mnist": ("fmnist-shufflenet-05x-ckpt-09411", "fashion_mnist", "CifarShuffleNet", dict(width=0.5, groups=3), 10, FASHION),
    "cifar_shufflenetv2_0.25x.fashion_mnist": ("fmnist-shufflenetv2-025x-ckpt-09342", "fashion_mnist", "CifarShuffleNetV2", dict(width=0.25), 10, FASHION),
}

# The baselines' key maps: Keras layer name (full match) -> PyTorch module prefix, first match
# wins (../shared/reference/cnn-layer-reuse/BASELINES.md lists the authors' keys).
KEY_MAPS = {
    "CifarMobileNet": [
        (r"stem_conv", "features.0.0"), (r"stem_conv_bn", "features.0.1"),
        (r"block(\d+)_dw", r"features.\1.conv1"), (r"block(\d+)_dw_bn", r"features.\1.bn1"),
        (r"block(\d+)_pw", r"features.\1.conv2"), (r"block(\d+)_pw_bn", r"features.\1.bn2"),
        (r"classifier", "classifier.1"),
    ],
    "CifarMobileNetV2": [
        (r"stem_conv", "features.0.0"), (r"stem_conv_bn", "features.0.1"),
        (r"block1_dw", "features.1.conv.0"), (r"block1_dw_bn", "features.1.conv.1"),
        (r"block1_project", "features.1.conv.3"), (r"block1_project_bn", "features.1.conv.4"),
        (r"block(\d+)_expand", r"features.\1.conv.0"),
        (r"block(\d+)_expand_bn", r"features.\1.conv.1"),
        (r"block(\d+)_dw", r"features.\1.conv.3"), (r"block(\d+)_dw_bn", r"features.\1.conv.4"),
        (r"block(\d+)_project", r"features.\1.conv.6"),
        (r"block(\d+)_project_bn", r"features.\1.conv.7"),
        (r"head_conv", "features.18.0"), (r"head_conv_bn", "features.18.1"),
        (r"classifier", "classifier.1"),
    ],
    "CifarShuffleNet": [
        (r"stem_conv", "conv1"), (r"stem_conv_bn", "bn1"),
        (r"stage(\d)_unit(\d+)_conv(\d)", r"layer\1.\2.conv\3"),
        (r"stage(\d)_unit(\d+)_conv(\d)_bn", r"layer\1.\2.bn\3"),
        (r"classifier", "linear"),
    ],
    "CifarShuffleNetV2": [
        (r"stem_conv", "conv1"), (r"stem_conv_bn", "bn1"),
        *[(rf"stage(\d)_unit0_{part}{bn}", rf"layer\1.0.{kind}{index}")
          for index, part in enumerate(["left_dw", "left_pw", "right_pw1", "right_dw",
                                        "right_pw2"], start=1)
          for bn, kind in (("", "conv"), ("_bn", "bn"))],
        *[(rf"stage(\d)_unit(\d+)_{part}{bn}", rf"layer\1.\2.{kind}{index}")
          for index, part in enumerate(["pw1", "dw", "pw2"], start=1)
          for bn, kind in (("", "conv"), ("_bn", "bn"))],
        (r"head_conv", "conv2"), (r"head_conv_bn", "bn2"),
        (r"classifier", "linear"),
    ],
}


def conv_kernel(weight):
    """PyTorch conv weight (out, in/groups, kh, kw) -> Keras Conv2D kernel (kh, kw, in/groups, out)."""
    return weight.transpose(2, 3, 1, 0)


def depthwise_kernel(weight, multiplier):
    """PyTorch depthwise weight (in*m, 1, kh, kw) -> Keras DepthwiseConv2D kernel (kh, kw, in, m).

    PyTorch output channel j reads input channel j // m, and Keras output channel c*m + k is
    (input c, multiplier k): the same order.
    """
    channels = weight.shape[0] // multiplier
    return weight.reshape(channels, multiplier, *weight.shape[2:]).transpose(2, 3, 0, 1)


def batch_norm(state, prefix):
    """[gamma, beta, moving_mean, moving_variance] of a PyTorch BatchNorm2d."""
    return [state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]


def port_lrunet(state, model, reuse):
    """Copies a reference LruNet state_dict into an LruNet built with the matching arguments."""
    model.get_layer(STEM_LAYER).set_weights([conv_kernel(state["features.0.weight"])])
    model.get_layer("stem_bn").set_weights(batch_norm(state, "features.1"))
    for stage in range(1, 5):
        block = model.get_layer(f"stage{stage}")
        block.depthwise.set_weights(
            [depthwise_kernel(state[f"stage{stage}.dw.weight"], block.depth_multiplier)]
        )
        block.pointwise.set_weights([conv_kernel(state[f"stage{stage}.pw.weight"])])
        for i in range(reuse):
            block.norm(i, 0).set_weights(batch_norm(state, f"stage{stage}.dw_bn_list.{i}"))
            block.norm(i, 1).set_weights(batch_norm(state, f"stage{stage}.pw_bn_list.{i}"))
    model.get_layer("head_conv").set_weights([conv_kernel(state["classifier.0.weight"])])
    model.get_layer("head_bn").set_weights(batch_norm(state, "classifier.1"))
    model.get_layer(CLASSIFIER_LAYER["LruNet"]).set_weights(
        [conv_kernel(state["classifier.4.weight"]), state["classifier.4.bias"]]
    )
    used = {"features.0.weight", "classifier.0.weight", "classifier.4.weight", "classifier.4.bias"}
    unused = [k for k in state if k not in used and not _is_ported_prefix(k, reuse)]
    if unused:
        raise ValueError(f"Checkpoint entries not ported (architecture mismatch?): {unused[:5]}")


def _is_ported_prefix(key, reuse):
    prefixes = ["features.1.", "classifier.1."]
    for stage in range(1, 5):
        prefixes += [f"stage{stage}.dw.", f"stage{stage}.pw."]
        prefixes += [f"stage{stage}.{kind}.{i}." for kind in ("dw_bn_list", "pw_bn_list")
                     for i in range(reuse)]
    return any(key.startswith(p) for p in prefixes)


def port_by_keys(state, model, key_map):
    """Copies a baseline's state_dict into its Keras model through `key_map` (see
    KEY_MAPS); every layer with weights must map and every checkpoint entry be used."""
    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = next((re.sub(pattern, target, layer.name) for pattern, target in key_map
                       if re.fullmatch(pattern, layer.name)), None)
        if prefix is None:
            raise ValueError(f"Layer {layer.name!r} has no checkpoint key.")
        if isinstance(layer, keras.layers.BatchNormalization):
            values = batch_norm(state, prefix)
            used.update(f"{prefix}.{k}" for k in ("weight", "bias", "running_mean",
                                                  "running_var"))
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            values = [depthwise_kernel(state[f"{prefix}.weight"], 1)]
        elif isinstance(layer, keras.layers.Conv2D):
            values = [conv_kernel(state[f"{prefix}.weight"])]
        elif isinstance(layer, keras.layers.Dense):
            values = [state[f"{prefix}.weight"].T, state[f"{prefix}.bias"]]
            used.add(f"{prefix}.bias")
        else:
            raise ValueError(f"Layer {layer.name!r} ({type(layer).__name__}) is not ported.")
        used.add(f"{prefix}.weight")
        layer.set_weights(values)
    unused = sorted(set(state) - used)
    if unused:
        raise ValueError(f"Checkpoint entries not ported (architecture mismatch?): {unused[:5]}")


def port(state, model, builder, arguments):
    """Copies a reference state_dict into `model`, built by `builder` with `arguments`."""
    if builder == "LruNet":
        port_lrunet(state, model, arguments["reuse"])
    else:
        port_by_keys(state, model, KEY_MAPS[builder])


def build_for(builder, arguments, classes, input_shape):
    """The Keras model a checkpoint ports into (the reference's output: no softmax)."""
    return zoo.get_builder(builder)(**arguments, classes=classes, input_shape=input_shape,
                                    classifier_activation=None, weights=None)


def _lrunet_card(name, arguments, dataset):
    call = f"LruNet(reuse={arguments['reuse']}, width={arguments['width']}, weights=\"{dataset}\")"
    return f"""`{call}`: {arguments['reuse']}-LruNet-{arguments['width']:g}x trained on {dataset} by the authors
of "Convolutional Neural Networks with Layer Reuse" (Köpüklü, Babaee, Hörmann, Rigoll, ICIP 2019).
"""


def _baseline_card(name, builder, arguments, dataset):
    family = builder.removeprefix("Cifar")
    return f"""`lru_keras.zoo.create("{name}")`: {family} {arguments['width']:g}x as the authors of
"Convolutional Neural Networks with Layer Reuse" (Köpüklü, Babaee, Hörmann, Rigoll, ICIP 2019)
sized it for 32x32 images (no early downsampling), trained by them on {dataset}: a baseline of
the paper's Table 7. Not keras.applications' {family} (see lru_keras/zoo/cifar_*.py).
"""


def card(name, checkpoint, dataset, builder, arguments, classes, input_shape, record, params):
    """Model card text (Markdown, under its hub header) for one ported checkpoint."""
    intro = (_lrunet_card(name, arguments, dataset) if builder == "LruNet"
             else _baseline_card(name, builder, arguments, dataset))
    output = ("softmax over the reference network's pooled scores" if builder == "LruNet"
              else "softmax over the reference network's logits")
    return hub_header(name, dataset, record["acc"]) + f"""# {name}

{intro}
- Source: {SOURCE.format(checkpoint=checkpoint)}; ported by scripts/convert_reference.py.
- License: MIT, Copyright (c) 2017 Okan Köpüklü (zoo/LICENSE).
- Input: {input_shape}, raw pixels in [0, 255] (the model rescales to [0, 1]; no mean/std).
  `include_preprocessing=False` takes [0, 1].
- Output: {classes} class probabilities ({output});
  `classifier_activation=None` gives the scores themselves.
- Trainable parameters: {params:,} (BatchNorm gamma/beta included, moving statistics excluded).
- Test accuracy recorded in the checkpoint: {record['acc']:.2f}% (epoch {record['epoch']}).
  The authors selected the epoch with the best TEST accuracy, so this figure is optimistic.
- Training recipe (authors): SGD momentum 0.9, weight decay 5e-4, batch 256, lr 0.1 / 0.01
  from epoch 200 / 0.001 from 250, 300 epochs, random crop (pad 4), rotation ±10°, flip.
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    args = parser.parse_args()
    records = json.loads((args.reference / "checkpoints.json").read_text())
    (ZOO / "cards").mkdir(exist_ok=True)
    entries = []
    for name, (checkpoint, dataset, builder, arguments, classes, input_shape) in \
            CHECKPOINTS.items():
        source = args.reference / f"{checkpoint}.npz"
        state = dict(np.load(source))
        model = build_for(builder, arguments, classes, input_shape)
        port(state, model, builder, arguments)
        params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        record = records[checkpoint]
        if params != record["params"]:
            raise ValueError(f"{name}: {params} trainable parameters, checkpoint has {record['params']}")
        file = f"{name}.weights.h5"
        model.save_weights(ZOO / file)
        (ZOO / "cards" / f"{name}.md").write_text(
            card(name, checkpoint, dataset, builder, arguments, classes, input_shape, record,
                 params)
        )
        entries.append({
            "name": name, "builder": builder, "dataset": dataset,
            "arguments": {**arguments, "shuffle": True} if builder == "LruNet" else arguments,
            "classes": classes, "input_shape": list(input_shape),
            "input_range": list(INPUT_RANGE), **layer_names(builder),
            "file": file, "sha256": sha256_of(ZOO / file),
            "accuracy": record["acc"], "card": f"cards/{name}.md", "provenance": "ported",
            "author": AUTHOR, "license": LICENSE,
            "source": SOURCE.format(checkpoint=checkpoint)
            + f"; source sha256 {hashlib.sha256(source.read_bytes()).hexdigest()}",
        })
        print(f"{name}: {params:,} params, sha256 {entries[-1]['sha256'][:16]}...")
    write_entries(entries, replace="ported")


if __name__ == "__main__":
    main()
