"""Ports the LruNet authors' published checkpoints to Keras weights files (the conversion record).

Input: the authors' release (PyTorch state_dicts, MIT License, Copyright (c) 2017 Okan
Köpüklü; see zoo/LICENSE) as NumPy archives with their `checkpoints.json` record, in the
folder given by --reference. Output, in this folder: one `<name>.weights.h5` per checkpoint,
`manifest.json` (the registry read by lru_keras.zoo.weights: builder arguments, input contract,
stem and classifier layer names, sha256 of input and output, recorded accuracy) and a model
card `cards/<name>.md` each.

Run from the repository root:  python zoo/convert_reference.py [--reference DIR]
"""

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from lru_keras.zoo import LruNet
from lru_keras.zoo.weights import MANIFEST, sha256_of

HERE = Path(__file__).resolve().parent
DEFAULT_REFERENCE = HERE.parent.parent / "shared" / "reference" / "cnn-layer-reuse"
SOURCE = "okankop/CNN-layer-reuse (commit 1dd8d42), pretrained/{checkpoint}.t7, MIT License"
# The input contract and layer names every ported LruNet has (builder defaults): raw pixels in
# [0, 255] (the model rescales them), the first conv and the conv holding the class weights.
INPUT_RANGE = (0, 255)
STEM_LAYER = "stem_conv"
CLASSIFIER_LAYER = "classifier_conv"

# name -> (checkpoint, dataset, builder arguments, classes, input shape, dataset label)
CHECKPOINTS = {
    "lrunet1_1x.cifar10": ("cifar10-lru1-ckpt-08391", "cifar10", dict(reuse=1, width=1.0), 10, (32, 32, 3)),
    "lrunet14_1x.cifar10": ("cifar10-lru14-ckpt-08934", "cifar10", dict(reuse=14, width=1.0), 10, (32, 32, 3)),
    "lrunet1_2x.cifar100": ("cifar100-lru1-2x-ckpt-06322", "cifar100", dict(reuse=1, width=2.0), 100, (32, 32, 3)),
    "lrunet14_2x.cifar100": ("cifar100-lru14-2x-ckpt-06884", "cifar100", dict(reuse=14, width=2.0), 100, (32, 32, 3)),
    "lrunet1_1x.fashion_mnist": ("fashionmnist-lru1-ckpt-09117", "fashion_mnist", dict(reuse=1, width=1.0), 10, (28, 28, 1)),
    "lrunet10_1x.fashion_mnist": ("fashionmnist-lru10-ckpt-09346", "fashion_mnist", dict(reuse=10, width=1.0), 10, (28, 28, 1)),
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


def port(state, model, reuse):
    """Copies a reference state_dict into an LruNet built with the matching arguments."""
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
    model.get_layer(CLASSIFIER_LAYER).set_weights(
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


def build_for(arguments, classes, input_shape):
    """The Keras model a checkpoint ports into (pooled scores out, as the reference)."""
    return LruNet(**arguments, classes=classes, input_shape=input_shape,
                  classifier_activation=None, weights=None)


def card(name, checkpoint, dataset, arguments, classes, input_shape, record, params):
    """Model card text (Markdown) for one ported checkpoint."""
    call = f"LruNet(reuse={arguments['reuse']}, width={arguments['width']}, weights=\"{dataset}\")"
    return f"""# {name}

`{call}`: {arguments['reuse']}-LruNet-{arguments['width']:g}x trained on {dataset} by the authors
of "Convolutional Neural Networks with Layer Reuse" (Köpüklü, Babaee, Hörmann, Rigoll, ICIP 2019).

- Source: {SOURCE.format(checkpoint=checkpoint)}; ported by zoo/convert_reference.py.
- License: MIT, Copyright (c) 2017 Okan Köpüklü (zoo/LICENSE).
- Input: {input_shape}, raw pixels in [0, 255] (the model rescales to [0, 1]; no mean/std).
  `include_preprocessing=False` takes [0, 1].
- Output: {classes} class probabilities (softmax over the reference network's pooled scores);
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
    (HERE / "cards").mkdir(exist_ok=True)
    entries = []
    for name, (checkpoint, dataset, arguments, classes, input_shape) in CHECKPOINTS.items():
        source = args.reference / f"{checkpoint}.npz"
        state = dict(np.load(source))
        model = build_for(arguments, classes, input_shape)
        port(state, model, arguments["reuse"])
        params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        record = records[checkpoint]
        if params != record["params"]:
            raise ValueError(f"{name}: {params} trainable parameters, checkpoint has {record['params']}")
        file = f"{name}.weights.h5"
        model.save_weights(HERE / file)
        (HERE / "cards" / f"{name}.md").write_text(
            card(name, checkpoint, dataset, arguments, classes, input_shape, record, params)
        )
        entries.append({
            "name": name, "builder": "LruNet", "dataset": dataset,
            "arguments": {**arguments, "shuffle": True}, "classes": classes,
            "input_shape": list(input_shape), "input_range": list(INPUT_RANGE),
            "stem_layer": STEM_LAYER, "classifier_layer": CLASSIFIER_LAYER,
            "file": file, "sha256": sha256_of(HERE / file),
            "accuracy": record["acc"], "card": f"cards/{name}.md",
            "source": SOURCE.format(checkpoint=checkpoint)
            + f"; source sha256 {hashlib.sha256(source.read_bytes()).hexdigest()}",
        })
        print(f"{name}: {params:,} params, sha256 {entries[-1]['sha256'][:16]}...")
    manifest = {"license": "MIT (zoo/LICENSE), Copyright (c) 2017 Okan Köpüklü", "weights": entries}
    (HERE / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
