"""The build cache: one record per finished piece of work, DIR/.adaexport/cache/<stage>/<key>.json.

Each record is written atomically *after* the artefact it describes, so a build killed at
any point (SIGKILL included) resumes: a record whose artefact is missing or has another
hash is ignored and redone (`Cache.valid`). Keys (`digest`) hash everything a result
depends on, so changing one option redoes only what depends on it. Only the build's
driver process writes records (workers of `build --jobs N` return them).

Used by the build stages, `adaexport eval` (the PyTorch reference accuracy), search and
profiling; it imports nothing else of the package but the atomic writer, the hasher and
the manifest reader's file check (a cached artefact is checked as a manifest's file is).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .atomic import write_bytes_atomic
from .hashing import file_record
from .manifest_reader import check_file_record

CACHE_DIR = ".adaexport/cache"


def digest(obj: Any) -> str:
    """The cache key of a JSON-able description of a piece of work."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class Cache:
    """Records of finished work: DIR/.adaexport/cache/<stage>/<key>.json."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.root = self.directory / CACHE_DIR

    def get(self, stage: str, key: str) -> dict | None:
        path = self.root / stage / f"{key}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def put(self, stage: str, key: str, record: dict) -> None:
        folder = self.root / stage
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(folder / f"{key}.json", json.dumps(record, sort_keys=True).encode())

    def valid(self, record: dict | None) -> bool:
        """A record of a file counts only if the file is there with the recorded size and hash."""
        return bool(record) and check_file_record(self.directory, record, "cache") is None

    def file_record(self, path: Path, **extra) -> dict:
        """{file (relative to the build directory), sha256, size} of an artefact, plus `extra`."""
        return {**file_record(path, self.directory), **extra}
