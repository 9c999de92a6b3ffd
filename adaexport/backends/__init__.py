"""Inference backends: compile a static ONNX model into an engine, open it, run it.

    from adaexport.backends import compile_engine, open_artifact

    art = compile_engine("out/onnx/t32_w64_d4.onnx", "out/engines", "x86-cpu", "onnxruntime", "int8",
                         calibration_inputs=samples)
    with open_artifact(art.path) as session:
        logits, = session.run({"image": x})

The built-in backends are onnxruntime, openvino and tensorrt (one module each);
other packages add theirs through the ``adaexport.backends`` entry-point group.
Importing this package imports no backend library (nor torch or onnx).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..manifest_reader import as_engine, verify_engine_files
from .base import (
    ARTIFACT_SCHEMA,
    Artifact,
    Availability,
    Backend,
    BackendError,
    BackendUnavailable,
    CompileOptions,
    EngineIntegrityError,
    PlanMismatch,
    Session,
)
from .registry import BUILTIN_BACKENDS, ENTRY_POINT_GROUP, backend_names, get_backend, open_artifact

__all__ = [
    "ARTIFACT_SCHEMA", "BUILTIN_BACKENDS", "ENTRY_POINT_GROUP", "Artifact", "Availability", "Backend",
    "BackendError", "BackendUnavailable", "CompileOptions", "EngineChoice", "EngineIntegrityError", "PlanMismatch",
    "Session",
    "available_backends", "backend_names", "backend_versions", "compile_engine", "compile_or_defer",
    "engine_choices", "finish_pending", "get_backend", "is_family_onnx", "lint_engine", "open_artifact", "open_engine",
    "pending_engine", "verify_engines",
]


def open_engine(directory: str | os.PathLike, entry, threads: int | None = None,
                providers: list[str] | None = None, weights=None) -> Session:
    """The one way to open an engine of a build's manifest (an ``EngineRecord``, or its JSON
    entry): build parity, eval, profiling, `adaexport compile` and the runtime all come here,
    so what is measured is what serves.

    The ONNX Runtime fp32 engine is the family's ``.onnx`` itself (it keeps the shared
    weights file, and has no sidecar); every other engine opens through its artifact's
    sidecar. ``threads``: None keeps each engine's own default (the family ONNX one intra-op
    thread, as the build's parity check runs it; compiled engines their sidecar's); a number
    (0: the backend's default) pins the intra-op threads of either kind. ``weights``: the
    family's ``ort_prepacked.PrepackedFamily``: a family ONNX then opens from that cache
    (its prepacked weights mapped from the one file all the family's sessions map, same
    kernels and outputs as a plain session). The session's ``options`` say what it runs
    with, ``options["sharing"]`` how it shares its weights (None: it does not).

    Every file the engine reads is first checked against the manifest entry's sha256 and
    size (EngineIntegrityError when one differs): what is measured is what was built."""
    engine = as_engine(entry)
    verify_engines(directory, [engine])
    path = Path(directory) / engine.file
    if engine.is_family_onnx:
        from .onnxruntime_backend import OrtSession

        runtime = {"intra_op_num_threads": 1 if threads is None else threads, "graph_optimization_level": "all",
                   "providers": providers or ["CPUExecutionProvider"]}
        if weights is not None:
            return OrtSession(weights.model(engine.id), runtime, sharing=weights.describe())
        return OrtSession(path, runtime)
    overrides: dict[str, Any] = {}
    backend = get_backend(engine.backend)
    if threads is not None and backend.thread_option:
        overrides[backend.thread_option] = threads
    if providers and backend.accepts_providers:
        overrides["providers"] = providers
    return open_artifact(path, **overrides)


def is_family_onnx(entry) -> bool:
    """The ONNX Runtime fp32 engine that is the exported .onnx itself (no sidecar)."""
    return as_engine(entry).is_family_onnx


def verify_engines(directory: str | os.PathLike, entries: list) -> None:
    """EngineIntegrityError naming the first of these manifest engines one of whose files is
    missing or differs from its recorded sha256 and size (eval and profile check every
    engine before they start, open_engine each one as it opens it)."""
    for entry in entries:
        problem = verify_engine_files(Path(directory), entry)
        if problem:
            raise EngineIntegrityError(f"{problem}; rebuild it (adaexport build) instead of using it")


def _target(target):
    if isinstance(target, str) or target is None:
        from ..targets import get_target

        return get_target(target)
    return target


def available_backends(precision: str | None = None) -> dict[str, Availability]:
    """Every known backend and whether it can be used here (with the reason when not)."""
    out = {}
    for name in backend_names():
        try:
            out[name] = get_backend(name).available(precision)
        except BackendError as exc:
            out[name] = Availability.no(str(exc))
    return out


def backend_versions(names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Version facts of the available backends among `names` (default: all), for the manifest."""
    facts = {}
    for name in names or backend_names():
        backend = get_backend(name)
        if backend.available():
            try:
                facts[name] = backend.versions()
            except Exception as exc:  # noqa: BLE001 - a broken install must not stop a build
                facts[name] = {"error": str(exc)}
    return facts


@dataclasses.dataclass(frozen=True)
class EngineChoice:
    backend: str
    precision: str
    availability: Availability
    deferred: bool = False        # tensorrt without TensorRT here: built later on the device


def engine_choices(target, *, defer_tensorrt: bool = True) -> list[EngineChoice]:
    """The target's (backend, precision) pairs in order of preference, with whether each can
    be compiled here; engines of a backend that ``defers`` (TensorRT) that cannot be built
    here are `deferred` (pending) when `defer_tensorrt`."""
    target = _target(target)
    choices = []
    for engine in target.engines:
        try:
            backend = get_backend(engine.backend)
        except BackendError as exc:
            choices += [EngineChoice(engine.backend, p, Availability.no(str(exc))) for p in engine.precisions]
            continue
        for precision in engine.precisions:
            state = backend.available(precision)
            deferred = bool(not state and defer_tensorrt and backend.defers)
            choices.append(EngineChoice(engine.backend, precision, state, deferred))
    return choices


def _options(out_dir, calibration_inputs, options: CompileOptions | None, kw: dict) -> CompileOptions:
    if options is not None:
        return dataclasses.replace(options, out_dir=Path(out_dir),
                                   calibration=calibration_inputs if calibration_inputs is not None
                                   else options.calibration, **kw)
    return CompileOptions(out_dir=Path(out_dir), calibration=calibration_inputs, **kw)


def compile_engine(onnx_path: str | os.PathLike, out_dir: str | os.PathLike, target, backend_name: str,
                   precision: str, calibration_inputs: np.ndarray | None = None, *,
                   options: CompileOptions | None = None, **kw: Any) -> Artifact:
    """Compile one ONNX model (one point of the family) for `target` (a Target or a name)
    with `backend_name` at `precision` into out_dir, atomically; returns the Artifact.

    int8 needs `calibration_inputs`: real preprocessed samples (N, C, H, W) float32, e.g.
    adaexport.datasets.model_inputs(spec, config, limit=N)[0]. Other keyword arguments
    are CompileOptions fields (threads, timing_cache, dla_core, workspace_mb, name, ...)."""
    return get_backend(backend_name).compile(Path(onnx_path), _target(target), precision,
                                             _options(out_dir, calibration_inputs, options, kw))


def pending_engine(onnx_path: str | os.PathLike, out_dir: str | os.PathLike, target, precision: str,
                   calibration_inputs: np.ndarray | None = None, *, options: CompileOptions | None = None,
                   **kw: Any) -> Artifact:
    """Record a TensorRT engine to be built on the device (cross-building without TensorRT):
    prepares the ONNX it parses (the calibrated QDQ model for int8) and writes its sidecar with
    status "pending" and the command that finishes it (artifact.facts["finish"])."""
    backend = get_backend(kw.pop("backend_name", "tensorrt"))
    return backend.pending(Path(onnx_path), _target(target), precision,
                           _options(out_dir, calibration_inputs, options, kw))


def compile_or_defer(onnx_path, out_dir, target, backend_name: str, precision: str,
                     calibration_inputs: np.ndarray | None = None, **kw: Any) -> Artifact:
    """compile_engine, except that a TensorRT engine that cannot be built here is recorded
    as pending (pending_engine) instead of failing."""
    backend = get_backend(backend_name)
    if backend.defers and not backend.available(precision):
        return pending_engine(onnx_path, out_dir, target, precision, calibration_inputs, backend_name=backend_name,
                              **kw)
    return compile_engine(onnx_path, out_dir, target, backend_name, precision, calibration_inputs, **kw)


def finish_pending(artifact: Artifact | str | os.PathLike, target=None, **kw: Any) -> Artifact:
    """Build a pending TensorRT engine on this device (what `adaexport compile DIR` runs)."""
    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    backend = get_backend(art.backend)
    if not backend.defers or art.status != "pending":
        raise BackendError(f"{art.path.name} is a {art.status} {art.backend} engine, not a pending one")
    options = CompileOptions(out_dir=art.root, **kw) if kw else None
    return backend.finish_pending(art, _target(target) if target is not None else None, options)


def lint_engine(onnx_path: str | os.PathLike, backend_name: str, precision: str | None = None, *,
                dla_core: int | None = None, version: str | None = None) -> list[str]:
    """Problems that keep the ONNX at `onnx_path` from compiling with `backend_name` (empty: none),
    checked against the installed backend's version when there is one, else the oldest
    version we build with (TensorRT 8.6 rules for a cross-build)."""
    from .lint import lint_onnx

    if version is None:
        backend = get_backend(backend_name)
        if backend.available():
            try:
                version = backend.versions().get(backend_name)
            except Exception:  # noqa: BLE001 - a version we cannot read means: the conservative rules
                version = None
    return lint_onnx(onnx_path, backend_name, version, precision=precision, dla=dla_core is not None)
