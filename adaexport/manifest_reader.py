"""Reading DIR/manifest.json into records, and checking the files it names (standard
library only: this is how the embedded runtime reads a build).

``load_manifest(DIR)`` parses the JSON (no duplicate keys, no NaN or Infinity), reads it
into ``manifest_records.Manifest`` (each modelled field type-checked, one-line errors
with the JSON path) and checks that every file path stays inside DIR. The toolchain's
``adaexport.manifest.read_manifest`` adds the full JSON Schema check (jsonschema).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from .hashing import sha256_file
from .manifest_fields import ManifestError, check_finite, format_path, path_problem, short
from .manifest_records import EngineRecord, FileRecord, Manifest

MANIFEST_NAME = "manifest.json"


def _reject_duplicate_keys(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ManifestError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str):
    raise ManifestError(f"{name} is not valid JSON")


def parse_json(text: str) -> Any:
    """JSON as the manifest allows it: no duplicate keys and no NaN or Infinity (ValueError:
    ManifestError or json.JSONDecodeError)."""
    return json.loads(text, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant)


def safe_relative_path(base: Path, rel: str) -> Path:
    """``base / rel`` for a '/'-separated path that stays inside ``base``.

    Rejects absolute paths, drive letters, backslashes, '..' components and paths whose
    symlinks resolve outside ``base``. The file need not exist."""
    base = Path(base)
    problem = path_problem(rel)
    if problem:
        raise ManifestError(f"unsafe path {short(rel, 1000)}: {problem}")
    candidate = base.joinpath(*PurePosixPath(rel).parts)
    try:
        root = base.resolve()
        resolved = candidate.resolve()
    except (OSError, RuntimeError) as exc:  # e.g. a symlink loop
        raise ManifestError(f"unsafe path {short(rel, 1000)}: cannot resolve it ({exc})") from None
    if resolved == root or root not in resolved.parents:
        raise ManifestError(f"unsafe path {short(rel, 1000)}: resolves to {resolved}, outside the build directory {root}")
    return candidate


def _file_entries(data: dict) -> Iterator[tuple[tuple, Any]]:
    """(json path, file) of every entry naming a file: weights, then engines."""
    weights = data.get("weights")
    if isinstance(weights, dict):
        yield ("weights", "file"), weights.get("file")
    for i, engine in enumerate(data.get("engines") or []):
        if isinstance(engine, dict):
            yield ("engines", i, "file"), engine.get("file")


def check_paths(directory: Path, data: dict) -> None:
    """ManifestError naming the first file entry whose path leaves ``directory``."""
    for path, rel in _file_entries(data):
        try:
            safe_relative_path(directory, rel)
        except ManifestError as exc:
            raise ManifestError(f"{format_path(path)}: {exc}") from None


def read_manifest_text(directory: Path) -> tuple[Path, Any]:
    """DIR/manifest.json parsed (not yet checked): (its path, the JSON)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ManifestError(f"{directory}: no such build directory")
    path = directory / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{path}: not found (is {directory} an adaexport build directory?)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read ({exc})") from None
    try:
        return path, parse_json(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ManifestError as exc:
        raise ManifestError(f"{path}: invalid JSON ({exc})") from None


def load_manifest(directory: Path) -> Manifest:
    """DIR/manifest.json as records, every modelled field and every path checked."""
    path, data = read_manifest_text(directory)
    try:
        check_finite(data)
        manifest = Manifest.from_json(data)
        check_paths(Path(directory), data)
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from None
    return manifest


# --------------------------------------------------------------------------- files


def check_file_record(directory: Path, record: FileRecord | dict, label: str) -> str | None:
    """Why the file a ``{file, sha256, size}`` record names does not match it, in one line
    starting with ``label`` (None: it matches). The path must stay inside ``directory``."""
    if isinstance(record, FileRecord):
        rel, size_expected, expected = record.file, record.size, record.sha256
    else:
        rel, size_expected, expected = record.get("file"), record.get("size"), record.get("sha256", "")
    try:
        file = safe_relative_path(directory, rel)
    except ManifestError as exc:
        return f"{label}: {exc}"
    try:
        size = file.stat().st_size
        if size != size_expected:
            return f"{label}: file {rel} has {size} bytes, the manifest says {size_expected}"
        digest = sha256_file(file)
    except FileNotFoundError:
        return f"{label}: file {rel} is missing"
    except OSError as exc:
        return f"{label}: cannot read {rel} ({exc.strerror or exc})"
    expected = str(expected or "").lower()
    if digest != expected:
        return f"{label}: file {rel} has sha256 {digest[:12]}..., the manifest says {expected[:12]}... (modified?)"
    return None


def as_engine(entry: EngineRecord | dict) -> EngineRecord:
    """An engine entry as its record (a dict is read, and checked, first)."""
    return entry if isinstance(entry, EngineRecord) else EngineRecord.from_json(entry)


def as_manifest(data: Manifest | dict) -> Manifest:
    """A manifest as its records (its JSON is read, and checked, first)."""
    return data if isinstance(data, Manifest) else Manifest.from_json(data)


def engine_file_records(entry: EngineRecord | dict) -> list[dict]:
    """Every file a manifest engine reads, as ``{"file", "sha256", "size"}`` JSON records
    (``EngineRecord.file_records``)."""
    return [record.to_json() for record in as_engine(entry).file_records()]


def verify_engine_files(directory: Path, entry: EngineRecord | dict) -> str | None:
    """Why a ready engine's files do not all match its manifest entry (None: they do). Run
    before anything opens the engine: build parity, eval, profile and the runtime."""
    engine = as_engine(entry)
    label = f"engine {engine.id}"
    for record in engine.file_records():
        problem = check_file_record(Path(directory), record, label)
        if problem:
            return problem
    return None


def verify_files(directory: Path, manifest: Manifest | dict) -> list[str]:
    """Problems with the files the manifest names (unsafe path, missing, size or sha256
    mismatch), one line each, for the weights and every engine that is not pending (a
    pending engine's file need not exist yet). [] when all is well."""
    manifest = as_manifest(manifest)
    directory = Path(directory)
    problems: list[str] = []
    if manifest.weights is not None:
        problem = check_file_record(directory, manifest.weights, "weights")
        if problem:
            problems.append(problem)
    for engine in manifest.engines:
        if not engine.pending:
            problem = verify_engine_files(directory, engine)
            if problem:
                problems.append(problem)
    return problems
