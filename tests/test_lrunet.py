"""Tests of the LruNet builder's conventions (keras.applications-style signature).

Real CIFAR-10 / Fashion-MNIST test images from ../shared/data and the shipped weights are used
wherever a prediction is compared, so equalities are checked on meaningful outputs.
"""

import subprocess
import sys

import numpy as np
import pytest

import keras

from lru_keras.layers import LRUBlock
from lru_keras.zoo import LruNet

# Trainable parameter counts of the reference network (../shared/reference/cnn-layer-reuse/
# README.md, "params" column): (reuse, width, classes, input channels) -> count.
REFERENCE_PARAMS = {
    (1, 1.0, 10, 3): 131_402,
    (14, 1.0, 10, 3): 206_282,
    (1, 2.0, 100, 3): 513_956,
    (14, 2.0, 100, 3): 663_716,
    (1, 1.0, 10, 1): 130_250,
    (10, 1.0, 10, 1): 182_090,
}


def trainable_params(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.fixture(scope="module")
def images(cifar10_images):
    """32 real CIFAR-10 test images as float32 pixels in [0, 255]."""
    return cifar10_images[0][:32].astype(np.float32)


@pytest.mark.parametrize("key", sorted(REFERENCE_PARAMS), ids=str)
def test_trainable_parameters_equal_reference_network(key):
    reuse, width, classes, channels = key
    size = 28 if channels == 1 else 32
    model = LruNet(reuse=reuse, width=width, classes=classes, input_shape=(size, size, channels))
    assert trainable_params(model) == REFERENCE_PARAMS[key]


def test_include_top_false_returns_stage4_feature_map_and_pooled_vectors(images):
    features = LruNet(reuse=1, weights="cifar10", include_top=False)
    assert features.output_shape == (None, 2, 2, 512)
    maps = features.predict(images, verbose=0)
    assert maps.shape == (32, 2, 2, 512) and maps.max() > 0
    avg = LruNet(reuse=1, weights="cifar10", include_top=False, pooling="avg")
    top = LruNet(reuse=1, weights="cifar10", include_top=False, pooling="max")
    assert avg.output_shape == (None, 512) and top.output_shape == (None, 512)
    np.testing.assert_allclose(avg.predict(images, verbose=0), maps.mean(axis=(1, 2)),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(top.predict(images, verbose=0), maps.max(axis=(1, 2)),
                               rtol=1e-6, atol=1e-6)
    assert all(layer.name not in ("head_conv", "classifier_conv") for layer in features.layers)


def test_include_top_false_28x28_gives_2x2_map():
    model = LruNet(reuse=1, include_top=False, input_shape=(28, 28, 1))
    assert model.output_shape == (None, 2, 2, 512)
    assert model.get_layer("stage1").output.shape[1:3] == (14, 14)
    assert model.get_layer("stage2").output.shape[1:3] == (7, 7)
    assert model.get_layer("stage3").output.shape[1:3] == (4, 4)


def test_include_preprocessing_true_on_pixels_equals_false_on_unit_range(images):
    raw = LruNet(reuse=1, weights="cifar10", include_preprocessing=True)
    unit = LruNet(reuse=1, weights="cifar10", include_preprocessing=False)
    assert "rescaling" in [layer.name for layer in raw.layers]
    assert "rescaling" not in [layer.name for layer in unit.layers]
    p_raw = raw.predict(images, verbose=0)
    p_unit = unit.predict(images / 255.0, verbose=0)
    np.testing.assert_allclose(p_raw, p_unit, rtol=1e-4, atol=1e-6)
    # sanity: these are real predictions, not a constant
    assert len(set(p_raw.argmax(1))) >= 5


def test_classifier_activation_none_returns_scores_and_softmax_their_probabilities(
    images, cifar10_images
):
    scores = LruNet(reuse=1, weights="cifar10", classifier_activation=None)
    probs = LruNet(reuse=1, weights="cifar10")
    assert "predictions" not in [layer.name for layer in scores.layers]
    s = scores.predict(images, verbose=0)
    p = probs.predict(images, verbose=0)
    assert (s >= 0).all()  # the reference network applies a ReLU to its class scores
    e = np.exp(s - s.max(axis=1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert (p.argmax(1) == cifar10_images[1][:32]).mean() > 0.7


@pytest.mark.parametrize("classes", [2, 7, 100])
def test_classes_sets_the_output_size(classes):
    model = LruNet(reuse=1, classes=classes)
    assert model.output_shape == (None, classes)
    assert model.get_layer("classifier_conv").filters == classes


def test_defaults_follow_the_weights():
    fashion = LruNet(reuse=1, weights="fashion_mnist")
    assert fashion.input_shape == (None, 28, 28, 1) and fashion.output_shape == (None, 10)
    cifar100 = LruNet(reuse=1, width=2, weights="cifar100")
    assert cifar100.input_shape == (None, 32, 32, 3) and cifar100.output_shape == (None, 100)
    plain = LruNet(reuse=1)
    assert plain.input_shape == (None, 32, 32, 3) and plain.output_shape == (None, 10)


def test_default_name_and_dropout():
    assert LruNet(reuse=1).name == "lrunet1_1x"
    assert LruNet(reuse=2, width=0.5).name == "lrunet2_0.5x"
    assert LruNet(reuse=1, name="mine").name == "mine"
    assert LruNet(reuse=1).get_layer("head_dropout").rate == 0.5
    assert LruNet(reuse=1, dropout=0.7).get_layer("head_dropout").rate == 0.7


def test_input_tensor_is_used_as_model_input(images):
    tensor = keras.Input((32, 32, 3), name="my_input")
    model = LruNet(reuse=1, weights="cifar10", input_tensor=tensor)
    assert model.inputs[0] is tensor
    np.testing.assert_allclose(model.predict(images, verbose=0),
                               LruNet(reuse=1, weights="cifar10").predict(images, verbose=0),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("width, channels", [(0.5, 256), (1.5, 768), (2, 1024), (2.0, 1024)])
def test_other_widths_build(width, channels):
    model = LruNet(reuse=2, width=width, include_top=False)
    assert model.output_shape == (None, 2, 2, channels)
    blocks = [layer for layer in model.layers if isinstance(layer, LRUBlock)]
    assert [b.filters for b in blocks] == [channels // 8, channels // 4, channels // 2, channels]
    full = LruNet(reuse=2, width=width)
    assert full.output_shape == (None, 10)
    assert full.get_layer("head_conv").filters == channels // 2


@pytest.mark.parametrize("width", [0.3, 0, -1, 0.1, "1"])
def test_bad_width_raises_naming_width(width):
    with pytest.raises(ValueError, match="`width`"):
        LruNet(reuse=1, width=width)


@pytest.mark.parametrize(
    "kwargs, argument",
    [({"reuse": 0}, "reuse"), ({"reuse": 1.5}, "reuse"), ({"reuse": "2"}, "reuse"),
     ({"reuse": True}, "reuse"),
     ({"pooling": "sum"}, "pooling"), ({"pooling": "avg", "include_top": False, "reuse": -1},
                                       "reuse"),
     ({"dropout": 1.0}, "dropout"), ({"dropout": -0.1}, "dropout"),
     ({"classes": 0}, "classes"), ({"input_shape": (8, 8, 3)}, "input_shape"),
     ({"input_shape": (32, 32)}, "input_shape"), ({"weights": "imagenet"}, "weights")],
)
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs, argument):
    kwargs = {"reuse": 1, **kwargs}
    with pytest.raises(ValueError, match=f"`{argument}`"):
        LruNet(**kwargs)


def test_numpy_scalar_arguments_are_accepted():
    model = LruNet(reuse=np.int64(1), width=np.float32(0.5), classes=np.int64(7),
                   dropout=np.float32(0.25), input_shape=np.array([32, 32, 3]))
    assert model.name == "lrunet1_0.5x" and model.output_shape == (None, 7)
    assert model.input_shape == (None, 32, 32, 3)
    pretrained = LruNet(reuse=np.int64(1), width=np.float64(1.0), weights="cifar10")
    assert pretrained.output_shape == (None, 10)


def test_keras_file_round_trip_of_lrunet_reuse_2(tmp_path, images):
    model = LruNet(reuse=2, classifier_activation=None)
    rng = np.random.default_rng(3)
    values = []
    for w in model.weights:  # non-trivial BatchNorm statistics everywhere
        if w.path.endswith(("moving_variance", "gamma")):
            values.append(rng.uniform(0.5, 1.5, w.shape).astype(np.float32))
        elif w.path.endswith(("moving_mean", "beta")):
            values.append(rng.normal(0, 0.1, w.shape).astype(np.float32))
        else:
            values.append(w.numpy())
    model.set_weights(values)
    expected = model.predict(images, verbose=0)
    assert expected.std() > 0

    path = tmp_path / "lrunet2.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), expected)
    assert loaded.name == model.name
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    assert trainable_params(loaded) == trainable_params(model)
    assert loaded.get_layer("stage3").times == 2


def test_a_saved_model_loads_after_import_lru_keras_alone(tmp_path):
    """`import lru_keras` registers every custom layer (as `import kimm` does)."""
    path = tmp_path / "lrunet1.keras"
    LruNet(reuse=1, width=0.25).save(path)
    code = ("import sys, keras, lru_keras; "
            "print(type(keras.saving.load_model(sys.argv[1]).get_layer('stage1')).__name__)")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "LRUBlock"


@pytest.mark.parametrize("include_top", [True, False])
def test_variable_input_size_computes_the_fixed_size_function(include_top, cifar10_images):
    """The model is fully convolutional: with input_shape=(None, None, 3) it takes any size
    of at least 16x16, and at 32x32 computes what the fixed-size model computes."""
    arguments = dict(reuse=2, width=0.25, include_top=include_top,
                     pooling=None if include_top else "avg")
    fixed = LruNet(**arguments)
    variable = LruNet(**arguments, input_shape=(None, None, 3))
    variable.set_weights(fixed.get_weights())
    images = cifar10_images[0][:4].astype(np.float32)
    np.testing.assert_allclose(variable.predict(images, verbose=0),
                               fixed.predict(images, verbose=0), rtol=1e-5, atol=1e-6)
    width = 10 if include_top else 128
    for size in ((16, 16), (40, 48), (64, 64)):
        batch = np.resize(images, (2, *size, 3))
        assert variable.predict(batch, verbose=0).shape == (2, width)

