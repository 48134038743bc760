"""The catalogue of bad command lines, the part common to every command: usage errors,
arguments of the wrong kind, files and directories that are missing or are not what they
should be, and the one-line error format itself. Each case: exit status 2, exactly one line
on stderr (`lru-keras: error: ...`) naming the argument or file, nothing on stdout, no file
left behind in the working directory. (Per surface: tests/test_bad_input_models.py,
test_bad_input_files.py, test_bad_input_training.py.)"""

import errno
import os

import pytest

from lru_keras.cli import describe_os_error, main
from lru_keras.cli.options import print_error

W = ["--weights", "lrunet1_1x.cifar10"]

CASES = {
    # usage: commands and options
    "no command": ([], ["COMMAND"]),
    "unknown command": (["nosuch"], ["invalid choice: 'nosuch'"]),
    "unknown option": (["zoo", "list", "--bogus"], ["--bogus"]),
    "unknown top-level option": (["--bogus", "zoo", "list"], ["--bogus"]),
    "unknown data subcommand": (["data", "nosuch"], ["invalid choice: 'nosuch'"]),
    "evaluate without data": (["evaluate", *W], ["--dataset", "--sample"]),
    "evaluate, two data": (["evaluate", *W, "--sample", "--dataset", "cifar10"],
                           ["--dataset", "--sample"]),
    "evaluate, unknown dataset": (["evaluate", *W, "--dataset", "imagenet"],
                                  ["--dataset", "imagenet", "cifar10"]),
    "evaluate, unknown weights": (["evaluate", "--weights", "nosuch", "--sample"],
                                  ["--weights", "nosuch", "lrunet1_1x.cifar10"]),
    "evaluate, batch size 0": (["evaluate", *W, "--sample", "--batch-size", "0"],
                               ["--batch-size", "'0'"]),
    "evaluate, batch size text": (["evaluate", *W, "--sample", "--batch-size", "many"],
                                  ["--batch-size", "'many'"]),
    "evaluate, limit negative": (["evaluate", *W, "--sample", "--limit", "-5"],
                                 ["--limit", "'-5'"]),
    "evaluate, limit float": (["evaluate", *W, "--sample", "--limit", "2.5"],
                              ["--limit", "'2.5'"]),
    "evaluate, weights and architecture": (["evaluate", *W, "--reuse", "2", "--sample"],
                                           ["--weights", "--reuse"]),
    "evaluate, not a model file": (["evaluate", "model.h5", "--sample"],
                                   ["model.h5", ".keras"]),
    "evaluate, missing .keras": (["evaluate", "missing.keras", "--sample"],
                                 ["missing.keras", "does not exist"]),
    "evaluate, input shape text": (["evaluate", "--input-shape", "32x32x3", "--sample"],
                                   ["--input-shape", "32x32x3"]),
    "export without output": (["export", *W], ["-o/--output"]),
    "export, unknown quantization": (["export", *W, "-o", "m.tflite", "-q", "int4"],
                                     ["--quantization", "int4", "int8"]),
    "export, io dtype for float": (["export", *W, "-o", "m.tflite", "--io-dtype", "uint8"],
                                   ["io_dtype", "int8"]),
    "export, calibration size for float": (
        ["export", *W, "-o", "m.tflite", "--calibration-size", "10"],
        ["--calibration-size", "int8"]),
    "export into a missing folder": (["export", *W, "-o", "nodir/m.tflite"],
                                     ["nodir", "does not exist"]),
    "export into a file's folder": (["export", *W, "-o", "file.txt/m.tflite"],
                                    ["file.txt"]),
    "info, width too large": (["info", "--width", "1000"], ["--width", "at most 8"]),
    "compare without dataset": (["compare"], ["--dataset"]),
    "compare, limit 0": (["compare", "--dataset", "cifar10", "--limit", "0"],
                         ["--limit", "'0'"]),
    "compare, missing tflite dir": (["compare", "--dataset", "cifar10", "--tflite-dir",
                                     "nodir"], ["nodir"]),
    "compare, plot not a png": (["compare", "--dataset", "cifar10", "--plot", "x.pdf"],
                                ["plot path", "x.pdf", ".png"]),
    "compare, plot under a file": (["compare", "--dataset", "cifar10", "--plot",
                                    "file.txt/x.png"], ["plot path", "file.txt"]),
    "data import without source": (["data", "import"], ["--from-shared", "--dataset"]),
    "data import, missing shared dir": (["data", "import", "--from-shared", "nodir",
                                         "--data-dir", "tfds"], ["nodir"]),
    "data import, split without npz": (["data", "import", "--dataset", "cifar10", "--split",
                                        "train"], ["--npz"]),
}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working directory holding one plain file, `file.txt`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("not a folder")
    return tmp_path


@pytest.mark.parametrize("argv, words", CASES.values(), ids=CASES.keys())
def test_bad_command_line_is_one_line_naming_the_argument(workdir, capsys, argv, words):
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert err.startswith("lru-keras: error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, (word, err)
    assert sorted(os.listdir(workdir)) == ["file.txt"]  # nothing written


OS_ERRORS = {
    "permission": (PermissionError(errno.EACCES, "Permission denied", "/runs/r"),
                   "Permission denied: '/runs/r'"),
    "is a directory": (IsADirectoryError(errno.EISDIR, "Is a directory", "m.tflite"),
                       "Is a directory: 'm.tflite'"),
    "rename": (OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b"),
               "Invalid cross-device link: 'a' -> 'b'"),
    "no file named": (OSError("device busy"), "device busy"),
}


@pytest.mark.parametrize("error, line", OS_ERRORS.values(), ids=OS_ERRORS.keys())
def test_os_errors_say_what_and_which_file_without_errno(error, line):
    assert describe_os_error(error) == line


def test_an_os_error_of_a_command_is_one_line(workdir, capsys, monkeypatch):
    import lru_keras.cli.zoo as zoo_command

    def unwritable(args):
        raise PermissionError(errno.EACCES, "Permission denied", "/runs/r/config.json")

    monkeypatch.setattr(zoo_command, "run_zoo_list", unwritable)
    assert main(["zoo", "list"]) == 2
    assert capsys.readouterr().err == (
        "lru-keras: error: Permission denied: '/runs/r/config.json'\n")


def test_a_message_of_several_lines_is_printed_as_one(capsys):
    print_error("weights file x.h5 is corrupt:\n  sha256 abc\n  recorded def\n")
    assert capsys.readouterr().err == (
        "lru-keras: error: weights file x.h5 is corrupt: sha256 abc recorded def\n")
