"""The package's import without TensorFlow's start-up lines.

Importing TensorFlow writes six lines to stderr on these machines (absl's "All log messages
before absl::InitializeLog() is called are written to STDERR", oneDNN's notice and "Could not
find cuda drivers", each twice), whatever TF_CPP_MIN_LOG_LEVEL says: C++ writes them before
the logging level is read. Listing its devices adds two lines on the CPU features it was not
built for and one on the failed CUDA probe. A command-line user who mistyped an argument saw
them above the one-line error. `without_startup_lines` holds back what the process writes to stderr (file
descriptor 2, so C++ output too) during the package's first imports, and then writes back
every line that is not one of those notices (`lru-keras --verbose` shows them).
"""

import contextlib
import os
import re
import sys
import tempfile

STARTUP_LINES = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    r"STDERR"
    r"|[IE]\d{4} [\d:.]+ +\d+ (port\.cc:\d+\] oneDNN custom operations are on\."
    r"|cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine"
    r"|cuda_platform\.cc:\d+\] failed call to cuInit"
    r"|cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized)"
    r"|To enable the following instructions: .*rebuild TensorFlow with the appropriate "
    r"compiler flags")


def start_tensorflow_quietly() -> None:
    """Imports TensorFlow and lists its physical devices without their notices (the CPU
    features it was not built for, the failed CUDA probe on a machine without a GPU): for the
    command line, whose first line of output should be the command's own. The runtime is not
    started: `train --strategy mirrored --cpu-devices N` and multi-worker collectives
    configure it afterwards."""
    with without_startup_lines():
        import tensorflow as tf

        tf.config.list_physical_devices()


HELD_BACK: list[bytes] = []  # the notices held back in this process, for `show_startup_lines`


@contextlib.contextmanager
def without_startup_lines():
    """Within this block, what is written to file descriptor 2 (C++ and Python stderr) is held
    back; at its end (also on an error), every line of it except TensorFlow's start-up notices
    (`STARTUP_LINES`) is written there."""
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (a daemon): nothing to hold back
        yield
        return
    with tempfile.TemporaryFile() as held:
        _flush_stderr()
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = []
            for line in held.read().splitlines(True):
                is_notice = STARTUP_LINES.match(line.decode(errors="replace"))
                (HELD_BACK if is_notice else kept).append(line)
            os.write(2, b"".join(kept))


def show_startup_lines() -> None:
    """Writes the notices held back so far to stderr (`lru-keras --verbose`)."""
    os.write(2, b"".join(HELD_BACK))


def _flush_stderr():
    if sys.stderr is not None:
        sys.stderr.flush()
