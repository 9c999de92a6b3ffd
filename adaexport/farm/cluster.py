"""Devices on a Ray cluster: what each advertises, how one joins, how the driver finds them.

A device node carries custom resources named after what it is, so Ray schedules work only
where it can run:

* ``adaexport-device=<identity key>`` (1 unit): the node's device identity
  (adaexport.device_identity), e.g. ``x86-cpu:amd-epyc:1a2b3c4d``. A profiling task asks
  for the whole unit, so at most one measurement runs on a device at a time;
* ``adaexport-target=<target>`` and ``adaexport-backend=<name>`` (1000 units each): the
  target class and the inference backends installed there, for placement by capability.

Ray resources are numbers, so the identity's facts travel another way: ``list_devices``
runs a small task on each device that returns them (and the power modes its target names).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import shutil
import subprocess
import sys
from typing import Any

from . import FarmError, FarmUnavailable, import_ray

DEVICE = "adaexport-device="
TARGET = "adaexport-target="
BACKEND = "adaexport-backend="
SHARED_UNITS = 1000          # target/backend resources: many tasks may ask for them at once
NAMESPACE = "adaexport"


@dataclasses.dataclass(frozen=True)
class FarmDevice:
    key: str                  # the device identity key (profile key in manifests)
    target: str
    backends: tuple[str, ...]
    nodes: tuple[str, ...]    # Ray node ids advertising this identity (identical machines share it)
    alive: bool

    @property
    def resource(self) -> str:
        return DEVICE + self.key

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "target": self.target, "backends": list(self.backends), "nodes": list(self.nodes),
                "alive": self.alive}


def device_resources(key: str, target: str, backends: list[str]) -> dict[str, float]:
    """The custom resources a device node advertises (see the module docstring)."""
    resources = {DEVICE + key: 1.0, TARGET + target: float(SHARED_UNITS)}
    resources.update({BACKEND + b: float(SHARED_UNITS) for b in sorted(backends)})
    return resources


def local_device(target: str | None = None) -> tuple[str, str, list[str]]:
    """This machine as a farm device: (identity key, target, backends installed)."""
    from ..device_identity import this_machine
    from ..targets import get_target

    name = get_target(target).name
    key, facts = this_machine(name)
    return key, name, sorted(facts.get("backends") or {})


def join_command(address: str, target: str | None = None, extra: list[str] | None = None) -> list[str]:
    """The ``ray start`` command line that joins this machine to the cluster at ``address``
    as an adaexport device."""
    key, name, backends = local_device(target)
    ray = shutil.which("ray", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if ray is None:
        raise FarmUnavailable("the 'ray' command is not installed here: pip install 'adaexport[farm]' (Ray)")
    return [ray, "start", "--address", address, "--resources", json.dumps(device_resources(key, name, backends)),
            *(extra or [])]


def join(address: str, target: str | None = None, extra: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run ``ray start --address ADDRESS --resources ...`` (adaexport farm join)."""
    return subprocess.run(join_command(address, target, extra), check=False, capture_output=True, text=True)


def _reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on (ray.init would retry for minutes)."""
    import socket

    if "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise FarmError(f"--ray {address}: expected HOST:PORT (or ray://HOST:PORT)")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise FarmUnavailable(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def connect(address: str):
    """Connect this process to the cluster as its driver; returns the ray module."""
    ray = import_ray()
    if not ray.is_initialized():
        _reachable(address)
        try:
            ray.init(address=address, namespace=NAMESPACE, logging_level="ERROR", log_to_driver=False,
                     configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise FarmUnavailable(f"cannot reach the Ray cluster at {address}: {str(exc).splitlines()[0]}") from None
    return ray


def devices_from_nodes(nodes: list[dict]) -> list[FarmDevice]:
    """The adaexport devices among ``ray.nodes()``, one per identity, alive ones first."""
    found: dict[str, dict[str, Any]] = {}
    for node in nodes:
        resources = node.get("Resources") or {}
        keys = [r[len(DEVICE):] for r in resources if r.startswith(DEVICE)]
        if not keys:
            continue
        target = next((r[len(TARGET):] for r in resources if r.startswith(TARGET)), "unknown")
        backends = tuple(sorted(r[len(BACKEND):] for r in resources if r.startswith(BACKEND)))
        for key in keys:
            entry = found.setdefault(key, {"target": target, "backends": backends, "nodes": [], "alive": False})
            entry["nodes"].append(node.get("NodeID", "?"))
            entry["alive"] = entry["alive"] or bool(node.get("Alive"))
    return sorted((FarmDevice(key=k, target=v["target"], backends=v["backends"], nodes=tuple(v["nodes"]),
                              alive=v["alive"]) for k, v in found.items()),
                  key=lambda d: (not d.alive, d.key))


def select_devices(devices: list[FarmDevice], selector: str | None) -> list[FarmDevice]:
    """The live devices a ``--devices`` selector names: comma-separated shell patterns, each
    matched against the identity key and the target (None: every live device)."""
    live = [d for d in devices if d.alive]
    if not selector:
        return live
    patterns = [p.strip() for p in selector.split(",") if p.strip()]
    if not patterns:
        raise FarmError("--devices: give at least one pattern (a target such as jetson-orin-nx, or an identity key)")
    chosen = [d for d in live if any(fnmatch.fnmatchcase(d.key, p) or fnmatch.fnmatchcase(d.target, p)
                                     for p in patterns)]
    if not chosen:
        known = ", ".join(d.key for d in live) or "none"
        raise FarmError(f"--devices {selector}: no live device matches (devices: {known})")
    return chosen


def _describe_here(target: str) -> dict[str, Any]:
    """Runs on a device: its identity facts and the power modes its target names."""
    from ..device_identity import this_machine
    from ..targets import get_target

    key, facts = this_machine(target)
    modes = [m.name for m in get_target(target).power_modes_for(facts.get("jetson_module"), facts.get("l4t"))]
    return {"key": key, "identity": facts, "power_modes": modes or ["default"]}


def list_devices(address: str) -> list[dict[str, Any]]:
    """Every device on the cluster with what it advertises and, from a task run on each
    live one, its identity facts and power modes (``adaexport farm ls``)."""
    ray = connect(address)
    devices = devices_from_nodes(ray.nodes())
    remote = ray.remote(_describe_here)
    pending = {d.key: remote.options(resources={d.resource: 0.001}, num_cpus=0).remote(d.target)
               for d in devices if d.alive}
    out = []
    for device in devices:
        row = device.as_dict()
        if device.key in pending:
            try:
                row.update(ray.get(pending[device.key], timeout=120))
            except Exception as exc:  # noqa: BLE001 - a device that cannot answer is listed with why
                row["error"] = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        out.append(row)
    return out


__all__ = ["FarmDevice", "FarmError", "connect", "device_resources", "devices_from_nodes", "join", "join_command",
           "list_devices", "local_device", "select_devices"]
