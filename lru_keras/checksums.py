"""sha256 of the files the package writes and later reads back, and `.sha256` sidecars.

A flipped byte inside an HDF5 weights file loads without complaint (HDF5 checks its structure,
not its data), so a damaged file would give a silently wrong model or a resumed training run
that continues from damaged weights. Every weights file the package saves gets a sidecar
`<file>.sha256` (the `sha256sum` format: `<hex>  <name>`), and every load of a file that has
one checks it first. Registered weights carry their sha256 in the manifest instead.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from lru_keras import atomic

SUFFIX = ".sha256"


class ChecksumError(ValueError):
    """A file's bytes do not have the sha256 recorded for them: corrupt, or replaced."""


def sha256_of(path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_path(path) -> Path:
    """`<path>.sha256`."""
    path = Path(os.fspath(path))
    return path.with_name(path.name + SUFFIX)


def write_sidecar(path) -> str:
    """Writes `<path>.sha256` for the file `path` (atomically); returns the digest."""
    digest = sha256_of(path)
    atomic.write_bytes(sidecar_path(path), f"{digest}  {Path(path).name}\n".encode())
    return digest


def check(path, expected: str, what: str = "file") -> None:
    """ChecksumError naming `path` unless its sha256 is `expected`."""
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumError(
            f"{what} {os.fspath(path)} is corrupt or was replaced: sha256 {actual}, recorded "
            f"{expected}. Nothing was loaded from it.")


def check_sidecar(path, what: str = "weights file") -> bool:
    """If `<path>.sha256` exists, ChecksumError unless `path` has the sha256 it records (a
    sidecar that is not one is refused too); returns whether there was a sidecar."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return False
    fields = sidecar.read_text(errors="replace").split()
    if not fields or len(fields[0]) != 64 or any(c not in "0123456789abcdef" for c in fields[0]):
        raise ChecksumError(f"{sidecar} is not a sha256 sidecar (expected '<64 hex digits>  "
                            f"<file name>'); remove it or write it again with sha256sum.")
    check(path, fields[0], what)
    return True
