"""Catalogue of bad files, bad output paths and bad pixels (issue 22), table-driven.

Every file argument of the Python API and of the command line gets damaged, truncated, empty,
text and wrong-kind files; each case asserts the exception type (or exit status 2 with exactly
one line on stderr), that the message names the file (or the argument), and that nothing was
written. Output paths that are missing, unwritable or directories must fail within seconds,
before any work, leaving nothing. Every entry point that takes images refuses non-finite and
out-of-range pixels, naming the argument.

Fast: one tiny model (`LruNet(reuse=1, width=0.125)`), its files written once per module
(one float32 export for the .tflite), no training, no int8 conversion.
"""

import json
import os
import tempfile
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from lru_keras import checksums, data, evaluate, tflite
from lru_keras.cli import main
from lru_keras.zoo import LruNet
from lru_keras.zoo import weights as registry

TINY = {"reuse": 1, "width": 0.125}
TINY_FLAGS = ["--reuse", "1", "--width", "0.125"]
FAST_SECONDS = 10  # refusals before work: well under this even on a loaded 2-core machine


def tiny_model(**kwargs):
    return LruNet(**TINY, **kwargs)


# --------------------------------------------------------------------------------------------
# The files: good ones written once, then every bad variant made from them.
# --------------------------------------------------------------------------------------------
def _flip(content, offset):
    """`content` with one bit of the byte at `offset` flipped."""
    flipped = bytearray(content)
    flipped[offset] ^= 0x40
    return bytes(flipped)


def _rewrite_keras_config(source, target, change):
    """A copy of the .keras file `source` whose config.json went through `change`."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    change(config)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)


def _first_lru_block(config):
    return next(layer for layer in config["config"]["layers"]
                if layer["class_name"] == "LRUBlock")


def _newer_class(config):
    block = _first_lru_block(config)
    block["class_name"], block["registered_name"] = "ChannelGate", "lru_keras>ChannelGate"


def _newer_argument(config):
    _first_lru_block(config)["config"]["future_option"] = 3


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{name: path} of good and bad files of every kind, in one folder (module scope)."""
    folder = tmp_path_factory.mktemp("bad_input_files")
    model = tiny_model()
    good = {"weights": folder / "good.weights.h5", "keras": folder / "good.keras",
            "tflite": folder / "good.tflite", "npz": folder / "good.npz"}
    model.save_weights(good["weights"])
    model.save(good["keras"])
    tflite.export(model, good["tflite"], "float32", dataset="cifar10", verbose=False)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    np.savez(good["npz"], x=pixels, y=np.arange(4))
    made = dict(good)

    def write(name, content):
        made[name] = folder / name
        made[name].write_bytes(content)

    for kind in ("weights.h5", "keras", "tflite", "npz"):
        original = good[kind.split(".")[0]].read_bytes()
        write(f"truncated.{kind}", original[:len(original) // 2])
        write(f"empty.{kind}", b"")
        write(f"text.{kind}", b"these are notes, not a model\n")
        made[f"folder.{kind}"] = folder / f"folder.{kind}"
        made[f"folder.{kind}"].mkdir()
    # Weights: a flipped byte in a kernel (the file stays valid HDF5) with the sidecar of the
    # good bytes; a sidecar that is not one; weights of other architectures.
    with h5py.File(good["weights"], "r") as f:
        offset = f["layers/conv2d/vars/0"].id.get_offset()
    write("flipped.weights.h5", _flip(good["weights"].read_bytes(), offset + 1))
    write("flipped.weights.h5.sha256",
          f"{checksums.sha256_of(good['weights'])}  flipped.weights.h5\n".encode())
    write("bad_sidecar.weights.h5", good["weights"].read_bytes())
    write("bad_sidecar.weights.h5.sha256", b"not a checksum\n")
    made["reuse2.weights.h5"] = folder / "reuse2.weights.h5"
    LruNet(reuse=2, width=0.125).save_weights(made["reuse2.weights.h5"])
    made["wider.weights.h5"] = folder / "wider.weights.h5"
    LruNet(reuse=1, width=0.25).save_weights(made["wider.weights.h5"])
    write("keras.weights.h5", good["keras"].read_bytes())
    # .keras: a flipped byte (the zip's CRC tells), classes and arguments of a newer
    # lru_keras, a member missing, a sidecar that disagrees, a weights file under the name.
    keras_bytes = good["keras"].read_bytes()
    write("flipped.keras", _flip(keras_bytes, len(keras_bytes) // 2))
    for name, change in (("newer_class.keras", _newer_class),
                         ("newer_argument.keras", _newer_argument)):
        made[name] = folder / name
        _rewrite_keras_config(good["keras"], made[name], change)
    with zipfile.ZipFile(good["keras"]) as archive, \
            zipfile.ZipFile(folder / "no_config.keras", "w") as target:
        for name in archive.namelist():
            if name != "config.json":
                target.writestr(name, archive.read(name))
    made["no_config.keras"] = folder / "no_config.keras"
    write("replaced.keras", keras_bytes)
    write("replaced.keras.sha256", f"{'0' * 64}  replaced.keras\n".encode())
    write("weights.keras", good["weights"].read_bytes())
    # .tflite: a flipped byte with the export's spec beside it (it records the sha256),
    # the first bytes only, another kind of file under the name.
    tflite_bytes = good["tflite"].read_bytes()
    write("flipped.tflite", _flip(tflite_bytes, len(tflite_bytes) // 2))
    spec = json.loads(tflite.sidecar_paths(good["tflite"])[1].read_text())
    write("flipped.json", json.dumps({**spec, "file": "flipped.tflite"}).encode())
    write("head.tflite", tflite_bytes[:100])
    write("keras.tflite", keras_bytes)
    # .npz: a .npy under the name, a zip that is no .npz, a flipped byte in an array,
    # arrays missing or of the wrong dtype, shape or range.
    array_file = folder / "array.npy"
    np.save(array_file, pixels)
    made["npy.npz"] = array_file.rename(folder / "npy.npz")
    write("keras.npz", keras_bytes)
    npz_bytes = good["npz"].read_bytes()
    write("flipped.npz", _flip(npz_bytes, len(npz_bytes) // 2))
    for name, arrays in {
        "no_x.npz": {"y": np.arange(4)},
        "float_x.npz": {"x": pixels.astype(np.float32), "y": np.arange(4)},
        "wrong_shape.npz": {"x": pixels[:, :28, :28, :1], "y": np.arange(4)},
        "labels_out_of_range.npz": {"x": pixels, "y": np.array([0, 1, 2, 10])},
        "float_labels.npz": {"x": pixels, "y": np.arange(4) + 0.5},
        "nan_pixels.npz": {"x": np.where(pixels > 128, np.nan, pixels).astype(np.float32)},
        "inf_pixels.npz": {"x": np.where(pixels > 128, np.inf, pixels).astype(np.float32)},
        "scaled_pixels.npz": {"x": pixels.astype(np.float32) / 255},
        "negative_pixels.npz": {"x": pixels.astype(np.float32) - 128},
        "calibration_28x28.npz": {"x": pixels[:, :28, :28, :1].astype(np.float32)},
    }.items():
        made[name] = folder / name
        np.savez(made[name], **arrays)
    return made


def listing(folder):
    """Every path under `folder` with its size and modification time."""
    return sorted((str(p.relative_to(folder)), p.stat().st_size if p.is_file() else None,
                   p.stat().st_mtime_ns) for p in Path(folder).rglob("*"))


def cli_error(capsys, argv):
    """(exit status, the stderr line) of `lru-keras argv...`, which must fail with exactly
    one line and no traceback."""
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("lru-keras: error: ") and "Traceback" not in captured.err
    return status, captured.err


# --------------------------------------------------------------------------------------------
# Files given to the Python API.
# --------------------------------------------------------------------------------------------
NOT_WEIGHTS = "not a readable .weights.h5 file"
NOT_KERAS = "not a readable .keras file"
NOT_TFLITE = "is not a usable TFLite classifier"
NOT_NPZ = "is not an .npz archive"


def import_npz(path):
    """`data.import_npz` of `path` as cifar10/test, into a data dir beside it."""
    return data.import_npz("cifar10", "test", path, path.parent / "tfds")


API_FILE_CASES = [
    # (id, file, call(path), exception, words the message holds besides the file's name)
    ("weights-truncated", "truncated.weights.h5", lambda p: tiny_model(weights=p),
     ValueError, [NOT_WEIGHTS]),
    ("weights-empty", "empty.weights.h5", lambda p: tiny_model(weights=p), ValueError,
     [NOT_WEIGHTS]),
    ("weights-text", "text.weights.h5", lambda p: tiny_model(weights=p), ValueError,
     [NOT_WEIGHTS]),
    ("weights-a-keras-file", "keras.weights.h5", lambda p: tiny_model(weights=p), ValueError,
     [NOT_WEIGHTS]),
    ("weights-a-directory", "folder.weights.h5", lambda p: tiny_model(weights=p), ValueError,
     ["is not a file"]),
    ("weights-missing", "missing.weights.h5", lambda p: tiny_model(weights=p), ValueError,
     ["does not exist"]),
    ("weights-flipped-byte-sidecar", "flipped.weights.h5", lambda p: tiny_model(weights=p),
     checksums.ChecksumError, ["corrupt", "sha256"]),
    ("weights-sidecar-not-a-checksum", "bad_sidecar.weights.h5",
     lambda p: tiny_model(weights=p), checksums.ChecksumError, ["not a sha256 sidecar"]),
    ("weights-another-reuse", "reuse2.weights.h5", lambda p: tiny_model(weights=p),
     ValueError, ["does not fit", "first layer that differs is 'stage1'"]),
    ("weights-another-width", "wider.weights.h5", lambda p: tiny_model(weights=p),
     ValueError, ["does not fit", "first layer that differs is 'stem_conv'"]),
    ("weights-headless-truncated", "truncated.weights.h5",
     lambda p: tiny_model(weights=p, include_top=False), ValueError, [NOT_WEIGHTS]),
    ("keras-truncated", "truncated.keras", evaluate.load_model_file, ValueError, [NOT_KERAS]),
    ("keras-empty", "empty.keras", evaluate.load_model_file, ValueError, [NOT_KERAS]),
    ("keras-text", "text.keras", evaluate.load_model_file, ValueError, [NOT_KERAS]),
    ("keras-a-weights-file", "weights.keras", evaluate.load_model_file, ValueError,
     [NOT_KERAS]),
    ("keras-a-directory", "folder.keras", evaluate.load_model_file, ValueError,
     ["is not a file"]),
    ("keras-flipped-byte", "flipped.keras", evaluate.load_model_file, ValueError,
     [NOT_KERAS, "damaged"]),
    ("keras-no-config", "no_config.keras", evaluate.load_model_file, ValueError,
     [NOT_KERAS, "config.json"]),
    ("keras-newer-layer-class", "newer_class.keras", evaluate.load_model_file, ValueError,
     ["ChannelGate", "newer lru_keras"]),
    ("keras-newer-layer-argument", "newer_argument.keras", evaluate.load_model_file,
     ValueError, ["future_option", "newer lru_keras"]),
    ("keras-sidecar-disagrees", "replaced.keras", evaluate.load_model_file,
     checksums.ChecksumError, ["corrupt or was replaced"]),
    ("tflite-truncated", "truncated.tflite", tflite.TFLiteClassifier, ValueError,
     [NOT_TFLITE, "truncated"]),
    ("tflite-first-100-bytes", "head.tflite", tflite.TFLiteClassifier, ValueError,
     [NOT_TFLITE]),
    ("tflite-empty", "empty.tflite", tflite.TFLiteClassifier, ValueError,
     [NOT_TFLITE, "not a TFLite flatbuffer"]),
    ("tflite-text", "text.tflite", tflite.TFLiteClassifier, ValueError,
     [NOT_TFLITE, "not a TFLite flatbuffer"]),
    ("tflite-a-keras-file", "keras.tflite", tflite.TFLiteClassifier, ValueError,
     [NOT_TFLITE, "not a TFLite flatbuffer"]),
    ("tflite-a-directory", "folder.tflite", tflite.TFLiteClassifier, ValueError,
     ["is not a file"]),
    ("tflite-missing", "missing.tflite", tflite.TFLiteClassifier, ValueError,
     ["does not exist"]),
    ("tflite-flipped-byte-spec-records-sha256", "flipped.tflite", tflite.TFLiteClassifier,
     checksums.ChecksumError, ["corrupt", "flipped.json"]),
    ("tflite-evaluate-arrays-truncated", "truncated.tflite",
     lambda p: tflite.evaluate_arrays(p, np.zeros((2, 32, 32, 3)) + 9, [0, 1],
                                      progress=False), ValueError, [NOT_TFLITE]),
    ("tflite-evaluate-dataset-text", "text.tflite",
     lambda p: tflite.evaluate(p, "cifar10", progress=False), ValueError, [NOT_TFLITE]),
    ("npz-import-text", "text.npz", import_npz,
     ValueError, [NOT_NPZ]),
    ("npz-import-empty", "empty.npz",
     import_npz, ValueError, [NOT_NPZ]),
    ("npz-import-truncated", "truncated.npz",
     import_npz, ValueError, [NOT_NPZ]),
    ("npz-import-a-npy-file", "npy.npz",
     import_npz, ValueError, [NOT_NPZ]),
    ("npz-import-flipped-byte", "flipped.npz",
     import_npz, ValueError,
     ["cannot be read as an .npz archive", "CRC"]),
    ("npz-import-a-zip-without-arrays", "keras.npz",
     import_npz, ValueError,
     ["lacks the array(s) ['x', 'y']"]),
    ("npz-import-no-x", "no_x.npz",
     import_npz, ValueError,
     ["lacks the array(s) ['x']", "'y'"]),
    ("npz-import-float-images", "float_x.npz",
     import_npz, ValueError,
     ["array 'x'", "uint8"]),
    ("npz-import-wrong-shape", "wrong_shape.npz",
     import_npz, ValueError,
     ["array 'x'", "(n, 32, 32, 3)"]),
    ("npz-import-labels-out-of-range", "labels_out_of_range.npz",
     import_npz, ValueError,
     ["array 'y'", "[0, 9]"]),
    ("npz-import-float-labels", "float_labels.npz",
     import_npz, ValueError,
     ["array 'y'", "integers"]),
    ("npz-import-missing", "missing.npz",
     import_npz, ValueError,
     ["does not exist"]),
]


@pytest.mark.parametrize("name, call, error, words",
                         [case[1:] for case in API_FILE_CASES],
                         ids=[case[0] for case in API_FILE_CASES])
def test_bad_files_given_to_the_python_api_are_refused_naming_them(files, name, call, error,
                                                                   words):
    path = files[name] if name in files else files["weights"].parent / name
    before = listing(path.parent)
    with pytest.raises(error) as raised:
        call(path)
    message = str(raised.value)
    assert path.name in message, message
    for word in words:
        assert word in message, message
    assert listing(path.parent) == before  # no sidecar, no dataset, nothing


# --------------------------------------------------------------------------------------------
# Files given to the command line: status 2, one line naming the file.
# --------------------------------------------------------------------------------------------
EVALUATE_WEIGHTS = ["evaluate", "--weights-file", "FILE", *TINY_FLAGS, "--sample"]
EXPORT_NPZ = ["export", "--weights-file", "good.weights.h5", *TINY_FLAGS, "-o", "OUT/m.tflite",
              "-q", "int8", "--calibration-npz", "FILE"]
IMPORT_NPZ = ["data", "import", "--dataset", "cifar10", "--split", "test", "--npz", "FILE",
              "--data-dir", "OUT/tfds"]
CLI_FILE_CASES = [
    # (id, file, argv (FILE: the file, OUT: an empty folder), words besides the file's name)
    ("evaluate-keras-truncated", "truncated.keras", ["evaluate", "FILE", "--sample"],
     [NOT_KERAS]),
    ("evaluate-keras-text", "text.keras", ["evaluate", "FILE", "--sample"], [NOT_KERAS]),
    ("evaluate-keras-flipped-byte", "flipped.keras", ["evaluate", "FILE", "--sample"],
     ["damaged"]),
    ("evaluate-keras-newer-class", "newer_class.keras", ["evaluate", "FILE", "--sample"],
     ["ChannelGate"]),
    ("evaluate-keras-missing", "missing.keras", ["evaluate", "FILE", "--sample"],
     ["does not exist"]),
    ("evaluate-tflite-truncated", "truncated.tflite", ["evaluate", "FILE", "--sample"],
     [NOT_TFLITE]),
    ("evaluate-tflite-empty", "empty.tflite", ["evaluate", "FILE", "--sample"], [NOT_TFLITE]),
    ("evaluate-tflite-text", "text.tflite", ["evaluate", "FILE", "--dataset", "cifar10"],
     [NOT_TFLITE]),
    ("evaluate-tflite-a-keras-file", "keras.tflite", ["evaluate", "FILE", "--sample"],
     [NOT_TFLITE]),
    ("evaluate-tflite-flipped-byte", "flipped.tflite", ["evaluate", "FILE", "--sample"],
     ["corrupt"]),
    ("evaluate-weights-truncated", "truncated.weights.h5", EVALUATE_WEIGHTS, [NOT_WEIGHTS]),
    ("evaluate-weights-text", "text.weights.h5", EVALUATE_WEIGHTS, [NOT_WEIGHTS]),
    ("evaluate-weights-flipped-byte", "flipped.weights.h5", EVALUATE_WEIGHTS, ["sha256"]),
    ("evaluate-weights-another-reuse", "reuse2.weights.h5", EVALUATE_WEIGHTS,
     ["does not fit", "'stage1'"]),
    ("evaluate-weights-file-a-keras-model", "good.keras", EVALUATE_WEIGHTS,
     ["--weights-file", ".weights.h5"]),
    ("export-keras-truncated", "truncated.keras", ["export", "FILE", "-o", "OUT/m.tflite"],
     [NOT_KERAS]),
    ("export-keras-newer-argument", "newer_argument.keras",
     ["export", "FILE", "-o", "OUT/m.tflite"], ["future_option"]),
    ("export-weights-empty", "empty.weights.h5",
     ["export", "--weights-file", "FILE", *TINY_FLAGS, "-o", "OUT/m.tflite"], [NOT_WEIGHTS]),
    ("export-calibration-text", "text.npz", EXPORT_NPZ, ["--calibration-npz", NOT_NPZ]),
    ("export-calibration-a-npy-file", "npy.npz", EXPORT_NPZ, [NOT_NPZ]),
    ("export-calibration-no-x", "no_x.npz", EXPORT_NPZ, ["lacks the array(s) ['x']"]),
    ("export-calibration-nan", "nan_pixels.npz", EXPORT_NPZ, ["array 'x'", "NaN"]),
    ("export-calibration-inf", "inf_pixels.npz", EXPORT_NPZ, ["array 'x'", "infinite"]),
    ("export-calibration-scaled", "scaled_pixels.npz", EXPORT_NPZ,
     ["array 'x'", "already scaled to [0, 1]"]),
    ("export-calibration-negative", "negative_pixels.npz", EXPORT_NPZ,
     ["array 'x'", "[0, 255]"]),
    ("export-calibration-wrong-shape", "calibration_28x28.npz", EXPORT_NPZ,
     ["array 'x'", "(n, 32, 32, 3)"]),
    ("qat-weights-truncated", "truncated.weights.h5",
     ["qat", "--weights-file", "FILE", *TINY_FLAGS, "--dataset", "cifar10", "-o",
      "OUT/m.tflite"], [NOT_WEIGHTS]),
    ("data-import-text", "text.npz", IMPORT_NPZ, [NOT_NPZ]),
    ("data-import-truncated", "truncated.npz", IMPORT_NPZ, [NOT_NPZ]),
    ("data-import-no-x", "no_x.npz", IMPORT_NPZ, ["lacks the array(s) ['x']"]),
    ("data-import-labels-out-of-range", "labels_out_of_range.npz", IMPORT_NPZ,
     ["array 'y'", "[0, 9]"]),
    ("data-import-float-images", "float_x.npz", IMPORT_NPZ, ["array 'x'", "uint8"]),
]


@pytest.mark.parametrize("name, argv, words", [case[1:] for case in CLI_FILE_CASES],
                         ids=[case[0] for case in CLI_FILE_CASES])
def test_bad_files_given_to_the_command_line_are_one_line_naming_them(
        files, name, argv, words, tmp_path, capsys, monkeypatch):
    path = files[name] if name in files else files["weights"].parent / name
    monkeypatch.chdir(path.parent)  # "good.weights.h5" of EXPORT_NPZ
    before = listing(path.parent)
    argv = [str(path) if arg == "FILE" else arg.replace("OUT", str(tmp_path)) for arg in argv]
    status, err = cli_error(capsys, argv)
    assert status == 2
    assert path.name in err, err
    for word in words:
        assert word in err, err
    assert listing(tmp_path) == [] and listing(path.parent) == before


def test_compare_with_a_truncated_tflite_is_one_line_naming_it(files, tmp_path, capsys,
                                                               prepared_datasets):
    """`compare --tflite-dir`: the shipped files of cifar10, its first model's int8 file
    truncated (the first model compared, so the refusal comes after one 1-image pass)."""
    shipped = Path(tflite.__file__).resolve().parents[2] / "tflite"
    for source in shipped.glob("*.cifar10.*.tflite"):
        (tmp_path / source.name).symlink_to(source)
    damaged = tmp_path / "lrunet1_1x.cifar10.int8.tflite"
    content = damaged.read_bytes()
    damaged.unlink()
    damaged.write_bytes(content[:len(content) // 2])
    status, err = cli_error(capsys, ["compare", "--dataset", "cifar10", "--tflite-dir",
                                     tmp_path, "--limit", "1", "--latency-runs", "1"])
    assert status == 2 and damaged.name in err and NOT_TFLITE in err, err


# --------------------------------------------------------------------------------------------
# Output paths: checked before any work; a refusal leaves nothing.
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def unwritable_dir(tmp_path_factory):
    """A folder that refuses new files: read-only for an ordinary user; as root (who writes
    anywhere) /sys, which takes no new files from anyone."""
    if os.geteuid() != 0:
        folder = tmp_path_factory.mktemp("read_only")
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    try:
        handle, probe = tempfile.mkstemp(dir="/sys")
    except OSError:
        yield Path("/sys")
        return
    os.close(handle)
    os.unlink(probe)
    pytest.skip("no folder refuses new files here (root, and /sys takes files)")


QAT = ["qat", "--weights", "lrunet1_1x.cifar10"]
EXPORT = ["export", "--weights", "lrunet1_1x.cifar10"]
IMPORT_GOOD = ["data", "import", "--dataset", "cifar10", "--split", "test", "--npz", "GOOD"]
OUTPUT_CASES = [
    # (id, argv (OUT: an empty folder, RO: a folder that refuses files, GOOD: a valid .npz),
    #  words the one line holds)
    ("export-folder-missing", [*EXPORT, "-o", "OUT/nodir/m.tflite"], ["nodir", "does not exist"]),
    ("export-output-is-a-folder", [*EXPORT, "-o", "OUT"], ["is a directory"]),
    ("export-folder-unwritable", [*EXPORT, "-o", "RO/m.tflite"], ["m.tflite", "not writable"]),
    ("export-int8-folder-missing", [*EXPORT, "-o", "OUT/nodir/m.tflite", "-q", "int8"],
     ["nodir", "does not exist"]),
    ("qat-output-folder-missing", [*QAT, "-o", "OUT/nodir/m.tflite"],
     ["nodir", "does not exist"]),
    ("qat-output-unwritable", [*QAT, "-o", "RO/m.tflite"], ["m.tflite", "not writable"]),
    ("qat-output-is-a-folder", [*QAT, "-o", "OUT"], ["is a directory"]),
    ("qat-save-weights-folder-missing",
     [*QAT, "-o", "OUT/m.tflite", "--save-weights", "OUT/nodir/x.weights.h5"],
     ["--save-weights", "nodir", "does not exist"]),
    ("qat-save-weights-unwritable",
     [*QAT, "-o", "OUT/m.tflite", "--save-weights", "RO/x.weights.h5"],
     ["--save-weights", "x.weights.h5", "not writable"]),
    ("qat-save-weights-is-a-folder",
     [*QAT, "-o", "OUT/m.tflite", "--save-weights", "OUT/dir.weights.h5"],
     ["--save-weights", "dir.weights.h5", "is a directory"]),
    ("qat-save-weights-not-weights-h5",
     [*QAT, "-o", "OUT/m.tflite", "--save-weights", "OUT/x.h5"],
     ["--save-weights", "x.h5", ".weights.h5"]),
    ("data-import-data-dir-is-a-file", [*IMPORT_GOOD, "--data-dir", "OUT/file/tfds"],
     ["data_dir", "is a file"]),
    ("data-import-data-dir-unwritable", [*IMPORT_GOOD, "--data-dir", "RO/tfds"],
     ["data_dir", "not writable"]),
]


@pytest.mark.parametrize("argv, words", [case[1:] for case in OUTPUT_CASES],
                         ids=[case[0] for case in OUTPUT_CASES])
def test_bad_output_paths_fail_within_seconds_and_leave_nothing(
        files, unwritable_dir, argv, words, tmp_path, capsys):
    if "dir.weights.h5" in " ".join(argv):
        (tmp_path / "dir.weights.h5").mkdir()
    if "OUT/file/" in " ".join(argv):
        (tmp_path / "file").write_text("a file, not a folder\n")
    before = listing(tmp_path)
    argv = [arg.replace("OUT", str(tmp_path)).replace("RO", str(unwritable_dir))
            .replace("GOOD", str(files["npz"])) for arg in argv]
    started = time.monotonic()
    status, err = cli_error(capsys, argv)
    assert status == 2 and time.monotonic() - started < FAST_SECONDS
    for word in words:
        assert word in err, err
    assert listing(tmp_path) == before


@pytest.mark.parametrize("call, words", [
    (lambda model, out: tflite.export(model, out / "nodir" / "m.tflite"), ["nodir"]),
    (lambda model, out: tflite.export(model, out / "nodir" / "m.tflite", "int8",
                                      dataset="cifar10"), ["nodir"]),
    (lambda model, out: tflite.quantize_aware(model, "cifar10", out / "nodir" / "m.tflite"),
     ["nodir"]),
    (lambda model, out: registry.save_weights(model, out / "nodir" / "x.weights.h5"),
     ["weights file", "nodir"]),
    (lambda model, out: registry.save_weights(model, out / "x.h5"), [".weights.h5"]),
], ids=["export", "export-int8", "quantize-aware", "save-weights", "save-weights-suffix"])
def test_bad_output_paths_of_the_python_api_fail_before_work(call, words, tmp_path):
    model = tiny_model()
    started = time.monotonic()
    with pytest.raises(ValueError) as raised:
        call(model, tmp_path)
    assert time.monotonic() - started < FAST_SECONDS
    for word in words:
        assert word in str(raised.value), raised.value
    assert listing(tmp_path) == []


def test_saved_weights_get_a_sidecar_that_loading_checks(tmp_path):
    """`save_weights` (what `qat --save-weights` uses): the file and its .sha256, atomically;
    a flipped byte afterwards is refused on load, naming the file."""
    model = tiny_model()
    path = registry.save_weights(model, tmp_path / "mine.weights.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.weights.h5",
                                                           "mine.weights.h5.sha256"]
    loaded = tiny_model(weights=path)
    for mine, theirs in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    with h5py.File(path, "r") as f:
        offset = f["layers/conv2d/vars/0"].id.get_offset()
    path.write_bytes(_flip(path.read_bytes(), offset))
    with pytest.raises(checksums.ChecksumError, match="mine.weights.h5 is corrupt"):
        tiny_model(weights=path)


# --------------------------------------------------------------------------------------------
# Pixels: every entry point that takes images refuses non-finite and out-of-range ones.
# --------------------------------------------------------------------------------------------
def _pixels():
    return np.random.default_rng(1).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)


def _with(value):
    def make():
        images = _pixels()
        images[3, 5, 7, 1] = value
        return images
    return make


BAD_PIXELS = {
    # name: (images, words of the message besides the argument's name)
    "nan": (_with(np.nan), ["NaN or infinite"]),
    "inf": (_with(np.inf), ["NaN or infinite"]),
    "minus-inf": (_with(-np.inf), ["NaN or infinite"]),
    "above-255": (lambda: _pixels() * 2, ["must be pixels in [0, 255]; these span ["]),
    "standardized": (lambda: (_pixels() - 128) / 64,
                     ["must be pixels in [0, 255]; these span [-"]),
    "text": (lambda: np.full((8, 32, 32, 3), "a"), ["pixel numbers"]),
}
# Images that all lie in [0, 1]: ambiguous for a prediction (a warning), an error for
# calibration and fine-tuning, which they would spoil.
SCALED = (lambda: _pixels() / 255, ["already scaled to [0, 1]"])


def _labels(images):
    return np.arange(len(images)) % 10


IMAGE_ENTRY_POINTS = {
    # name: (call(model, .tflite path, output folder, images), argument named, scaled images
    #        refused (else a warning), takes text (else it fails converting it, elsewhere))
    "TFLiteClassifier.predict": (
        lambda model, path, out, x: tflite.TFLiteClassifier(path, batch_size=8).predict(x),
        "images", False, True),
    "evaluate_arrays": (
        lambda model, path, out, x: tflite.evaluate_arrays(path, x, _labels(x),
                                                           progress=False),
        "images", False, True),
    "evaluate_batches-keras": (
        lambda model, path, out, x: evaluate.evaluate_batches(
            model, [(x, _labels(x))], len(x), dataset="given", split="arrays",
            progress=False),
        "the images of batch 1", False, True),
    "export-int8-calibration": (
        lambda model, path, out, x: tflite.export(model, out / "m.tflite", "int8",
                                                  representative_data=x, dataset="cifar10",
                                                  verbose=False),
        "representative_data", True, False),
    "quantize_aware-arrays": (
        lambda model, path, out, x: tflite.quantize_aware(model, (x, _labels(x)),
                                                          out / "m.tflite", verbose=0),
        "train_data", True, False),
}
PIXEL_CASES = [
    (f"{entry}-{bad}", entry, *BAD_PIXELS[bad]) for entry in IMAGE_ENTRY_POINTS
    for bad in BAD_PIXELS if bad != "text" or IMAGE_ENTRY_POINTS[entry][3]
] + [(f"{entry}-scaled", entry, *SCALED) for entry in IMAGE_ENTRY_POINTS]


@pytest.fixture(scope="module")
def model(files):
    """The tiny model the .tflite of `files` was exported from (weights loaded from it)."""
    return tiny_model(weights=files["weights"])


@pytest.mark.parametrize("entry, images, words", [case[1:] for case in PIXEL_CASES],
                         ids=[case[0] for case in PIXEL_CASES])
def test_bad_pixels_are_refused_naming_the_argument(files, model, entry, images, words,
                                                    tmp_path):
    call, argument, refuses_scaled, _ = IMAGE_ENTRY_POINTS[entry]
    images = images()
    if words == SCALED[1] and not refuses_scaled:
        with pytest.warns(UserWarning) as warned:
            call(model, files["tflite"], tmp_path, images)
        message = str(warned[0].message)
    else:
        with pytest.raises(ValueError) as raised:
            call(model, files["tflite"], tmp_path, images)
        message = str(raised.value)
    assert message.startswith(argument) or f" {argument}" in message, message
    for word in words:
        assert word in message, message
    assert listing(tmp_path) == []


LABEL_CASES = [
    # (id, call(model, .tflite path, output folder, images), words of the message)
    ("evaluate_arrays-labels-out-of-range",
     lambda model, path, out, x: tflite.evaluate_arrays(path, x, np.full(len(x), 10),
                                                        progress=False),
     ["labels must be classes in 0..9", "10..10"]),
    ("evaluate_arrays-float-labels",
     lambda model, path, out, x: tflite.evaluate_arrays(path, x, np.zeros(len(x)),
                                                        progress=False),
     ["labels must be 8 integers", "float64"]),
    ("evaluate_arrays-labels-of-another-count",
     lambda model, path, out, x: tflite.evaluate_arrays(path, x, np.zeros(3, int),
                                                        progress=False),
     ["labels must be 8 integers", "(3,)"]),
    ("quantize_aware-float-labels",
     lambda model, path, out, x: tflite.quantize_aware(model, (x, np.zeros(len(x))),
                                                       out / "m.tflite", verbose=0),
     ["train_data labels (y) must be integers"]),
]


@pytest.mark.parametrize("call, words", [case[1:] for case in LABEL_CASES],
                         ids=[case[0] for case in LABEL_CASES])
def test_bad_labels_are_refused_naming_the_argument(files, model, call, words, tmp_path):
    with pytest.raises(ValueError) as raised:
        call(model, files["tflite"], tmp_path, _pixels())
    for word in words:
        assert word in str(raised.value), raised.value
    assert listing(tmp_path) == []
