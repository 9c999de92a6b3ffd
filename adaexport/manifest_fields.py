"""How the manifest's records (``adaexport.manifest_records``) read and write JSON.

Standard library only: the embedded runtime reads the manifest through these records on a
device that has neither jsonschema nor numpy. ``Manifest.from_json`` checks the type (and
range) of every field a record models and raises ``ManifestError`` with the field's JSON
path, in one line; the toolchain additionally validates the whole document against the
packaged JSON Schema with jsonschema (``adaexport.manifest``).

Every record keeps the fields it does not model in ``unknown`` and remembers the order
its keys came in, so ``Manifest.from_json(d).to_json() == d`` for any valid ``d`` (and
the written bytes keep the order the writer chose): the file format does not change
when a consumer reads and writes it back.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import PurePosixPath
from typing import Any, Callable, ClassVar
from .errors import ManifestError  # noqa: F401 - defined with the other user errors

SCHEMA_ID = "adaexport.manifest/1"
DEFAULT_MODE = "default"          # the power mode of a device that has none
FLOPS_FRONT = "flops"             # the pareto front ranked by FLOPs

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def format_path(path: tuple) -> str:
    """A JSON path as the error messages write it: ``$.engines[0].point.tokens``."""
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.match(part):
            out += f".{part}"
        else:
            out += f"[{json.dumps(part)}]"
    return out


def short(value: Any, limit: int = 60) -> str:
    """``value`` as JSON, cut to ``limit`` characters (for one-line messages)."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def path_problem(rel: Any) -> str | None:
    """Why ``rel`` is not a safe '/'-separated relative path (textual checks only), or None."""
    if not isinstance(rel, str):
        return f"expected a string, got {short(rel)}"
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


def check_finite(value: Any, path: tuple = ()) -> None:
    """ManifestError naming the first number JSON cannot hold: an overflowing literal such
    as ``1e999`` parses to infinity, which no manifest may contain."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ManifestError(f"{format_path(path)}: {value} is not allowed in JSON (use a finite number or null)")
    if isinstance(value, dict):
        for key, item in value.items():
            check_finite(item, path + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_finite(item, path + (i,))


def _fail(path: tuple, message: str):
    raise ManifestError(f"{format_path(path)}: {message}")


# --------------------------------------------------------------------------- field readers
# Each takes (value, path) and returns the value as the record holds it, or raises.

Reader = Callable[[Any, tuple], Any]


def any_json(value, path):
    return value


def text(value, path):
    if not isinstance(value, str):
        _fail(path, f"expected string, got {short(value)}")
    return value


def nonempty(value, path):
    if not text(value, path):
        _fail(path, "must not be empty")
    return value


def sha256(value, path):
    if not isinstance(value, str) or not _SHA256.match(value):
        _fail(path, f"{short(value)} is not a sha256 hex digest (64 hex characters)")
    return value


def matching(pattern: str, title: str) -> Reader:
    compiled = re.compile(pattern)

    def read(value, path):
        if not isinstance(value, str) or not compiled.search(value):
            _fail(path, f"{short(value)} is not {title}")
        return value
    return read


def boolean(value, path):
    if not isinstance(value, bool):
        _fail(path, f"expected boolean, got {short(value)}")
    return value


def integer(minimum: int | None = None) -> Reader:
    def read(value, path):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(path, f"expected integer, got {short(value)}")
        if minimum is not None and value < minimum:
            _fail(path, f"must be >= {minimum}, got {value}")
        return value
    return read


def number(minimum: float | None = None, maximum: float | None = None, above: float | None = None) -> Reader:
    def read(value, path):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            _fail(path, f"expected a finite number, got {short(value)}")
        if above is not None and value <= above:
            _fail(path, f"must be > {above}, got {value}")
        if minimum is not None and value < minimum:
            _fail(path, f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            _fail(path, f"must be <= {maximum}, got {value}")
        return value
    return read


def one_of(*choices: str) -> Reader:
    def read(value, path):
        if value not in choices:
            _fail(path, f"must be one of {', '.join(short(c) for c in choices)}; got {short(value)}")
        return value
    return read


def optional(inner: Reader) -> Reader:
    return lambda value, path: None if value is None else inner(value, path)


def list_of(inner: Reader, min_items: int = 0, max_items: int | None = None) -> Reader:
    def read(value, path):
        if not isinstance(value, (list, tuple)):
            _fail(path, f"expected array, got {short(value)}")
        if len(value) < min_items:
            _fail(path, f"expected at least {min_items} item(s), got {len(value)}")
        if max_items is not None and len(value) > max_items:
            _fail(path, f"expected at most {max_items} item(s), got {len(value)}")
        return [inner(item, path + (i,)) for i, item in enumerate(value)]
    return read


def dict_of(inner: Reader) -> Reader:
    def read(value, path):
        if not isinstance(value, dict):
            _fail(path, f"expected object, got {short(value)}")
        return {key: inner(item, path + (key,)) for key, item in value.items()}
    return read


def record(cls) -> Reader:
    return lambda value, path: cls.from_json(value, path)


def field(read: Reader = any_json, *, required: bool = False, default: Any = None, factory=None):
    """A record field: how its JSON value is read, and whether the JSON must have it."""
    meta = {"read": read, "required": required}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _to_json(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value


@dataclasses.dataclass(kw_only=True)
class Record:
    """Base of the records: reading from and writing to JSON, unknown fields kept in order."""
    unknown: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)
    key_order: tuple = dataclasses.field(default=(), repr=False, compare=False)
    KEYS: ClassVar[dict[str, str]] = {}       # attribute -> JSON key, where they differ
    CLOSED: ClassVar[bool] = False            # True: fields other than the modelled ones are refused

    @classmethod
    def _key(cls, name: str) -> str:
        return cls.KEYS.get(name, name)

    @classmethod
    def _fields(cls):
        return [f for f in dataclasses.fields(cls) if f.name not in ("unknown", "key_order")]

    @classmethod
    def from_json(cls, data: Any, path: tuple = ()):
        if not isinstance(data, dict):
            _fail(path, f"expected object, got {short(data)}")
        values = {}
        for f in cls._fields():
            key = cls._key(f.name)
            if key in data:
                values[f.name] = f.metadata["read"](data[key], path + (key,))
            elif f.metadata.get("required"):
                _fail(path, f"missing required field {short(key)}")
        known = {cls._key(f.name) for f in cls._fields()}
        unknown = {k: v for k, v in data.items() if k not in known}
        if unknown and cls.CLOSED:
            _fail(path, f"unexpected field(s) {', '.join(short(k) for k in unknown)}")
        return cls(**values, unknown=unknown, key_order=tuple(data))

    def __setattr__(self, name: str, value: Any) -> None:
        """A field set on a record read from JSON joins its keys after the others (as a key
        added to a dict would); an empty value adds nothing."""
        object.__setattr__(self, name, value)
        order = self.__dict__.get("key_order")
        if order and not _empty(value) and name not in ("unknown", "key_order") \
                and name in self.__dataclass_fields__ and self._key(name) not in order:
            object.__setattr__(self, "key_order", order + (self._key(name),))

    def to_json(self) -> dict:
        """The record as JSON: a record read from JSON writes every key it was read with, then
        the fields set since, in that order (as a dict would); a record made in code writes
        every field, null ones included."""
        out = {}
        made_here = not self.key_order
        for f in self._fields():
            key, value = self._key(f.name), getattr(self, f.name)
            if made_here or key in self.key_order or not _empty(value):
                out[key] = _to_json(value)
        out.update(_to_json(self.unknown))
        order = {k: i for i, k in enumerate(self.key_order)}
        return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], len(order))))


def _empty(value) -> bool:
    return value is None or (isinstance(value, (dict, list, tuple)) and not value)

