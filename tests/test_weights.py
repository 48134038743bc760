"""Tests of the pretrained weights: golden outputs, port fidelity, the registry, refusals.

References: ../shared/reference/cnn-layer-reuse (the authors' checkpoints as .npz, the golden
input/output pair of the reference network) and the shipped files in zoo/.
"""

import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import keras

from lru_keras import checksums, zoo
from lru_keras.zoo import LruNet, get_weights, list_weights
from lru_keras.zoo import weights as registry

from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "zoo"
LRUNETS = [
    "lrunet1_1x.cifar10", "lrunet14_1x.cifar10", "lrunet1_2x.cifar100",
    "lrunet14_2x.cifar100", "lrunet1_1x.fashion_mnist", "lrunet10_1x.fashion_mnist",
]
# The paper's Table 7 baselines (../shared/reference/cnn-layer-reuse/BASELINES.md).
BASELINES = [
    f"cifar_{family}_{width}x.{dataset}"
    for dataset, widths in (("cifar10", ("0.25", "0.25", "0.5", "0.25")),
                            ("cifar100", ("0.4", "0.4", "0.75", "0.75")),
                            ("fashion_mnist", ("0.25", "0.25", "0.5", "0.25")))
    for family, width in zip(("mobilenet", "mobilenetv2", "shufflenet", "shufflenetv2"), widths)
]
SHIPPED = LRUNETS + BASELINES


# Largest |port - golden| measured over the 6 LruNet checkpoints: 1.05e-5 with
# TF_ENABLE_ONEDNN_OPTS=1, 7.6e-6 with =0 (2-core AMD EPYC with AVX-512); logits reach 26.
# Over the 12 baselines: 1.4e-5 with =1 (Intel Xeon with AVX-512).
GOLDEN_ATOL = 1e-4


def load_convert_reference():
    return load_script("convert_reference")


def ported():
    """The registry's ported entries, in the manifest's order (trained ones follow them)."""
    return [entry for entry in list_weights() if entry.provenance == "ported"]


def variables(model):
    return {v.path: v.numpy().copy() for v in model.weights}


def assert_same_variables(a, b):
    assert sorted(a) == sorted(b)
    for path in a:
        np.testing.assert_array_equal(a[path], b[path], err_msg=path)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def user_entry(path):
    """The registry entry of a user's `.weights.h5` file for LruNet(reuse=1)."""
    return registry.resolve(str(path), builder="LruNet", include_top=True, classes=None,
                            input_shape=None, reuse=1, width=1.0, shuffle=True)


def assert_refused_untouched(entry, match):
    """`load_into` refuses `entry` for a fresh LruNet(reuse=1) and changes no variable;
    returns that model."""
    model = LruNet(reuse=1)
    before = variables(model)
    with pytest.raises(ValueError, match=match) as error:
        registry.load_into(model, entry)
    assert_same_variables(variables(model), before)
    return model, error


# --------------------------------------------------------------------------------------------
# Golden output and port fidelity
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SHIPPED)
def test_golden_logits_of_reference_network_reproduced(name, reference_dir, test_set):
    """The authors' PyTorch network's pre-softmax outputs on 16 real test images (golden/),
    for every shipped checkpoint: LruNet's stem concat of width 2, 1-channel input, 100-class
    head and every reuse count; the baselines' PyTorch padding of stride-2 layers, ShuffleNet's
    average pool that counts the padding and its shuffle direction (each of these errors misses
    by more than 1, BASELINES.md). The golden logits are within 8e-6 of an fp64 evaluation
    (golden/README); the port's largest difference on both oneDNN settings is in
    GOLDEN_ATOL's comment."""
    convert = load_convert_reference()
    checkpoint, dataset, _, _, classes, input_shape = convert.CHECKPOINTS[name]
    golden = np.load(reference_dir / "golden" / f"{checkpoint}.npz")
    x, logits = golden["x"], golden["logits"]
    assert x.shape == (16, *input_shape) and logits.shape == (16, classes)
    if "rows" in golden.files:  # the golden images are the dataset's own test images
        images, _ = test_set(dataset)
        np.testing.assert_allclose(x * 255, images[golden["rows"]].reshape(x.shape), atol=1e-3)
    model = zoo.create(name, include_preprocessing=False, classifier_activation=None)
    out = model.predict(x, batch_size=16, verbose=0)
    assert np.abs(logits).max() > 1.0  # a meaningful reference, not zeros
    np.testing.assert_allclose(out, logits, rtol=0, atol=GOLDEN_ATOL)
    np.testing.assert_array_equal(out.argmax(1), logits.argmax(1))


def test_shipped_names_are_the_eighteen_ported_checkpoints():
    convert = load_convert_reference()
    assert [e.name for e in ported()] == SHIPPED
    assert list(convert.CHECKPOINTS) == SHIPPED
    for entry in ported():
        checkpoint, dataset, builder, arguments, classes, input_shape = \
            convert.CHECKPOINTS[entry.name]
        assert entry.builder == builder and entry.dataset == dataset
        shuffle = {"shuffle": True} if builder == "LruNet" else {}
        assert entry.arguments == {**arguments, **shuffle}
        assert entry.classes == classes and entry.input_shape == input_shape
        assert checkpoint in entry.source and entry.provenance == "ported"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_equal_a_fresh_port_of_the_reference(name, reference_state,
                                                             reference_dir):
    convert = load_convert_reference()
    checkpoint, _, builder, arguments, classes, input_shape = convert.CHECKPOINTS[name]
    ported = convert.build_for(builder, arguments, classes, input_shape)
    convert.port(reference_state(checkpoint), ported, builder, arguments)

    shipped = zoo.create(name, classifier_activation=None)
    assert shipped.input_shape[1:] == input_shape and shipped.output_shape == (None, classes)
    assert_same_variables(variables(shipped), variables(ported))

    records = json.loads((reference_dir / "checkpoints.json").read_text())
    params = sum(int(np.prod(w.shape)) for w in shipped.trainable_weights)
    assert params == records[checkpoint]["params"]


def test_port_refuses_a_checkpoint_of_another_reuse(reference_state):
    convert = load_convert_reference()
    model = convert.build_for("LruNet", dict(reuse=1, width=1.0), 10, (32, 32, 3))
    with pytest.raises(ValueError, match="not ported"):
        convert.port(reference_state("cifar10-lru14-ckpt-08934"), model, "LruNet",
                     dict(reuse=1))


def test_port_refuses_a_baseline_checkpoint_of_another_width(reference_state):
    """The key map checks every layer against the checkpoint: a 0.4x MobileNet checkpoint
    does not fit the 0.25x network (set_weights refuses the shapes)."""
    convert = load_convert_reference()
    model = convert.build_for("CifarMobileNet", dict(width=0.25), 100, (32, 32, 3))
    with pytest.raises(ValueError, match="shape"):
        convert.port(reference_state("cifar100-mobilenet-0.4x-ckpt-06054"), model,
                     "CifarMobileNet", dict(width=0.25))


def test_port_refuses_a_checkpoint_of_another_family(reference_state):
    convert = load_convert_reference()
    model = convert.build_for("CifarShuffleNetV2", dict(width=0.25), 10, (32, 32, 3))
    with pytest.raises((ValueError, KeyError)):
        convert.port(reference_state("cifar10-shufflenet-05x-ckpt-090320"), model,
                     "CifarShuffleNetV2", dict(width=0.25))


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------
def test_manifest_sha256_matches_every_file():
    manifest = json.loads((ZOO / "manifest.json").read_text())
    assert [item["name"] for item in manifest["weights"]] == [e.name for e in list_weights()]
    for item in manifest["weights"]:
        path = ZOO / item["file"]
        assert path.is_file(), path
        assert sha256(path) == item["sha256"], item["name"]
        assert registry.verify(get_weights(item["name"])) == path


def test_manifest_records_the_checkpoints_accuracy_and_source_hash(reference_dir):
    convert = load_convert_reference()
    records = json.loads((reference_dir / "checkpoints.json").read_text())
    for entry in ported():
        checkpoint = convert.CHECKPOINTS[entry.name][0]
        assert entry.accuracy == records[checkpoint]["acc"]
        source_hash = sha256(reference_dir / f"{checkpoint}.npz")
        assert entry.source.endswith(f"source sha256 {source_hash}")


def test_license_and_cards_ship_with_the_weights(reference_dir):
    license_file = ZOO / "LICENSE"
    assert license_file.read_bytes() == (reference_dir / "LICENSE").read_bytes()
    assert "MIT License" in license_file.read_text()
    assert "Köpüklü" in json.loads((ZOO / "manifest.json").read_text())["license"]
    for entry in list_weights():
        card = ZOO / entry.card
        assert card.is_file(), card
        text = card.read_text()
        assert entry.name in text and f"{entry.accuracy:.2f}%" in text
        call = (f'weights="{entry.dataset}"'
                if (entry.builder, entry.provenance) == ("LruNet", "ported")
                else f'zoo.create("{entry.name}")')
        assert call in text and "MIT" in text


def test_cards_carry_the_header_the_hugging_face_hub_reads(client):
    """Each card's YAML header, read by huggingface_hub as the Hub reads an uploaded README:
    the license, library and dataset, and the recorded test accuracy as a model-index result,
    so that the weights publish on a hub as they are."""
    entries = list_weights()
    read = client("hub_client", *[ZOO / entry.card for entry in entries])
    for entry in entries:
        card = read[str(ZOO / entry.card)]
        assert (card["license"], card["library_name"], card["pipeline_tag"]) == (
            "mit", "keras", "image-classification")
        assert card["datasets"] == [entry.dataset] and card["model_name"] == entry.name
        assert card["results"] == [{"task": "image-classification", "dataset": entry.dataset,
                                    "split": "test", "metric": "accuracy",
                                    "value": entry.accuracy}]
        assert card["text_starts"] == f"# {entry.name}"


@pytest.mark.parametrize("name", [entry.name for entry in list_weights()])
def test_input_contract_and_layer_names_fit_the_built_model(name):
    """The entry's input shape and pixel range, stem and classifier layers are the model's:
    its first Rescaling maps `input_range` onto [0, 1], the stem is the first conv and reads
    the input's channels, the classifier layer outputs the classes."""
    entry = get_weights(name)
    convert = load_convert_reference()
    assert entry.input_range == convert.INPUT_RANGE
    assert entry.stem_layer == convert.STEM_LAYER
    assert entry.classifier_layer == convert.layer_names(entry.builder)["classifier_layer"]
    model = zoo.create(name, weights=None)
    assert model.input_shape[1:] == entry.input_shape
    rescaling = next(layer for layer in model.layers
                     if isinstance(layer, keras.layers.Rescaling))
    ends = np.array(entry.input_range, np.float32).reshape(2, 1, 1, 1)
    np.testing.assert_allclose(rescaling(ends).numpy().ravel(), [0.0, 1.0], atol=1e-7)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    stem = model.get_layer(entry.stem_layer)
    assert stem is convs[0] and stem.kernel.shape[2] == entry.input_shape[-1]
    assert model.get_layer(entry.classifier_layer).output.shape[-1] == entry.classes


def test_importing_the_weights_registry_imports_no_model_family():
    code = ("import sys, lru_keras.zoo.weights, lru_keras.zoo.registry as r; "
            "print([m for m in sys.modules if m.rsplit('.', 1)[-1] in r.FAMILIES])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=REPO)
    assert result.stdout.strip() == "[]", result.stdout


def test_every_family_registers_its_builders():
    assert zoo.list_builders() == sorted([
        "CifarMobileNet", "CifarMobileNetV2", "CifarShuffleNet", "CifarShuffleNetV2",
        "ConvMixer", "LruNet", "REAFPlusMobileNetV2", "REAFPlusResNeXt50", "REAFResNeXt",
        "REAFResNet", "SEResNet", "WideResNet50"])
    for name in zoo.list_builders():
        assert getattr(zoo, name) is zoo.get_builder(name)
        assert name in zoo.__all__
    with pytest.raises(ValueError, match="registered: .*'LruNet'"):
        zoo.get_builder("lrunet")
    with pytest.raises(ValueError, match="already registered"):
        zoo.registry.register_builder(type("LruNet", (), {"__module__": "elsewhere"}))


def test_create_builds_a_weights_name_with_its_weights():
    created = zoo.create("lrunet1_1x.cifar10")
    assert_same_variables(variables(created), variables(LruNet(reuse=1, weights="cifar10")))
    scores = zoo.create("lrunet1_1x.cifar10", classifier_activation=None)
    assert scores.get_layer("classifier_conv").get_weights()[1].tolist() == \
        created.get_layer("classifier_conv").get_weights()[1].tolist()
    backbone = zoo.create("lrunet1_1x.fashion_mnist", include_top=False, pooling="avg",
                          input_shape=(32, 32, 1))
    assert backbone.output_shape == (None, 512)
    fresh = zoo.create("lrunet14_2x.cifar100", weights=None)
    assert fresh.output_shape == (None, 100) and fresh.input_shape == (None, 32, 32, 3)
    assert zoo.create("LruNet", reuse=2, classes=7).output_shape == (None, 7)
    assert zoo.create("ConvMixer", width=8, depth=2).name == "convmixer8_2"


@pytest.mark.parametrize("overrides, message", [
    (dict(reuse=2), "reuse=14"),
    (dict(width=2.0, weights=None), "width=1.0"),
    (dict(classes=5), "classes=10"),
    (dict(input_shape=(64, 64, 3)), "(32, 32, 3)"),
    (dict(weights="cifar100"), "allowed: None"),
])
def test_create_refuses_overrides_that_contradict_the_weights(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        zoo.create("lrunet14_1x.cifar10", **overrides)


def test_create_names_what_exists_for_an_unknown_name():
    with pytest.raises(ValueError) as error:
        zoo.create("lrunet99")
    assert "lrunet14_1x.cifar10" in str(error.value) and "ConvMixer" in str(error.value)


@pytest.mark.parametrize(
    "kwargs, fits",
    [(dict(reuse=2, weights="cifar10"), ["reuse=1", "reuse=14"]),
     (dict(reuse=1, width=2.0, weights="cifar10"), ["width=1.0"]),
     (dict(reuse=14, width=1.0, weights="cifar100"), ["width=2.0"]),
     (dict(reuse=1, shuffle=False, weights="cifar10"), ["shuffle=True"]),
     (dict(reuse=1, weights="lrunet14_1x.cifar10"), ["reuse=14"]),
     (dict(reuse=1, weights="cifar10", classes=100), ["classes=10", "include_top=False"]),
     (dict(reuse=1, weights="cifar10", input_shape=(64, 64, 3)), ["(32, 32, 3)"]),
     (dict(reuse=1, weights="fashion_mnist", input_shape=(32, 32, 3)), ["(28, 28, 1)"]),
     (dict(reuse=1, weights="cifar10", include_top=False, input_shape=(32, 32, 1)),
      ["need 3"]),
     (dict(reuse=1, weights="imagenet"), ["cifar10", "cifar100", "fashion_mnist"])],
)
def test_incompatible_weights_raise_naming_what_fits(kwargs, fits):
    with pytest.raises(ValueError) as error:
        LruNet(**kwargs)
    for text in fits:
        assert text in str(error.value), (text, str(error.value))


def test_include_top_false_loads_the_backbone(cifar10_images):
    images = cifar10_images[0][:16].astype(np.float32)
    full = LruNet(reuse=1, weights="cifar10")
    backbone = LruNet(reuse=1, weights="cifar10", include_top=False)
    tap = keras.Model(full.input, full.get_layer("stage4_pool").output)
    expected = tap.predict(images, verbose=0)
    assert expected.max() > 0
    np.testing.assert_allclose(backbone.predict(images, verbose=0), expected,
                               rtol=1e-6, atol=1e-6)


def test_include_top_false_loads_the_backbone_at_another_input_size():
    full = LruNet(reuse=1, weights="cifar10")
    backbone = LruNet(reuse=1, weights="cifar10", include_top=False, input_shape=(64, 64, 3))
    assert backbone.output_shape == (None, 4, 4, 512)
    for layer in backbone.layers:
        for a, b in zip(layer.get_weights(), full.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert len(backbone.weights) > 0


# --------------------------------------------------------------------------------------------
# Refusal of corrupt or mismatched files
# --------------------------------------------------------------------------------------------
@pytest.fixture
def corrupt_zoo(tmp_path, monkeypatch):
    """A copy of zoo/ (manifest + lrunet1_1x.cifar10) with one byte of stem_conv's kernel flipped.

    The file stays a valid .weights.h5 (only a float changes), so only the sha256 can tell.
    """
    name = "lrunet1_1x.cifar10.weights.h5"
    shutil.copy(ZOO / "manifest.json", tmp_path / "manifest.json")
    target = tmp_path / name
    shutil.copy(ZOO / name, target)
    with h5py.File(target, "r") as f:
        found = []
        f.visititems(lambda key, obj: found.append(key)
                     if isinstance(obj, h5py.Dataset) and obj.shape == (3, 3, 3, 64) else None)
        assert len(found) == 1  # the stem conv kernel
        offset = f[found[0]].id.get_offset()
    data = bytearray(target.read_bytes())
    data[offset + 1] ^= 0x40
    target.write_bytes(bytes(data))
    monkeypatch.setattr(registry, "weights_dir", lambda: tmp_path)
    return tmp_path


def test_corrupt_registered_file_is_refused_and_nothing_loaded(corrupt_zoo):
    with pytest.raises(ValueError, match="sha256"):
        LruNet(reuse=1, weights="cifar10")
    entry = get_weights("lrunet1_1x.cifar10")
    assert entry.path().parent == corrupt_zoo

    model, error = assert_refused_untouched(entry, "sha256")
    assert entry.sha256 in str(error.value)

    # The corruption is silent without the hash: the file loads, with one changed kernel value.
    registry.load_into(model, dataclasses.replace(entry, sha256=None))
    clean = LruNet(reuse=1)
    registry._load_strict(clean, ZOO / "lrunet1_1x.cifar10.weights.h5")
    diff = model.get_layer("stem_conv").kernel.numpy() != \
        clean.get_layer("stem_conv").kernel.numpy()
    assert diff.sum() == 1


def test_user_weights_of_a_different_reuse_are_refused(tmp_path):
    path = tmp_path / "reuse2.weights.h5"
    LruNet(reuse=2).save_weights(path)
    with pytest.raises(ValueError, match="does not fit.* first layer that differs is 'stage1'"):
        LruNet(reuse=1, weights=str(path))

    assert_refused_untouched(user_entry(path), "nothing was loaded")

    smaller = tmp_path / "reuse1.weights.h5"
    LruNet(reuse=1).save_weights(smaller)
    with pytest.raises(ValueError, match="does not fit"):
        LruNet(reuse=2, weights=str(smaller))
    narrow = tmp_path / "narrow.weights.h5"
    LruNet(reuse=1, width=0.5).save_weights(narrow)
    with pytest.raises(ValueError, match="does not fit"):
        LruNet(reuse=1, weights=str(narrow))


def test_user_weights_of_the_same_architecture_load_exactly(tmp_path, cifar10_images):
    source = LruNet(reuse=1, weights="cifar10")
    path = tmp_path / "mine.weights.h5"
    source.save_weights(path)
    loaded = LruNet(reuse=1, weights=path)
    assert_same_variables(variables(loaded), variables(source))
    images = cifar10_images[0][:8].astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0),
                                  source.predict(images, verbose=0))


def test_saved_user_weights_are_checked_against_their_sidecar(tmp_path):
    """`save_weights` writes the .sha256 sidecar; a flipped byte in a kernel, which loads
    without complaint otherwise, is then refused naming the file, and nothing is loaded."""
    path = registry.save_weights(LruNet(reuse=1), tmp_path / "mine.weights.h5")
    assert checksums.check_sidecar(path)
    with h5py.File(path, "r") as f:
        offset = f["layers/conv2d/vars/0"].id.get_offset()
    content = bytearray(path.read_bytes())
    content[offset + 1] ^= 0x40
    path.write_bytes(bytes(content))
    _, error = assert_refused_untouched(user_entry(path), "corrupt or was replaced")
    assert isinstance(error.value, checksums.ChecksumError) and str(path) in str(error.value)


def test_non_h5_files_are_refused_clearly(tmp_path):
    fake = tmp_path / "notes.weights.h5"
    fake.write_text("these are not weights\n")
    with pytest.raises(ValueError, match="not a readable .weights.h5 file"):
        LruNet(reuse=1, weights=str(fake))
    assert_refused_untouched(user_entry(fake), "not a readable")

    arrays = tmp_path / "weights.npz"
    np.savez(arrays, a=np.zeros(3))
    with pytest.raises(ValueError, match="`weights` must be None, a path to a .weights.h5"):
        LruNet(reuse=1, weights=str(arrays))
    with pytest.raises(ValueError, match="does not exist"):
        LruNet(reuse=1, weights=str(tmp_path / "missing.weights.h5"))
