"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one.

New file in the same directory, flushed and fsynced, renamed over the target, the directory fsynced so the
rename itself survives a power cut. Standard library only: export/ and the registry use it too.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

FILE_MODE = 0o644  # mkstemp makes files only their owner can read; bot processes may run as another user


def fsync_dir(path: str | Path) -> None:
    """Make a rename or unlink inside `path` durable (a file's own fsync does not cover its directory entry)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """`with atomic_open(p) as f: f.write(...)`: p is replaced only when the block finishes without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), FILE_MODE)
            os.fsync(f.fileno())
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise _naming(exc, path) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _naming(exc: OSError, path: Path) -> OSError:
    """The same error about `path` itself: the temporary file's random name means nothing to the user."""
    return OSError(exc.errno, exc.strerror, str(path)) if exc.errno else exc


def write_atomic(path: str | Path, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)
