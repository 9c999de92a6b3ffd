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
"""

from __future__ import annotations

DEFAULT_MODE = "default"
FLOPS_FRONT = "flops"


def front_key(device: str, mode: str) -> str:
    """The key of a device's power mode in ``manifest["pareto"]``."""
    return f"{device}/{mode}"


def profile_of(engine: dict, device: str, mode: str = DEFAULT_MODE) -> dict | None:
    """The engine's profile on ``device`` in power mode ``mode``, or None if not profiled."""
    return ((engine.get("profile") or {}).get(device) or {}).get(mode)


def latency_ms(engine: dict, device: str, mode: str = DEFAULT_MODE, statistic: str = "p50") -> float | None:
    """One latency statistic (p50, p90, p95, p99, mean, ...) in milliseconds, or None."""
    profile = profile_of(engine, device, mode)
    if not profile:
        return None
    value = (profile.get("latency_ms") or {}).get(statistic)
    return float(value) if value is not None else None


def accuracy_of(engine: dict, device: str | None = None) -> float | None:
    """The engine's measured top-1 (0..1) from ``adaexport eval``: as measured on ``device``
    when it was evaluated there (``engine["accuracies"][device]``; int8 accuracy differs
    between CPUs), else the latest evaluation; None when never evaluated."""
    record = ((engine.get("accuracies") or {}).get(device) if device else None) or engine.get("accuracy") or {}
    value = record.get("top1")
    return float(value) if value is not None else None


def profiled_devices(manifest: dict) -> list[str]:
    """Every device with at least one profiled engine, in first-seen order."""
    seen: dict[str, None] = {}
    for name in (manifest.get("profiling") or {}):
        seen[name] = None
    for engine in manifest.get("engines", []):
        for name in (engine.get("profile") or {}):
            seen[name] = None
    return list(seen)


def profiled_modes(manifest: dict, device: str) -> list[str]:
    """The power modes of ``device`` with at least one profiled engine."""
    seen: dict[str, None] = {}
    for engine in manifest.get("engines", []):
        for mode in ((engine.get("profile") or {}).get(device) or {}):
            seen[mode] = None
    return list(seen)


def target_of(device: str) -> str:
    """The target class of a profile key (``x86-cpu:<model>:<hash>`` or ``x86-cpu``)."""
    return device.split(":", 1)[0]


def default_device(manifest: dict) -> str | None:
    """The device whose numbers apply by default: the first profiled device of the
    manifest's own target, else the only profiled device, else None."""
    devices = profiled_devices(manifest)
    own = (manifest.get("device") or {}).get("target")
    mine = [d for d in devices if target_of(d) == own]
    if mine:
        return mine[0]
    return devices[0] if len(devices) == 1 else None


def device_identities(manifest: dict) -> dict[str, dict | None]:
    """Every profiled device and the identity facts recorded with it (None: none recorded)."""
    sections = manifest.get("profiling") or {}
    return {d: (sections.get(d) or {}).get("identity") for d in profiled_devices(manifest)}


def resolve_device(manifest: dict, name: str) -> str | None:
    """A profiled device by its key, or by its target's name (the first profiled machine
    of that target); None when neither is profiled."""
    devices = profiled_devices(manifest)
    if name in devices:
        return name
    return next((d for d in devices if target_of(d) == name), None)
