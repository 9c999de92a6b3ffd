"""TensorRT timing caches as trtexec keeps them (samples/utils/timingCache.cpp).

* Loading: a file that cannot be read, or bytes TensorRT cannot make a cache of
  (``IBuilderConfig.create_timing_cache`` returns None for a truncated or corrupt file),
  or a cache ``set_timing_cache`` refuses (another device or TensorRT version), is a
  miss: the build starts from an empty cache and says why. It never aborts a build.
* Naming: one file per target *and TensorRT version* (`cache_name`), so JetPack 5 and 6
  builds in one directory do not trade caches.
* Saving: under an exclusive lock on ``<file>.lock`` (fcntl), the cache on disk is read
  again and this build's cache is merged into it (``ITimingCache.combine``), then the
  result is written atomically: concurrent builds of one family add to the file instead
  of the last one overwriting the others' timings.

Every function takes the builder config (whatever has ``create_timing_cache``) and works
on any object with the TensorRT API's ``serialize()`` / ``combine(other, ignore_mismatch)``.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
    fcntl = None


def cache_name(target_name: str, tensorrt_version: str | None) -> str:
    """The timing cache file of a target and TensorRT version (major.minor.patch)."""
    version = ".".join(re.findall(r"\d+", tensorrt_version or "")[:3]) or "unknown"
    return f"tensorrt-{target_name}-trt{version}.timing-cache"


def load(config: Any, path: str | os.PathLike) -> tuple[Any, str | None]:
    """(a timing cache set on `config`, None or why the file was not used)."""
    path = Path(path)
    data, why = b"", None
    if path.is_file():
        try:
            data = path.read_bytes()
        except OSError as exc:
            why = f"cannot read {path.name} ({exc})"
    cache = None
    if data:
        try:
            cache = config.create_timing_cache(data)
        except Exception as exc:  # noqa: BLE001 - a binding that raises instead of returning None
            why = f"{type(exc).__name__}: {exc}"
        if cache is None:
            why = why or f"{path.name} is not a timing cache this TensorRT can read (truncated or corrupt)"
        elif not config.set_timing_cache(cache, ignore_mismatch=False):
            cache, why = None, f"{path.name} was written by another device or TensorRT version"
        else:
            return cache, None
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        return None, "TensorRT could not create an empty timing cache: building without one"
    return cache, (f"timing cache miss: {why}; starting afresh" if why else None)


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock held across processes on `path`.lock (released on exit)."""
    if fcntl is None:
        yield
        return
    with open(f"{os.fspath(path)}.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def save(config: Any, cache: Any, path: str | os.PathLike) -> None:
    """Merge `cache` into the timing cache file at `path` (created when missing), under the lock."""
    from ..atomic import write_bytes_atomic

    path = Path(path)
    with locked(path):
        merged = cache
        try:
            on_disk = path.read_bytes() if path.is_file() else b""
        except OSError:
            on_disk = b""
        if on_disk:
            try:
                theirs = config.create_timing_cache(on_disk)
            except Exception:  # noqa: BLE001 - an unreadable file is replaced
                theirs = None
            if theirs is not None and theirs.combine(cache, False):
                merged = theirs
        write_bytes_atomic(path, bytes(memoryview(merged.serialize())))
