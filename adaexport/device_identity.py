"""Which machine a measurement was taken on, precisely enough that two machines that would
measure differently never share a key (standard library only: the runtime uses it).

A target (``x86-cpu``, ``jetson-orin-nx``) is a class of devices: an AMD EPYC without VNNI
and a Xeon with AMX are both ``x86-cpu``, yet their latencies and even their int8
accuracies differ. The identity adds what changes the kernels a backend runs:

* the CPU model and the ISA features that select kernels (x86: AVX2, FMA, AVX-512, VNNI,
  BF16, AMX; Arm: NEON/ASIMD, dot product, i8mm, BF16, SVE);
* the GPU's name and compute capability (NVIDIA driver's /proc entries; NVML when installed);
* on a Jetson, the module (device tree) and the Jetson Linux release;
* the versions of the installed inference backends (read from package metadata, without
  importing them).

Profiles are stored under ``identity_key`` (``<target>:<cpu or module>:<hash>``), with the
facts beside them (``manifest.profiling[key].identity``), and ``match`` finds the section
that fits the machine the runtime runs on: the exact identity, else the same CPU/GPU model,
else the same target class (which the runtime reports as a warning).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

from .hardware import ROOT_ENV, system_root  # noqa: F401 - re-exported
from .hardware.machine import KERNEL_FLAGS, cpu_facts, gpu_facts  # noqa: F401 - re-exported
from .manifest_records import target_of

HARDWARE = ("target", "cpu", "isa", "gpu", "jetson_module", "l4t")


def backend_versions() -> dict[str, str]:
    """The installed inference backends and their versions (package metadata of each
    backend's ``distributions``, the library not imported)."""
    from importlib import metadata

    from .backends.base import BackendError
    from .backends.registry import backend_names, get_backend

    out = {}
    for backend in backend_names():
        try:
            packages = get_backend(backend).distributions
        except BackendError:
            continue
        for package in packages:
            try:
                out[backend] = metadata.version(package)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def identity(target: str, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """This machine as a device of ``target``."""
    from .hardware.jetson import l4t_release, read_device_tree

    root = system_root(root)
    jetson = read_device_tree(root)
    return {"target": target, **cpu_facts(root), "gpu": gpu_facts(root),
            "jetson_module": (jetson.sku or jetson.model) if jetson else None,
            "l4t": l4t_release(root) if jetson else None, "backends": backend_versions()}


def this_machine(target: str) -> tuple[str, dict[str, Any]]:
    """This machine's profile key as a device of ``target``, and its identity facts."""
    facts = identity(target)
    return identity_key(facts), facts


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "unknown"


def identity_key(facts: dict[str, Any]) -> str:
    """``<target>:<module or GPU or CPU>:<8 hex of every fact>``: readable, and different for
    any two identities."""
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:8]
    label = facts.get("jetson_module") or (facts.get("gpu") or {}).get("name") or facts.get("cpu") or "unknown"
    return f"{facts['target']}:{_slug(str(label))}:{digest}"


def match(sections: dict[str, dict | None], here: dict[str, Any]) -> tuple[str | None, str]:
    """The profile key whose identity fits ``here`` best, and how: ``exact`` (same hardware,
    and the backends installed here at the versions profiled), ``same model`` (the same
    CPU, GPU and Jetson module and release, other backend versions), ``target class`` (only
    the target is the same: numbers from another machine); (None, "none") otherwise.
    ``sections``: key -> the identity facts recorded with it (None for a bare target key)."""
    same_class = [k for k in sections if target_of(k) == here["target"]]
    hardware = {k: here.get(k) for k in HARDWARE}
    for key in same_class:
        facts = sections[key] or {}
        if facts and {k: facts.get(k) for k in HARDWARE} == hardware:
            recorded = facts.get("backends") or {}
            if all(recorded.get(b) == v for b, v in (here.get("backends") or {}).items() if b in recorded):
                return key, "exact"
    for key in same_class:
        facts = sections[key] or {}
        if facts and (facts.get("cpu"), facts.get("gpu"), facts.get("jetson_module"), facts.get("l4t")) == \
                (here.get("cpu"), here.get("gpu"), here.get("jetson_module"), here.get("l4t")):
            return key, "same model"
    if same_class:
        return same_class[0], "target class"
    return None, "none"
