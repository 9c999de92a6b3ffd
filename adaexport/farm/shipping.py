"""Sending a build directory's files to a device and running the device's own ``adaexport``
on them: what ``profile --ray`` and ``compile --ray`` share.

* the driver puts each file into Ray's object store once (``FilePuts``), whatever the
  number of devices it goes to;
* on the device, ``unpacked`` writes the shipped files into a temporary directory and
  ``run_adaexport`` runs this machine's ``adaexport`` command on it with ``--json``: the
  same code, settings and checks as a local run (the manifest's sha256 of every file
  included), then the caller takes back what it needs before the directory is removed.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ..atomic import TEMP_SUFFIX, write_bytes_atomic

CACHE_DIR = ".adaexport"        # the driver's build cache: never shipped, never landed

class FilePuts:
    """Object refs of a build directory's files, each put into the object store once."""

    def __init__(self, ray, directory: Path):
        self.ray, self.directory, self.refs = ray, Path(directory), {}

    def refs_of(self, names: list[str]) -> list[Any]:
        for name in names:
            if name not in self.refs:
                self.refs[name] = self.ray.put((self.directory / name).read_bytes())
        return [self.refs[n] for n in names]


def build_files(root: Path) -> dict[str, tuple[int, int]]:
    """Every regular file under ``root`` (relative path -> (size, mtime_ns)), skipping the
    build cache and temporary files of atomic writes."""
    out: dict[str, tuple[int, int]] = {}
    for path in Path(root).rglob("*"):
        rel = path.relative_to(root).as_posix()
        if rel.split("/", 1)[0] == CACHE_DIR or path.name.endswith(TEMP_SUFFIX) or not path.is_file():
            continue
        stat = path.stat()
        out[rel] = (stat.st_size, stat.st_mtime_ns)
    return out


def changed_since(root: Path, before: dict[str, tuple[int, int]]) -> dict[str, bytes]:
    """The files under ``root`` made or changed since ``before`` (a ``build_files`` listing)."""
    return {rel: (Path(root) / rel).read_bytes() for rel, stamp in build_files(root).items()
            if before.get(rel) != stamp}


def land_files(directory: Path, files: dict[str, bytes]) -> None:
    """On the driver: write what a worker or device made into the build directory, each
    file atomically (the driver alone writes it); never into the build cache."""
    for rel, data in sorted(files.items()):
        if rel.split("/", 1)[0] == CACHE_DIR:
            continue
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(directory / rel, data)


@contextlib.contextmanager
def unpacked(names: list[str], contents: tuple[bytes, ...]) -> Iterator[Path]:
    """On a device: the shipped files in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="adaexport-farm-") as tmp:
        root = Path(tmp)
        for name, data in zip(names, contents):
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        yield root


def run_adaexport(*args: str) -> tuple[dict | None, str | None]:
    """Run this machine's ``adaexport ARGS --json``: (its result, None), or (None, the
    one-line reason it failed)."""
    proc = subprocess.run([sys.executable, "-m", "adaexport", *args, "--json"], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        try:
            errors = json.loads(proc.stdout)["errors"]             # the --json envelope says why
        except (ValueError, KeyError, TypeError):
            errors = []
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return None, (errors[0] if errors else lines[-1] if lines else f"adaexport {args[0]} exited {proc.returncode}")
    report = json.loads(proc.stdout)
    return report.get("result", report), None      # the --json envelope, or an older bare document


def as_answered(ray, running: dict, timeout_s: float | None = None) -> Iterator[tuple[Any, dict]]:
    """(what the caller keyed a task by, the task's answer) for each task of ``running``
    (object ref -> the caller's item) as its device answers; a lost device or task, or one
    still out after ``timeout_s`` of waiting, answers ``{"error": one-line reason}``."""
    running = dict(running)
    while running:
        ready, _ = ray.wait(list(running), num_returns=1, timeout=timeout_s)
        if not ready:
            for item in running.values():
                yield item, {"error": f"no answer within {timeout_s} s"}
            return
        item = running.pop(ready[0])
        try:
            answer = ray.get(ready[0])
        except Exception as exc:  # noqa: BLE001 - a lost device or task: named, the others still count
            answer = {"error": error_line(exc)}
        yield item, answer


def error_line(exc: BaseException) -> str:
    """A lost device's or task's exception as one line."""
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__
