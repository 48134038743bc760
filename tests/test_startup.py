"""lru_keras.startup: TensorFlow's start-up notices are held back, every other line written to
stderr during the package's import comes through."""

import os
import subprocess
import sys

from lru_keras.startup import without_startup_lines

# As TensorFlow 2.20 writes them on these machines (pids and times vary).
NOTICES = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796323749.887047   15078 port.cc:153] oneDNN custom operations are on. You may \
see slightly different numerical results due to floating-point round-off errors from \
different computation orders. To turn them off, set the environment variable \
`TF_ENABLE_ONEDNN_OPTS=0`.
I0000 00:00:1796323749.887385   15078 cudart_stub.cc:31] Could not find cuda drivers on your \
machine, GPU will not be used.
I0000 00:00:1796323840.298214   15999 cpu_feature_guard.cc:227] This TensorFlow binary is \
optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild \
TensorFlow with the appropriate compiler flags.
E0000 00:00:1796323854.123489   16063 cuda_platform.cc:52] failed call to cuInit: INTERNAL: \
CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
"""


def test_notices_are_held_back_and_other_lines_come_through(capfd):
    with without_startup_lines():
        os.write(2, NOTICES.encode())
        os.write(2, b"W0000 00:00:1.0 1 some_op.cc:1] a warning that matters\n")
        print("from Python", file=sys.stderr)
    assert sorted(capfd.readouterr().err.splitlines()) == [
        "W0000 00:00:1.0 1 some_op.cc:1] a warning that matters", "from Python"]


def test_a_usage_error_is_the_only_line_whatever_the_tensorflow_log_level():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "lru_keras.cli", "info", "--reuse", "0"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "lru-keras: error: argument --reuse: expected a positive integer, got '0' (see "
        "`lru-keras info --help`)"]
