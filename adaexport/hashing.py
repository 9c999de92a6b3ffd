"""File hashing: the one sha256 of files in adaexport (standard library only: the runtime
and the device side use it too).

Hashes are memoised per process by the file's identity and change stamps (device, inode,
size, mtime and ctime in nanoseconds): re-verifying an unchanged 560 MB weights file is a
``stat``, while any write, rename or replacement changes ctime (which no unprivileged
process can set back) and forces a fresh hash. As in git's "racy" rule, a file changed
within the last two seconds is never memoised: file times tick in coarse steps, so a
second write in the same tick could otherwise keep the stamps of the first.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20
_memo: dict[tuple, str] = {}
_memo_lock = threading.Lock()
_RACY_NS = 2_000_000_000


def _stamp(st: os.stat_result) -> tuple:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def sha256_bytes(data) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """The file's sha256 (hex), memoised while the file is unchanged."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        before = _stamp(os.fstat(f.fileno()))
        key = (os.path.abspath(path), before)
        with _memo_lock:
            found = _memo.get(key)
        if found is not None:
            return found
        digest = hashlib.sha256()
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
        after = _stamp(os.fstat(f.fileno()))
    value = digest.hexdigest()
    settled = time.time_ns() - max(after[3], after[4]) > _RACY_NS
    if after == before and settled:  # not written to while hashed, nor just now
        with _memo_lock:
            _memo[key] = value
    return value


def sha256_files(*paths: str | os.PathLike) -> str:
    """One sha256 over the files' bytes in order (a checkpoint's config and weights)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                digest.update(block)
    return digest.hexdigest()


def file_record(path: str | os.PathLike, relative_to: str | os.PathLike) -> dict[str, Any]:
    """``{"file", "sha256", "size"}`` of ``path``, its name '/'-separated relative to a directory."""
    path = Path(path)
    return {"file": Path(os.path.relpath(path, relative_to)).as_posix(), "sha256": sha256_file(path),
            "size": path.stat().st_size}
