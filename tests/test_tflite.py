"""The TFLite / LiteRT path (issue 7): export that keeps weights shared, checked on real data.

Promises tested here, one test (or a parametrized family) each:
- every conv of a shared layer reads ONE weight tensor (interpreter op list), in each
  quantization; the folded export stores one kernel copy per reuse;
- outputs equal Keras on real CIFAR-10 images (float32, both modes);
- no Flex/custom ops in any variant; int8 has int8 input and output;
- the input spec / labels ship beside the model and inside it;
- no GATHER: the channel shuffle is reshape/slice/concat/transpose, and XNNPACK takes the
  whole graph as one partition;
- bad input (unsupported layer, a Keras backend other than TensorFlow, int8 without
  calibration data, unwritable path, dataset of another image shape) is a clear error and
  leaves no file behind;
- `lru_keras.tflite.evaluate` and the command line run .tflite files;
- every shipped file predicts as its Keras model on 500 real test images;
- slow: on the full CIFAR-10 test set, 14-LruNet-1x float32 is within 0.02 points of Keras
  (measured in the same run), float16 within 0.05, int8 (post-training) at least 88.8; every
  shipped file reaches its recorded accuracy, and a fresh int8 or float16 export matches the
  shipped one.
"""

import collections
import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from conftest import same_worker, with_worker_marks
from lru_keras import cli, data, tflite, zoo
from lru_keras.layers import LRUBlock
from lru_keras.layers.preprocessing import declared_input_range
from lru_keras.tflite import flatbuffer
from lru_keras.zoo import ConvMixer, LruNet

SMALL_REUSE = 3


# --------------------------------------------------------------------------------------------
# Models and helpers.
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_model(randomize):
    """A 3-reuse LruNet at width 0.25 (stages of 16..128 channels), BatchNorms perturbed."""
    return randomize(LruNet(reuse=SMALL_REUSE, width=0.25), seed=1)


@pytest.fixture(scope="module")
def lrunet14():
    """The published 14-LruNet-1x (CIFAR-10)."""
    return LruNet(reuse=14, weights="cifar10")


@pytest.fixture(scope="module")
def calibration_images():
    """200 real CIFAR-10 test images (every other image of the bundled sample, all classes):
    calibration data independent of TFDS."""
    x, _ = data.load_sample()
    return x[::2][:200].astype(np.float32)


def interpreter(path, xnnpack=False):
    """An interpreter of a file; without the XNNPACK delegate the op list is the file's own."""
    resolver = (OpResolverType.AUTO if xnnpack
                else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it = Interpreter(model_path=str(path), experimental_op_resolver_type=resolver)
    it.allocate_tensors()
    return it


def xnnpack_partitions(path):
    """Number of XNNPACK delegate partitions: the delegate appends one node per partition."""
    original = interpreter(path)._interpreter.NumNodes()
    delegated = interpreter(path, xnnpack=True)
    delegated.invoke()
    return delegated._interpreter.NumNodes() - original


def weight_readers(path):
    """{(op name, weight shape): {weight tensor index: number of ops reading it}}, from the
    interpreter's op list. A float16 weight reaches its conv through one DEQUANTIZE op; the
    tensor the conv reads is then that op's output."""
    it = interpreter(path)
    ops = it._get_ops_details()
    readers = collections.defaultdict(collections.Counter)
    for op in ops:
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            weight = int(op["inputs"][1])
            shape = tuple(int(d) for d in it.get_tensor_details()[weight]["shape"])
            readers[(op["op_name"], shape)][weight] += 1
    return readers


def lru_kernel_shapes(model):
    """TFLite weight shapes of each LRU block's shared depthwise and grouped 1x1 kernels."""
    shapes = []
    for block in model.layers:
        if isinstance(block, LRUBlock):
            c, m = block.filters, block.depth_multiplier
            shapes.append(("DEPTHWISE_CONV_2D", (1, 3, 3, c * m)))
            shapes.append(("CONV_2D", (c, 1, 1, m * c // block.groups)))
    return shapes


def listing(folder):
    return sorted(os.listdir(folder))


# --------------------------------------------------------------------------------------------
# Weight sharing survives the export.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("quantization", ["float32", "float16", "dynamic", "int8"])
def test_each_shared_kernel_is_one_tensor_read_by_every_reuse(
        small_model, calibration_images, tmp_path, quantization):
    path = tmp_path / "small.tflite"
    tflite.export(small_model, path, quantization, calibration_images[:50])
    readers = weight_readers(path)
    # (The head's grouped 1x1 conv has the shape of stage 3's kernel: one more tensor, read
    # once, may share a shape with a block kernel.)
    for key in lru_kernel_shapes(small_model):
        counts = sorted(readers[key].values(), reverse=True)
        assert counts[0] == SMALL_REUSE and counts[1:] in ([], [1]), (key, dict(readers[key]))


def test_folded_export_stores_one_kernel_copy_per_reuse(small_model, tmp_path):
    path = tmp_path / "folded.tflite"
    tflite.export(small_model, path, share_weights=False)
    readers = weight_readers(path)
    for key in lru_kernel_shapes(small_model):
        counts = list(readers[key].values())
        assert set(counts) == {1} and len(counts) in (SMALL_REUSE, SMALL_REUSE + 1), (
            key, dict(readers[key]))


def test_sharing_keeps_the_file_small_and_reports_it(small_model, tmp_path):
    shared = tflite.export(small_model, tmp_path / "shared.tflite")
    folded = tflite.export(small_model, tmp_path / "folded.tflite", share_weights=False)
    assert shared["share_weights"] and not folded["share_weights"]
    assert shared["size_bytes"] < folded["size_bytes"]
    report = tflite.inspect(tmp_path / "shared.tflite")["sharing"]
    # 4 blocks x 2 shared kernels, each read SMALL_REUSE times from one tensor.
    assert report["conv_ops"] - report["weight_tensors"] == 8 * (SMALL_REUSE - 1)


def test_kernel_shared_functional_model_keeps_one_kernel(cifar10_images, tmp_path, randomize):
    """Not only LRU blocks: one Conv2D layer called at three places, a BatchNorm after each
    call (inter-layer kernel sharing), is exported with the kernel stored once."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    shared = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="shared")
    for i in range(3):
        x = keras.layers.ReLU()(keras.layers.BatchNormalization(name=f"bn{i}")(shared(x)))
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    model = randomize(keras.Model(inputs, outputs, name="kernel_shared"), seed=3)
    path = tmp_path / "ks.tflite"
    tflite.export(model, path, input_range=(0, 1))
    readers = weight_readers(path)
    assert list(readers[("CONV_2D", (8, 3, 3, 8))].values()) == [3]
    images = cifar10_images[0][:16].astype(np.float32) / 255.0
    np.testing.assert_allclose(_run_float(path, images), model.predict(images, verbose=0),
                               rtol=1e-4, atol=1e-4)


def _run_float(path, images):
    it = Interpreter(model_path=str(path))
    entry = it.get_input_details()[0]
    it.resize_tensor_input(entry["index"], list(images.shape))
    it.allocate_tensors()
    it.set_tensor(entry["index"], images)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


# --------------------------------------------------------------------------------------------
# Outputs, ops, spec.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("share_weights", [True, False], ids=["shared", "folded"])
def test_float32_outputs_equal_keras_on_real_images(lrunet14, cifar10_images, tmp_path,
                                                    share_weights):
    path = tmp_path / "lrunet14.tflite"
    tflite.export(lrunet14, path, share_weights=share_weights)
    images = cifar10_images[0].astype(np.float32)
    expected = lrunet14.predict(images, verbose=0)
    for xnnpack in (True, False):
        got = tflite.TFLiteClassifier(path, xnnpack=xnnpack).predict(images)
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)
        assert np.array_equal(got.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("quantization", ["float32", "float16", "dynamic", "int8"])
def test_no_flex_custom_or_gather_ops_and_one_xnnpack_partition(
        small_model, calibration_images, tmp_path, quantization):
    path = tmp_path / "m.tflite"
    tflite.export(small_model, path, quantization, calibration_images[:50]
                  if quantization == "int8" else None)
    ops = {op["op_name"] for op in interpreter(path)._get_ops_details()}
    assert not {op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "DELEGATE")}, ops
    assert "GATHER" not in ops, ops
    assert tflite.inspect(path)["non_builtin_ops"] == []
    # With XNNPACK, the delegate replaces the nodes it takes by one node per partition.
    # (Dynamic-range files mix float and hybrid ops; XNNPACK takes them in several pieces.)
    if quantization != "dynamic":
        assert xnnpack_partitions(path) == 1


def test_int8_is_full_integer_with_pixel_input(small_model, calibration_images, tmp_path):
    path = tmp_path / "int8.tflite"
    spec = tflite.export(small_model, path, "int8", calibration_images[:50])
    it = interpreter(path)
    entry, result = it.get_input_details()[0], it.get_output_details()[0]
    assert entry["dtype"] == np.int8 and result["dtype"] == np.int8
    assert entry["quantization"] == (1.0, -128)  # q = pixel - 128: 8-bit pixels exactly
    float_tensors = [t["name"] for t in it.get_tensor_details()
                     if t["dtype"] == np.float32]
    assert float_tensors == [], float_tensors
    assert spec["input"]["scale"] == 1.0 and spec["input"]["zero_point"] == -128
    assert spec["output"]["scale"] == pytest.approx(1 / 256)
    assert spec["calibration"]["images"] == 50


def test_spec_labels_and_metadata_ship_with_the_model(lrunet14, tmp_path):
    path = tmp_path / "lrunet14_1x.cifar10.tflite"
    spec = tflite.export(lrunet14, path, "float16")
    labels_path, spec_path = tflite.sidecar_paths(path)
    assert labels_path.name == "lrunet14_1x.cifar10.labels.txt"
    assert labels_path.read_text().splitlines() == list(data.class_names("cifar10"))
    written = json.loads(spec_path.read_text())
    assert written == spec
    assert written["dataset"] == "cifar10" and written["quantization"] == "float16"
    assert written["input"]["shape"] == [1, 32, 32, 3]
    assert written["input"]["pixel_range"] == [0.0, 255.0]
    assert written["input"]["dtype"] == "float32"
    assert written["size_bytes"] == path.stat().st_size
    import hashlib

    assert written["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    embedded = flatbuffer.read_metadata_json(path.read_bytes())
    assert embedded["input"] == written["input"]
    model = flatbuffer.read(path.read_bytes())
    assert flatbuffer.get_metadata(model, "lru_keras.labels").decode() == labels_path.read_text()


def test_a_model_without_a_declared_pixel_range_needs_input_range(tmp_path, cifar10_images,
                                                                   randomize):
    """Nothing is guessed: without a PixelPreprocessing layer the export refuses, naming
    input_range; with it, the file maps [0, 255] pixels onto the given range."""
    model = randomize(LruNet(reuse=1, width=0.25, include_preprocessing=False), seed=2)
    path = tmp_path / "unit.tflite"
    with pytest.raises(ValueError, match="does not declare the pixel range.*input_range="):
        tflite.export(model, path)
    assert listing(tmp_path) == []
    spec = tflite.export(model, path, input_range=(0, 1))
    assert spec["input"]["pixel_range"] == [0.0, 1.0]
    images = cifar10_images[0][:8].astype(np.float32)
    # TFLiteClassifier takes pixels 0..255 and maps them to the model's range.
    np.testing.assert_allclose(tflite.TFLiteClassifier(path).predict(images),
                               model.predict(images / 255.0, verbose=0), atol=2e-5)


def test_declared_pixel_range_is_used_and_a_contradicting_one_refused(tmp_path):
    """Zoo models declare [0, 255], also REAF-ResNet's mean/std "normalization" (once
    mistaken for a [0, 1] model: int8 agreement with Keras 2.4%)."""
    from lru_keras.zoo import REAFResNet

    model = REAFResNet(depth=18, stem="cifar")
    assert declared_input_range(model) == (0.0, 255.0)
    with pytest.raises(ValueError, match=r"contradicts model .* \(0.0, 255.0\)"):
        tflite.export(LruNet(reuse=1, width=0.25), tmp_path / "m.tflite", input_range=(0, 1))
    assert listing(tmp_path) == []


@pytest.mark.parametrize("images, message", [
    (lambda x: x / 255.0, r"already scaled to \[0, 1\]"),
    (lambda x: x * 2.0, r"pixels in \[0, 255\].*span \[0, 510\]"),
    (lambda x: np.full_like(x, 128.0), "one constant value"),
    (lambda x: np.where(x > 250, np.nan, x), "NaN"),
])
def test_calibration_images_outside_the_pixel_range_are_refused(images, message, small_model,
                                                                calibration_images, tmp_path):
    """Calibration on [0, 1] images for a [0, 255] model gave a file at 10% accuracy."""
    bad = images(calibration_images[:32].astype(np.float32))
    with pytest.raises(ValueError, match=message):
        tflite.export(small_model, tmp_path / "m.tflite", "int8", representative_data=bad,
                      dataset="cifar10")
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------------------------
# Verified after converting: the file runs in LiteRT and computes what Keras computes.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("quantization", ["float32", "int8"])
def test_export_runs_the_file_in_litert_against_keras(quantization, small_model,
                                                      calibration_images, tmp_path):
    spec = tflite.export(small_model, tmp_path / "m.tflite", quantization,
                         representative_data=calibration_images[:64], dataset="cifar10")
    verified = spec["verified"]
    assert verified["xnnpack_partitions"] == 1
    if quantization == "float32":
        assert verified["images"] == 8 and verified["max_abs_diff"] < 1e-4
        assert verified["undelegated_ops"] == []
    else:  # the int8 SOFTMAX stays outside the one partition, at the end
        assert verified["images"] == 64 and verified["top1_agreement"] >= 0.5
        assert verified["undelegated_ops"] == ["SOFTMAX"]
    assert json.loads((tmp_path / "m.json").read_text())["verified"] == verified


def test_int8_with_uint8_io_takes_raw_pixels_and_predicts_as_int8_io(small_model,
                                                                       calibration_images,
                                                                       tmp_path):
    """io_dtype="uint8": the input is the 8-bit pixel itself (scale 1, zero point 0), as
    Android's Task Library and TensorBuffer need; one QUANTIZE op at each end moves between
    uint8 and int8 exactly, so the scores equal the int8-I/O file's."""
    kwargs = dict(representative_data=calibration_images[:64], dataset="cifar10")
    spec = tflite.export(small_model, tmp_path / "u.tflite", "int8", io_dtype="uint8", **kwargs)
    plain = tflite.export(small_model, tmp_path / "i.tflite", "int8", **kwargs)
    assert spec["input"]["dtype"] == spec["output"]["dtype"] == "uint8"
    assert (spec["input"]["scale"], spec["input"]["zero_point"]) == (1.0, 0)
    assert spec["input"]["quantize"].endswith("= pixel for 8-bit pixels")
    assert spec["ops"]["QUANTIZE"] == plain["ops"].get("QUANTIZE", 0) + 2
    images = calibration_images[64:96]
    uint8 = tflite.TFLiteClassifier(tmp_path / "u.tflite", batch_size=len(images))
    raw = uint8.quantize_input(images)
    assert raw.dtype == np.uint8 and np.array_equal(raw, images.astype(np.uint8))
    int8 = tflite.TFLiteClassifier(tmp_path / "i.tflite", batch_size=len(images))
    np.testing.assert_allclose(uint8.predict(images), int8.predict(images), atol=1e-6)
    with pytest.raises(ValueError, match="io_dtype='uint8' needs quantization='int8'"):
        tflite.export(small_model, tmp_path / "f.tflite", "float16", io_dtype="uint8")


def test_a_file_litert_cannot_load_is_refused_and_nothing_written(small_model, tmp_path,
                                                                   monkeypatch):
    """A converter can write a file LiteRT cannot prepare (seen: an FFT layer); here the
    written flatbuffer is cut short."""
    write = flatbuffer.write
    monkeypatch.setattr(flatbuffer, "write", lambda model: write(model)[:4096])
    with pytest.raises(tflite.ExportError, match="LiteRT cannot run the converted file"):
        tflite.export(small_model, tmp_path / "m.tflite")
    assert listing(tmp_path) == []


def test_a_file_that_disagrees_with_keras_is_refused(small_model, tmp_path, monkeypatch):
    from lru_keras.tflite import verify

    monkeypatch.setitem(verify.TOLERANCE, "float32", -1.0)  # any difference is too much
    with pytest.raises(tflite.ExportError, match="differs from Keras by"):
        tflite.export(small_model, tmp_path / "m.tflite")
    assert listing(tmp_path) == []


def test_ops_that_split_the_xnnpack_graph_are_named_in_a_warning(calibration_images, tmp_path,
                                                                 randomize):
    """XNNPACK has no int8 GELU: each one splits an int8 ConvMixer's graph."""
    model = randomize(ConvMixer(16, 2, kernel_size=3), seed=3)
    with pytest.warns(UserWarning, match=r"XNNPACK leaves .*GELU.* XNNPACK partitions"):
        spec = tflite.export(model, tmp_path / "m.tflite", "int8",
                             representative_data=calibration_images[:32], dataset="cifar10")
    assert spec["verified"]["xnnpack_partitions"] > 1
    # TensorFlow Lite Micro has no GELU kernel: recorded, not refused (a phone runs the file).
    assert "Didn't find op for builtin opcode 'GELU'" in spec["micro"]["error"]
    assert spec["micro"]["missing_ops"] == ["GELU"]
    assert spec["micro"]["flash_bytes"] == spec["size_bytes"]
    assert tflite.inspect(tmp_path / "m.tflite")["xnnpack"] == {
        "partitions": spec["verified"]["xnnpack_partitions"],
        "undelegated_ops": spec["verified"]["undelegated_ops"]}


def test_inspect_reports_how_xnnpack_partitions_the_shipped_files():
    """14-LruNet-1x int8 runs in one partition (the uint8 <-> int8 QUANTIZE ops at its two
    ends and the int8 SOFTMAX stay outside it); the baseline ShuffleNet's int8 file in 7 (its
    int8 average pools and ReLUs after a concatenation stay outside XNNPACK)."""
    lrunet = tflite.inspect(SHIPPED / "lrunet14_1x.cifar10.int8.tflite")["xnnpack"]
    assert lrunet == {"partitions": 1, "undelegated_ops": ["QUANTIZE", "SOFTMAX", "QUANTIZE"]}
    shufflenet = tflite.inspect(SHIPPED / "cifar_shufflenet_0.5x.cifar10.int8.tflite")
    assert shufflenet["xnnpack"]["partitions"] == 7
    assert shufflenet["xnnpack"]["undelegated_ops"].count("AVERAGE_POOL_2D") == 3


# --------------------------------------------------------------------------------------------
# Bad input: clear errors, no file left behind.
# --------------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="lru_keras_tests")
class Dilation(keras.layers.Layer):
    """A layer whose op (Dilation2D) the LiteRT builtin op set lacks."""

    def call(self, x):
        kernel = tf.zeros((2, 2, x.shape[-1]))
        return tf.nn.dilation2d(x, kernel, [1, 1, 1, 1], "SAME", "NHWC", [1, 1, 1, 1])


def test_unsupported_layer_is_named_and_no_file_is_written(tmp_path):
    inputs = keras.Input((32, 32, 3))
    x = Dilation(name="morphology")(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)))
    with pytest.raises(tflite.UnsupportedModelError, match="Dilation2D.*morphology"):
        tflite.export(model, tmp_path / "m.tflite", input_range=(0, 1))
    assert listing(tmp_path) == []


def test_export_and_qat_on_another_backend_are_refused_before_any_work(small_model, tmp_path,
                                                                       monkeypatch):
    """Here a stand-in for JAX; test_zoo_backends.py checks the real JAX and torch."""
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(tflite.UnsupportedBackendError, match="runs Keras on 'jax'"):
        tflite.export(small_model, tmp_path / "m.tflite")
    with pytest.raises(tflite.UnsupportedBackendError, match="KERAS_BACKEND=tensorflow"):
        tflite.quantize_aware(small_model, "cifar10", tmp_path / "q.tflite")
    assert listing(tmp_path) == []


def test_int8_without_calibration_data_or_known_dataset_is_an_error(tmp_path):
    model = LruNet(reuse=1, width=0.25, classes=7, input_shape=(48, 48, 1))
    with pytest.raises(ValueError, match="representative_data"):
        tflite.export(model, tmp_path / "m.tflite", "int8")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("where", ["missing folder", "read-only filesystem", "a folder"])
def test_unwritable_path_is_an_error_before_converting(small_model, tmp_path, where):
    if where == "missing folder":
        path, word = tmp_path / "no" / "such" / "m.tflite", "does not exist"
    elif where == "a folder":
        path, word = tmp_path, "is a directory"
    else:
        path, word = "/proc/lru_keras_test.tflite", "not writable"
        if os.access("/proc", os.W_OK) and not os.path.isdir("/proc/self"):
            pytest.skip("no read-only /proc here")
    with pytest.raises(ValueError, match=word):
        tflite.export(small_model, path)
    assert listing(tmp_path) == []


def test_dataset_of_another_image_shape_is_an_error(small_model, tmp_path, calibration_images):
    with pytest.raises(ValueError, match=r"\(28, 28, 1\).*\(32, 32, 3\)"):
        tflite.export(small_model, tmp_path / "m.tflite", "int8", dataset="fashion_mnist")
    gray = calibration_images[:10, :28, :28, :1]
    with pytest.raises(ValueError, match=r"\(28, 28, 1\).*\(32, 32, 3\)"):
        tflite.export(small_model, tmp_path / "m.tflite", "int8", gray)
    assert listing(tmp_path) == []
    path = tmp_path / "ok.tflite"
    tflite.export(small_model, path)
    with pytest.raises(ValueError, match=r"\(32, 32, 3\).*fashion_mnist.*\(28, 28, 1\)"):
        tflite.evaluate(path, "fashion_mnist")


def test_failed_export_keeps_an_existing_file_whole(small_model, tmp_path, monkeypatch):
    path = tmp_path / "m.tflite"
    tflite.export(small_model, path)
    before = {name: (tmp_path / name).read_bytes() for name in listing(tmp_path)}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tflite.export.__globals__["flatbuffer"], "write", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        tflite.export(small_model, path, "float16")
    assert {name: (tmp_path / name).read_bytes() for name in listing(tmp_path)} == before


def test_representative_data_forms(small_model, calibration_images, tmp_path):
    """Arrays, (images, labels), a tf.data.Dataset of batches with labels, a list of batches."""
    images = calibration_images[:40]
    labels = np.zeros(40, np.int32)
    forms = {
        "array": images,
        "pair": (images, labels),
        "dataset": tf.data.Dataset.from_tensor_slices((images, labels)).batch(16),
        "unbatched": tf.data.Dataset.from_tensor_slices(images),
        "batches": [images[:20], images[20:]],
    }
    for name, form in forms.items():
        spec = tflite.export(small_model, tmp_path / f"{name}.tflite", "int8", form)
        assert spec["calibration"]["images"] == 40, name


# --------------------------------------------------------------------------------------------
# Evaluation and the command line.
# --------------------------------------------------------------------------------------------
def test_evaluate_arrays_equals_keras_accuracy_on_the_bundled_sample(tmp_path):
    model = LruNet(reuse=1, weights="cifar10")
    path = tmp_path / "lrunet1.tflite"
    tflite.export(model, path)
    images, labels = data.load_sample()
    result = tflite.evaluate_arrays(path, images, labels, progress=False)
    keras_accuracy = 100 * np.mean(
        model.predict(images.astype(np.float32), verbose=0).argmax(1) == labels)
    assert result["images"] == 500
    assert result["accuracy"] == pytest.approx(keras_accuracy, abs=1e-9)


def test_cli_export_then_evaluate_tflite(tmp_path, capsys):
    out = tmp_path / "lrunet1_int8.tflite"
    status = cli.main(["export", "--weights", "lrunet1_1x.cifar10", "-o", str(out), "-q", "int8",
                       "--calibration-npz", str(_sample_npz(tmp_path))])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "kernels shared" in captured.out and "int8 [1, 32, 32, 3]" in captured.out
    assert out.is_file() and tflite.sidecar_paths(out)[1].is_file()
    # int8 takes a minute or more: progress on stderr, by default.
    progress = captured.err.splitlines()
    assert progress[0] == "export: writing lrunet1_int8.tflite (int8)", progress
    assert "export: converting (int8, calibrating on 100 images)" in progress  # the npz's
    assert progress[-2].startswith("export: running the file in LiteRT against Keras")
    assert progress[-1].startswith("export: running the file in TensorFlow Lite Micro"), progress
    status = cli.main(["evaluate", str(out), "--sample", "--json"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    result = json.loads(captured.out)
    assert result["images"] == 500 and result["quantization"] == "int8"
    # Measured 84.60 (423 of 500) with TF_ENABLE_ONEDNN_OPTS=0 and =1 (Keras: 84.80); the
    # calibration's ranges are float results, so 5 images of room either way.
    assert abs(result["accuracy"] - 84.6) <= 1.0 + 1e-9, result
    assert "img" in captured.err  # the progress bar


def test_cli_export_errors_are_one_line(tmp_path, capsys):
    status = cli.main(["export", "--weights", "lrunet1_1x.cifar10", "-o",
                       str(tmp_path / "no" / "m.tflite")])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err and "does not exist" in err


def _sample_npz(folder):
    images, _ = data.load_sample()
    path = folder / "calibration.npz"
    np.savez(path, x=images[::5])
    return path


# --------------------------------------------------------------------------------------------
# The shipped zoo files (tflite/): what tflite/make_tflite.py produces, and not stale.
# --------------------------------------------------------------------------------------------
SHIPPED = Path(__file__).resolve().parents[1] / "tflite"

# Images of 500 on which each shipped file predicted the class its Keras model predicts,
# measured on a 2-core AMD EPYC with AVX-512 (float16 LruNet files) and a 2-core Intel Xeon with
# AVX-512 (the others; the int8 files with uint8 I/O), XNNPACK, Keras with
# TF_ENABLE_ONEDNN_OPTS=0 and =1: the same counts on both. The test's bound sits 5 images under each, so no single image
# decides it.
AGREEMENT_MEASURED = {
    "lrunet1_1x.cifar10.float16.tflite": 500, "lrunet1_1x.cifar10.int8.tflite": 488,
    "lrunet14_1x.cifar10.float16.tflite": 500, "lrunet14_1x.cifar10.int8.tflite": 488,
    "lrunet1_2x.cifar100.float16.tflite": 499, "lrunet1_2x.cifar100.int8.tflite": 478,
    "lrunet14_2x.cifar100.float16.tflite": 499, "lrunet14_2x.cifar100.int8.tflite": 462,
    "lrunet1_1x.fashion_mnist.float16.tflite": 500, "lrunet1_1x.fashion_mnist.int8.tflite": 492,
    "lrunet10_1x.fashion_mnist.float16.tflite": 500,
    "lrunet10_1x.fashion_mnist.int8.tflite": 484,
    # Trained with lru_keras (2-core Intel Xeon with AVX-512, both oneDNN settings).
    "lrunet1_1x_trained.cifar10.float16.tflite": 499,
    "lrunet1_1x_trained.cifar10.int8.tflite": 495,
    "lrunet1_1x_trained.fashion_mnist.float16.tflite": 499,
    "lrunet1_1x_trained.fashion_mnist.int8.tflite": 489,
    "convmixer128_8_k5_p4_trained.cifar10.float16.tflite": 500,
    "convmixer128_8_k5_p4_trained.cifar10.int8.tflite": 481,
    "convmixer128_8_k5_p4_shared2_trained.cifar10.float16.tflite": 498,
    "convmixer128_8_k5_p4_shared2_trained.cifar10.int8.tflite": 458,
    # The paper's baselines.
    "cifar_mobilenet_0.25x.cifar10.float16.tflite": 500,
    "cifar_mobilenet_0.25x.cifar10.int8.tflite": 490,
    "cifar_mobilenet_0.25x.fashion_mnist.float16.tflite": 500,
    "cifar_mobilenet_0.25x.fashion_mnist.int8.tflite": 493,
    "cifar_mobilenet_0.4x.cifar100.float16.tflite": 498,
    "cifar_mobilenet_0.4x.cifar100.int8.tflite": 480,
    "cifar_mobilenetv2_0.25x.cifar10.float16.tflite": 500,
    "cifar_mobilenetv2_0.25x.cifar10.int8.tflite": 492,
    "cifar_mobilenetv2_0.25x.fashion_mnist.float16.tflite": 500,
    "cifar_mobilenetv2_0.25x.fashion_mnist.int8.tflite": 498,
    "cifar_mobilenetv2_0.4x.cifar100.float16.tflite": 500,
    "cifar_mobilenetv2_0.4x.cifar100.int8.tflite": 469,
    "cifar_shufflenet_0.5x.cifar10.float16.tflite": 500,
    "cifar_shufflenet_0.5x.cifar10.int8.tflite": 488,
    "cifar_shufflenet_0.5x.fashion_mnist.float16.tflite": 500,
    "cifar_shufflenet_0.5x.fashion_mnist.int8.tflite": 497,
    "cifar_shufflenet_0.75x.cifar100.float16.tflite": 499,
    "cifar_shufflenet_0.75x.cifar100.int8.tflite": 476,
    "cifar_shufflenetv2_0.25x.cifar10.float16.tflite": 499,
    "cifar_shufflenetv2_0.25x.cifar10.int8.tflite": 490,
    "cifar_shufflenetv2_0.25x.fashion_mnist.float16.tflite": 500,
    "cifar_shufflenetv2_0.25x.fashion_mnist.int8.tflite": 498,
    "cifar_shufflenetv2_0.75x.cifar100.float16.tflite": 498,
    "cifar_shufflenetv2_0.75x.cifar100.int8.tflite": 485,
}
AGREEMENT_MARGIN = 5


def _shipped_rows():
    manifest = SHIPPED / "manifest.json"
    if not manifest.is_file():
        return []
    return json.loads(manifest.read_text())["models"]


def _shared_kernels(weights):
    """(how many conv kernels the file of a registered model shares, how many ops read each):
    an LruNet's 4 blocks share 2 kernels each over its N reuses, a ConvMixer with
    sharing="full" one depthwise and one pointwise kernel over its blocks; the others (the
    baselines) share none."""
    entry = zoo.get_weights(weights)
    if entry.builder == "LruNet" and entry.arguments["reuse"] > 1:
        return 8, entry.arguments["reuse"]
    if entry.builder == "ConvMixer" and entry.arguments["sharing"] == "full":
        return 2, entry.arguments["depth"]
    return 0, 1


def test_every_pretrained_model_ships_as_int8_and_float16():
    rows = _shipped_rows()
    from lru_keras.zoo import list_weights

    shipped = {(r["weights"], r["quantization"]) for r in rows}
    wanted = {(e.name, q) for e in list_weights() for q in ("int8", "float16")}
    assert wanted <= shipped, sorted(wanted - shipped)


@pytest.mark.parametrize("row", _shipped_rows(), ids=lambda r: r["file"])
def test_shipped_file_matches_its_manifest_entry(row):
    import hashlib

    path = SHIPPED / row["file"]
    content = path.read_bytes()
    assert len(content) == row["size_bytes"]
    assert hashlib.sha256(content).hexdigest() == row["sha256"]
    spec = json.loads((SHIPPED / row["spec"]).read_text())
    assert spec["sha256"] == row["sha256"] and spec["input"] == row["input"]
    assert flatbuffer.read_metadata_json(content)["input"] == row["input"]
    labels = (SHIPPED / row["labels"]).read_text().splitlines()
    assert labels == list(data.class_names(row["dataset"]))
    model = flatbuffer.read(content)
    assert flatbuffer.non_builtin_ops(model) == [] and "GATHER" not in flatbuffer.op_counts(model)
    # Each shared kernel: one tensor, read by every op that uses it.
    reads = tflite.sharing_report(model)["reads_by_shape"].values()
    shared, times = _shared_kernels(row["weights"])
    if shared:
        assert sum(1 for counts in reads if counts[0] == times) == shared, reads
    else:
        assert all(set(counts) == {1} for counts in reads), reads
    if row["quantization"] == "int8":
        # What Android's Task Library takes: the 8-bit pixels as they are, probabilities
        # as q / 256.
        assert row["input"]["dtype"] == "uint8" and row["output"]["dtype"] == "uint8"
        assert (row["input"]["scale"], row["input"]["zero_point"]) == (1.0, 0)
        assert (row["output"]["scale"], row["output"]["zero_point"]) == (1 / 256, 0)


@pytest.fixture(scope="module")
def keras_sample_predictions(test_set):
    """Loader: weights name -> (500 test images, the Keras model's predicted classes). CIFAR-10
    uses the bundled sample; the other datasets every 20th image of their test set."""
    cache = {}

    def predict(name):
        if name not in cache:
            from lru_keras.zoo import get_weights

            entry = get_weights(name)
            if entry.dataset == "cifar10":
                images = data.load_sample()[0]
            else:
                images = test_set(entry.dataset)[0][::20]
            model = zoo.create(name)
            images = images.astype(np.float32)
            cache[name] = images, model.predict(images, batch_size=100, verbose=0).argmax(1)
        return cache[name]

    return predict


@pytest.mark.parametrize("row", _shipped_rows(), ids=lambda r: r["file"])
def test_shipped_file_predicts_as_its_keras_model(row, keras_sample_predictions):
    """Each shipped file, run by LiteRT as an app would (XNNPACK), predicts the class its
    Keras model predicts on 500 real test images (the fast tier's check of the files'
    numerics; the slow tier measures their full test-set accuracy)."""
    images, expected = keras_sample_predictions(row["weights"])
    scores = tflite.TFLiteClassifier(SHIPPED / row["file"], batch_size=100)
    got = np.concatenate([scores.predict(images[i:i + 100]).argmax(1)
                          for i in range(0, len(images), 100)])
    agree = int(np.sum(got == expected))
    assert agree >= AGREEMENT_MEASURED[row["file"]] - AGREEMENT_MARGIN, (row["file"], agree)


@pytest.mark.slow  # a re-export of every model (about 90 s on 2 cores): a regeneration check
@pytest.mark.parametrize("row", [r for r in _shipped_rows() if r["quantization"] == "float16"],
                         ids=lambda r: r["file"])
def test_shipped_float16_file_is_what_the_script_produces(row, make_tflite, tmp_path):
    from lru_keras.zoo import get_weights

    spec = make_tflite.export_one(get_weights(row["weights"]), "float16", tmp_path)
    assert make_tflite.structure(tmp_path / spec["file"]) == \
        make_tflite.structure(SHIPPED / row["file"])
    assert make_tflite.float_constants_differ(tmp_path / spec["file"], SHIPPED / row["file"]) \
        == []


@pytest.mark.parametrize("file", ["lrunet14_1x.cifar10.int8.tflite",
                                  "lrunet14_1x.cifar10.float16.tflite"])
def test_interpreter_threads_do_not_change_the_scores(file, cifar10_images):
    """`evaluate` runs on every core by default: that must score exactly as one thread."""
    images = cifar10_images[0].astype(np.float32)
    one = tflite.TFLiteClassifier(SHIPPED / file, num_threads=1, batch_size=len(images))
    two = tflite.TFLiteClassifier(SHIPPED / file, num_threads=2, batch_size=len(images))
    np.testing.assert_array_equal(one.predict(images), two.predict(images))


# --------------------------------------------------------------------------------------------
# Slow tier: full test sets, each file and each Keras model evaluated once per run
# (conftest's keras_test_predictions / litert_test_predictions / int8_exports).
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("row", _shipped_rows(), ids=lambda r: r["file"])
def test_shipped_file_has_a_serving_default_signature(row, test_set):
    """One signature, `serving_default`, image -> the output name of the spec; its runner
    computes what the interpreter's plain invoke computes."""
    path = SHIPPED / row["file"]
    runner_host = Interpreter(model_path=str(path))
    assert runner_host.get_signature_list() == {
        "serving_default": {"inputs": ["image"], "outputs": [row["output"]["name"]]}}
    classifier = tflite.TFLiteClassifier(path)
    raw = classifier.quantize_input(test_set(row["dataset"])[0][:1].astype(np.float32))
    out = runner_host.get_signature_runner("serving_default")(image=raw)
    np.testing.assert_array_equal(out[row["output"]["name"]], classifier.predict_raw(raw))


# --------------------------------------------------------------------------------------------
# XNNPACK's weight cache (LiteRT CompiledModel), as Android apps enable it.
# --------------------------------------------------------------------------------------------
def _cache_matches_interpreter(path, images, tmp_path):
    """Outputs with the weight cache built, then reloaded, each bit-identical to the
    interpreter's (XNNPACK, no cache), on raw inputs one image at a time."""
    from lru_keras.tflite.runtime import compiled_model_outputs

    classifier = tflite.TFLiteClassifier(path)
    inputs = classifier.quantize_input(images)
    expected = np.concatenate([classifier.predict_raw(row[None]) for row in inputs])
    cache = tmp_path / f"{Path(path).name}.xnnpack_cache"
    built = compiled_model_outputs(path, inputs, weight_cache=cache)
    assert cache.stat().st_size > 0
    reloaded = compiled_model_outputs(path, inputs, weight_cache=cache)
    np.testing.assert_array_equal(built, expected)
    np.testing.assert_array_equal(reloaded, expected)


@pytest.mark.parametrize("row", [r for r in _shipped_rows() if r["quantization"] == "int8"],
                         ids=lambda r: r["file"])
def test_shipped_file_is_exact_under_the_xnnpack_weight_cache(row, test_set, tmp_path):
    """XNNPACK's weight cache packs an op's weights once per (kernel, bias) buffer pair; int8
    reuses sharing both got the first reuse's requantization scales (14-LruNet-1x: 0 of 20
    predictions as without the cache). Each shipped int8 file now runs bit-identically (float
    kinds: the fresh exports below)."""
    images = test_set(row["dataset"])[0][::625].astype(np.float32)  # 16 test images
    _cache_matches_interpreter(SHIPPED / row["file"], images, tmp_path)


def _share_kernels_mobilenet_v2():
    from lru_keras.sharing import share_kernels

    return share_kernels(keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10))


SHARED_KINDS = {
    "lrunet": lambda: LruNet(reuse=SMALL_REUSE, width=0.25),
    "convmixer-full": lambda: ConvMixer(16, 3, kernel_size=3, sharing="full"),
    "mobilenetv2-share-kernels": _share_kernels_mobilenet_v2,
}


@pytest.mark.parametrize("kind, quantization", [
    ("lrunet", "int8"), ("lrunet", "dynamic"), ("lrunet", "float16"), ("lrunet", "float32"),
    ("convmixer-full", "int8"), ("mobilenetv2-share-kernels", "int8"),
])
def test_fresh_shared_export_is_exact_under_the_xnnpack_weight_cache(
    kind, quantization, calibration_images, tmp_path, randomize
):
    """Files with shared kernels (layer reuse, ConvMixer's kernel sharing, `share_kernels` on
    a Keras application), in the quantizations that pack per-op data (int8, dynamic) and the
    float ones (float16, float32). SE-ResNet is missing: some of its int8 exports fail to
    prepare under XNNPACK at all, with or without the cache (issue 17, verify after
    writing)."""
    model = randomize(SHARED_KINDS[kind](), seed=7)
    path = tmp_path / f"{kind}.{quantization}.tflite"
    tflite.export(model, path, quantization, representative_data=calibration_images[:64],
                  dataset="cifar10", input_range=(0, 255))
    _cache_matches_interpreter(path, calibration_images[:16].astype(np.float32), tmp_path)


def _accuracy(predicted, labels):
    return 100.0 * float(np.mean(predicted == labels))


# A shipped file's row of tflite/manifest.json, on the worker of its weights (conftest).
ROW_WORKER = dict(weights=lambda row: row["weights"], id=lambda row: row["file"])


@pytest.mark.slow
@same_worker("lrunet14_1x.cifar10")
@pytest.mark.parametrize("quantization, tolerance", [("float32", 0.02), ("float16", 0.05)])
def test_full_test_set_float_accuracy_equals_keras(
        lrunet14, tmp_path, test_set, keras_test_predictions, litert_test_predictions,
        quantization, tolerance):
    """14-LruNet-1x as float32 / float16 .tflite scores what Keras scores on the 10,000
    CIFAR-10 test images (Keras in the same run; float16 is the shipped file's bytes)."""
    path = tmp_path / f"lrunet14_{quantization}.tflite"
    tflite.export(lrunet14, path, quantization)
    _, labels = test_set("cifar10")
    predicted = litert_test_predictions(path, "cifar10")
    expected = keras_test_predictions("lrunet14_1x.cifar10")
    assert abs(_accuracy(predicted, labels) - _accuracy(expected, labels)) <= tolerance + 1e-9


@pytest.mark.slow
@same_worker("lrunet14_1x.cifar10")
def test_full_test_set_int8_accuracy(test_set, int8_exports, litert_test_predictions):
    """Issue 7: post-training int8 14-LruNet-1x (default calibration: 300 CIFAR-10 training
    images) reaches >= 88.8 on the test set. Measured 89.01 with the exports of both
    TF_ENABLE_ONEDNN_OPTS settings (Keras float 89.34): a 21-image margin. The file is
    623,840 bytes (488,496 before every reuse got a bias buffer of its own, which XNNPACK's
    weight cache needs): the bound leaves 2.5%."""
    spec = int8_exports("lrunet14_1x.cifar10")
    assert spec["share_weights"] and spec["size_bytes"] <= 640_000
    _, labels = test_set("cifar10")
    accuracy = _accuracy(litert_test_predictions(spec["path"], "cifar10"), labels)
    assert accuracy >= 88.8, accuracy


@pytest.mark.slow
@pytest.mark.parametrize("row", with_worker_marks(
    [r for r in _shipped_rows() if r["quantization"] == "int8"], **ROW_WORKER))
def test_shipped_int8_file_is_what_the_script_produces(row, int8_exports, make_tflite):
    """A fresh int8 export by the script has the shipped file's structure and float
    constants. Calibration ranges depend on float rounding (oneDNN or not), so the int8
    scales of the two may differ by rounding; they must agree within 1%."""
    fresh = int8_exports(row["weights"])["path"]
    assert make_tflite.structure(fresh) == make_tflite.structure(SHIPPED / row["file"])
    assert make_tflite.float_constants_differ(fresh, SHIPPED / row["file"]) == []
    fresh_q, shipped_q = _quantization(fresh), _quantization(SHIPPED / row["file"])
    assert sorted(fresh_q) == sorted(shipped_q)
    for index, (scale, zero_point, values) in shipped_q.items():
        other_scale, other_zero_point, other_values = fresh_q[index]
        np.testing.assert_allclose(other_scale, scale, rtol=SCALE_RTOL, err_msg=str(index))
        assert np.abs(other_zero_point - zero_point).max(initial=0) <= 1, index
        if values is not None:  # int8 constants: within one step of the shipped ones
            assert np.abs(other_values - values).max(initial=0) <= 1, index


# Relative difference allowed between the int8 scales of a fresh export and the shipped file:
# calibration ranges are float results (oneDNN or not), chosen by least quantization error.
SCALE_RTOL = 0.01


def _quantization(path):
    """{tensor index: (scales, zero points, int8 constant values or None)} of a .tflite file."""
    model = flatbuffer.read(Path(path).read_bytes())
    result = {}
    for index, tensor in enumerate(model.subgraphs[0].tensors):
        q = tensor.quantization
        if q is None or q.scale is None or len(q.scale) == 0:
            continue
        content = flatbuffer.tensor_bytes(model, tensor)
        values = (np.frombuffer(content, np.int8).astype(np.int32)
                  if content and flatbuffer.type_name(tensor.type) == "int8" else None)
        result[index] = (np.asarray(q.scale, np.float64), np.asarray(q.zeroPoint, np.int64),
                         values)
    return result


@pytest.mark.slow
@pytest.mark.parametrize("row", with_worker_marks(_shipped_rows(), **ROW_WORKER))
def test_shipped_file_reaches_its_recorded_accuracy(row, test_set, litert_test_predictions):
    """The manifest's accuracy of each shipped file is re-measured on the full test set
    (LiteRT's kernels do not depend on TF_ENABLE_ONEDNN_OPTS)."""
    _, labels = test_set(row["dataset"])
    assert len(labels) == row["test_images"]
    accuracy = _accuracy(litert_test_predictions(SHIPPED / row["file"], row["dataset"]), labels)
    assert abs(accuracy - row["accuracy"]) <= 0.02, (accuracy, row["accuracy"])


def test_generic_reused_block_keeps_one_kernel_and_equals_keras(cifar10_images, tmp_path,
                                                                randomize):
    """`Reused` around any shape-preserving layers (here a 3x3 conv), with the paper's shuffle:
    the conv's kernel is stored once, the output equals Keras's."""
    from lru_keras.layers import ChannelShuffle, Reused

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(inputs)
    x = Reused(keras.layers.Conv2D(8, 3, padding="same", name="shared"), times=4,
               residual=True, activation="relu", shuffle=ChannelShuffle(2), name="reused")(x)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    model = randomize(keras.Model(inputs, outputs, name="generic"), seed=4)
    images = cifar10_images[0][:16].astype(np.float32) / 255.0
    for quantization in ("float32", "float16"):
        path = tmp_path / f"generic_{quantization}.tflite"
        tflite.export(model, path, quantization, input_range=(0, 1))
        assert list(weight_readers(path)[("CONV_2D", (8, 3, 3, 8))].values()) == [4]
        assert "GATHER" not in tflite.inspect(path)["ops"]
        np.testing.assert_allclose(_run_float(path, images), model.predict(images, verbose=0),
                                   atol=2e-5 if quantization == "float32" else 5e-3)
