"""Atomic file writes (standard library only: the runtime and device side use it too)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

TEMP_SUFFIX = ".tmp"                       # a write in progress: ".<name>.<random>.tmp"
STAGING_PREFIX = ".adaexport-compile-"     # a build's temporary folder (a compile's, in the engines folder;
                                           # the mapped parity data's, in the build's private folder)


@contextlib.contextmanager
def atomic_path(path: Path, mode: int = 0o644) -> Iterator[Path]:
    """``with atomic_path(p) as tmp:`` write ``tmp`` (a temp name in p's directory) any way
    you like; when the block ends without an error it is flushed to disk and renamed over
    ``p`` (readers see the old file or the new one, never a part); on an error it is
    removed and ``p`` is untouched. The one way adaexport writes a file."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        move_into_place(tmp, path, mode)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def move_into_place(src: Path, dst: Path, mode: int = 0o644) -> None:
    """Flush ``src`` to disk, give it ``mode`` and rename it over ``dst`` (same filesystem),
    the rename made durable too."""
    with open(src, "rb") as f:
        os.fsync(f.fileno())
    os.chmod(src, mode)
    os.replace(src, dst)
    _fsync_directory(Path(dst).parent)


def write_bytes_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a
    part (``atomic_path``)."""
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(data)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_leftovers(folders: Iterable[Path]) -> None:
    """Remove what a killed process leaves in these folders: temp files of atomic writes
    and compile staging folders. Call it only where no other process is writing."""
    for folder in folders:
        if not Path(folder).is_dir():
            continue
        for path in Path(folder).iterdir():
            if path.name.startswith(STAGING_PREFIX) and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX) and path.is_file():
                path.unlink(missing_ok=True)
