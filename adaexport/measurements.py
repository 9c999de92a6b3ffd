"""Reading the measured sections of a manifest (stdlib only: the runtime imports this).

Where the numbers live (docs/DESIGN.md, "Measurements in the manifest"):

* ``engine["profile"][<device>][<power mode>]``: latency statistics, load time, memory
  and energy of one engine measured on one device (an identity key such as
  ``x86-cpu:amd-epyc-7b13-64-core-processor:1a2b3c4d``, see adaexport.device_identity; a
  bare target name such as ``x86-cpu`` in manifests from before it) in one power mode
  (``default`` where the device has none);
* ``manifest["profiling"][<device>]``: how and where that device was profiled;
* ``engine["accuracy"]``: top-1/top-5 on a dataset, next to PyTorch's at the same point (the
  latest evaluation, with the ``device`` it ran on), and ``engine["accuracies"][<device>]``
  the latest on each device;
* ``manifest["pareto"]["<device>/<mode>"]`` and ``manifest["pareto"]["flops"]``: the
  engine ids on the accuracy/cost front (see ``adaexport.pareto``).

The rules live with the records (``adaexport.manifest_records``: ``EngineRecord.profile_at``,
``accuracy_on``, ``Manifest.profiled_devices``, ...); these functions apply them to a
record or to the JSON of one (an engine entry, the whole manifest), for code that holds
the JSON.
"""

from __future__ import annotations

from . import manifest_records as records
from .manifest_records import (  # noqa: F401 - re-exported
    DEFAULT_MODE, FLOPS_FRONT, AccuracyRecord, EngineRecord, Manifest, ProfileRecord, front_key, target_of,
)


def _profiles(engine) -> dict:
    """device -> mode -> ProfileRecord of an engine record or entry."""
    if isinstance(engine, EngineRecord):
        return engine.profile
    return {device: {mode: ProfileRecord.from_json(p) for mode, p in (modes or {}).items()}
            for device, modes in (engine.get("profile") or {}).items()}


def _accuracies(engine) -> tuple[AccuracyRecord | None, dict]:
    if isinstance(engine, EngineRecord):
        return engine.accuracy, engine.accuracies
    latest = engine.get("accuracy")
    return (AccuracyRecord.from_json(latest) if latest else None,
            {d: AccuracyRecord.from_json(a) for d, a in (engine.get("accuracies") or {}).items() if a})


def _devices(manifest) -> list[str]:
    if isinstance(manifest, Manifest):
        return manifest.profiled_devices()
    return records.profiled_devices(manifest.get("profiling") or {}, _all_profiles(manifest))


def _all_profiles(manifest) -> list[dict]:
    return [e.get("profile") or {} for e in manifest.get("engines", [])]


def profile_of(engine, device: str, mode: str = DEFAULT_MODE) -> dict | None:
    """The engine's profile on ``device`` in power mode ``mode`` (its JSON), or None if not profiled."""
    found = (_profiles(engine).get(device) or {}).get(mode)
    return None if found is None else found.to_json()


def latency_ms(engine, device: str, mode: str = DEFAULT_MODE, statistic: str = "p50") -> float | None:
    """One latency statistic (p50, p90, p95, p99, mean, ...) in milliseconds, or None."""
    found = (_profiles(engine).get(device) or {}).get(mode)
    return None if found is None else found.latency(statistic)


def accuracy_of(engine, device: str | None = None) -> float | None:
    """The engine's measured top-1 (0..1) from ``adaexport eval``: as measured on ``device``
    when it was evaluated there (int8 accuracy differs between CPUs), else the latest
    evaluation; None when never evaluated."""
    latest, per_device = _accuracies(engine)
    found = (per_device.get(device) if device else None) or latest
    return None if found is None or found.top1 is None else float(found.top1)


def profiled_devices(manifest) -> list[str]:
    """Every device with at least one profiled engine, in first-seen order."""
    return _devices(manifest)


def profiled_modes(manifest, device: str) -> list[str]:
    """The power modes of ``device`` with at least one profiled engine."""
    if isinstance(manifest, Manifest):
        return manifest.profiled_modes(device)
    return records.profiled_modes(_all_profiles(manifest), device)


def default_device(manifest) -> str | None:
    """The device whose numbers apply by default: the first profiled device of the
    manifest's own target, else the only profiled device, else None."""
    if isinstance(manifest, Manifest):
        return manifest.default_device()
    return records.default_device(_devices(manifest), (manifest.get("device") or {}).get("target"))


def device_identities(manifest) -> dict[str, dict | None]:
    """Every profiled device and the identity facts recorded with it (None: none recorded)."""
    if isinstance(manifest, Manifest):
        return manifest.device_identities()
    sections = manifest.get("profiling") or {}
    return {d: (sections.get(d) or {}).get("identity") for d in _devices(manifest)}


def resolve_device(manifest, name: str) -> str | None:
    """A profiled device by its key, or by its target's name (the first profiled machine
    of that target); None when neither is profiled."""
    return records.resolve_device(_devices(manifest), name)
