"""The build manifest (DIR/manifest.json): schema, validation, safe paths, atomic writes.

The embedded runtime imports this module on devices that have only numpy and one
inference backend, so it uses the standard library alone at module level. jsonschema
validates when it is importable; otherwise a small built-in validator interprets the
same shipped schema (it understands exactly the keywords the schema uses, see
``BUILTIN_KEYWORDS``), so both paths accept and reject the same manifests.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import functools
import importlib.resources
import json
import math
import numbers
import os
import platform
import re
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from .errors import AdaexportError
from .hashing import sha256_file  # noqa: F401 - the one file hasher, re-exported

SCHEMA_ID = "adaexport.manifest/1"
MANIFEST_NAME = "manifest.json"

_TMP_PREFIX = f".{MANIFEST_NAME}."
_TMP_SUFFIX = ".tmp"


class ManifestError(AdaexportError, ValueError):
    """A manifest that cannot be read, written or trusted; the message is one line meant for a user."""


# --------------------------------------------------------------------------- schema


@functools.lru_cache(maxsize=None)
def _schema() -> dict:
    resource = importlib.resources.files("adaexport") / "schemas" / "manifest.schema.json"
    try:
        return json.loads(resource.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:  # a broken installation, not a user error
        raise RuntimeError(f"adaexport: cannot load the packaged manifest schema ({exc})") from exc


def load_schema() -> dict:
    """The JSON Schema of ``adaexport.manifest/1`` (a fresh copy the caller may modify)."""
    return copy.deepcopy(_schema())


def utc_now() -> str:
    """The current time as the manifest's ``created`` wants it: ISO-8601 UTC, e.g. 2025-01-31T12:00:00Z."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def host_info() -> dict[str, Any]:
    """Facts about the machine running this, in the shape of the manifest's ``device.host``."""
    return {
        "system": platform.system(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


# --------------------------------------------------------------------------- validation

# (path, keyword, keyword value, instance, schema object holding the keyword)
_Error = tuple[tuple, str, Any, Any, dict]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _format_path(path) -> str:
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.match(part):
            out += f".{part}"
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _path_problem(rel: Any) -> str | None:
    """Why ``rel`` is not a safe '/'-separated relative path (textual checks only), or None."""
    if not isinstance(rel, str):
        return f"expected a string, got {_json_type(rel)}"
    if not rel:
        return "empty path"
    if "\x00" in rel:
        return "contains a NUL character"
    if "\\" in rel:
        return "contains a backslash (paths are '/'-separated)"
    if rel.startswith("/"):
        return "is absolute (must be relative to the build directory)"
    if re.match(r"^[A-Za-z]:", rel):
        return "has a drive letter (must be relative to the build directory)"
    if ".." in rel.split("/"):
        return "contains '..' (must stay inside the build directory)"
    if not PurePosixPath(rel).parts:
        return "names the build directory itself, not a file"
    return None


def _describe(keyword: str, value: Any, instance: Any, schema: dict) -> str:
    """One message per failed keyword, shared by both validators so they read alike."""
    if keyword == "type":
        types = [value] if isinstance(value, str) else list(value)
        return f"expected {' or '.join(types)}, got {_json_type(instance)} {_short(instance)}"
    if keyword == "const":
        return f"must be {_short(value)}, got {_short(instance)}"
    if keyword == "enum":
        return f"must be one of {', '.join(_short(v) for v in value)}; got {_short(instance)}"
    if keyword == "required":
        missing = [name for name in value if name not in instance]
        return f"missing required field {_short(missing[0] if missing else value)}"
    if keyword == "additionalProperties":
        known = set(schema.get("properties", {}))
        extra = [name for name in instance if name not in known]
        return f"unexpected field(s) {', '.join(_short(n) for n in extra)}"
    if keyword == "minItems":
        return f"expected at least {value} item(s), got {len(instance)}"
    if keyword == "maxItems":
        return f"expected at most {value} item(s), got {len(instance)}"
    if keyword == "minLength":
        return "must not be empty" if value == 1 else f"must have at least {value} characters"
    if keyword == "minimum":
        return f"must be >= {value}, got {_short(instance)}"
    if keyword == "maximum":
        return f"must be <= {value}, got {_short(instance)}"
    if keyword == "exclusiveMinimum":
        return f"must be > {value}, got {_short(instance)}"
    if keyword == "pattern":
        if schema is _schema()["$defs"]["relpath"] or value == _schema()["$defs"]["relpath"]["pattern"]:
            return f"unsafe path {_short(instance, 1000)}: {_path_problem(instance) or 'not a safe relative path'}"
        if "title" in schema:
            return f"{_short(instance)} is not {schema['title']}"
        return f"{_short(instance)} does not match {value!r}"
    return f"fails {keyword!r} ({_short(value)})"


def _is_type(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":  # as jsonschema: 3.0 counts as an integer, True does not
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "string":
        return isinstance(value, str)
    if name == "array":
        return isinstance(value, list)
    if name == "object":
        return isinstance(value, dict)
    raise RuntimeError(f"manifest schema: unknown type {name!r}")


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


# Keywords the built-in validator evaluates, and those it may ignore (annotations).
BUILTIN_KEYWORDS = frozenset({
    "type", "const", "enum", "required", "properties", "additionalProperties", "items",
    "minItems", "maxItems", "minLength", "pattern", "minimum", "maximum", "exclusiveMinimum", "$ref",
})
ANNOTATION_KEYWORDS = frozenset({"$schema", "$id", "$defs", "$comment", "title", "description", "default"})


def _resolve_ref(ref: str) -> dict:
    if not ref.startswith("#/"):
        raise RuntimeError(f"manifest schema: only local $ref is supported, got {ref!r}")
    node: Any = _schema()
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _builtin_errors(instance: Any, schema: dict, path: tuple = ()) -> Iterator[_Error]:
    """A JSON Schema interpreter for the subset of 2020-12 that the manifest schema uses."""
    is_number = isinstance(instance, (int, float)) and not isinstance(instance, bool)
    for keyword, value in schema.items():
        if keyword == "$ref":
            yield from _builtin_errors(instance, _resolve_ref(value), path)
        elif keyword == "type":
            types = [value] if isinstance(value, str) else value
            if not any(_is_type(instance, t) for t in types):
                yield path, keyword, value, instance, schema
        elif keyword == "const":
            if not _json_equal(instance, value):
                yield path, keyword, value, instance, schema
        elif keyword == "enum":
            if not any(_json_equal(instance, v) for v in value):
                yield path, keyword, value, instance, schema
        elif keyword == "required":
            if isinstance(instance, dict):
                for name in value:
                    if name not in instance:
                        yield path, keyword, [name], instance, schema
        elif keyword == "properties":
            if isinstance(instance, dict):
                for name, sub in value.items():
                    if name in instance:
                        yield from _builtin_errors(instance[name], sub, path + (name,))
        elif keyword == "additionalProperties":
            if isinstance(instance, dict):
                known = schema.get("properties", {})
                extra = [name for name in instance if name not in known]
                if value is False and extra:
                    yield path, keyword, value, instance, schema
                elif isinstance(value, dict):
                    for name in extra:
                        yield from _builtin_errors(instance[name], value, path + (name,))
        elif keyword == "items":
            if isinstance(instance, list):
                for i, item in enumerate(instance):
                    yield from _builtin_errors(item, value, path + (i,))
        elif keyword == "minItems":
            if isinstance(instance, list) and len(instance) < value:
                yield path, keyword, value, instance, schema
        elif keyword == "maxItems":
            if isinstance(instance, list) and len(instance) > value:
                yield path, keyword, value, instance, schema
        elif keyword == "minLength":
            if isinstance(instance, str) and len(instance) < value:
                yield path, keyword, value, instance, schema
        elif keyword == "pattern":
            if isinstance(instance, str) and not re.search(value, instance):
                yield path, keyword, value, instance, schema
        elif keyword == "minimum":
            if is_number and instance < value:
                yield path, keyword, value, instance, schema
        elif keyword == "maximum":
            if is_number and instance > value:
                yield path, keyword, value, instance, schema
        elif keyword == "exclusiveMinimum":
            if is_number and instance <= value:
                yield path, keyword, value, instance, schema
        elif keyword not in ANNOTATION_KEYWORDS:
            raise RuntimeError(f"manifest schema: keyword {keyword!r} is not supported by the built-in validator")


def _jsonschema_errors(instance: Any) -> Iterator[_Error]:
    validator = _jsonschema_validator()
    for err in validator.iter_errors(instance):
        yield tuple(err.absolute_path), err.validator, err.validator_value, err.instance, err.schema


@functools.lru_cache(maxsize=None)
def _jsonschema_validator():
    import jsonschema  # optional: absent on devices

    return jsonschema.Draft202012Validator(_schema())


def jsonschema_available() -> bool:
    try:
        import jsonschema  # noqa: F401
    except ImportError:
        return False
    return True


def _to_json(value: Any, path: tuple = ()) -> Any:
    """A plain-JSON copy of ``value`` (tuples become lists, numpy scalars Python numbers);
    ManifestError naming the path of the first value JSON cannot hold (NaN, infinities,
    sets, Path objects...)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):  # also numpy integers
        return int(value)
    if isinstance(value, numbers.Real):  # also numpy floats
        value = float(value)
        if not math.isfinite(value):
            raise ManifestError(f"{_format_path(path)}: {value} is not allowed in JSON (use a finite number or null)")
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ManifestError(f"{_format_path(path)}: object key {key!r} is not a string")
            out[key] = _to_json(item, path + (key,))
        return out
    if isinstance(value, (list, tuple)):
        return [_to_json(item, path + (i,)) for i, item in enumerate(value)]
    raise ManifestError(f"{_format_path(path)}: a {type(value).__name__} cannot be written to JSON")


def _semantic_errors(data: dict) -> Iterator[tuple[tuple, str]]:
    """Rules JSON Schema cannot state: unique engine ids, pareto ids that exist, and the
    sha256 and size every ready (not pending) engine must have."""
    seen: dict[str, int] = {}
    for i, engine in enumerate(data["engines"]):
        if engine.get("status", "ready") == "ready":
            for key in ("sha256", "size"):
                if key not in engine:
                    yield ("engines", i), f"a ready engine needs {key!r} (only a pending one may lack it)"
        eid = engine["id"]
        if eid in seen:
            yield ("engines", i, "id"), f"duplicate engine id {_short(eid)} (also engines[{seen[eid]}])"
        else:
            seen[eid] = i
    for mode, ids in (data.get("pareto") or {}).items():
        for j, eid in enumerate(ids):
            if eid not in seen:
                yield ("pareto", mode, j), f"unknown engine id {_short(eid)}"


def _check(data: Any, errors) -> None:
    data = _to_json(data)
    if isinstance(data, dict) and "schema" in data and data["schema"] != SCHEMA_ID:
        raise ManifestError(f"$.schema: unsupported manifest schema {_short(data['schema'])} "
                            f"(this adaexport reads {SCHEMA_ID!r})")
    found = list(errors(data))
    if found:  # report the shallowest problem; ties go to the first found
        path, keyword, value, instance, schema = min(found, key=lambda e: len(e[0]))
        raise ManifestError(f"{_format_path(path)}: {_describe(keyword, value, instance, schema)}")
    for path, message in _semantic_errors(data):
        raise ManifestError(f"{_format_path(path)}: {message}")


def validate_builtin(data: Any) -> None:
    """Validate with the built-in validator (what a device without jsonschema runs)."""
    _check(data, lambda d: _builtin_errors(d, _schema()))


def validate_with_jsonschema(data: Any) -> None:
    """Validate with jsonschema (ImportError when it is not installed)."""
    _jsonschema_validator()  # import early so ImportError is not mistaken for a manifest problem
    _check(data, _jsonschema_errors)


def validate(data: Any) -> None:
    """Raise ManifestError naming the first problem (JSON path and message).

    Uses jsonschema when importable, the built-in validator otherwise."""
    if jsonschema_available():
        validate_with_jsonschema(data)
    else:
        validate_builtin(data)


# --------------------------------------------------------------------------- paths


def safe_relative_path(base: Path, rel: str) -> Path:
    """``base / rel`` for a '/'-separated path that stays inside ``base``.

    Rejects absolute paths, drive letters, backslashes, '..' components and paths whose
    symlinks resolve outside ``base``. The file need not exist."""
    base = Path(base)
    problem = _path_problem(rel)
    if problem:
        raise ManifestError(f"unsafe path {_short(rel, 1000)}: {problem}")
    candidate = base.joinpath(*PurePosixPath(rel).parts)
    try:
        root = base.resolve()
        resolved = candidate.resolve()
    except (OSError, RuntimeError) as exc:  # e.g. a symlink loop
        raise ManifestError(f"unsafe path {_short(rel, 1000)}: cannot resolve it ({exc})") from None
    if resolved == root or root not in resolved.parents:
        raise ManifestError(f"unsafe path {_short(rel, 1000)}: resolves to {resolved}, outside the build directory {root}")
    return candidate


def _file_entries(data: dict) -> Iterator[tuple[tuple, str, dict]]:
    """(json path, label, entry) of every entry naming a file: weights, then engines."""
    weights = data.get("weights")
    if isinstance(weights, dict):
        yield ("weights",), "weights", weights
    for i, engine in enumerate(data.get("engines") or []):
        if isinstance(engine, dict):
            yield ("engines", i), f"engine {engine.get('id', f'#{i}')}", engine


def _check_paths(directory: Path, data: dict) -> None:
    for path, _label, entry in _file_entries(data):
        try:
            safe_relative_path(directory, entry.get("file"))
        except ManifestError as exc:
            raise ManifestError(f"{_format_path(path + ('file',))}: {exc}") from None


# --------------------------------------------------------------------------- read / write


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


def read_manifest(directory: Path) -> dict:
    """Read, validate and path-check DIR/manifest.json."""
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
        data = parse_json(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ManifestError as exc:
        raise ManifestError(f"{path}: invalid JSON ({exc})") from None
    try:
        validate(data)
        _check_paths(directory, data)
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from None
    return data


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


def write_manifest(directory: Path, data: dict) -> Path:
    """Validate ``data`` and write it to DIR/manifest.json atomically; returns the path.

    The text goes to a temporary file in DIR, is fsynced, then renamed over the old
    manifest, so readers see either the old or the new one and a failure leaves the old
    one untouched and no temporary file behind."""
    directory = Path(directory)
    doc = _to_json(data)
    validate(doc)
    text = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    target = directory / MANIFEST_NAME
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ManifestError(f"{directory}: cannot create the build directory ({exc})") from None
    _check_paths(directory, doc)
    try:
        mode = target.stat().st_mode & 0o777
    except OSError:
        mode = 0o644
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise ManifestError(f"{target}: cannot write ({exc})") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    _fsync_directory(directory)
    return target


# --------------------------------------------------------------------------- files


def check_file_record(directory: Path, record: dict, label: str) -> str | None:
    """Why the file a ``{"file", "sha256", "size"}`` record names does not match it, in one
    line starting with ``label`` (None: it matches). The path must stay inside ``directory``."""
    rel = record.get("file")
    try:
        file = safe_relative_path(directory, rel)
    except ManifestError as exc:
        return f"{label}: {exc}"
    try:
        size = file.stat().st_size
        if size != record.get("size"):
            return f"{label}: file {rel} has {size} bytes, the manifest says {record.get('size')}"
        digest = sha256_file(file)
    except FileNotFoundError:
        return f"{label}: file {rel} is missing"
    except OSError as exc:
        return f"{label}: cannot read {rel} ({exc.strerror or exc})"
    expected = str(record.get("sha256", "")).lower()
    if digest != expected:
        return f"{label}: file {rel} has sha256 {digest[:12]}..., the manifest says {expected[:12]}... (modified?)"
    return None


def engine_file_records(entry: dict) -> list[dict]:
    """Every file a manifest engine reads, as ``{"file", "sha256", "size"}`` records: its
    ``files`` list (the main file, the backend's other files, the sidecar and, for the
    family's ONNX, the shared weights); for an entry written before that list existed,
    its main file alone."""
    files = entry.get("files")
    if isinstance(files, list) and files:
        return [f for f in files if isinstance(f, dict)]
    return [{"file": entry.get("file"), "sha256": entry.get("sha256"), "size": entry.get("size")}]


def verify_engine_files(directory: Path, entry: dict) -> str | None:
    """Why a ready engine's files do not all match its manifest entry (None: they do). Run
    before anything opens the engine: build parity, eval, profile and the runtime."""
    label = f"engine {entry.get('id', entry.get('file'))}"
    for record in engine_file_records(entry):
        problem = check_file_record(Path(directory), record, label)
        if problem:
            return problem
    return None


def verify_files(directory: Path, data: dict) -> list[str]:
    """Problems with the files the manifest names (unsafe path, missing, size or sha256
    mismatch), one line each, for the weights and every engine whose status is not
    'pending' (a pending engine's file need not exist yet). [] when all is well."""
    directory = Path(directory)
    problems: list[str] = []
    weights = data.get("weights")
    if isinstance(weights, dict):
        problem = check_file_record(directory, weights, "weights")
        if problem:
            problems.append(problem)
    for engine in data.get("engines") or []:
        if isinstance(engine, dict) and engine.get("status", "ready") != "pending":
            problem = verify_engine_files(directory, engine)
            if problem:
                problems.append(problem)
    return problems


# --------------------------------------------------------------------------- display


def human_count(n: Any) -> str:
    """12300000 -> '12.3M' (SI prefixes, for FLOPs and parameter counts)."""
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return "-"
    value = float(n)
    for unit in ("", "K", "M", "G", "T"):
        if abs(value) < 1000 or unit == "T":
            return f"{int(value)}" if unit == "" else f"{value:.1f}{unit}"
        value /= 1000
    return str(n)  # unreachable


def human_bytes(n: Any) -> str:
    """1536 -> '1.5 KiB'."""
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)  # unreachable


def _parity_text(parity: Any):
    from rich.text import Text

    if not isinstance(parity, dict):
        return Text("-", style="dim")
    passed = bool(parity.get("passed"))
    label = "pass" if passed else "FAIL"
    details = []
    if isinstance(parity.get("max_abs"), (int, float)):
        details.append(f"{parity['max_abs']:.1e}")
    if isinstance(parity.get("top1_agreement"), (int, float)):
        details.append(f"{100 * parity['top1_agreement']:.1f}%")
    text = Text(label, style="green" if passed else "bold red")
    if details:
        text.append(" " + " / ".join(details))
    return text


def engines_table(data: dict):
    """A rich Table of the manifest's engines (rich is imported only here)."""
    from rich.table import Table
    from rich.text import Text

    model = data.get("model") or {}
    device = data.get("device") or {}
    title = " on ".join(str(x) for x in (model.get("name"), device.get("target")) if x)
    table = Table(title=title or None)
    for name in ("id", "tokens", "width", "depth", "backend", "precision", "status"):
        table.add_column(name, justify="right" if name in ("tokens", "width", "depth") else "left")
    table.add_column("FLOPs", justify="right")
    table.add_column("params", justify="right")
    table.add_column("parity (max_abs / top-1)")
    table.add_column("size", justify="right")
    for engine in data.get("engines") or []:
        point = engine.get("point") or {}
        status = str(engine.get("status", "ready"))
        table.add_row(
            Text(str(engine.get("id", "?"))),
            *(Text(str(point.get(k, "?"))) for k in ("tokens", "width", "depth")),
            Text(str(engine.get("backend", "?"))),
            Text(str(engine.get("precision", "?"))),
            Text(status, style="yellow" if status == "pending" else ""),
            Text(human_count(engine.get("flops"))),
            Text(human_count(engine.get("params"))),
            _parity_text(engine.get("parity")),
            Text(human_bytes(engine.get("size"))),
        )
    return table
