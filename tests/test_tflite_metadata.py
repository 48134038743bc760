"""The standard TFLite metadata of exported and shipped files, read back by the client apps
use: MediaPipe Tasks (the `client` fixture: tests/clients/mediapipe_client.py), whose schema
reader gives the fields and whose ImageClassifier normalizes the pixels and names the classes
from the metadata alone."""

import json
from pathlib import Path

import numpy as np
import pytest

from lru_keras import tflite, zoo
from lru_keras.tflite import metadata
from lru_keras.tflite.options import MODEL_INFO_KEYS

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "tflite"
COLOR_SPACES = {3: "RGB", 1: "GRAYSCALE"}


def shipped_rows():
    return json.loads((SHIPPED / "manifest.json").read_text())["models"]


def litert_scores(path, images):
    """LiteRT's (XNNPACK) float scores of a file for uint8 images: what an app computes by
    hand from the spec."""
    return tflite.TFLiteClassifier(path, batch_size=len(images)).predict(
        images.astype(np.float32))


def test_every_shipped_file_carries_standard_metadata_a_reader_reads(client):
    rows = shipped_rows()
    read = client("mediapipe_client", "metadata", *[SHIPPED / row["file"] for row in rows])
    for row in rows:
        found = read[str(SHIPPED / row["file"])]
        assert found["present"] and found["identifier"], row["file"]
        assert found["min_parser_version"] == metadata.MIN_PARSER_VERSION
        entry = zoo.get_weights(row["weights"])
        assert {key: found[key] for key in MODEL_INFO_KEYS} == entry.model_info()
        assert found["license"] == entry.license == "MIT" and found["author"] == entry.author
        assert ("Köpüklü" in found["author"]) == (entry.provenance == "ported")
        # The zoo's models take raw pixels: (pixel - 0) / 1.
        assert found["input"] == {
            "name": "image", "image": True,
            "color_space": COLOR_SPACES[row["input"]["channels"]],
            "mean": [0.0], "std": [1.0], "stats": [[0.0], [255.0]]}, row["file"]
        assert found["output"]["name"] == row["output"]["name"] == "probabilities"
        assert found["output"]["labels"] == [[metadata.LABELS_FILE, True]]
        assert found["output"]["stats"] == [[0.0], [1.0]]
        assert found["associated_files"] == {
            metadata.LABELS_FILE: (SHIPPED / row["labels"]).read_text()}


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_mediapipe_classifies_with_the_shipped_metadata_as_litert_does(dataset, test_set, client,
                                                                      tmp_path):
    """MediaPipe's ImageClassifier takes RGB models only (it refuses the Fashion-MNIST
    files' GRAYSCALE color space), so the RGB files: the class names come from the
    associated labels file, the scores equal LiteRT's."""
    images = test_set(dataset)[0][:16]
    rows = [row for row in shipped_rows() if row["dataset"] == dataset]
    np.save(npy := tmp_path / "images.npy", images)
    read = client("mediapipe_client", "classify", npy, *[SHIPPED / row["file"] for row in rows])
    for row in rows:
        labels = (SHIPPED / row["labels"]).read_text().splitlines()
        expected = litert_scores(SHIPPED / row["file"], images)
        for result, scores in zip(read[str(SHIPPED / row["file"])], expected, strict=True):
            assert result["head"] == "probabilities"
            assert [name for _, name, _ in result["categories"]] == labels
            got = np.array([score for _, _, score in result["categories"]])
            # uint8 outputs: the same q / 256; float16 files: MediaPipe's TFLite build
            # rounds within float32 noise.
            bound = 0 if row["quantization"] == "int8" else 1e-5
            np.testing.assert_allclose(got, scores, rtol=0, atol=bound, err_msg=row["file"])


@pytest.fixture(scope="module")
def unit_range_model(randomize):
    """A small LruNet that takes pixels scaled to [0, 1] (no preprocessing layer)."""
    model = zoo.LruNet(reuse=2, width=0.5, include_preprocessing=False, name="unit_range")
    return randomize(model, seed=3)


def test_export_writes_normalization_a_client_applies(unit_range_model, tmp_path, test_set,
                                                      client):
    """input_range (0, 1) becomes (pixel - 0) / 255; MediaPipe applies it to the raw pixels and
    scores as LiteRT does on the scaled ones. The default model info names the model and
    lru_keras; a given one replaces it field by field."""
    images = test_set("cifar10")[0][:4]
    default = tmp_path / "default.tflite"
    tflite.export(unit_range_model, default, "float32", dataset="cifar10", input_range=(0, 1),
                  verbose=False)
    given = tmp_path / "given.tflite"
    tflite.export(unit_range_model, given, "float32", dataset="cifar10", input_range=(0, 1),
                  model_info={"author": "me", "license": "Apache-2.0"}, verbose=False)
    read = client("mediapipe_client", "metadata", default, given)
    assert read[str(default)]["input"]["mean"] == [0.0]
    assert read[str(default)]["input"]["std"] == [255.0]
    assert read[str(default)]["input"]["stats"] == [[0.0], [1.0]]
    import lru_keras

    assert {k: read[str(default)][k] for k in MODEL_INFO_KEYS} == {
        "name": "unit_range", "description": "unit_range: an image classifier for cifar10",
        "version": f"exported by lru_keras {lru_keras.__version__}", "author": None,
        "license": None}
    assert {k: read[str(given)][k] for k in ("name", "author", "license")} == {
        "name": "unit_range", "author": "me", "license": "Apache-2.0"}
    np.save(npy := tmp_path / "images.npy", images)
    (result,) = client("mediapipe_client", "classify", npy, default).values()
    got = np.array([[score for _, _, score in r["categories"]] for r in result])
    np.testing.assert_allclose(got, litert_scores(default, images), rtol=0, atol=1e-5)
    keras_scores = unit_range_model.predict(images / 255.0, verbose=0)
    np.testing.assert_allclose(got, keras_scores, rtol=0, atol=1e-4)


def test_grayscale_input_is_declared_grayscale(tmp_path, client):
    model = zoo.LruNet(reuse=1, width=0.25, input_shape=(28, 28, 1), classes=10)
    path = tmp_path / "gray.tflite"
    tflite.export(model, path, "float16", dataset="fashion_mnist", verbose=False)
    (found,) = client("mediapipe_client", "metadata", path).values()
    assert found["input"]["color_space"] == "GRAYSCALE"
    assert found["associated_files"][metadata.LABELS_FILE].splitlines()[0] == "T-shirt/top"


@pytest.mark.parametrize("model_info, message", [
    ("author: me", "model_info must be a mapping"),
    ({"authors": "me"}, "unknown keys ['authors']"),
    ({"version": 2}, "the values of ['version'] must be strings"),
])
def test_bad_model_info_is_refused_before_converting(model_info, message, tmp_path):
    model = zoo.LruNet(reuse=1, width=0.25)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        tflite.export(model, tmp_path / "m.tflite", "float32", dataset="cifar10",
                      model_info=model_info, verbose=False)
    assert list(tmp_path.iterdir()) == []


def test_associated_files_keep_the_file_runnable_and_deterministic(tmp_path):
    """The zip after the flatbuffer: LiteRT ignores it, and the same export gives the same
    bytes (fixed dates)."""
    model = zoo.LruNet(reuse=1, width=0.25)
    first, second = tmp_path / "a" / "m.tflite", tmp_path / "b" / "m.tflite"
    for path in (first, second):
        path.parent.mkdir()
        tflite.export(model, path, "float32", dataset="cifar10", verbose=False)
    assert first.read_bytes() == second.read_bytes()
    assert metadata.associated_files(first.read_bytes()) == {
        metadata.LABELS_FILE: (tmp_path / "a" / "m.labels.txt").read_bytes()}
    assert litert_scores(first, np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 10)
