"""The registry of backends: the built-in ones and those other packages register through
the ``adaexport.backends`` entry-point group (a ``name = "module:Class"`` entry; see
pyproject.toml), one instance per process, and opening an artifact with the backend that
made it. The built-in ones are known without installed metadata.

This module imports the standard library and `base` only."""

from __future__ import annotations

import importlib
import os
from typing import Any

from .base import Artifact, Backend, BackendError, Session

ENTRY_POINT_GROUP = "adaexport.backends"

BUILTIN_BACKENDS = {
    "onnxruntime": "adaexport.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "openvino": "adaexport.backends.openvino_backend:OpenVinoBackend",
    "tensorrt": "adaexport.backends.tensorrt_backend:TensorRtBackend",
}


_INSTANCES: dict[str, Backend] = {}


def _entry_points() -> dict[str, str]:
    """name -> "module:attr" of the installed adaexport.backends entry points."""
    try:
        from importlib.metadata import entry_points
    except ImportError:  # pragma: no cover
        return {}
    try:
        found = entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:  # pragma: no cover - Python < 3.10 API
        found = entry_points().get(ENTRY_POINT_GROUP, [])
    return {ep.name: ep.value for ep in found}


def backend_names() -> list[str]:
    """Every known backend: the built-in ones, then those other packages registered."""
    names = list(BUILTIN_BACKENDS)
    names += sorted(n for n in _entry_points() if n not in BUILTIN_BACKENDS)
    return names


def get_backend(name: str) -> Backend:
    """The backend called `name` (one instance per process). Importing a backend module
    imports none of its libraries: they load when used."""
    if name in _INSTANCES:
        return _INSTANCES[name]
    spec = _entry_points().get(name) or BUILTIN_BACKENDS.get(name)
    if spec is None:
        raise BackendError(f"unknown backend {name!r} (known: {', '.join(backend_names())})")
    module_name, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise BackendError(f"backend {name!r}: cannot load {spec} ({exc})") from None
    backend = obj() if isinstance(obj, type) else obj
    if not isinstance(backend, Backend):
        raise BackendError(f"backend {name!r}: {spec} is not an adaexport Backend")
    _INSTANCES[name] = backend
    return backend


def open_artifact(artifact: "Artifact | str | os.PathLike", **overrides: Any) -> Session:
    """Open an artifact (or the path of its main file) with the backend that made it."""
    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    if art.status != "ready":
        raise BackendError(f"{art.path.name}: the engine is {art.status}; "
                           f"{art.facts.get('finish', 'build it on the device first')}")
    return get_backend(art.backend).open(art, **overrides)
