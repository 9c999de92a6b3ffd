"""``adaexport profile DIR --ray ADDRESS``: profile one build on every device of a farm.

For each selected device the driver

1. chooses the engines that device can run: ready, of a backend installed there and listed
   by the device's target, and TensorRT plans only on devices of the build's own target
   (a plan is specific to the GPU it was built for);
2. ships them through Ray's object store (each file put once, whatever the number of
   devices): the manifest and exactly the files those engines read (``files`` records,
   the shared weights included), which the device checks against their sha256 as any
   ``adaexport profile`` does;
3. runs the device's own ``adaexport profile`` on that copy in a temporary directory, so
   the numbers are taken by the same code, settings and power-mode walk as a local run,
   under the identity the device computes for itself;
4. takes back only that device's sections (``engine.profile[<key>]`` of the shipped
   engines and ``profiling[<key>]``) and merges them into the manifest, which only the
   driver writes (atomically, once, after every device answered). A device that fails is
   named with its one-line reason; the others' numbers are still kept.

The device needs the runtime extras and Ray, never torch: profiling imports no model code.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import FarmError
from .cluster import FarmDevice, connect, devices_from_nodes, select_devices

TRANSPORTABLE = ("onnxruntime", "openvino")     # engines that run on any device with the backend


@dataclasses.dataclass
class DeviceOutcome:
    device: str                         # identity key as the driver saw it advertised
    target: str
    engines: list[str]                  # engine ids shipped
    profiled_as: str | None = None      # the key the device recorded its numbers under
    modes: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def runnable_on(manifest: dict, device: FarmDevice, device_backends: list[str]) -> tuple[list[dict], list[str]]:
    """The engines of ``manifest`` that ``device`` can run, and why the others are not sent."""
    build_target = (manifest.get("device") or {}).get("target")
    chosen, skipped = [], []
    for engine in manifest.get("engines", []):
        ident, backend = engine["id"], engine["backend"]
        if engine.get("status", "ready") != "ready":
            skipped.append(f"{ident}: {engine.get('status')} (finish it on a {build_target} device with "
                           "adaexport compile first)")
        elif backend not in device.backends:
            skipped.append(f"{ident}: {backend} is not installed on {device.key}")
        elif backend not in device_backends:
            skipped.append(f"{ident}: {device.target} does not run {backend}")
        elif backend not in TRANSPORTABLE and device.target != build_target:
            skipped.append(f"{ident}: a {backend} engine built for {build_target} runs only there")
        else:
            chosen.append(engine)
    return chosen, skipped


def _files_of(engines: list[dict]) -> list[str]:
    from ..manifest import engine_file_records

    names: dict[str, None] = {}
    for engine in engines:
        for record in engine_file_records(engine):
            names[record["file"]] = None
    return list(names)


def profile_here(manifest_text: str, names: list[str], engine_ids: list[str], target: str, options: list[str],
                 *contents: bytes) -> dict[str, Any]:
    """Runs on a device: write the shipped build into a temporary directory, profile it with
    this machine's ``adaexport profile``, and return this device's sections."""
    with tempfile.TemporaryDirectory(prefix="adaexport-farm-") as tmp:
        root = Path(tmp)
        (root / "manifest.json").write_text(manifest_text, encoding="utf-8")
        for name, data in zip(names, contents):
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        command = [sys.executable, "-m", "adaexport", "profile", str(root), "--device", target,
                   "--engines", ",".join(engine_ids), "--json", *options]
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr + proc.stdout).strip().splitlines() if ln.strip()]
            return {"error": lines[-1] if lines else f"adaexport profile exited {proc.returncode}"}
        report = json.loads(proc.stdout)
        report = report.get("result", report)            # the --json envelope, or the older bare document
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    key = report["device"]
    return {"key": key, "modes": report.get("modes", []), "skipped": report.get("skipped", []),
            "section": manifest["profiling"][key],
            "profiles": {e["id"]: e["profile"][key] for e in manifest["engines"]
                         if e["id"] in engine_ids and key in (e.get("profile") or {})}}


def merge_device(manifest: dict, answer: dict[str, Any]) -> None:
    """Put one device's answer into the manifest (in memory): only its own key is written."""
    key = answer["key"]
    for engine in manifest.get("engines", []):
        if engine["id"] in answer["profiles"]:
            engine["profile"] = {**(engine.get("profile") or {}), key: answer["profiles"][engine["id"]]}
    manifest["profiling"] = {**(manifest.get("profiling") or {}), key: answer["section"]}


def profile_options(power_mode: str | None = None, min_iterations: int | None = None,
                    min_duration: float | None = None, warmup: float | None = None, rounds: int | None = None,
                    max_cv: float | None = None) -> list[str]:
    """The ``adaexport profile`` options every device runs with."""
    pairs = [("--power-mode", power_mode), ("--min-iterations", min_iterations), ("--min-duration", min_duration),
             ("--warmup", warmup), ("--rounds", rounds), ("--max-cv", max_cv)]
    return [str(x) for flag, value in pairs if value is not None for x in (flag, value)]


def profile_on_farm(directory: Path, address: str, *, devices: str | None = None, options: list[str] | None = None,
                    timeout_s: float | None = None) -> tuple[dict, list[DeviceOutcome]]:
    """Profile the build in ``directory`` on every selected device of the farm and write the
    merged manifest; returns (manifest, one outcome per device)."""
    from ..manifest import read_manifest, write_manifest
    from ..pareto import update_pareto
    from ..targets import get_target

    directory = Path(directory)
    manifest = read_manifest(directory)
    ray = connect(address)
    chosen = select_devices(devices_from_nodes(ray.nodes()), devices)
    if not chosen:
        raise FarmError(f"no adaexport device has joined the cluster at {address} (adaexport farm join)")
    remote = ray.remote(profile_here)
    manifest_text = (directory / "manifest.json").read_text(encoding="utf-8")
    shipped: dict[str, Any] = {}                       # file -> object ref, each put once
    outcomes, pending = [], {}
    for device in chosen:
        engines, skipped = runnable_on(manifest, device, get_target(device.target).backends)
        outcome = DeviceOutcome(device=device.key, target=device.target, engines=[e["id"] for e in engines],
                                skipped=skipped)
        outcomes.append(outcome)
        if not engines:
            outcome.error = "no engine of this build can run there"
            continue
        names = _files_of(engines)
        for name in names:
            if name not in shipped:
                shipped[name] = ray.put((directory / name).read_bytes())
        pending[device.key] = remote.options(resources={device.resource: 1}, num_cpus=0, max_retries=0).remote(
            manifest_text, names, outcome.engines, device.target, list(options or []), *[shipped[n] for n in names])
    for outcome in outcomes:
        ref = pending.get(outcome.device)
        if ref is None:
            continue
        try:
            answer = ray.get(ref, timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001 - a lost device or task: named, the others still count
            text = str(exc).strip()
            outcome.error = text.splitlines()[-1] if text else type(exc).__name__
            continue
        if "error" in answer:
            outcome.error = answer["error"]
            continue
        merge_device(manifest, answer)
        outcome.profiled_as, outcome.modes = answer["key"], answer["modes"]
        outcome.skipped += answer["skipped"]
    if any(o.profiled_as for o in outcomes):
        write_manifest(directory, update_pareto(manifest))
    return manifest, outcomes
