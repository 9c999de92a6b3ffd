"""Profiling a build directory's engines into its manifest (docs/DESIGN.md,
"Measurements in the manifest" and "Profiling").

Results go to ``engines[i].profile[<device>][<mode>]`` and
``manifest.profiling[<device>]``; other devices' and other modes' numbers are never
touched. ``<device>`` is this machine's identity key (``adaexport.device_identity``:
the target, the CPU/GPU/module and a hash of every fact that changes kernels, e.g.
``x86-cpu:amd-epyc-7b13-64-core-processor:1a2b3c4d``), whose facts are kept in
``manifest.profiling[<device>].identity``; ``<mode>`` the nvpmodel mode name or
``default`` where the device has none.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..hardware.power_modes import current_power_mode
from ..manifest_records import DEFAULT_MODE, DeviceProfiling, EngineRecord, Manifest, ModeRun, ProfileRecord
from .errors import ProfilingError
from .measure import Candidate, measure_engines, utc_now
from .settings import ProfilingSettings


@dataclasses.dataclass
class Energy:
    """The meter of this run (None: no sensor, `reason` says why) and its idle power."""
    meter: Any = None
    reason: str | None = None
    idle_w: float | None = None

    @classmethod
    def measure(cls, target, settings: ProfilingSettings, root=None) -> "Energy":
        from ..hardware.sensors import SensorUnavailable, open_meter

        meter, reason = open_meter(target, root)
        if meter is None:
            return cls(None, reason)
        try:
            return cls(meter, None, meter.idle_power(settings.idle_s) if settings.idle_s > 0 else None)
        except (OSError, ValueError, SensorUnavailable) as exc:
            return cls(None, f"{meter.source}: reading failed ({exc})")


def mode_of(target) -> str:
    """The power mode a device is in now: nvpmodel's mode name, or "default"."""
    if target.kind != "jetson":
        return DEFAULT_MODE
    return current_power_mode(target) or DEFAULT_MODE


def threads_for(target, backend: str) -> int:
    """The thread count the target pins for a backend (0: the backend's default)."""
    return int(target.options(backend).get("threads", target.threads) or 0)


def open_engine(directory: Path, entry: EngineRecord, target) -> Any:
    """A session over a manifest engine with the target's threads and providers."""
    from ..backends import open_engine as open_manifest_engine

    backend = entry.backend
    providers = target.options(backend).get("providers")       # only a backend that takes providers uses them
    return open_manifest_engine(directory, entry, threads_for(target, backend), list(providers) if providers else None)


def model_feeds(manifest: Manifest) -> dict[str, Any]:
    """Fixed pseudo-random inputs of the model's input shape (the same for every engine)."""
    import numpy as np

    spec = manifest.model.input
    return {spec.name: np.random.default_rng(0).standard_normal(spec.shape).astype(spec.dtype)}


def select_engines(manifest: Manifest, wanted: list[str] | None) -> tuple[list[EngineRecord], list[str]]:
    """The ready engines to profile (all, or the `wanted` ids) and why others are not."""
    from ..backends import available_backends

    engines = manifest.engines
    if wanted is not None:
        if not wanted:
            raise ProfilingError("--engines: no engine id given (expected ids, comma-separated)")
        known = {e.id for e in engines}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise ProfilingError(f"--engines: no engine {unknown[0]!r} in the manifest "
                                 f"(e.g. {', '.join(sorted(known)[:3])})")
        engines = [e for e in engines if e.id in wanted]
    available = available_backends()
    chosen, skipped = [], []
    for engine in engines:
        if not engine.ready:
            skipped.append(f"{engine.id}: {engine.status} (build it on the device with adaexport compile)")
        elif not available.get(engine.backend):
            reason = getattr(available.get(engine.backend), "reason", None) or "unknown backend"
            skipped.append(f"{engine.id}: {engine.backend} is not usable here ({reason})")
        else:
            chosen.append(engine)
    return chosen, skipped


def candidates_for(directory: Path, manifest: Manifest, engines: list[EngineRecord], target) -> list[Candidate]:
    feeds = model_feeds(manifest)
    batch = int(manifest.model.input.shape[0])
    return [Candidate(id=e.id, open=(lambda e=e: open_engine(directory, e, target)), feeds=feeds, batch=batch,
                      threads=threads_for(target, e.backend)) for e in engines]


def device_key(target) -> tuple[str, dict]:
    """The profile key of this machine as a device of ``target`` (a Target), and its facts."""
    from ..device_identity import this_machine

    return this_machine(target.name)


def device_section(manifest: Manifest, device: str, target, settings: ProfilingSettings, mode: str, energy: Energy,
                   backends: list[str]) -> DeviceProfiling:
    """manifest.profiling[device] with `mode`'s entry added or replaced (other modes kept)."""
    from ..backends import backend_versions
    from ..manifest import host_info

    old = manifest.profiling.get(device)
    versions = {name: str(facts.get(name, "unknown")) for name, facts in backend_versions(sorted(backends)).items()}
    run = ModeRun(profiled=utc_now(), idle_power_w=energy.idle_w,
                  power_source=energy.meter.source if energy.meter else None, energy_reason=energy.reason,
                  power_rails=list(energy.meter.rails) if energy.meter else [])
    return DeviceProfiling(target=target.name, identity=device_key(target)[1], host=host_info(),
                           backends={**(old.backends if old else {}), **versions}, settings=settings.as_dict(),
                           threads={b: threads_for(target, b) for b in sorted(backends)},
                           modes={**manifest.modes_of(device), mode: run})


def merge(manifest: Manifest, device: str, mode: str, results: dict[str, dict], section: DeviceProfiling
          ) -> Manifest:
    """Write results into the manifest in place (only this device and mode) and rank."""
    from ..pareto import update_pareto

    manifest.set_profile(device, mode, results, section)
    return update_pareto(manifest)


def profile_manifest(directory: Path, manifest: Manifest, target, *, device: str, mode: str,
                     settings: ProfilingSettings, wanted: list[str] | None = None, reporter=None,
                     root=None) -> tuple[dict[str, dict], list[str]]:
    """Measure the engines of a manifest on this machine as `device` in `mode` and merge
    the numbers into `manifest` (in memory). Returns (id -> profile, skipped reasons)."""
    from ..backends import verify_engines

    engines, skipped = select_engines(manifest, wanted)
    if not engines:
        raise ProfilingError(f"{directory}: no engine can be profiled here"
                             + (f" ({skipped[0]}{' ...' if len(skipped) > 1 else ''})" if skipped else ""))
    verify_engines(directory, engines)      # no profile is ever recorded for bytes that were not built
    energy = Energy.measure(target, settings, root)
    results = run_measurements(Path(directory), manifest, engines, target, settings, energy, reporter)
    merge(manifest, device, mode, results,
          device_section(manifest, device, target, settings, mode, energy, [e.backend for e in engines]))
    return results, skipped


def run_measurements(directory: Path, manifest: Manifest, engines: list[EngineRecord], target,
                     settings: ProfilingSettings, energy: Energy, reporter=None) -> dict[str, dict]:
    if reporter:
        reporter.stage("profile", len(engines))

    noisy: list[str] = []

    def done(ident: str, entry: dict) -> None:
        profile = ProfileRecord.from_json(entry)
        if profile.cv > settings.max_cv:
            noisy.append(ident)
        if reporter:
            lat = profile.latencies()
            reporter.advance(ident, f"p50 {lat['p50']:.3f} ms (p99 {lat['p99']:.3f}, min..max {lat['min']:.3f}.."
                                    f"{lat['max']:.3f}), cv {profile.cv:.1f}%, load {profile.load_ms:.0f} ms")

    from ..hardware.device_memory import device_memory_reader

    try:
        return measure_engines(candidates_for(directory, manifest, engines, target), settings, meter=energy.meter,
                               idle_w=energy.idle_w, energy_reason=energy.reason, on_done=done,
                               device_memory=device_memory_reader(target))
    finally:
        if reporter:
            reporter.end_stage()
            if noisy:   # one line, not one per engine; each engine's warnings are in the manifest
                reporter.warn(f"{len(noisy)} of {len(engines)} engine(s) kept a coefficient of variation above "
                              f"{settings.max_cv:g}% after {settings.remeasure} re-measurement(s) (e.g. {noisy[0]}): "
                              "this machine was noisy; the spread is in each profile")
        if energy.meter is not None:
            energy.meter.close()


# --------------------------------------------------------------------------- the build's stage


def _as_cached(record: dict) -> dict:
    """The record as the cache gives it back (keys sorted), so that a first build and a
    cached rebuild write the same bytes."""
    return json.loads(json.dumps(record, sort_keys=True))


def profile_build_stage(out: Path, manifest: Manifest, target, settings: ProfilingSettings, cache,
                        reporter=None) -> None:
    """The build's profile stage: profile the manifest's engines on this machine (its
    target), reusing an engine's cached profile (`cache`: the build's `build_cache.Cache`,
    stage "profile") when its sha256, the settings, the device, the mode and the host are
    unchanged; merge into `manifest` in place."""
    from ..build_cache import digest
    from ..manifest import host_info

    def cache_get(key: str) -> dict | None:
        return cache.get("profile", key)

    def cache_put(key: str, record: dict) -> None:
        cache.put("profile", key, record)

    (device, _), mode = device_key(target), mode_of(target)
    engines, skipped = select_engines(manifest, None)
    for reason in skipped:
        if reporter:
            reporter.info(f"not profiled: {reason}")
    if not engines:
        return
    weights = manifest.weights.sha256 if manifest.weights else None
    base = {"stage": "profile", "device": device, "mode": mode, "settings": settings.as_dict(),
            "target": target.source, "host": host_info(), "input": manifest.model.input.to_json()}
    keys = {e.id: digest({**base, "engine": {k: getattr(e, k) for k in ("sha256", "backend", "precision", "file")},
                          "weights": weights if e.file.endswith(".onnx") else None}) for e in engines}
    results = {ident: (cache_get(key) or {}).get("profile") for ident, key in keys.items()}
    todo = [e for e in engines if results[e.id] is None]
    section_key = digest({**base, "engines": sorted(keys.values())})
    cached = (cache_get(section_key) or {}).get("section")
    section = None if cached is None else DeviceProfiling.from_json(cached)
    if todo or section is None:
        energy = Energy.measure(target, settings) if todo else Energy(None, "not measured (every engine cached)")
        if todo:
            measured = run_measurements(out, manifest, todo, target, settings, energy, reporter)
            for ident, entry in measured.items():
                results[ident] = _as_cached(entry)
                cache_put(keys[ident], {"profile": entry})
        section = device_section(manifest, device, target, settings, mode, energy, [e.backend for e in engines])
        cache_put(section_key, {"section": section.to_json()})
        section = DeviceProfiling.from_json(_as_cached(section.to_json()))
    elif reporter:
        reporter.info(f"profile: {len(engines)} engine(s) on {device} ({mode}) from the cache")
    section.modes = {**manifest.modes_of(device), **section.modes}   # other modes' runs stay
    merge(manifest, device, mode, {k: v for k, v in results.items() if v is not None}, section)
