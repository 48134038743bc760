"""Installs lru_keras[all] with the oldest and with the newest versions that setup.cfg's ranges
allow, each in a fresh venv, and runs part of the test suite in each: the check behind the
ranges of install_requires and extras_require (requirements.lock is the one set `make` uses).

- oldest: every direct requirement pinned to its lower bound (pip cannot resolve to lowest
  versions; the direct dependencies' lower bounds are what the ranges promise);
- newest: pip's own resolution, the newest release each range admits.

Each venv gets a copy of the repository, installed editable as `make` does, with ../shared and
.venv-clients linked beside it as in a checkout. Needs the package registry (about 1.5 GB of
downloads per venv) and `make data`. Not part of the test tiers: run it when a range changes,
and record its output in the change's note. Usage:
    python scripts/check_install_range.py [--end oldest newest] [--work DIR]
                                          [--tests tests/test_x.py ...]
Prints the versions of the direct dependencies and pytest's summary for each end; exits 1 if
an install or a test fails.
"""

import argparse
import configparser
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
# The tests run at each end: the fast tier of the modules every extra touches.
TESTS = ["tests/test_lrunet.py", "tests/test_baselines.py", "tests/test_layers.py",
         "tests/test_weights.py", "tests/test_data.py", "tests/test_tflite.py",
         "tests/test_tflite_metadata.py", "tests/test_qat.py", "tests/test_train.py",
         "tests/test_tune.py", "tests/test_install.py"]
IGNORED = shutil.ignore_patterns(".venv", ".venv-clients", ".git", "build", "dist",
                                 "*.egg-info", "__pycache__", ".pytest_cache")


def direct_requirements():
    """Every requirement of install_requires and of the extras but `test`, `backends` and
    `all` (the self-reference), as packaging Requirements."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options"]["install_requires"].split("\n")
    for extra, text in config["options.extras_require"].items():
        if extra not in ("test", "backends", "all"):
            lines += text.split("\n")
    return [Requirement(line) for line in lines if line.strip()]


def lower_bound_pins(requirements):
    """`name==X` for each requirement's `>=X` bound."""
    pins = []
    for requirement in requirements:
        lows = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if len(lows) != 1:
            raise SystemExit(f"{requirement}: a range needs exactly one >= lower bound")
        pins.append(f"{requirement.name}=={lows[0]}")
    return pins


def run(command, **kwargs):
    print("+", " ".join(map(str, command)), flush=True)
    return subprocess.run([str(part) for part in command], **kwargs)


def check_end(end, work, tests):
    """Builds the venv of `end` under `work`, runs `tests` there; returns pytest's status."""
    root = work / end
    shutil.rmtree(root, ignore_errors=True)
    copy = root / "lru_keras"
    shutil.copytree(REPO, copy, ignore=IGNORED)
    (root / "shared").symlink_to((REPO.parent / "shared").resolve())
    (copy / ".venv-clients").symlink_to(REPO / ".venv-clients")
    python = root / "venv" / "bin" / "python"
    if run([sys.executable, "-m", "venv", root / "venv"]).returncode:
        return 1
    run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    requirements = direct_requirements()
    pins = lower_bound_pins(requirements) if end == "oldest" else []
    # Editable, as `make` installs it: the tests read the checkout's files (zoo/, tflite/).
    if run([python, "-m", "pip", "install", "--quiet", "-e", f"{copy}[all,test]",
            *pins]).returncode:
        print(f"{end}: the install failed", flush=True)
        return 1
    names = sorted({requirement.name for requirement in requirements})
    listing = run([python, "-m", "pip", "list", "--format", "freeze"], capture_output=True,
                  text=True).stdout.splitlines()
    wanted = {name.lower().replace("_", "-") for name in names}
    print(f"{end}: " + ", ".join(line for line in listing
                                 if line.split("==")[0].lower().replace("_", "-") in wanted))
    return run([root / "venv" / "bin" / "pytest", "-q", "-n", "2", "-m", "not slow",
                "-p", "no:cacheprovider", *tests], cwd=copy).returncode


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--end", nargs="+", choices=("oldest", "newest"),
                        default=["oldest", "newest"])
    parser.add_argument("--work", type=Path, default=None,
                        help="where the venvs go (default: a temporary folder, removed after)")
    parser.add_argument("--tests", nargs="+", default=TESTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        statuses = {end: check_end(end, work, args.tests) for end in args.end}
    print(" ".join(f"{end}: {'passed' if status == 0 else 'FAILED'}"
                   for end, status in statuses.items()))
    sys.exit(1 if any(statuses.values()) else 0)


if __name__ == "__main__":
    main()
