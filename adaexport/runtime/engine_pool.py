"""Opening a family's engines: verified once, opened eagerly or on first use, weights shared.

* Every file an engine reads (``files`` in its manifest entry: main file, the backend's
  other files, the sidecar, the shared weights) is checked against the manifest's size
  and sha256 at start-up and again just before the engine opens (a lazy engine may open
  long after start-up; an unchanged file costs a ``stat`` then, see adaexport.hashing).
  The shared weights buffer is hashed as read, so the bytes served are the bytes checked.
  An engine that fails is recorded with the reason and never opened, the others serve.
* The ONNX Runtime fp32 engines are the family's ``onnx/*.onnx`` files, whose large
  tensors live in the shared ``weights.bin``. With ``share_weights`` the pool reads that
  file once into one buffer and hands each session its MatMul/Gemm/Conv weights as
  OrtValues viewing that buffer (``SessionOptions.add_initializer``); a narrower width
  reads a prefix of the same bytes, so every point views the same memory. MLAS
  prepacking is switched off for those sessions, since a prepacked copy per session is
  what sharing avoids (the benchmark measures what that costs in latency).
* Compiled engines open through ``adaexport.backends.open_artifact`` (their sidecar says
  how), importing only their own backend.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import Artifact, BackendError, open_artifact
from ..hashing import sha256_bytes
from ..manifest import ManifestError, check_file_record, safe_relative_path, verify_engine_files
from .onnx_tensors import shareable_tensors

_BACKEND_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}


class EngineUnavailable(RuntimeError):
    """An engine that cannot serve (bad file, missing backend, failed to open); one line."""


def is_family_onnx(entry: dict) -> bool:
    """The ONNX Runtime fp32 engine that is the exported .onnx itself (no sidecar)."""
    return entry.get("backend") == "onnxruntime" and entry.get("precision") == "fp32" \
        and str(entry.get("file", "")).endswith(".onnx") and "extra" not in entry


class SharedWeights:
    """The family's weights file in one buffer, and one OrtValue per distinct tensor view."""

    def __init__(self, path: Path, sha256: str | None = None):
        self.path = Path(path)
        self.buffer = np.fromfile(self.path, dtype=np.uint8)
        if sha256 is not None and sha256_bytes(self.buffer) != sha256:
            raise EngineUnavailable(f"the shared weights file {self.path.name} does not match the manifest's "
                                    "sha256 (modified?)")
        self._values: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def value(self, tensor) -> Any:
        import onnxruntime as ort

        key = (tensor.offset, tensor.length, tensor.dtype, tensor.shape)
        with self._lock:
            found = self._values.get(key)
            if found is None:
                dtype = np.dtype(tensor.dtype)
                if tensor.offset + tensor.length > self.buffer.size or tensor.length % dtype.itemsize:
                    raise EngineUnavailable(f"tensor {tensor.name} lies outside {self.path.name}")
                view = np.frombuffer(self.buffer, dtype=dtype, count=tensor.length // dtype.itemsize,
                                     offset=tensor.offset).reshape(tensor.shape)
                found = self._values[key] = (ort.OrtValue.ortvalue_from_numpy(view), view)
            return found[0]

    @property
    def views(self) -> int:
        return len(self._values)


class FamilyOnnxSession:
    """An ONNX Runtime session over a family .onnx, its weights optionally shared."""

    def __init__(self, path: Path, weights: SharedWeights | None, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or 0)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.shared: list[str] = []
        if weights is not None:
            try:
                tensors = shareable_tensors(path)
            except (OSError, ValueError) as exc:
                raise EngineUnavailable(f"{path.name}: cannot read its tensor table ({exc})") from None
            for tensor in tensors:
                if tensor.location != weights.path.name:
                    continue
                options.add_initializer(tensor.name, weights.value(tensor))
                self.shared.append(tensor.name)
            if self.shared:
                options.add_session_config_entry("session.disable_prepacking", "1")
        try:
            self._session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types
            raise EngineUnavailable(f"onnxruntime could not open {path.name}: {exc}") from None
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]
        self.input_shape = list(self._session.get_inputs()[0].shape)

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(self.output_names, inputs)

    def close(self) -> None:
        self._session = None


@dataclasses.dataclass
class EngineState:
    id: str
    entry: dict
    problem: str | None = None       # why it cannot serve (None: it can)
    session: Any = None
    load_ms: float | None = None     # open + first inference, as the profile's load_ms
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)


class EnginePool:
    def __init__(self, directory: Path, manifest: dict, *, backends: list[str] | None = None,
                 share_weights: bool = True, threads: int | None = None, clock=None):
        import time

        self.directory = Path(directory)
        self.manifest = manifest
        self.share_weights = share_weights
        self.threads = threads if threads is not None else _target_threads(manifest)
        self._clock = clock or time.perf_counter
        self._weights: SharedWeights | None = None
        self._weights_lock = threading.Lock()
        self.engines: dict[str, EngineState] = {}
        weights_problem = self._check_weights()
        for entry in manifest.get("engines", []):
            state = EngineState(entry["id"], entry)
            state.problem = self._check_engine(entry, backends, weights_problem)
            self.engines[entry["id"]] = state

    # ---------------------------------------------------------------- verification

    def _check_weights(self) -> str | None:
        return check_file_record(self.directory, self.manifest.get("weights") or {}, "the shared weights")

    def _check_engine(self, entry: dict, backends, weights_problem) -> str | None:
        if entry.get("status", "ready") != "ready":
            return f"the engine is {entry.get('status')} (build it on the device: adaexport compile)"
        backend = entry.get("backend")
        if backends is not None and backend not in backends:
            return f"backend {backend} not selected"
        module = _BACKEND_MODULES.get(backend)
        if module is not None and importlib.util.find_spec(module) is None:
            return f"backend {backend} is not installed here"
        return self._check_files(entry, weights_problem)

    def _check_files(self, entry: dict, weights_problem: str | None = None) -> str | None:
        """Why the engine's files are not the ones its manifest entry recorded (None: they are)."""
        problem = verify_engine_files(self.directory, entry)
        if problem:
            return problem
        if is_family_onnx(entry):
            return weights_problem
        try:
            Artifact.load(safe_relative_path(self.directory, entry["file"])).verify()
        except (BackendError, ManifestError) as exc:
            return str(exc)
        return None

    # ---------------------------------------------------------------- opening

    def usable(self) -> list[str]:
        return [eid for eid, s in self.engines.items() if s.problem is None]

    def problems(self) -> dict[str, str]:
        return {eid: s.problem for eid, s in self.engines.items() if s.problem is not None}

    def weights(self) -> SharedWeights | None:
        if not self.share_weights:
            return None
        with self._weights_lock:
            if self._weights is None:
                weights = self.manifest["weights"]
                self._weights = SharedWeights(safe_relative_path(self.directory, weights["file"]), weights["sha256"])
            return self._weights

    def get(self, engine_id: str):
        """The engine's session, opened now if it is not yet; EngineUnavailable if it cannot be
        (the reason is recorded, so the runtime stops choosing it)."""
        state = self.engines[engine_id]
        if state.session is not None:
            return state.session
        if state.problem is not None:
            raise EngineUnavailable(f"{engine_id}: {state.problem}")
        with state.lock:
            if state.session is None and state.problem is None:
                start = self._clock()
                try:
                    problem = self._check_files(state.entry, None)   # again: a lazy open comes later
                    if problem:
                        raise EngineUnavailable(problem)
                    session = self._open(state.entry)
                    self._warm_up(session)
                    state.session = session
                except (EngineUnavailable, BackendError, OSError) as exc:
                    state.problem = str(exc)
                    raise EngineUnavailable(f"{engine_id}: {exc}") from None
                state.load_ms = (self._clock() - start) * 1000.0
        if state.session is None:
            raise EngineUnavailable(f"{engine_id}: {state.problem}")
        return state.session

    def _warm_up(self, session) -> None:
        """One inference on zeros: the first run of a session allocates and plans, so a switch
        to a preloaded engine should not pay for it."""
        spec = (self.manifest.get("model") or {}).get("input") or {}
        shape = spec.get("shape")
        if not shape or not all(isinstance(d, int) for d in shape):
            return
        try:
            session.run({spec.get("name", "image"): np.zeros(shape, dtype=np.float32)})
        except Exception as exc:  # noqa: BLE001 - an engine that cannot run must not serve
            raise EngineUnavailable(f"the engine fails on a test input ({exc})") from None

    def _open(self, entry: dict):
        path = safe_relative_path(self.directory, entry["file"])
        if is_family_onnx(entry):
            return FamilyOnnxSession(path, self.weights(), self.threads)
        return open_artifact(path)

    def is_open(self, engine_id: str) -> bool:
        return self.engines[engine_id].session is not None

    def close(self) -> None:
        for state in self.engines.values():
            session, state.session = state.session, None
            if session is not None:
                session.close()


def _target_threads(manifest: dict) -> int:
    facts = (manifest.get("device") or {}).get("target_facts") or {}
    threads = facts.get("threads")
    return int(threads) if isinstance(threads, int) and threads > 0 else 0
