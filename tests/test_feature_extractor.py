"""feature_extractor=True (kimm's convention): every builder returns its stem's and stages'
outputs as a dict keyed "{STAGE}_S{stride}", plus "TOP", the usual output, on the same layers
and weights as the usual model.

The shapes are checked against the keys: a feature map of an HxW image is H/stride x
W/stride. The builders are built small (their architecture arguments below) on 32x32 images.
"""

import re

import keras
import numpy as np
import pytest

from lru_keras import data, zoo
from lru_keras.zoo import weights as weights_registry

# Small architecture arguments of each builder (its defaults where they are small already).
SMALL = {
    "LruNet": dict(reuse=2, width=0.25),
    "CifarMobileNet": {},
    "CifarMobileNetV2": {},
    "CifarShuffleNet": {},
    "CifarShuffleNetV2": {},
    "ConvMixer": dict(width=16, depth=3, kernel_size=3, patch_size=2),
    "SEResNet": dict(depth=1, widths=(8, 16, 32)),
    "REAFResNet": dict(depth=18, base_width=8),
    "REAFResNeXt": dict(base_width=16),
    "WideResNet50": dict(base_width=8),
    "REAFPlusMobileNetV2": {},
    "REAFPlusResNeXt50": dict(cardinality=4, base_width=16),
}
RESNET = ["STEM_S2", "STAGE1_S4", "STAGE2_S8", "STAGE3_S16", "STAGE4_S32", "TOP"]
# The keys each builder returns with include_top=True, in order.
EXPECTED_KEYS = {
    "LruNet": ["STEM_S2", "STAGE1_S2", "STAGE2_S4", "STAGE3_S8", "STAGE4_S8", "TOP"],
    "CifarMobileNet": ["STEM_S1", "STAGE1_S2", "STAGE2_S4", "STAGE3_S8", "TOP"],
    "CifarMobileNetV2": ["STEM_S1", "STAGE1_S1", "STAGE2_S2", "STAGE3_S4", "STAGE4_S8", "TOP"],
    "CifarShuffleNet": ["STEM_S1", "STAGE1_S2", "STAGE2_S4", "STAGE3_S8", "TOP"],
    "CifarShuffleNetV2": ["STEM_S1", "STAGE1_S2", "STAGE2_S4", "STAGE3_S8", "TOP"],
    "ConvMixer": ["STEM_S2", "BLOCK1_S2", "BLOCK2_S2", "BLOCK3_S2", "TOP"],
    "SEResNet": ["STEM_S1", "STAGE1_S1", "STAGE2_S2", "STAGE3_S4", "TOP"],
    "REAFResNet": RESNET,
    "REAFResNeXt": RESNET,
    "WideResNet50": RESNET,
    "REAFPlusMobileNetV2": ["STEM_S2", "STAGE1_S2", "STAGE2_S4", "STAGE3_S8", "STAGE4_S16",
                            "STAGE5_S32", "TOP"],
    "REAFPlusResNeXt50": RESNET,
}
SIZE = 32


def stride_of(key):
    return int(re.fullmatch(r"[A-Z]+\d*_S(\d+)", key).group(1))


def build(builder, input_shape=(SIZE, SIZE, 3), **kwargs):
    """`builder` small (`SMALL`), on 32x32 images unless told, with `kwargs`."""
    return zoo.get_builder(builder)(**SMALL[builder], input_shape=input_shape, **kwargs)


def copy_weights(source, target):
    """Layer by layer, by name: the two models have the same layers."""
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())


def images(height=SIZE, width=SIZE, count=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, height, width, 3)).astype(
        "float32")


def assert_shapes_match_strides(features, height, width):
    for key, value in features.items():
        if key != "TOP":
            stride = stride_of(key)
            assert tuple(value.shape[1:3]) == (height // stride, width // stride), key


def test_every_registered_builder_is_covered():
    assert sorted(SMALL) == sorted(EXPECTED_KEYS) == zoo.list_builders()


@pytest.mark.parametrize("builder", zoo.list_builders())
def test_the_features_are_named_by_stage_and_stride(builder):
    keras.utils.set_random_seed(0)
    model = build(builder, feature_extractor=True, include_top=True)
    assert list(model.output) == EXPECTED_KEYS[builder]
    x = images()
    features = model(x, training=False)
    assert list(features) == EXPECTED_KEYS[builder]
    assert_shapes_match_strides(features, SIZE, SIZE)

    usual = build(builder)
    assert [layer.name for layer in usual.layers] == [layer.name for layer in model.layers]
    copy_weights(model, usual)
    np.testing.assert_allclose(features["TOP"], usual(x, training=False), rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize("builder, expected, size", [
    ("REAFResNet", ["STEM_S1", "STAGE1_S1", "STAGE2_S2", "STAGE3_S4", "STAGE4_S8", "TOP"],
     lambda stride: SIZE // stride),
    # The "cifar" MobileNetV2 convolves the 1-padded image: (32 + 2) / stride, rounded up.
    ("REAFPlusMobileNetV2", ["STEM_S1", "STAGE1_S1", "STAGE2_S2", "STAGE3_S4", "STAGE4_S8",
                             "TOP"], lambda stride: -(-(SIZE + 2) // stride)),
])
def test_the_cifar_stems_keep_the_resolution(builder, expected, size):
    model = build(builder, stem="cifar", feature_extractor=True)
    assert list(model.output) == expected
    for key in expected[:-1]:
        assert tuple(model.output[key].shape[1:3]) == (size(stride_of(key)),) * 2, key


def test_a_variable_size_model_gives_maps_of_the_image_size_over_the_stride():
    model = build("LruNet", input_shape=(None, None, 3), feature_extractor=True)
    features = model(images(64, 80, count=1), training=False)
    assert list(features) == EXPECTED_KEYS["LruNet"]
    assert_shapes_match_strides(features, 64, 80)


def test_feature_keys_select_and_order_the_features():
    keras.utils.set_random_seed(1)
    every = build("LruNet", feature_extractor=True)
    chosen = build("LruNet", feature_extractor=True, feature_keys=("STAGE3_S8", "STEM_S2"))
    assert list(chosen.output) == ["STAGE3_S8", "STEM_S2", "TOP"]
    copy_weights(every, chosen)
    x = images()
    expected, got = every(x, training=False), chosen(x, training=False)
    for key in got:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, atol=1e-6)


def test_without_the_head_top_is_the_usual_headless_output_unless_already_a_feature():
    # ConvMixer's headless output is its last block's, already a feature.
    assert list(build("ConvMixer", feature_extractor=True, include_top=False).output) == (
        EXPECTED_KEYS["ConvMixer"][:-1])
    pooled = build("ConvMixer", feature_extractor=True, include_top=False, pooling="avg")
    assert list(pooled.output) == EXPECTED_KEYS["ConvMixer"]
    assert tuple(pooled.output["TOP"].shape) == (None, 16)
    # LruNet's is the stage-4 map after its max pool (2x2), not a feature (4x4).
    headless = build("LruNet", feature_extractor=True, include_top=False)
    assert list(headless.output) == EXPECTED_KEYS["LruNet"]
    assert tuple(headless.output["TOP"].shape[1:3]) == (2, 2)


# (id, arguments, words of the message): refused by `scaffold.start`, before any layer.
BAD_ARGUMENTS = [
    ("extractor-string", dict(feature_extractor="yes"), ["`feature_extractor`", "'yes'"]),
    ("extractor-number", dict(feature_extractor=1), ["`feature_extractor`", "True or False"]),
    ("keys-string", dict(feature_extractor=True, feature_keys="STEM_S2"),
     ["`feature_keys`", "'STEM_S2'"]),
    ("keys-empty", dict(feature_extractor=True, feature_keys=[]), ["`feature_keys`"]),
    ("keys-not-strings", dict(feature_extractor=True, feature_keys=[2]), ["`feature_keys`"]),
    ("keys-repeated", dict(feature_extractor=True, feature_keys=["TOP", "TOP"]),
     ["`feature_keys`", "distinct"]),
    ("keys-without-extractor", dict(feature_keys=["STEM_S2"]),
     ["`feature_keys`", "feature_extractor=True"]),
]


@pytest.mark.parametrize("builder", zoo.list_builders())
@pytest.mark.parametrize("arguments, words",
                         [pytest.param(a, w, id=i) for i, a, w in BAD_ARGUMENTS])
def test_bad_feature_arguments_are_refused_before_any_layer(builder, arguments, words,
                                                            layers_made):
    with pytest.raises(ValueError) as refused:
        build(builder, **arguments)
    assert [w for w in words if w not in str(refused.value)] == [], str(refused.value)
    assert layers_made == []


def test_an_unknown_feature_key_is_refused_with_the_available_ones():
    with pytest.raises(ValueError) as refused:
        build("LruNet", feature_extractor=True, feature_keys=["STAGE2_S4", "STAGE5_S16"])
    message = str(refused.value)
    assert "`feature_keys`" in message and "'STAGE5_S16'" in message
    assert all(repr(key) in message for key in EXPECTED_KEYS["LruNet"][:-1]), message


def test_the_features_of_a_model_with_its_weights_file_are_the_usual_models(tmp_path):
    keras.utils.set_random_seed(2)
    usual = build("SEResNet")
    path = weights_registry.save_weights(usual, tmp_path / "se.weights.h5")
    extractor = build("SEResNet", weights=str(path), feature_extractor=True)
    x = images()
    np.testing.assert_allclose(extractor(x, training=False)["TOP"], usual(x, training=False),
                               rtol=1e-6, atol=1e-6)


def test_the_published_weights_load_into_the_feature_extractor():
    x = data.load_sample()[0][:8].astype("float32")
    pretrained = zoo.LruNet(reuse=1, width=1.0, weights="cifar10")
    extractor = zoo.LruNet(reuse=1, width=1.0, weights="cifar10", feature_extractor=True)
    features = extractor(x, training=False)
    np.testing.assert_allclose(features["TOP"], pretrained(x, training=False), atol=1e-5)
    # Headless, the weights come layer by layer from the full model: the same features.
    headless = zoo.LruNet(reuse=1, width=1.0, weights="cifar10", include_top=False,
                          feature_extractor=True)(x, training=False)
    for key in EXPECTED_KEYS["LruNet"][:-1]:
        np.testing.assert_allclose(headless[key], features[key], atol=1e-5)


@pytest.mark.parametrize("include_top", [True, False])
@pytest.mark.parametrize("builder", sorted(SMALL))
def test_every_builder_takes_48x48_and_64x80_images_when_built_for_any_size(builder,
                                                                            include_top):
    """input_shape=(None, None, 3) (keras.applications' convention for a fully convolutional
    network): the same function as the fixed-size model at 32x32, and 48x48 and 64x80 images
    give one class-score vector (with the top) or one pooled feature vector (headless) each."""
    arguments = dict(include_top=include_top, pooling=None if include_top else "avg")
    fixed = build(builder, **arguments)
    variable = build(builder, input_shape=(None, None, 3), **arguments)
    copy_weights(fixed, variable)
    np.testing.assert_allclose(variable.predict(images(), verbose=0),
                               fixed.predict(images(), verbose=0), rtol=1e-4, atol=1e-5)
    for height, width in ((48, 48), (64, 80)):
        out = variable.predict(images(height, width), verbose=0)
        assert out.shape == (2, fixed.output_shape[-1]), (height, width)
        assert np.all(np.isfinite(out))
