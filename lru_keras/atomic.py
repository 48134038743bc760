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


def check_writable_folder(folder, label: str) -> None:
    """ValueError naming `folder` (`label` says what it is, e.g. "run dir") unless files can
    be created in it, or, while it does not exist, in the nearest folder above it that does
    (where it would be made). Checked before long work whose results go there."""
    folder = Path(os.fspath(folder)).absolute()
    existing = folder
    while not existing.exists() and not existing.is_symlink():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{label} {str(folder)!r} exists and is not a directory"
                         if existing == folder else
                         f"{label} {str(folder)!r} cannot be created: {str(existing)!r} is a "
                         f"file, not a directory")
    try:  # a probe file: the one test of writability that holds for every user and file system
        handle, probe = tempfile.mkstemp(prefix=".write-probe.", dir=existing)
    except OSError as error:
        where = "" if existing == folder else f" (checked in {str(existing)!r})"
        raise ValueError(f"{label} {str(folder)!r} is not writable: {error.strerror}{where}. "
                         f"Choose a directory you can write to.") from None
    os.close(handle)
    os.unlink(probe)


def check_writable_file(path, label: str, companions=()) -> Path:
    """`path` as a Path if it, and the `companions` written beside it (sidecar files), can be
    written: not directories, in a folder that exists and takes new files, and not read-only
    where they exist already; else a ValueError naming `label` and the file."""
    path = Path(os.fspath(path))
    for target in (path, *companions):
        if target.is_dir():
            raise ValueError(f"{label} {str(target)!r} is a directory, not a file.")
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"{label} {str(path)!r}: folder {str(folder)!r} does not exist.")
    check_writable_folder(folder, f"{label} {str(path)!r}: folder")
    for target in (path, *companions):
        if target.exists() and not os.access(target, os.W_OK):
            raise ValueError(f"{label} {str(target)!r} exists and is not writable.")
    return path
