"""Microcontrollers (issue 25): every int8 file runs in TensorFlow Lite Micro.

- every shipped file declares, for each op output, the shape LiteRT computes (TFLM trusts the
  declared shapes; LiteRT recomputes them and hid 112 wrong ones in 14-LruNet-1x), and the
  export refuses a file that does not;
- every shipped int8 file runs in TFLM (the `tflite-micro` package: TFLM's C++ interpreter
  and kernels) in the arena its spec records, which is the smallest TFLM accepts, with
  outputs bit-identical to LiteRT's reference kernels on 50 real test images;
- the spec's op registrations are the file's ops, named as TFLM's MicroMutableOpResolver
  names its methods;
- `lru-keras inspect` reports the figures, and says why TFLM refuses a file.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from lru_keras import cli, data, tflite
from lru_keras.tflite import flatbuffer, micro, verify
from lru_keras.tflite.errors import ExportError

SHIPPED = Path(__file__).resolve().parents[1] / "tflite"
IMAGES = 50


def _shipped(quantization=None):
    manifest = json.loads((SHIPPED / "manifest.json").read_text())["models"]
    return [row for row in manifest if quantization in (None, row["quantization"])]


@pytest.fixture(scope="module")
def images(test_set):
    """Loader: dataset -> 50 real test images (CIFAR-10: the bundled sample's first 50)."""

    def load(dataset):
        if dataset == "cifar10":
            return data.load_sample()[0][:IMAGES]
        x = test_set(dataset)[0]
        return x[:: len(x) // IMAGES][:IMAGES]

    return load


def _with_wrong_declared_shape(content):
    """`content` with the first RESHAPE's output declared with twice the rows it computes
    (the export's old fault, the other way round), as a file from another tool could be."""
    model = flatbuffer.read(content)
    graph = model.subgraphs[0]
    for op in flatbuffer.operators(model):
        if op.name == "RESHAPE":
            tensor = graph.tensors[op.outputs[0]]
            tensor.shape = np.array([2 * tensor.shape[0], *tensor.shape[1:]], np.int32)
            return flatbuffer.write(model), op.index
    raise AssertionError("no RESHAPE in the file")


@pytest.mark.parametrize("row", _shipped(), ids=lambda r: r["file"])
def test_every_shipped_file_declares_the_shapes_it_computes(row):
    assert verify.declared_shape_mismatches((SHIPPED / row["file"]).read_bytes()) == []


def test_a_file_with_a_wrong_declared_shape_is_refused_naming_the_op():
    content, index = _with_wrong_declared_shape(
        (SHIPPED / "lrunet1_1x.cifar10.int8.tflite").read_bytes())
    with pytest.raises(ExportError, match=rf"1 ops .* \(op {index} RESHAPE: declared"):
        verify.check_declared_shapes(content, "model 'lrunet1_1x' (int8)")


@pytest.mark.parametrize("row", _shipped("int8"), ids=lambda r: r["file"])
def test_every_shipped_int8_file_runs_in_tflm_as_litert_reference_kernels_do(row, images):
    content = (SHIPPED / row["file"]).read_bytes()
    recorded = json.loads((SHIPPED / row["spec"]).read_text())["micro"]
    arena = micro.smallest_arena(content)
    assert recorded["arena_bytes"] == arena
    assert recorded["flash_bytes"] == len(content) == row["size_bytes"]
    assert not micro.fits(content, arena - micro.ARENA_STEP)
    classifier = tflite.TFLiteClassifier(content, xnnpack=False)
    inputs = classifier.quantize_input(images(row["dataset"]).astype(np.float32))
    got = micro.outputs(content, inputs, arena_size=arena)
    np.testing.assert_array_equal(got, micro.reference_outputs(content, inputs))
    # Not a constant: the outputs carry the images' classes.
    assert len(set(got.argmax(1))) > 1
    model = flatbuffer.read(content)
    assert recorded["resolver"] == micro.resolver_calls(model)
    assert recorded["operators"] == sum(flatbuffer.op_counts(model).values())


@pytest.mark.parametrize("op, method", [
    ("CONV_2D", "AddConv2D"), ("DEPTHWISE_CONV_2D", "AddDepthwiseConv2D"),
    ("MAX_POOL_2D", "AddMaxPool2D"), ("FULLY_CONNECTED", "AddFullyConnected"),
    ("HARD_SWISH", "AddHardSwish"), ("CONCATENATION", "AddConcatenation"),
    ("BATCH_MATMUL", "AddBatchMatMul"), ("L2_POOL_2D", "AddL2Pool2D"), ("ADD_N", "AddAddN"),
    ("BATCH_TO_SPACE_ND", "AddBatchToSpaceNd"),
])
def test_op_registrations_are_named_as_tflm_names_them(op, method):
    # Names from tensorflow/lite/micro/micro_mutable_op_resolver.h.
    assert micro._resolver_call(op) == method  # noqa: SLF001


def test_tflm_refusing_a_file_is_reported_with_its_reason(tmp_path, capsys):
    content, _ = _with_wrong_declared_shape(
        (SHIPPED / "lrunet1_1x.cifar10.int8.tflite").read_bytes())
    with pytest.raises(ValueError, match="TensorFlow Lite Micro cannot allocate the file: "
                                         ".*RESHAPE.*failed to prepare"):
        micro.report(content, np.zeros((1, 32, 32, 3)))
    path = tmp_path / "wrong.tflite"
    path.write_bytes(content)
    assert cli.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "declared shapes: 1 ops declare a wrong output shape" in out
    assert "microcontroller: TensorFlow Lite Micro cannot allocate the file" in out


def test_cli_inspect_prints_the_microcontroller_figures(capsys):
    path = SHIPPED / "lrunet1_1x.cifar10.int8.tflite"
    assert cli.main(["inspect", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    recorded = json.loads(path.with_suffix(".json").read_text())["micro"]
    assert {key: report["micro"][key] for key in recorded if key != "verified_images"} == {
        key: value for key, value in recorded.items() if key != "verified_images"}
    assert report["declared_shape_mismatches"] == []
    assert cli.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert (f"arena (RAM) {recorded['arena_bytes'] / 1024:.1f} KiB" in out
            and f"MicroMutableOpResolver<{len(recorded['resolver'])}>" in out)
