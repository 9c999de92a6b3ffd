"""Output files a command writes for the user: refused before any work when they could not
be written, then written atomically."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError


def check_output_file(path: Path, option: str) -> None:
    """Refuse, before any work, a file the command could not write (a directory, a missing
    folder, a file in place of a folder)."""
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory, not a file")
    if not path.parent.is_dir():
        raise UsageError(f"{option} {path}: no such directory {path.parent}")


def write_output_file(path: Path, data: bytes, option: str) -> None:
    """Write a result file atomically; what the system refuses (permissions, an immutable
    or read-only folder, a full disk) is one line and exit 2: the path given cannot be used."""
    from ..atomic import write_bytes_atomic

    try:
        write_bytes_atomic(path, data)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write ({exc.strerror or exc})") from None
