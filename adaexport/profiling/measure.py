"""The measurement loop, the way trtexec, benchmark_app and onnxruntime_perf_test
measure, with interleaving for a noisy machine.

For a group of engines (``settings.group`` at a time, loaded together):

1. load each: session creation + first inference, timed (``load_ms``: the cost of
   switching to an engine that is not loaded), with the resident-set growth it caused;
2. warm each up for ``warmup_s`` seconds;
3. ``rounds`` rounds; in each, every engine of the group runs in turn (the order
   rotates every round) until it has its share of ``min_iterations`` AND of
   ``min_duration_s``, so that drift (thermal, other load) is spread over every engine
   instead of favouring the first or the last;
4. an engine whose coefficient of variation exceeds ``max_cv`` is measured again
   (interleaved with the other such engines), up to ``remeasure`` times; the
   measurement with the lowest CV is kept and a warning records every CV seen.

Each run is timed alone with ``time.perf_counter_ns``; Python's garbage collector runs
once before a group and is off while the group is loaded and measured. Energy comes from a
``sensors.Meter`` over each engine's measured windows, less the idle power measured once
beforehand; a window is never shorter than the meter's ``min_window_s`` (NVML: 1 s), the
round running longer instead.

Memory: the resident-set growth over loading an engine, what the backend reports
(TensorRT: the engine's device memory), and the device memory this process gained where
the resident set cannot see it (`device_memory`: nvmap on Jetson, NVML on a GPU), each
with its source.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from typing import Any, Callable

from . import stats
from .settings import ProfilingSettings


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --------------------------------------------------------------------------- memory


def resident_bytes() -> tuple[int | None, str]:
    """(resident set size of this process, source): /proc/self/status VmRSS, else the
    peak from getrusage (all that some systems offer)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024, "VmRSS (/proc/self/status)"
    except OSError:
        pass
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak * (1 if sys.platform == "darwin" else 1024), "peak RSS (getrusage ru_maxrss)"
    except (ImportError, OSError):
        return None, "unavailable"


def backend_memory(session: Any) -> tuple[int | None, str]:
    """What the backend itself reports about the engine's memory, and where from (TensorRT
    10.1+: device_memory_size_v2; device_memory_size, deprecated since, before that)."""
    engine = getattr(session, "_engine", None)
    for attribute in ("device_memory_size_v2", "device_memory_size"):
        size = getattr(engine, attribute, None) if engine is not None and hasattr(engine, attribute) else None
        if isinstance(size, int):
            return size, f"tensorrt ICudaEngine.{attribute} (device memory for activations)"
    name = type(session).__module__.rsplit(".", 1)[-1].replace("_backend", "")
    return None, f"{name} reports no per-engine memory figure; see rss_bytes"


# --------------------------------------------------------------------------- engines


@dataclasses.dataclass
class Candidate:
    """One engine to measure: how to open it and what to feed it."""
    id: str
    open: Callable[[], Any]                 # -> a Session (run(feeds) -> outputs)
    feeds: dict[str, Any]
    batch: int = 1
    threads: int | None = None              # as pinned (0: the backend's default)


@dataclasses.dataclass
class _Attempt:
    samples_ns: list[int] = dataclasses.field(default_factory=list)
    joules: float = 0.0
    meter_s: float = 0.0            # the span the meter's readings covered
    window_s: float = 0.0
    rounds: int = 0

    @property
    def cv(self) -> float:
        return stats.cv_percent(self.samples_ns)


@dataclasses.dataclass
class _State:
    candidate: Candidate
    session: Any = None
    load_ms: float = 0.0
    rss_bytes: int | None = None
    rss_source: str = ""
    backend_bytes: int | None = None
    backend_source: str = ""
    session_options: dict = dataclasses.field(default_factory=dict)
    device_bytes: int | None = None
    device_source: str = ""
    attempts: list[_Attempt] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def best(self) -> _Attempt:
        return min(self.attempts, key=lambda a: a.cv)


def _growth(before: int | None, after: int | None) -> int | None:
    return max(after - before, 0) if before is not None and after is not None else None


def _load(state: _State, device_memory) -> None:
    before, source = resident_bytes()
    device_before = device_memory.read() if device_memory else None
    start = time.perf_counter_ns()
    state.session = state.candidate.open()
    state.session_options = dict(getattr(state.session, "options", None) or {})
    state.session.run(state.candidate.feeds)
    state.load_ms = (time.perf_counter_ns() - start) / 1e6
    after, _ = resident_bytes()
    state.rss_bytes = _growth(before, after)
    state.rss_source = f"growth of {source} over session creation + first inference"
    state.backend_bytes, state.backend_source = backend_memory(state.session)
    if device_memory:
        state.device_bytes = _growth(device_before, device_memory.read())
        state.device_source = f"growth of {device_memory.source} over session creation + first inference"
    else:
        state.device_source = "not measured" if device_memory is None else device_memory.source


def _run_until(state: _State, iterations: int, seconds: float, samples: list[int] | None) -> None:
    """Run the engine until both `iterations` runs and `seconds` have passed."""
    run, feeds = state.session.run, state.candidate.feeds
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)
    done = 0
    while done < iterations or clock() < deadline:
        t0 = clock()
        run(feeds)
        t1 = clock()
        if samples is not None:
            samples.append(t1 - t0)
        done += 1


def _rounds(states: list[_State], settings: ProfilingSettings, meter) -> None:
    """One attempt for every state: settings.rounds interleaved rounds."""
    per_round_n = math.ceil(settings.min_iterations / settings.rounds)
    per_round_s = max(settings.min_duration_s / settings.rounds, getattr(meter, "min_window_s", 0.0))
    attempts = {id(s): _Attempt() for s in states}
    for r in range(settings.rounds):
        order = states[r % len(states):] + states[:r % len(states)]
        for state in order:
            attempt = attempts[id(state)]
            if meter is not None:
                meter.begin()
            start = time.perf_counter()
            _run_until(state, per_round_n, per_round_s, attempt.samples_ns)
            elapsed = time.perf_counter() - start
            if meter is not None:
                attempt.joules += meter.end()
                attempt.meter_s += meter.window_s
            attempt.window_s += elapsed
            attempt.rounds += 1
    for state in states:
        state.attempts.append(attempts[id(state)])


def _energy(state: _State, meter, idle_w: float | None, reason: str | None) -> dict:
    if meter is None:
        return {"per_inference_mj": None, "active_power_w": None, "idle_power_w": None, "source": None,
                "reason": reason or "no power sensor"}
    best = state.best
    active_w = best.joules / best.meter_s if best.meter_s else None
    per = None
    if active_w is not None and idle_w is not None:
        per = (active_w - idle_w) * best.meter_s / len(best.samples_ns) * 1e3
    return {"per_inference_mj": per, "active_power_w": active_w, "idle_power_w": idle_w, "source": meter.source,
            "reason": None if per is not None else "no idle baseline (idle_s = 0): nothing to subtract",
            "window_s": best.meter_s, "windows": best.rounds, "min_window_s": meter.min_window_s,
            "rails": list(meter.rails),
            "note": "energy of one run (batch) above idle: (active - idle power) x window / runs"}


def _entry(state: _State, settings: ProfilingSettings, meter, idle_w, reason) -> dict:
    best = state.best
    ms = [ns / 1e6 for ns in best.samples_ns]
    cv = best.cv
    warnings = list(state.warnings)
    if len(state.attempts) > 1:
        seen = ", ".join(f"{a.cv:.1f}%" for a in state.attempts)
        warnings.append(f"coefficient of variation above {settings.max_cv:g}%: measured {len(state.attempts)} times "
                        f"(cv {seen}); kept the lowest")
    if cv > settings.max_cv:
        warnings.append(f"coefficient of variation {cv:.1f}% is above {settings.max_cv:g}%: the machine was noisy")
    return {
        "latency_ms": stats.summarize(ms), "cv": cv,
        "throughput_ips": len(ms) * state.candidate.batch / best.window_s if best.window_s else None,
        "iterations": len(ms), "duration_s": best.window_s, "rounds": best.rounds, "batch": state.candidate.batch,
        "threads": state.candidate.threads, "load_ms": state.load_ms,
        "session": state.session_options,
        "memory": {"rss_bytes": state.rss_bytes, "rss_source": state.rss_source,
                   "backend_bytes": state.backend_bytes, "backend_source": state.backend_source,
                   "device_bytes": state.device_bytes, "device_source": state.device_source},
        "energy": _energy(state, meter, idle_w, reason),
        "warnings": warnings, "measured": utc_now(),
    }


MEMORY_HEADROOM = 2   # another engine joins a group while the memory available exceeds this many times
                      # the most one engine of the group took (its own, and as much again for its load's peak)


def _engine_bytes(state: _State) -> int:
    return (state.rss_bytes or 0) + (state.device_bytes or 0)


def _load_group(states: list[_State], pending: list[Candidate], settings: ProfilingSettings, device_memory,
                available_memory: Callable[[], int | None]) -> None:
    """Load the next group from `pending` into `states`: up to settings.group engines, fewer
    where memory would run short (at published size an fp32 engine holds ~0.6 GB: ten loaded
    together were 5.9 GB, more than a Jetson Orin Nano has). The first engine always loads;
    each engine of a group cut short says so in its warnings."""
    short = None
    while pending and len(states) < settings.group:
        if states:
            free, most = available_memory(), max(_engine_bytes(s) for s in states)
            if free is not None and free < MEMORY_HEADROOM * most:
                short = (free, most)
                break
        states.append(_State(pending.pop(0)))
        _load(states[-1], device_memory)
    if short is not None:
        note = (f"measured in a group of {len(states)} engine(s), not {settings.group}: {short[0] / 2**20:.0f} MiB "
                f"of memory available, and an engine of the group took up to {short[1] / 2**20:.0f} MiB")
        for state in states:
            state.warnings.append(note)


def measure_engines(candidates: list[Candidate], settings: ProfilingSettings, *, meter=None,
                    idle_w: float | None = None, energy_reason: str | None = None, device_memory=None,
                    on_done: Callable[[str, dict], None] | None = None,
                    available_memory: Callable[[], int | None] | None = None) -> dict[str, dict]:
    """Profile every candidate (groups of up to settings.group, interleaved; smaller where
    `available_memory()`, the bytes the system can still allocate (default: MemAvailable),
    would not hold another engine); id -> profile entry. `device_memory` is a
    device_memory.DeviceMemory (None: not measured)."""
    if available_memory is None:
        from ..hardware.machine import available_memory
    results: dict[str, dict] = {}
    pending = list(candidates)
    while pending:
        # One collection per group, then none until the group is measured: a collection in
        # a process holding torch takes a fraction of a second and would land in a sample.
        gc.collect()
        gc.disable()
        states: list[_State] = []
        try:
            _load_group(states, pending, settings, device_memory, available_memory)
            for state in states:
                _run_until(state, 1, settings.warmup_s, None)
            _rounds(states, settings, meter)
            for _ in range(settings.remeasure):
                noisy = [s for s in states if s.best.cv > settings.max_cv]
                if not noisy:
                    break
                _rounds(noisy, settings, meter)
            for state in states:
                results[state.candidate.id] = _entry(state, settings, meter, idle_w, energy_reason)
                if on_done:
                    on_done(state.candidate.id, results[state.candidate.id])
        finally:
            gc.enable()
            for state in states:
                if state.session is not None and hasattr(state.session, "close"):
                    state.session.close()
                state.session = None
    return results
