"""Atomic file writes: a reader sees the old file or the complete new one, never a part.

Every file the package writes (run state, logs, plots, models, .tflite files) goes to a
temporary file in the target's folder first and is renamed over the target only once it is
complete; on any error the temporary file is removed and the target is left as it was.
"""

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def replacing(path):
    """Yields a temporary path beside `path` (same suffixes, e.g. ".weights.h5", so writers
    that look at the file name still work); on success it is renamed over `path` with the
    usual permissions."""
    path = Path(path)
    suffixes = "".join(path.suffixes)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name[:len(path.name) - len(suffixes)]}.",
                                         suffix=f".tmp{suffixes}", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        publish(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def publish(temporary, path):
    """Gives a finished temporary file the permissions a new file would get (the umask) and
    renames it over `path`."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    os.replace(temporary, path)


def write_bytes(path, content):
    """Writes `content` to `path` atomically, flushed to disk before the rename."""
    with replacing(path) as temporary:
        write_synced(temporary, content)


def write_synced(path, content):
    """Writes `content` to `path` (not atomically) and flushes it to disk."""
    with open(path, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())


def write_text(path, text):
    """Writes `text` (UTF-8) to `path` atomically."""
    write_bytes(path, text.encode())
