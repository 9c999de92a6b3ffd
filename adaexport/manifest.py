"""The build manifest on the toolchain side: the JSON Schema (validated by jsonschema),
reading and writing DIR/manifest.json.

The records and the stdlib reader the runtime uses live in ``manifest_records`` and
``manifest_reader`` (re-exported here). Writing checks a document twice: the records'
own field checks (always) and the packaged JSON Schema through jsonschema (when it is
installed: it is a toolchain dependency; a device that runs ``adaexport compile``
without it still gets the records' checks). Errors are one line naming the JSON path.
"""

from __future__ import annotations

import copy
import datetime
import functools
import importlib.resources
import json
import math
import numbers
import os
import platform
from pathlib import Path
from typing import Any

from .atomic import write_bytes_atomic
from .hashing import sha256_file  # noqa: F401 - the one file hasher, re-exported
from .manifest_fields import SCHEMA_ID, ManifestError, format_path, path_problem, short
from .manifest_reader import (  # noqa: F401 - the reader's names, re-exported
    MANIFEST_NAME, as_manifest, check_file_record, check_paths, engine_file_records, load_manifest, parse_json,
    read_manifest_text, safe_relative_path, verify_engine_files, verify_files,
)
from .manifest_records import EngineRecord, FileRecord, Manifest  # noqa: F401

__all__ = ["MANIFEST_NAME", "SCHEMA_ID", "Manifest", "ManifestError", "check_file_record", "host_info",
           "load_manifest", "load_schema", "parse_json", "read_manifest", "read_records", "safe_relative_path", "utc_now",
           "validate", "verify_engine_files", "verify_files", "write_manifest"]


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


# --------------------------------------------------------------------------- a build's manifest


def new_manifest(*, model: dict, device: dict, build: dict, weights: FileRecord, engines: list[EngineRecord],
                 version: str) -> Manifest:
    """The manifest of a build made now by adaexport ``version``, as records (its sections
    from ``manifest_model``, ``manifest_device`` and ``manifest_build``)."""
    return Manifest.from_json({
        "schema": SCHEMA_ID, "tool": {"name": "adaexport", "version": version}, "created": utc_now(),
        "model": model, "device": device, "build": build, "weights": weights.to_json(),
        "engines": [e.to_json() for e in engines]})


def manifest_model(*, name: str, sha256: str, attention: str, batch: int, cfg) -> dict:
    """The manifest's ``model``: a checkpoint's name and hash, and what its config
    (``model.config.AdaPerceiverConfig``) says of the engines' input and outputs."""
    return {
        "name": name, "sha256": sha256,
        "task": "classification+features" if cfg.distilled else "classification",
        "attention": attention,
        "input": {"name": "image", "shape": [batch, cfg.in_channels, cfg.img_size, cfg.img_size],
                  "dtype": "float32", "layout": "NCHW", "preprocessing": cfg.preprocessing_spec()},
        "outputs": [{"name": "logits", "shape": [batch, cfg.num_classes], "dtype": "float32"}]
        + ([{"name": "features", "shape": [batch, cfg.num_patches, cfg.output_feat_dim],
             "dtype": "float32"}] if cfg.distilled else []),
        "trained_grid": {"tokens": list(cfg.mask_token_grans), "widths": list(cfg.mat_dims),
                         "depths": list(range(1, cfg.depth + 1))},
        **({"class_names": list(cfg.class_names)} if cfg.class_names else {}),
    }


def manifest_device(*, target: str, backends: dict[str, str], toolchain: dict[str, str], target_facts: dict) -> dict:
    """The manifest's ``device``: the target built for, this host, the backend and toolchain versions."""
    return {"target": target, "host": host_info(), "backends": backends, "toolchain": toolchain,
            "target_facts": target_facts}


def manifest_build(*, profile, dataset: str | None, batch: int, exporter: str, skipped: list[dict],
                  parity_samples: int | None, selection: dict | None) -> dict:
    """The manifest's ``build``: how it was built (``profile``: the profiles.BuildProfile, its
    full text kept; ``dataset`` None: no parity run; only what applies is written)."""
    return {"profile": profile.name, **profile.manifest_record(), "dataset": dataset, "batch": batch,
            "exporter": exporter, **({"skipped": skipped} if skipped else {}),
            **({"parity_samples": parity_samples} if parity_samples is not None else {}),
            **({"selection": selection} if selection else {})}


# --------------------------------------------------------------------------- validation


@functools.lru_cache(maxsize=None)
def _validator():
    import jsonschema

    return jsonschema.Draft202012Validator(_schema())


def jsonschema_available() -> bool:
    try:
        import jsonschema  # noqa: F401
    except ImportError:
        return False
    return True


def _describe(error) -> str:
    """One line for a jsonschema error (its own message can quote a whole manifest)."""
    keyword, value, instance = error.validator, error.validator_value, error.instance
    if keyword == "required":
        missing = [name for name in value if isinstance(instance, dict) and name not in instance]
        return f"missing required field {short(missing[0] if missing else value)}"
    if keyword == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        return f"unexpected field(s) {', '.join(short(n) for n in instance if n not in known)}"
    if keyword == "type":
        types = [value] if isinstance(value, str) else list(value)
        return f"expected {' or '.join(types)}, got {short(instance)}"
    if keyword == "pattern":
        if value == _schema()["$defs"]["relpath"]["pattern"]:
            return f"unsafe path {short(instance, 1000)}: {path_problem(instance) or 'not a safe relative path'}"
        if "title" in error.schema:
            return f"{short(instance)} is not {error.schema['title']}"
    if keyword in ("enum", "const"):
        choices = value if keyword == "enum" else [value]
        return f"must be one of {', '.join(short(v) for v in choices)}; got {short(instance)}"
    if keyword in ("minimum", "maximum", "exclusiveMinimum", "minItems", "maxItems", "minLength"):
        return f"fails {keyword} {short(value)}: got {short(instance)}"
    return f"fails {keyword!r} ({short(value)})"


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
            raise ManifestError(f"{format_path(path)}: {value} is not allowed in JSON (use a finite number or null)")
        return value
    if isinstance(value, Manifest):
        return _to_json(value.to_json(), path)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ManifestError(f"{format_path(path)}: object key {key!r} is not a string")
            out[key] = _to_json(item, path + (key,))
        return out
    if isinstance(value, (list, tuple)):
        return [_to_json(item, path + (i,)) for i, item in enumerate(value)]
    raise ManifestError(f"{format_path(path)}: a {type(value).__name__} cannot be written to JSON")


def validate(data: Any) -> Manifest:
    """The manifest as records; ManifestError naming the first problem (JSON path and
    message): the JSON Schema through jsonschema (when installed), then the records'
    checks and the rules a schema cannot state (unique ids, pareto ids that exist)."""
    data = _to_json(data)
    if isinstance(data, dict) and "schema" in data and data["schema"] != SCHEMA_ID:
        raise ManifestError(f"$.schema: unsupported manifest schema {short(data['schema'])} "
                            f"(this adaexport reads {SCHEMA_ID!r})")
    if jsonschema_available():
        errors = list(_validator().iter_errors(data))
        if errors:  # the shallowest problem; ties go to the first found
            error = min(errors, key=lambda e: len(e.absolute_path))
            raise ManifestError(f"{format_path(tuple(error.absolute_path))}: {_describe(error)}")
    return Manifest.from_json(data)


def _read(directory: Path) -> tuple[dict, Manifest]:
    path, data = read_manifest_text(directory)
    try:
        manifest = validate(data)
        check_paths(Path(directory), data)
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from None
    return data, manifest


def read_manifest(directory: Path) -> dict:
    """Read, validate and path-check DIR/manifest.json (the JSON document)."""
    return _read(directory)[0]


def read_records(directory: Path) -> Manifest:
    """DIR/manifest.json as records, validated (JSON Schema and records) and path-checked."""
    return _read(directory)[1]


def write_manifest(directory: Path, data: dict | Manifest) -> Path:
    """Validate ``data`` and write it to DIR/manifest.json atomically (``atomic.py``: the
    old manifest or the new one, never a part, no temporary file left); returns the path."""
    directory = Path(directory)
    doc = _to_json(data)
    validate(doc)
    text = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    target = directory / MANIFEST_NAME
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ManifestError(f"{directory}: cannot create the build directory ({exc})") from None
    check_paths(directory, doc)
    try:
        mode = target.stat().st_mode & 0o777
    except OSError:
        mode = 0o644
    try:
        write_bytes_atomic(target, text.encode("utf-8"), mode=mode)
    except OSError as exc:
        raise ManifestError(f"{target}: cannot write ({exc})") from None
    return target
