"""Catalogue of bad inputs to the model builders, keras.applications' helpers and `info`.

Every case is refused with the expected exception (or CLI exit status 2 and one line), a
message naming the argument (and the allowed values where they are few), before any layer is
made (counted through `keras.layers.Layer.__init__`) and within a second, and leaves no file
in the working directory. The common arguments are tried on every registered builder.
"""

import math
import time

import keras
import numpy as np
import pytest

from lru_keras import cli, zoo

# Small architecture arguments of each builder: a case changes one argument of these.
BASE = {
    "LruNet": dict(reuse=1, width=0.125),
    "CifarMobileNet": {},
    "CifarMobileNetV2": {},
    "CifarShuffleNet": {},
    "CifarShuffleNetV2": {},
    "ConvMixer": dict(width=8, depth=1, patch_size=2),
    "SEResNet": dict(depth=1, widths=(8, 8, 8)),
    "REAFResNet": dict(depth=18, stem="cifar"),
    "REAFResNeXt": dict(stem="cifar"),
    "WideResNet50": dict(stem="cifar"),
    "REAFPlusMobileNetV2": dict(stem="cifar"),
    "REAFPlusResNeXt50": dict(stem="cifar"),
}
MAX_SECONDS = 1.0


class Tensor(tuple):
    """A `keras.Input(shape)` in a case's arguments, made before the call is measured."""


# (id, common arguments, words of the message): tried on every builder.
COMMON_CASES = [
    ("classes-zero", dict(classes=0), ["`classes`", "[1, 100000]"]),
    ("classes-negative", dict(classes=-3), ["`classes`", "-3"]),
    ("classes-float", dict(classes=2.5), ["`classes`", "2.5"]),
    ("classes-bool", dict(classes=True), ["`classes`", "True"]),
    ("classes-huge", dict(classes=10**9), ["`classes`", "at most 100000"]),
    ("classes-headless", dict(include_top=False, classes=5), ["`classes`", "include_top=True"]),
    ("activation-unknown", dict(classifier_activation="softmaxx"),
     ["`classifier_activation`", "'softmax'", "'sigmoid'", "'softmaxx'"]),
    ("activation-number", dict(classifier_activation=5), ["`classifier_activation`"]),
    ("pooling-unknown", dict(include_top=False, pooling="sum"),
     ["`pooling`", "'avg'", "'max'"]),
    ("pooling-with-head", dict(pooling="avg"), ["`pooling`", "include_top=False"]),
    ("include-top-string", dict(include_top="no"), ["`include_top`", "True or False"]),
    ("preprocessing-string", dict(include_preprocessing="yes"), ["`include_preprocessing`"]),
    ("weights-unknown", dict(weights="cifar11"), ["`weights`", "'cifar11'"]),
    ("name-slash", dict(name="a/b"), ["`name`", "'a/b'"]),
    ("shape-zero-channels", dict(input_shape=(32, 32, 0)), ["`input_shape`", "channels"]),
    ("shape-negative", dict(input_shape=(32, -32, 3)), ["`input_shape`", "width", "-32"]),
    ("shape-float", dict(input_shape=(32.0, 32, 3)), ["`input_shape`", "height"]),
    ("shape-rank-2", dict(input_shape=(32, 32)), ["`input_shape`", "(height, width, channels)"]),
    ("shape-with-batch", dict(input_shape=(1, 32, 32, 3)), ["`input_shape`", "batch axis"]),
    ("shape-string", dict(input_shape="32,32,3"), ["`input_shape`", "3 values"]),
    ("shape-huge", dict(input_shape=(10**5, 10**5, 3)), ["`input_shape`", "4096"]),
    ("shape-many-channels", dict(input_shape=(32, 32, 10**6)), ["`input_shape`", "1024"]),
    ("tensor-too-small", dict(input_tensor=Tensor((1, 1, 3))), ["`input_tensor`", "height"]),
    ("tensor-not-keras", dict(input_tensor=np.zeros((1, 32, 32, 3))),
     ["`input_tensor`", "Keras tensor"]),
    ("tensor-disagrees-with-shape",
     dict(input_tensor=Tensor((64, 64, 3)), input_shape=(32, 32, 3)),
     ["`input_tensor`", "`input_shape`", "(None, 64, 64, 3)", "(32, 32, 3)"]),
]

PRETRAINED = sorted({entry.builder for entry in zoo.list_weights()})

# (id, builder, arguments (over BASE), exception, words of the message).
BUILDER_CASES = [
    # LruNet's sizes and numbers.
    ("reuse-huge", "LruNet", dict(reuse=10**6), ValueError, ["`reuse`=1000000", "at most 64"]),
    ("reuse-zero", "LruNet", dict(reuse=0), ValueError, ["`reuse`", "[1, 64]"]),
    ("reuse-float", "LruNet", dict(reuse=1.5), ValueError, ["`reuse`", "1.5"]),
    ("reuse-string", "LruNet", dict(reuse="2"), ValueError, ["`reuse`", "'2'"]),
    ("reuse-bool", "LruNet", dict(reuse=True), ValueError, ["`reuse`", "True"]),
    ("width-huge", "LruNet", dict(width=1e6), ValueError, ["`width`", "at most 8"]),
    ("width-inf", "LruNet", dict(width=math.inf), ValueError, ["`width`", "finite"]),
    ("width-nan", "LruNet", dict(width=math.nan), ValueError, ["`width`", "nan"]),
    ("width-string", "LruNet", dict(width="1"), ValueError, ["`width`", "'1'"]),
    ("width-not-eighths", "LruNet", dict(width=0.3), ValueError, ["`width`", "0.125"]),
    ("dropout-one", "LruNet", dict(dropout=1.0), ValueError, ["`dropout`", "[0, 1)"]),
    ("dropout-negative", "LruNet", dict(dropout=-0.1), ValueError, ["`dropout`", "[0, 1)"]),
    ("dropout-nan", "LruNet", dict(dropout=math.nan), ValueError, ["`dropout`", "[0, 1)"]),
    ("shuffle-string", "LruNet", dict(shuffle="no"), ValueError, ["`shuffle`", "'no'"]),
    ("pretrained-architecture", "LruNet", dict(reuse=3, width=1.0, weights="cifar10"),
     ValueError, ["'cifar10'", "reuse=3"]),
    ("pretrained-channels", "LruNet",
     dict(width=1.0, weights="cifar10", include_top=False, input_shape=(32, 32, 1)),
     ValueError, ["`input_shape`", "3"]),
    # The baselines.
    ("mobilenet-width-huge", "CifarMobileNet", dict(width=100), ValueError,
     ["`width`=100", "at most 4"]),
    ("mobilenet-width-tiny", "CifarMobileNet", dict(width=0.01), ValueError,
     ["`width`=0.01", "too small"]),
    ("mobilenet-dropout", "CifarMobileNet", dict(dropout=1.5), ValueError, ["`dropout`"]),
    ("mobilenetv2-width-huge", "CifarMobileNetV2", dict(width=100), ValueError,
     ["`width`=100", "at most 3.2"]),
    ("mobilenetv2-width-inf", "CifarMobileNetV2", dict(width=math.inf), ValueError,
     ["`width`", "finite"]),
    ("shufflenet-width-huge", "CifarShuffleNet", dict(width=100, groups=8), ValueError,
     ["`width`=100", "1536 x width"]),
    ("shufflenet-groups", "CifarShuffleNet", dict(groups=4), ValueError, ["`groups`", "[3, 8]"]),
    ("shufflenet-width-misfit", "CifarShuffleNet", dict(width=0.3), ValueError,
     ["`width`=0.3", "groups=3"]),
    ("shufflenetv2-width", "CifarShuffleNetV2", dict(width=3), ValueError,
     ["`width`", "0.25", "2.0"]),
    # ConvMixer.
    ("convmixer-width-huge", "ConvMixer", dict(width=10**6), ValueError,
     ["`width`=1000000", "at most 4096"]),
    ("convmixer-width-zero", "ConvMixer", dict(width=0), ValueError, ["`width`"]),
    ("convmixer-depth-huge", "ConvMixer", dict(depth=10**6), ValueError,
     ["`depth`=1000000", "at most 128"]),
    ("convmixer-depth-bool", "ConvMixer", dict(depth=True), ValueError, ["`depth`"]),
    ("convmixer-kernel-huge", "ConvMixer", dict(kernel_size=10**4), ValueError,
     ["`kernel_size`=10000", "at most 31"]),
    ("convmixer-patch-huge", "ConvMixer", dict(patch_size=10**4), ValueError,
     ["`patch_size`=10000", "at most 64"]),
    ("convmixer-patch-above-image", "ConvMixer", dict(patch_size=64), ValueError,
     ["`input_shape`", "[64, 4096]"]),
    ("convmixer-sharing-huge", "ConvMixer", dict(sharing=10**9), ValueError,
     ["`sharing`", "2 <= K <= 2 * depth"]),
    ("convmixer-sharing-name", "ConvMixer", dict(sharing="half"), ValueError,
     ["`sharing`", "'none'", "'full'"]),
    # SE-ResNet.
    ("se-depth-huge", "SEResNet", dict(depth=10**5), ValueError,
     ["`depth`=100000", "at most 64"]),
    ("se-widths-huge", "SEResNet", dict(widths=(10**7, 8, 8)), ValueError,
     ["`widths`=10000000", "at most 4096"]),
    ("se-widths-number", "SEResNet", dict(widths=5), ValueError, ["`widths`", "3 stage widths"]),
    ("se-widths-two", "SEResNet", dict(widths=(8, 8)), ValueError, ["`widths`"]),
    ("se-reduction-huge", "SEResNet", dict(se_reduction=10**6), ValueError,
     ["`se_reduction`=1000000", "at most 4096"]),
    ("se-share-stage-4", "SEResNet", dict(share_stages=(4,)), ValueError,
     ["`share_stages`=4", "1 to 3"]),
    ("se-share-number", "SEResNet", dict(share_stages=3), ValueError, ["`share_stages`"]),
    # The REAF paper's models.
    ("reaf-depth", "REAFResNet", dict(depth=42), ValueError, ["`depth`", "[18, 34, 50, 101]"]),
    ("reaf-base-width-huge", "REAFResNet", dict(base_width=10**4), ValueError,
     ["`base_width`=10000", "at most 512"]),
    ("reaf-out-width-huge", "REAFResNet", dict(depth=50, out_width=10**4), ValueError,
     ["`out_width`=10000", "at most 512"]),
    ("reaf-config-huge", "REAFResNet", dict(config=(10**9, 5 * 10**8, 1)), ValueError,
     ["`config`", "G_I=1000000000", "at most 64"]),
    ("reaf-config-misfit", "REAFResNet", dict(config="4-3-3"), ValueError,
     ["`config`='4-3-3'", "C(G_I, G_M)"]),
    ("reaf-stem", "REAFResNet", dict(stem="mnist"), ValueError,
     ["`stem`", "'imagenet'", "'cifar'"]),
    ("reaf-strided-conv", "REAFResNet", dict(strided_conv="2x2"), ValueError,
     ["`strided_conv`", "'3x3'", "'1x1'"]),
    ("reaf-one-channel", "REAFResNet", dict(input_shape=(32, 32, 1)), ValueError,
     ["`input_shape`", "1 channel", "include_preprocessing=False"]),
    ("resnext-groups-misfit", "REAFResNeXt", dict(config=None, groups=3), ValueError,
     ["`groups`=3", "base_width=128"]),
    ("resnext-base-width-huge", "REAFResNeXt", dict(base_width=10**5), ValueError,
     ["`base_width`=100000", "at most 512"]),
    ("resnext-depth", "REAFResNeXt", dict(depth=18), ValueError, ["`depth`", "[50, 101]"]),
    ("wide-base-width-huge", "WideResNet50", dict(base_width=10**4), ValueError,
     ["`base_width`=10000"]),
    ("plus-mobilenet-groups", "REAFPlusMobileNetV2", dict(output_groups=16), ValueError,
     ["`output_groups`", "[None, 1, 2, 4, 8]"]),
    ("plus-mobilenet-dropout", "REAFPlusMobileNetV2", dict(dropout=1.5), ValueError,
     ["`dropout`", "[0, 1)"]),
    ("plus-mobilenet-one-channel", "REAFPlusMobileNetV2", dict(input_tensor=Tensor((32, 32, 1))),
     ValueError, ["`input_tensor`", "1 channel"]),
    ("plus-resnext-groups", "REAFPlusResNeXt50", dict(output_groups=3), ValueError,
     ["`output_groups`=3", "divisor of 256"]),
    ("plus-resnext-cardinality", "REAFPlusResNeXt50", dict(cardinality=3), ValueError,
     ["`cardinality`=3", "base_width=128"]),
    ("plus-resnext-base-width-huge", "REAFPlusResNeXt50", dict(base_width=10**5), ValueError,
     ["`base_width`=100000"]),
] + [
    # The architecture of the builder's first CIFAR-10 weights, with the wrong class count.
    (f"{builder}-pretrained-classes", builder,
     dict(weights="cifar10", classes=3,
          **zoo.list_weights(builder=builder, dataset="cifar10")[0].arguments),
     ValueError, ["`classes`=3", "10 classes"])
    for builder in PRETRAINED
]

CASES = [
    pytest.param(builder, {**BASE[builder], **kwargs}, ValueError,
                 words + _weights_names if case == "weights-unknown" else words,
                 id=f"{builder}-{case}")
    for builder in BASE
    for _weights_names in [[entry.name for entry in zoo.list_weights(builder=builder)][:1]]
    for case, kwargs, words in COMMON_CASES
] + [
    pytest.param(builder, {**BASE[builder], **kwargs}, error, words, id=case)
    for case, builder, kwargs, error, words in BUILDER_CASES
]

# (id, name, arguments, words): `zoo.create` and `zoo.get_builder`.
FACTORY_CASES = [
    ("create-unknown-name", "create", ("lrunet99_1x.cifar10",), {},
     ["'lrunet99_1x.cifar10'", "lrunet14_1x.cifar10", "'LruNet'"]),
    ("create-name-not-string", "create", (["LruNet"],), {}, ["['LruNet']", "LruNet"]),
    ("create-contradicting-architecture", "create", ("lrunet1_1x.cifar10",), dict(reuse=3),
     ["reuse=3", "LruNet(reuse=1"]),
    ("create-contradicting-weights", "create", ("lrunet1_1x.cifar10",),
     dict(weights="cifar100"), ["`weights`='cifar100'", "'lrunet1_1x.cifar10'"]),
    ("create-contradicting-classes", "create", ("lrunet1_1x.cifar10",), dict(classes=3),
     ["`classes`=3", "10 classes"]),
    ("create-headless-with-classes", "create", ("lrunet1_1x.cifar10",),
     dict(include_top=False, classes=10), ["`classes`=10", "include_top=True"]),
    ("get-builder-wrong-case", "get_builder", ("lrunet",), {}, ["'lrunet'", "'LruNet'"]),
    ("get-builder-not-string", "get_builder", (None,), {}, ["None", "'LruNet'"]),
]

# (id, function, arguments, words): keras.applications' helpers.
APPLICATION_CASES = [
    ("decode-wrong-classes", "decode_predictions", (np.zeros((1, 100)), "cifar10"),
     ["`predictions`", "(batch, 10)", "(1, 100)"]),
    ("decode-one-row-flat", "decode_predictions", (np.zeros(10), "cifar10"),
     ["`predictions`", "(batch, 10)"]),
    ("decode-nan", "decode_predictions", (np.full((2, 10), np.nan), "cifar10"),
     ["`predictions`", "NaN"]),
    ("decode-inf", "decode_predictions", (np.full((2, 10), -np.inf), "cifar10"),
     ["`predictions`", "infinite"]),
    ("decode-strings", "decode_predictions", (np.full((1, 10), "a"), "cifar10"),
     ["`predictions`", "dtype"]),
    ("decode-dataset", "decode_predictions", (np.zeros((1, 10)), "imagenet"),
     ["`dataset`", "'cifar10'", "'fashion_mnist'"]),
    ("decode-top-zero", "decode_predictions", (np.zeros((1, 10)), "cifar10", 0),
     ["`top`", "[1, 10]"]),
    ("decode-top-above-classes", "decode_predictions", (np.zeros((1, 10)), "cifar10", 11),
     ["`top`=11", "at most 10"]),
    ("decode-top-float", "decode_predictions", (np.zeros((1, 10)), "cifar10", 2.5),
     ["`top`", "2.5"]),
    ("preprocess-nan", "preprocess_input", (np.full((1, 32, 32, 3), np.nan),),
     ["`x`", "NaN", "[0, 255]"]),
    ("preprocess-inf", "preprocess_input", (np.full((32, 32, 3), np.inf),), ["`x`", "infinite"]),
    ("preprocess-above-range", "preprocess_input", (np.full((1, 32, 32, 3), 1000.0),),
     ["`x`", "[0, 255]"]),
    ("preprocess-negative", "preprocess_input", (np.full((1, 32, 32, 3), -50.0),),
     ["`x`", "[0, 255]"]),
    ("preprocess-rank-2", "preprocess_input", (np.zeros((32, 32)),), ["`x`", "(32, 32)"]),
    ("preprocess-rank-5", "preprocess_input", (np.zeros((1, 1, 32, 32, 3)),), ["`x`", "batch"]),
    ("preprocess-strings", "preprocess_input", (np.full((1, 2, 2, 3), "a"),), ["`x`", "dtype"]),
    ("preprocess-channels-first", "preprocess_input",
     (np.zeros((1, 3, 32, 32)), "channels_first"), ["`data_format`", "'channels_last'"]),
]

# (id, `lru-keras info` arguments, words of its one error line).
INFO_CASES = [
    ("reuse-huge", ["--reuse", "100000"], ["`reuse`=100000", "at most 64"]),
    ("reuse-zero", ["--reuse", "0"], ["--reuse", "positive integer"]),
    ("width-huge", ["--width", "1000"], ["--width"]),
    ("width-not-eighths", ["--width", "0.3"], ["--width", "0.125"]),
    ("classes-huge", ["--classes", "1000000000"], ["`classes`", "at most 100000"]),
    ("shape-huge", ["--input-shape", "5000,5000,3"], ["`input_shape`", "4096"]),
    ("shape-too-small", ["--input-shape", "8,8,3"], ["`input_shape`", "[16, 4096]"]),
    ("shape-many-channels", ["--input-shape", "32,32,2000"], ["`input_shape`", "1024"]),
    ("shape-zero", ["--input-shape", "32,32,0"], ["--input-shape"]),
]


@pytest.fixture
def layers_made(layers_made, monkeypatch, tmp_path):
    """conftest's `layers_made`, with the test run in an empty directory."""
    monkeypatch.chdir(tmp_path)
    return layers_made


def _with_tensors(kwargs):
    return {k: keras.Input(v) if isinstance(v, Tensor) else v for k, v in kwargs.items()}


def test_every_registered_builder_is_in_the_catalogue():
    assert sorted(BASE) == zoo.list_builders()


def test_the_layer_count_sees_a_model_being_built(layers_made):
    """The assertion of every case can fail: building a model makes layers."""
    zoo.LruNet(**BASE["LruNet"])
    assert "LRUBlock" in layers_made and "InputLayer" in layers_made


@pytest.mark.parametrize("builder, kwargs, error, words", CASES)
def test_a_builder_refuses_before_building(builder, kwargs, error, words, layers_made,
                                           tmp_path):
    kwargs = _with_tensors(kwargs)
    layers_made.clear()
    started = time.perf_counter()
    with pytest.raises(error) as refused:
        zoo.get_builder(builder)(**kwargs)
    elapsed = time.perf_counter() - started
    message = str(refused.value)
    assert [w for w in words if w not in message] == [], message
    assert layers_made == [], f"layers made before the refusal: {layers_made[:5]}"
    assert elapsed < MAX_SECONDS
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("function, args, kwargs, words",
                         [pytest.param(f, a, k, w, id=i) for i, f, a, k, w in FACTORY_CASES])
def test_create_and_get_builder_refuse_before_building(function, args, kwargs, words,
                                                       layers_made, tmp_path):
    with pytest.raises(ValueError) as refused:
        getattr(zoo, function)(*args, **kwargs)
    message = str(refused.value)
    assert [w for w in words if w not in message] == [], message
    assert layers_made == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("function, args, words",
                         [pytest.param(f, a, w, id=i) for i, f, a, w in APPLICATION_CASES])
def test_applications_helpers_refuse(function, args, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as refused:
        getattr(zoo, function)(*args)
    message = str(refused.value)
    assert [w for w in words if w not in message] == [], message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, words", [pytest.param(a, w, id=i) for i, a, w in INFO_CASES])
def test_info_refuses_bad_sizes_in_one_line(argv, words, layers_made, tmp_path, capsys):
    started = time.perf_counter()
    status = cli.main(["info", *argv])
    elapsed = time.perf_counter() - started
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lru-keras: error: "), err
    assert [w for w in words if w not in lines[0]] == [], lines[0]
    assert layers_made == [] and elapsed < MAX_SECONDS
    assert list(tmp_path.iterdir()) == []
