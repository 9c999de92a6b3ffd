"""Opening a family's engines: verified once, opened eagerly or on first use, weights shared.

* Every file an engine reads (``files`` in its manifest entry: main file, the backend's
  other files, the sidecar, the shared weights) is checked against the manifest's size
  and sha256 at start-up and again just before the engine opens (a lazy engine may open
  long after start-up; an unchanged file costs a ``stat`` then, see adaexport.hashing).
  The shared weights buffer is hashed as read, so the bytes served are the bytes checked.
  An engine that fails is recorded with the reason and never opened, the others serve.
* The ONNX Runtime fp32 engines are the family's ``onnx/*.onnx`` files, whose large
  tensors live in the shared ``weights.bin``. With ``share_weights`` (the default) they
  open from the family's prepacked cache (``backends.ort_prepacked``, built on this device
  on first use): every session maps its prepacked weights from one deduplicated file, so
  a tensor several points use is resident once, and runs the kernels a plain session runs.
  Where the cache cannot be made the engines open plain, and ``sharing()`` says why.
  Which engines share is what the manifest records (``weight_sharing``, from the backend
  at build time; derived for a manifest written before it was); other backends' engines
  hold their own weights and ``sharing()`` gives the record's reason. ``spans()`` says
  which pages of the cache an engine maps, so the runtime counts them once
  (``runtime.memory``).
* Every engine opens through ``adaexport.backends.open_engine``, the one factory parity,
  eval and profiling use too, with the SessionArgs the runtime chose for it (by default
  the options its profile was measured with), importing only its own backend.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import open_engine
from ..backends.base import Artifact, BackendError
from ..backends.ort_prepacked import GROUP, SHARING, PrepackedFamily
from ..backends.registry import get_backend
from ..manifest_reader import ManifestError, check_file_record, safe_relative_path, verify_engine_files
from ..manifest_records import EngineRecord, Manifest, WeightSharing


class EngineUnavailable(RuntimeError):
    """An engine that cannot serve (bad file, missing backend, failed to open); one line."""


def recorded_sharing(entry: EngineRecord) -> WeightSharing:
    """How the manifest says the engine shares its weights; for a manifest written before
    that was recorded, what that build's engines do: the family ONNX engines share through
    the prepacked cache, every other engine holds its own weights."""
    if entry.weight_sharing is not None:
        return entry.weight_sharing
    if entry.is_family_onnx:
        return WeightSharing.from_json(SHARING)
    return WeightSharing(group=None, how=f"not shared: a {entry.backend} engine holds its own weights")


def shares_prepacked(entry: EngineRecord) -> bool:
    """Whether the engine opens from the family's prepacked cache (when sharing is on)."""
    return entry.is_family_onnx and recorded_sharing(entry).group == GROUP


@dataclasses.dataclass(frozen=True)
class SessionArgs:
    """How the pool opens one engine (``backends.open_engine``'s arguments)."""
    threads: int | None = None          # None: the engine's own default
    share_weights: bool = False         # a family ONNX: from the family's prepacked cache

    def differs_from(self, recorded: dict) -> list[str]:
        """What differs between these arguments and a profile's recorded session options, of
        what changes the speed: the threads, and whether the weights are prepacked (sessions
        sharing through the prepacked cache run the kernels of a plain one; a profile taken
        with the former unpacked sharing did not)."""
        out = []
        if self.threads is not None and recorded.get("threads") is not None \
                and int(recorded["threads"]) != self.threads:
            out.append(f"threads {recorded['threads']} -> {self.threads}")
        if not recorded.get("prepacking", True):
            out.append("prepacking off -> on")
        return out


@dataclasses.dataclass
class EngineState:
    id: str
    entry: EngineRecord
    problem: str | None = None       # why it cannot serve (None: it can)
    session: Any = None
    load_ms: float | None = None     # open + first inference, as the profile's load_ms
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)


class EnginePool:
    """``args``: engine id -> SessionArgs (how to open it; default: the engine's own)."""

    def __init__(self, directory: Path, manifest: Manifest, *, backends: list[str] | None = None,
                 args: dict[str, SessionArgs] | None = None, clock=None):
        import time

        self.directory = Path(directory)
        self.manifest = manifest
        self.args = dict(args or {})
        self._clock = clock or time.perf_counter
        self._weights: PrepackedFamily | None = None
        self._weights_lock = threading.Lock()
        self.sharing_problem: str | None = None    # why family ONNX engines open unshared
        self.engines: dict[str, EngineState] = {}
        weights_problem = self._check_weights()
        for entry in manifest.engines:
            state = EngineState(entry.id, entry)
            state.problem = self._check_engine(entry, backends, weights_problem)
            self.engines[entry.id] = state

    # ---------------------------------------------------------------- verification

    def _check_weights(self) -> str | None:
        if self.manifest.weights is None:
            return "the manifest names no shared weights file"
        return check_file_record(self.directory, self.manifest.weights, "the shared weights")

    def _check_engine(self, entry: EngineRecord, backends, weights_problem) -> str | None:
        if not entry.ready:
            return f"the engine is {entry.status} (build it on the device: adaexport compile)"
        if backends is not None and entry.backend not in backends:
            return f"backend {entry.backend} not selected"
        try:
            modules = get_backend(entry.backend).runtime_modules
        except BackendError:
            return f"backend {entry.backend} is not installed here"
        if any(importlib.util.find_spec(module) is None for module in modules):
            return f"backend {entry.backend} is not installed here"
        return self._check_files(entry, weights_problem)

    def _check_files(self, entry: EngineRecord, weights_problem: str | None = None) -> str | None:
        """Why the engine's files are not the ones its manifest entry recorded (None: they are)."""
        problem = verify_engine_files(self.directory, entry)
        if problem:
            return problem
        if entry.is_family_onnx:
            return weights_problem
        try:
            Artifact.load(safe_relative_path(self.directory, entry.file)).verify()
        except (BackendError, ManifestError) as exc:
            return str(exc)
        return None

    # ---------------------------------------------------------------- opening

    def usable(self) -> list[str]:
        return [eid for eid, s in self.engines.items() if s.problem is None]

    def problems(self) -> dict[str, str]:
        return {eid: s.problem for eid, s in self.engines.items() if s.problem is not None}

    def weights(self) -> PrepackedFamily | None:
        """The family's prepacked cache (made on first use, then reused; None, with
        ``sharing_problem`` set, where it cannot be made)."""
        with self._weights_lock:
            if self._weights is None and self.sharing_problem is None:
                family = [self.engines[e].entry for e in self.usable() if shares_prepacked(self.engines[e].entry)]
                weights = self.manifest.weights
                try:
                    cache = PrepackedFamily(self.directory, family, weights.sha256 if weights else None)
                    cache.meta()
                    self._weights = cache
                except ImportError as exc:          # the runtime side may have onnxruntime alone
                    self.sharing_problem = f"making the prepacked cache needs the onnx package ({exc})"
                except (BackendError, OSError) as exc:
                    self.sharing_problem = f"the prepacked cache cannot be made ({exc})"
            return self._weights

    def _shares_now(self, engine_id: str) -> str | None:
        """How the engine's open session shares its weights (None: it does not, or is not open)."""
        session = self.engines[engine_id].session
        return (getattr(session, "options", None) or {}).get("sharing") if session is not None else None

    def spans(self, engine_id: str) -> tuple[str | None, list[tuple[int, int]]]:
        """The sharing group whose file the engine's session maps its weights from and the
        spans it maps there, or (None, []) when it holds its own weights: as it was opened,
        or, not yet open, as it would open now (with the cache made: a first family engine
        to open counts in full, as its profile says)."""
        state = self.engines[engine_id]
        if state.session is not None:
            shares = bool(self._shares_now(engine_id))
        else:
            shares = self.args.get(engine_id, SessionArgs()).share_weights and shares_prepacked(state.entry)
        cache = self._weights
        if not shares or cache is None:
            return None, []
        return GROUP, cache.spans(engine_id)

    def sharing(self) -> dict[str, str]:
        """Engine id -> how it shares its weights with the family's other engines, or why not."""
        out = {}
        for eid in self.usable():
            state = self.engines[eid]
            how = self._shares_now(eid)
            recorded = recorded_sharing(state.entry)
            if how:
                out[eid] = how
            elif not shares_prepacked(state.entry):
                out[eid] = recorded.how if recorded.group is None else \
                    f"not shared: this runtime has no {recorded.group} sharing for a {state.entry.backend} engine"
            elif not self.args.get(eid, SessionArgs()).share_weights:
                out[eid] = "not shared: share_weights is off"
            else:
                out[eid] = f"not shared: {self.sharing_problem}" if self.sharing_problem else "shares when opened"
        return out

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
        spec = self.manifest.model.input
        try:
            session.run({spec.name: np.zeros(spec.shape, dtype=np.float32)})
        except Exception as exc:  # noqa: BLE001 - an engine that cannot run must not serve
            raise EngineUnavailable(f"the engine fails on a test input ({exc})") from None

    def _open(self, entry: EngineRecord):
        args = self.args.get(entry.id, SessionArgs())
        weights = self.weights() if args.share_weights and entry.is_family_onnx else None
        return open_engine(self.directory, entry, threads=args.threads, weights=weights)

    def is_open(self, engine_id: str) -> bool:
        return self.engines[engine_id].session is not None

    def close(self) -> None:
        for state in self.engines.values():
            session, state.session = state.session, None
            if session is not None:
                session.close()
