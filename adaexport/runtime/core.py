"""The Runtime: load a build directory on the device and serve each inference with the
most accurate engine that fits the app's current limits.

    from adaexport.runtime import Runtime, Limits

    rt = Runtime("out/demo", limits=Limits(latency_ms=2.0))
    result = rt.infer(image)            # result.outputs, result.engine
    rt.set_limits(latency_ms=0.5)       # applies from the next inference
    rt.subscribe(lambda status: print(status.engine, status.fits))

Thread-safe: ``infer`` may be called from several threads while another changes the
limits or the power mode. The choice is read under a lock, the engine runs outside it
(ONNX Runtime and OpenVINO sessions accept concurrent runs), and each result names the
engine that really ran. Only a manifest that cannot be read, or a family none of whose
engines can be opened, raises; everything else (bad engines, limits nothing fits)
shows in ``status`` and ``problems``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..manifest_reader import load_manifest
from ..manifest_records import DEFAULT_MODE, Manifest, ProfileRecord
from .engine_pool import EnginePool, EngineUnavailable, SessionArgs, shares_prepacked
from .memory import Footprint, HeldMemory, held
from .loop import Controller, LoopSettings
from .policy import CASCADE_CHAINS, Candidate, Decision, Limits, cascade_stages

log = logging.getLogger("adaexport.runtime")

PRELOAD = ("all", "pareto", "lazy")
POLICIES = ("best", "cascade")


class RuntimeUnavailable(RuntimeError):
    """No engine of the family can serve here (every one was rejected or failed to open)."""


@dataclasses.dataclass(frozen=True)
class Status:
    """What the runtime serves with now, and whether that meets the limits."""
    engine: str | None
    fits: bool
    reason: str
    limits: Limits
    device: str | None
    mode: str
    slowdown: float
    switches: int
    problems: dict[str, str]        # engine id -> why it cannot serve
    untrusted: dict[str, str] = dataclasses.field(default_factory=dict)   # engine id -> why its profile is not used
    device_match: str = "given"     # how `device` fits this machine: exact, same model, target class, other, none
    sharing: dict[str, str] = dataclasses.field(default_factory=dict)   # engine id -> how it shares weights, or why not
    memory: HeldMemory | None = None  # what the loaded engines hold: who shares which pages, each one's own


@dataclasses.dataclass(slots=True)
class InferenceResult:
    """One inference's outputs, tagged with the engine that produced them (a plain slotted
    record: a frozen dataclass's __init__ costs a microsecond per call more)."""
    outputs: list[np.ndarray]
    engine: str                      # the engine whose outputs these are
    latency_ms: float                # of that engine's run
    stages: tuple[str, ...] = ()     # cascade: every engine that ran, in order

    def __iter__(self):              # outputs, engine = rt.infer(x)
        return iter((self.outputs, self.engine))


def match_device(manifest: Manifest, target: str | None = None) -> tuple[str | None, str]:
    """The profiled device of ``target`` (default: the manifest's) whose numbers fit this
    machine, and how well (``exact``, ``same model``, ``target class``: another machine of
    the target, ``other``: only another target's numbers, ``none``), from the identities
    recorded with each profile."""
    from ..device_identity import identity, match

    target = target or manifest.device.target
    key, how = match(manifest.device_identities(), identity(target))
    if key is None and manifest.default_device() is not None:
        return manifest.default_device(), "other"
    return key, how


def current_mode() -> str:
    """The device's power mode (nvpmodel on a Jetson), or ``default`` where there is none."""
    from ..hardware.power_modes import current_power_mode

    try:
        return current_power_mode() or DEFAULT_MODE
    except Exception:  # noqa: BLE001 - reading a sensor must not take the app down
        return DEFAULT_MODE


def _session_of(profile: ProfileRecord | None) -> dict:
    return profile.session if profile is not None else {}


def untrusted_profiles(manifest: Manifest, args: dict[str, SessionArgs], device: str | None, mode: str) -> dict[str, str]:
    """Engines whose profile at ``device``/``mode`` was measured with other session options
    than the runtime opens them with (threads, shared weights): engine id -> what
    differs. Their numbers would judge a session that never ran, so they are not used."""
    out = {}
    for entry in manifest.engines:
        recorded = _session_of(entry.profile_at(device, mode))
        differs = args[entry.id].differs_from(recorded) if recorded and entry.id in args else []
        if differs:
            out[entry.id] = "profiled with other session options (" + ", ".join(differs) + \
                "): its numbers are not used; the closed loop measures it as it serves"
    return out


def session_args(manifest: Manifest, device: str | None, mode: str, share_weights: bool | None,
                 threads: int | None) -> dict[str, SessionArgs]:
    """How to open each engine: with the threads its profile at ``device``/``mode`` was
    measured with (unprofiled: the target's), unless the app says otherwise; the family
    ONNX engines share their weights (the prepacked cache: the kernels of a plain session,
    so a profile of either kind holds) unless ``share_weights`` is False."""
    facts = manifest.device.target_facts or {}
    default_threads = facts.get("threads") if isinstance(facts.get("threads"), int) else 0
    out = {}
    for entry in manifest.engines:
        recorded = _session_of(entry.profile_at(device, mode))
        out[entry.id] = SessionArgs(
            threads=threads if threads is not None else int(recorded.get("threads", default_threads) or 0),
            share_weights=share_weights is not False and shares_prepacked(entry))
    return out


def _measured(manifest: Manifest, device: str | None, mode: str, untrusted: dict[str, str] | None):
    """engine id -> its profile at ``device``/``mode`` (empty where unprofiled or untrusted)."""
    by_id = manifest.by_id()

    def profile(eid: str) -> ProfileRecord:
        found = by_id[eid].profile_at(device, mode) if eid not in (untrusted or {}) else None
        return found or ProfileRecord()
    return profile


def footprints(manifest: Manifest, engine_ids: Sequence[str], device: str | None, mode: str,
               untrusted: dict[str, str] | None = None, spans: Callable[[str], tuple] | None = None
               ) -> dict[str, Footprint]:
    """Each engine's memory at ``device``/``mode``: its profile, split into its own memory
    and the pages it maps of a sharing group (``spans``: engine id -> (group, spans), e.g.
    ``EnginePool.spans``; None: nothing shared), see ``runtime.memory``."""
    profile = _measured(manifest, device, mode, untrusted)
    return {eid: Footprint.of(profile(eid).memory_bytes(), *(spans(eid) if spans else (None, ())))
            for eid in engine_ids}


def candidates_for(manifest: Manifest, engine_ids: Sequence[str], device: str | None, mode: str,
                   untrusted: dict[str, str] | None = None, loaded: Sequence[str] = (),
                   spans: Callable[[str], tuple] | None = None) -> list[Candidate]:
    """The policy's view of each engine at ``device`` in power mode ``mode`` (the measured
    numbers of ``untrusted`` engines left out). An engine's memory is what serving with it
    holds: it and every other engine the runtime keeps ``loaded``, the pages engines share
    counted once (``spans``, as ``footprints`` takes it)."""
    by_id = manifest.by_id()
    profile = _measured(manifest, device, mode, untrusted)
    memory = footprints(manifest, list(dict.fromkeys([*loaded, *engine_ids])), device, mode, untrusted, spans)
    kept = {eid: memory[eid] for eid in loaded}
    out = []
    for eid in engine_ids:
        entry, measured = by_id[eid], profile(eid)
        out.append(Candidate(id=eid, flops=float(entry.flops or 0), accuracy=entry.accuracy_on(device),
                             latency_ms=measured.latencies() or None, energy_mj=measured.energy_mj(),
                             idle_power_w=measured.idle_power_w(),
                             memory_bytes=held({**kept, eid: memory[eid]}).total))
    return out


def softmax_top1(logits: np.ndarray) -> np.ndarray:
    """Top-1 probability of each row of logits."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e.max(axis=-1) / e.sum(axis=-1)


class Runtime:
    def __init__(self, directory: str | Path, *, limits: Limits | None = None, device: str | None = None,
                 power_mode: str | None = None, preload: str = "pareto", backends: Sequence[str] | None = None,
                 share_weights: bool | None = None, loop: LoopSettings | None = None, policy: str = "best",
                 cascade_threshold: float = 0.9, cascade_chain: str = "two-stage", threads: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if preload not in PRELOAD:
            raise ValueError(f"preload must be one of {', '.join(PRELOAD)}, got {preload!r}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.directory = Path(directory)
        self.manifest = load_manifest(self.directory)          # ManifestError: the only fatal load error
        # "target class"/"other": another machine's numbers (status.device_match says so; the
        # closed loop corrects the latencies as it observes them)
        if device and ":" not in device and device not in self.manifest.device_identities():   # a target's name
            found, how = match_device(self.manifest, device)
            self.device, self.device_match = (found, how) if found and how != "other" else (device, "given")
        else:
            self.device, self.device_match = (device, "given") if device else match_device(self.manifest)
        self.mode = power_mode or current_mode()
        self.policy = policy
        self.cascade_threshold = float(cascade_threshold)
        if cascade_chain not in CASCADE_CHAINS:
            raise ValueError(f"cascade_chain must be one of {', '.join(CASCADE_CHAINS)}, got {cascade_chain!r}")
        self.cascade_chain = cascade_chain
        self._clock = clock
        self._lock = threading.RLock()
        self._subscribers: list[Callable[[Status], None]] = []
        self.session_args = session_args(self.manifest, self.device, self.mode, share_weights, threads)
        self.pool = EnginePool(self.directory, self.manifest, backends=list(backends) if backends else None,
                               args=self.session_args)
        for eid, why in self.pool.problems().items():
            log.warning("adaexport runtime: engine %s skipped: %s", eid, why)
        spec = self.manifest.model.input
        self.input_name, self.input_shape = spec.name, tuple(spec.shape)
        self.class_names = self.manifest.model.class_names
        self._controller = Controller(self._candidates(), limits or Limits(), loop, now=self._clock())
        self._stages = self._cascade_stages()
        self._preload(preload)

    # ---------------------------------------------------------------- state

    def _loaded(self) -> list[str]:
        return [e for e in self.pool.usable() if self.pool.is_open(e)]

    def _candidates(self) -> list[Candidate]:
        return candidates_for(self.manifest, self.pool.usable(), self.device, self.mode, self.untrusted,
                              self._loaded(), self.pool.spans)

    @property
    def memory(self) -> HeldMemory:
        """What the engines the runtime keeps loaded hold: per sharing group the engines that
        share its pages and their bytes (once), each engine's own bytes, the total (what the
        memory limit is checked against; None where a loaded engine was not profiled)."""
        return held(footprints(self.manifest, self._loaded(), self.device, self.mode, self.untrusted,
                               self.pool.spans))

    @property
    def untrusted(self) -> dict[str, str]:
        """Engines whose profile at the current device and mode is of another kind of session."""
        return untrusted_profiles(self.manifest, self.session_args, self.device, self.mode)

    def _front(self) -> list[str]:
        return self.manifest.front(self.device, self.mode)

    def _cascade_stages(self) -> tuple[str, ...]:
        c = self._controller
        if self.policy != "cascade" or c.decision.engine is None:
            return (c.decision.engine,) if c.decision.engine else ()
        return tuple(cascade_stages(c.candidates, self._front(), c.limits, c.decision.engine, c.slowdown,
                                    c.rate_hz, self.cascade_chain))

    def _preload(self, preload: str) -> None:
        if preload == "lazy":
            return
        ids = self.pool.usable()
        if preload == "pareto" and self._front():
            wanted = set(self._front()) | set(self._stages) | {self._controller.decision.engine}
            ids = [e for e in ids if e in wanted]
        for eid in ids:
            try:
                self.pool.get(eid)
            except EngineUnavailable as exc:
                log.warning("adaexport runtime: %s", exc)
        # choose again: without engines that failed to open, counting the memory of those loaded
        self._reset(self._controller.limits)

    @property
    def status(self) -> Status:
        with self._lock:
            c = self._controller
            return Status(engine=c.decision.engine, fits=c.decision.fits, reason=c.decision.reason,
                          limits=c.limits, device=self.device, mode=self.mode, slowdown=c.slowdown,
                          switches=c.switches, problems=self.pool.problems(), untrusted=self.untrusted,
                          device_match=self.device_match, sharing=self.pool.sharing(), memory=self.memory)

    @property
    def decision(self) -> Decision:
        with self._lock:
            return self._controller.decision

    @property
    def limits(self) -> Limits:
        return self._controller.limits

    def engines(self) -> list[str]:
        """The engines that can serve."""
        return self.pool.usable()

    @property
    def problems(self) -> dict[str, str]:
        return self.pool.problems()

    def subscribe(self, callback: Callable[[Status], None]) -> Callable[[], None]:
        """Call ``callback(status)`` whenever the serving engine or whether it fits changes;
        returns a function that unsubscribes. A callback that raises is logged and ignored."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe():
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)
        return unsubscribe

    # ---------------------------------------------------------------- inputs from the app

    def set_limits(self, limits: Limits | None = None, **changes: Any) -> Status:
        """Replace the limits (a Limits) or change some (``latency_ms=2.0``); applies from the
        next inference."""
        with self._lock:
            new = limits if limits is not None else dataclasses.replace(self._controller.limits, **changes)
            before = self._snapshot()
            self._reset(new)
            changed = self._snapshot() != before
        if changed:
            self._notify()
        return self.status

    def set_power_mode(self, mode: str | None = None) -> Status:
        """The device's power mode changed (``None``: read it from the device again)."""
        with self._lock:
            before = self._snapshot()
            self.mode = mode or current_mode()
            self._reset(self._controller.limits)
            changed = self._snapshot() != before
        if changed:
            self._notify()
        return self.status

    def _reset(self, limits: Limits) -> None:
        self._controller.reset(limits, self._clock(), self._candidates())
        self._stages = self._cascade_stages()

    def _snapshot(self):
        d = self._controller.decision
        return d.engine, d.fits

    def _notify(self) -> None:
        status = self.status
        for callback in list(self._subscribers):
            try:
                callback(status)
            except Exception:  # noqa: BLE001 - the app's callback must not break inference
                log.exception("adaexport runtime: a status callback raised")

    # ---------------------------------------------------------------- inference

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """``x`` as the engines take it: float32, with the batch axis added when missing."""
        if type(x) is np.ndarray and x.dtype == np.float32 and x.shape == self.input_shape \
                and x.flags.c_contiguous:
            return x                                   # the common case, without a copy or a check more
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == len(self.input_shape) - 1:
            x = x[None]
        if tuple(x.shape) != self.input_shape:
            raise ValueError(f"input of shape {tuple(x.shape)}; the engines take {self.input_shape}")
        return np.ascontiguousarray(x)

    def infer(self, x: np.ndarray) -> InferenceResult:
        """Run ``x`` on the engine the limits call for; the result names that engine."""
        x = self.prepare(x)
        for _ in range(len(self.pool.engines) + 1):
            stages = self._stages              # one reference, replaced whole under the lock
            if not stages:
                raise RuntimeUnavailable("no engine can serve: " + "; ".join(
                    f"{k}: {v}" for k, v in list(self.pool.problems().items())[:3]))
            try:
                return self._run_stages(stages, x)
            except EngineUnavailable as exc:  # failed to open lazily: never again, choose anew
                log.warning("adaexport runtime: %s", exc)
                with self._lock:
                    before = self._snapshot()
                    self._reset(self._controller.limits)
                    changed = self._snapshot() != before
                if changed:
                    self._notify()
        raise RuntimeUnavailable("no engine could be opened")

    def _run_stages(self, stages: Sequence[str], x: np.ndarray) -> InferenceResult:
        feed = {self.input_name: x}
        engines = self.pool.engines
        last = len(stages) - 1
        for i, engine in enumerate(stages):
            session = engines[engine].session
            if session is None:
                session = self._open_lazily(engine)
            start = time.perf_counter()
            outputs = session.run(feed)
            latency = (time.perf_counter() - start) * 1000.0
            self._observe(engine, latency)
            if i == last or float(softmax_top1(outputs[0]).min()) >= self.cascade_threshold:
                return InferenceResult(outputs, engine, latency, stages[:i + 1])
        raise AssertionError("unreachable")

    def _open_lazily(self, engine: str):
        """Open an engine on first use; the memory the runtime holds grew, so the numbers
        every choice is made on are renewed (and, under a memory limit, the choice too)."""
        session = self.pool.get(engine)
        with self._lock:
            if self._controller.limits.memory_bytes is not None:
                self._reset(self._controller.limits)
            else:
                self._controller.update(self._candidates())
        return session

    def _observe(self, engine: str, latency_ms: float) -> None:
        with self._lock:
            before = self._controller.decision
            decision = self._controller.observe(engine, latency_ms, self._clock())
            changed = decision is not before and (decision.engine, decision.fits) != (before.engine, before.fits)
            if changed:
                self._stages = self._cascade_stages()
        if changed:
            self._notify()

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
