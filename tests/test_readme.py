"""README.md's shell and Python blocks run as written, in order (issue 26).

Every ```sh and ```python block of README.md carries a mark on the line before its fence:

    <!-- readme-test: quick -->          runs in the fast tier (and so in the full one)
    <!-- readme-test: long -->           runs in the full tier only (marked `slow`)
    <!-- readme-test: skip, REASON -->   never runs: REASON says why (placeholders, hours, ...)

An HTML comment, so that readers of the rendered README do not see it. A block without a mark
fails the first test, so that a new example cannot go untested unnoticed.

Each shell block runs in `bash -e`, in README order; then the Python blocks run in README
order in one interpreter, where later blocks continue with the names earlier ones define
(`model`, `images`), as in a session a reader pastes them into (no block reads a file that a
block of the other kind writes). Tracebacks name README.md and its line. All run in a
temporary directory beside a link to ../shared (the README's commands read ../shared/data, as
from the repository root) and holding a link to the shipped tflite/ folder, with a temporary HOME, the default data directory of the other
tests (where `make data` imports; TFDS_DATA_DIR set to it, since HOME moved) and the test
interpreter's bin directory first on PATH, so that `lru-keras` and `python` are this install.
Measured on 2 cores: the fast tier's part about 50 s, the full tier's about 3.5 minutes.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
MARKS = ("quick", "long", "skip")
BLOCK = re.compile(r"(?:<!-- readme-test: (?P<mark>\w+)(?P<reason>[^>]*)-->\n)?"
                   r"^```(?P<language>\w*)\n(?P<code>.*?)^```$", re.M | re.S)
# Runs [(line, code), ...] from the JSON file argv[1] in one namespace, each block compiled
# with its README line numbers.
PYTHON_DRIVER = """
import json, sys
namespace = {"__name__": "__main__"}
for line, code in json.load(open(sys.argv[1])):
    print(f"--- README.md, block at line {line}", flush=True)
    exec(compile("\\n" * (line - 1) + code, "README.md", "exec"), namespace)
"""


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced block: language, mark (None if unmarked), skip reason, code, first line."""

    language: str
    mark: str | None
    reason: str
    code: str
    line: int


def readme_blocks():
    """The ```sh and ```python blocks of README.md, in order."""
    text = README.read_text()
    blocks = []
    for match in BLOCK.finditer(text):
        if match["language"] in ("sh", "python"):
            line = text.count("\n", 0, match.start("code")) + 1
            reason = " ".join(match["reason"].lstrip(", ").split())
            blocks.append(Block(match["language"], match["mark"], reason, match["code"], line))
    return blocks


def test_every_block_is_marked_and_every_skip_says_why():
    blocks = readme_blocks()
    assert len(blocks) >= 10, "README.md's blocks were not found"
    unmarked = [b.line for b in blocks if b.mark not in MARKS]
    assert not unmarked, f"README.md blocks at lines {unmarked} need a readme-test mark"
    silent = [b.line for b in blocks if b.mark == "skip" and not b.reason]
    assert not silent, f"README.md blocks at lines {silent} are skipped without a reason"


@pytest.fixture
def workdir(tmp_path, shared_dir, prepared_datasets):
    """(working directory beside a link to ../shared, environment) for the README's blocks."""
    from lru_keras import data

    (tmp_path / "shared").symlink_to(shared_dir, target_is_directory=True)
    work, home = tmp_path / "checkout", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    # The shipped files, as in the checkout the README's commands run in (read only).
    (work / "tflite").symlink_to(README.parent / "tflite", target_is_directory=True)
    env = {**os.environ, "HOME": str(home), "TFDS_DATA_DIR": str(data.default_data_dir()),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    return work, env


def run_blocks(blocks, work, env, timeout):
    """Runs the shell blocks one by one, then the Python blocks in one interpreter; fails with
    the output's end if any exits non-zero."""
    for block in blocks:
        if block.language == "sh":
            script = work / f"readme_line_{block.line}.sh"
            script.write_text(block.code)
            _check(subprocess.run(["bash", "-e", "-o", "pipefail", str(script)], cwd=work,
                                  env=env, capture_output=True, text=True, timeout=timeout),
                   f"the shell block at README.md line {block.line}")
    python = [(block.line, block.code) for block in blocks if block.language == "python"]
    if python:
        listing = work / "readme_python_blocks.json"
        listing.write_text(json.dumps(python))
        _check(subprocess.run([sys.executable, "-c", PYTHON_DRIVER, str(listing)], cwd=work,
                              env=env, capture_output=True, text=True, timeout=timeout),
               f"the Python blocks at README.md lines {[line for line, _ in python]}")


def _check(result, what):
    assert result.returncode == 0, (
        f"{what} exited {result.returncode}\n--- stdout (end)\n{result.stdout[-3000:]}"
        f"\n--- stderr (end)\n{result.stderr[-3000:]}")


def test_quick_blocks_run_in_order(workdir):
    work, env = workdir
    run_blocks([b for b in readme_blocks() if b.mark == "quick"], work, env, timeout=600)


@pytest.mark.slow
def test_long_blocks_run_in_order(workdir):
    """The long blocks, with the quick Python blocks before them (the long ones continue
    them); the quick shell blocks only prepare the data, which `prepared_datasets` ensures."""
    work, env = workdir
    blocks = [b for b in readme_blocks()
              if b.mark == "long" or (b.mark == "quick" and b.language == "python")]
    run_blocks(blocks, work, env, timeout=1200)
