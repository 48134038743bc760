"""The paper's baselines (CifarMobileNet, CifarMobileNetV2, CifarShuffleNet, CifarShuffleNetV2):
size and cost against the authors' networks, the keras.applications arguments, refusals.

References: ../shared/reference/cnn-layer-reuse/BASELINES.md (parameter counts, which equal
checkpoints.json, and multiply-accumulates of the authors' networks at each dataset's native
size). The golden outputs and the full test-set accuracies of the 12 checkpoints are tested
with the LruNets' in test_weights.py and test_pretrained_accuracy.py.
"""

import numpy as np
import pytest

import keras

from lru_keras import analysis, zoo

CIFAR, FASHION = (32, 32, 3), (28, 28, 1)
# (builder, arguments, classes, input shape) -> (trainable parameters, MACs), BASELINES.md.
AUTHORS_NETWORKS = {
    ("CifarMobileNet", 0.25, 10, CIFAR): (215_642, 4_020_736),
    ("CifarMobileNetV2", 0.25, 10, CIFAR): (249_122, 6_332_672),
    ("CifarShuffleNet", 0.5, 10, CIFAR): (228_565, 10_040_448),
    ("CifarShuffleNetV2", 0.25, 10, CIFAR): (211_082, 6_233_088),
    ("CifarMobileNet", 0.4, 100, CIFAR): (567_217, 9_779_396),
    ("CifarMobileNetV2", 0.4, 100, CIFAR): (603_248, 13_349_184),
    ("CifarShuffleNet", 0.75, 100, CIFAR): (559_633, 21_928_032),
    ("CifarShuffleNetV2", 0.75, 100, CIFAR): (568_408, 15_334_528),
    ("CifarMobileNet", 0.25, 10, FASHION): (215_498, 3_709_360),
    ("CifarMobileNetV2", 0.25, 10, FASHION): (248_978, 5_425_316),
    ("CifarShuffleNet", 0.5, 10, FASHION): (228_349, 7_983_174),
    ("CifarShuffleNetV2", 0.25, 10, FASHION): (210_650, 5_061_120),
}
BUILDERS = ["CifarMobileNet", "CifarMobileNetV2", "CifarShuffleNet", "CifarShuffleNetV2"]
# Channels of the include_top=False feature map at the default widths (BASELINES.md): the last
# block (256 = int(1024 * 0.25)), MobileNetV2's last 1x1 conv (1280), ShuffleNet's stage 3
# (480 = int(960 * 0.5)), ShuffleNetV2's head conv (1024).
FEATURES = {"CifarMobileNet": 256, "CifarMobileNetV2": 1280, "CifarShuffleNet": 480,
            "CifarShuffleNetV2": 1024}


@pytest.mark.parametrize("key", sorted(AUTHORS_NETWORKS), ids=str)
def test_parameters_and_macs_equal_the_authors_networks(key):
    builder, width, classes, input_shape = key
    model = zoo.get_builder(builder)(width=width, classes=classes, input_shape=input_shape)
    params, macs = AUTHORS_NETWORKS[key]
    assert analysis.count_parameters(model)["trainable"] == params
    assert analysis.count_macs(model) == macs


@pytest.mark.parametrize("builder", BUILDERS)
def test_defaults_are_the_cifar10_checkpoint_and_its_weights_load(builder):
    """The default width is the CIFAR-10 (and Fashion-MNIST) checkpoint's, so
    `weights="cifar10"` needs no other argument; the name follows the width."""
    model = zoo.get_builder(builder)(weights="cifar10")
    (entry,) = zoo.list_weights(builder=builder, dataset="cifar10")
    assert model.name == entry.name.split(".cifar10")[0]
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 10)
    probabilities = model.predict(np.full((2, 32, 32, 3), 128.0, np.float32), verbose=0)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("builder", BUILDERS)
def test_weights_of_another_width_are_refused_naming_what_fits(builder):
    (entry,) = zoo.list_weights(builder=builder, dataset="cifar100")
    with pytest.raises(ValueError, match=rf"width={entry.arguments['width']}"):
        zoo.get_builder(builder)(weights="cifar100")


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("input_shape, size", [(CIFAR, 4), (FASHION, 4), ((64, 48, 3), (8, 6))])
def test_include_top_false_returns_the_feature_map(builder, input_shape, size):
    """Total stride 8: 32 and 28 both end on 4x4 (28 -> 14 -> 7 -> 4), as in the paper."""
    model = zoo.get_builder(builder)(include_top=False, input_shape=input_shape)
    rows, cols = (size, size) if isinstance(size, int) else size
    assert model.output_shape == (None, rows, cols, FEATURES[builder])
    pooled = zoo.get_builder(builder)(include_top=False, pooling="avg", input_shape=input_shape)
    assert pooled.output_shape == (None, FEATURES[builder])


@pytest.mark.parametrize("builder", BUILDERS)
def test_headless_pretrained_backbone_feeds_the_classifier(builder, cifar10_images):
    """include_top=False with weights loads the same backbone: its pooled features through
    the full model's classifier give the full model's logits."""
    images = cifar10_images[0][:8].astype(np.float32)
    name = zoo.list_weights(builder=builder, dataset="cifar10")[0].name
    full = zoo.create(name, classifier_activation=None)
    backbone = zoo.create(name, include_top=False, pooling="avg")
    features = backbone.predict(images, verbose=0)
    logits = full.get_layer("classifier")(features).numpy()
    np.testing.assert_allclose(logits, full.predict(images, verbose=0), rtol=0, atol=1e-4)


@pytest.mark.parametrize("builder", BUILDERS)
def test_variable_input_size_computes_the_fixed_size_function(builder, cifar10_images):
    images = cifar10_images[0][:4].astype(np.float32)
    name = zoo.list_weights(builder=builder, dataset="cifar10")[0].name
    fixed = zoo.create(name, include_top=False)
    variable = zoo.create(name, include_top=False, input_shape=(None, None, 3))
    np.testing.assert_allclose(variable.predict(images, verbose=0),
                               fixed.predict(images, verbose=0), rtol=0, atol=1e-4)


def test_keras_file_round_trip_of_shufflenet_v2(tmp_path, cifar10_images):
    """ChannelSplit and ChannelShuffle serialize: the reloaded model computes the same."""
    images = cifar10_images[0][:4].astype(np.float32)
    model = zoo.create("cifar_shufflenetv2_0.25x.cifar10")
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(reloaded.predict(images, verbose=0),
                               model.predict(images, verbose=0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("builder, kwargs, message", [
    ("CifarMobileNet", dict(width=0), "`width` must be a finite number > 0"),
    ("CifarMobileNet", dict(width=float("inf")), "`width` must be a finite number > 0"),
    ("CifarMobileNet", dict(width=0.01), "`width`=0.01 is too small"),
    ("CifarMobileNetV2", dict(dropout=1.0), "`dropout` must be a number in"),
    ("CifarShuffleNet", dict(groups=4), r"`groups` must be one of \[3, 8\]"),
    ("CifarShuffleNet", dict(width=0.3), "`width`=0.3 does not fit groups=3"),
    ("CifarShuffleNetV2", dict(width=0.3), r"`width` must be one of \[0.25, 0.5"),
    ("CifarShuffleNetV2", dict(input_shape=(4, 4, 3)),
     r"`input_shape`=\(4, 4, 3\): height must be an integer in \[8, 4096\]"),
])
def test_bad_arguments_raise_naming_the_argument(builder, kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.get_builder(builder)(**kwargs)


def test_numpy_scalar_arguments_are_accepted():
    model = zoo.CifarShuffleNetV2(width=np.float32(0.25), classes=np.int64(7))
    assert model.output_shape == (None, 7) and model.name == "cifar_shufflenetv2_0.25x"


def test_preprocess_and_decode_as_keras_applications(cifar10_images):
    """keras.applications' helpers: preprocess_input passes raw pixels through (the models
    rescale them), decode_predictions names the dataset's classes, best first."""
    images, labels = cifar10_images
    x = zoo.preprocess_input(images[:4])
    assert x.dtype == np.float32 and np.array_equal(x, images[:4])
    model = zoo.create("cifar_shufflenet_0.5x.cifar10")
    decoded = zoo.decode_predictions(model.predict(x, verbose=0), dataset="cifar10", top=3)
    assert len(decoded) == 4 and all(len(row) == 3 for row in decoded)
    names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck")  # CIFAR-10's classes, by label
    for row in decoded:
        assert [score for _, _, score in row] == sorted((s for _, _, s in row), reverse=True)
        assert all(names[index] == name for index, name, _ in row)
    assert sum(row[0][0] == label for row, label in zip(decoded, labels[:4])) >= 3
    with pytest.raises(ValueError, match=r"shape \(batch, 100\)"):
        zoo.decode_predictions(np.zeros((1, 10)), dataset="cifar100")
    with pytest.raises(ValueError, match="`dataset` must be one of"):
        zoo.decode_predictions(np.zeros((1, 10)), dataset="imagenet")
