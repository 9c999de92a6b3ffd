"""``adaexport profile DIR --ray ADDRESS``: profile one build on every device of a farm.

First, the build's pending engines (a cross-build's TensorRT plans) are finished on the
selected devices of the build's target that have their backend (``compiling``, the same as
``adaexport compile DIR --ray``). Then, for each selected device, the driver

1. chooses the engines that device can run: ready, of a backend installed there and listed
   by the device's target, and TensorRT plans only on devices of the build's own target
   (a plan is specific to the GPU it was built for);
2. ships them through Ray's object store (``shipping``: each file put once, whatever the
   number of devices): the manifest and exactly the files those engines read (``files`` records,
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
from pathlib import Path
from typing import Any

from . import FarmError
from ..manifest_measured import DeviceProfiling
from ..manifest_records import Manifest
from .cluster import FarmDevice, connect, devices_from_nodes, select_devices
from .shipping import FilePuts, as_answered, run_adaexport, unpacked

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
    compiled: list[str] = dataclasses.field(default_factory=list)   # pending engines it finished first

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def runnable_on(manifest, device: FarmDevice, device_backends: list[str]) -> tuple[list, list[str]]:
    """The engines of ``manifest`` (a ``manifest_records.Manifest``) that ``device`` can run,
    and why the others are not sent."""
    build_target = manifest.device.target
    chosen, skipped = [], []
    for engine in manifest.engines:
        ident, backend = engine.id, engine.backend
        if not engine.ready:
            skipped.append(f"{ident}: {engine.status} (no device of {build_target} with {backend} among the "
                           "selected ones finished it: adaexport compile DIR --ray ADDRESS)")
        elif backend not in device.backends:
            skipped.append(f"{ident}: {backend} is not installed on {device.key}")
        elif backend not in device_backends:
            skipped.append(f"{ident}: {device.target} does not run {backend}")
        elif backend not in TRANSPORTABLE and device.target != build_target:
            skipped.append(f"{ident}: a {backend} engine built for {build_target} runs only there")
        else:
            chosen.append(engine)
    return chosen, skipped


def _files_of(engines: list) -> list[str]:
    names: dict[str, None] = {"manifest.json": None}
    for engine in engines:
        for record in engine.file_records():
            names[record.file] = None
    return list(names)


def profile_here(names: list[str], engine_ids: list[str], target: str, options: list[str],
                 *contents: bytes) -> dict[str, Any]:
    """Runs on a device: profile the shipped build (its manifest among ``names``) with this
    machine's ``adaexport profile`` and return this device's sections."""
    with unpacked(names, contents) as root:
        report, error = run_adaexport("profile", str(root), "--device", target, "--engines", ",".join(engine_ids),
                                      *options)
        if error is not None:
            return {"error": error}
        manifest = Manifest.from_json(json.loads((root / "manifest.json").read_text(encoding="utf-8")))
    key = report["device"]
    return {"key": key, "modes": report.get("modes", []), "skipped": report.get("skipped", []),
            "section": manifest.profiling[key].to_json(),
            "profiles": {e.id: {mode: run.to_json() for mode, run in e.profile[key].items()}
                         for e in manifest.engines if e.id in engine_ids and key in e.profile}}


def merge_device(manifest: Manifest, answer: dict[str, Any]) -> None:
    """Put one device's answer into the manifest (in memory): only its own key is written."""
    section = DeviceProfiling.from_json(answer["section"])
    modes = dict.fromkeys(mode for profiles in answer["profiles"].values() for mode in profiles)
    for mode in modes:
        manifest.set_profile(answer["key"], mode, {eid: profiles[mode] for eid, profiles in answer["profiles"].items()
                                                   if mode in profiles}, section)
    if not modes:
        manifest.profiling = {**manifest.profiling, answer["key"]: section}


def profile_options(power_mode: str | None = None, min_iterations: int | None = None,
                    min_duration: float | None = None, warmup: float | None = None, rounds: int | None = None,
                    max_cv: float | None = None) -> list[str]:
    """The ``adaexport profile`` options every device runs with."""
    pairs = [("--power-mode", power_mode), ("--min-iterations", min_iterations), ("--min-duration", min_duration),
             ("--warmup", warmup), ("--rounds", rounds), ("--max-cv", max_cv)]
    return [str(x) for flag, value in pairs if value is not None for x in (flag, value)]


def profile_on_farm(directory: Path, address: str, *, devices: str | None = None, options: list[str] | None = None,
                    timeout_s: float | None = None, reporter=None) -> tuple[dict, list[DeviceOutcome]]:
    """Compile the build's pending engines on the selected devices that can (``compiling``),
    then profile the build in ``directory`` on every selected device and write the merged
    manifest; returns (manifest, one outcome per device)."""
    from ..manifest import read_records, write_manifest
    from ..pareto import update_pareto
    from ..progress import SilentReporter
    from ..targets import get_target
    from .compiling import compile_on_farm

    directory = Path(directory)
    reporter = reporter or SilentReporter()
    ray = connect(address)
    chosen = select_devices(devices_from_nodes(ray.nodes()), devices)
    if not chosen:
        raise FarmError(f"no adaexport device has joined the cluster at {address} (adaexport farm join)")
    jobs, _ = compile_on_farm(directory, ray, chosen, reporter=reporter, all_or_nothing=False, timeout_s=timeout_s)
    manifest = read_records(directory)
    remote = ray.remote(profile_here)
    puts = FilePuts(ray, directory)
    outcomes, pending = [], {}
    for device in chosen:
        engines, skipped = runnable_on(manifest, device, get_target(device.target).backends)
        outcome = DeviceOutcome(device=device.key, target=device.target, engines=[e.id for e in engines],
                                skipped=skipped)
        for job in jobs:
            if job.device == device.key:
                outcome.compiled, outcome.error = job.finished, job.error and f"compile failed: {job.error}"
        outcomes.append(outcome)
        if not engines:
            outcome.error = outcome.error or "no engine of this build can run there"
            continue
        names = _files_of(engines)
        ref = remote.options(resources={device.resource: 1}, num_cpus=0, max_retries=0).remote(
            names, outcome.engines, device.target, list(options or []), *puts.refs_of(names))
        pending[ref] = outcome
    if pending:
        reporter.stage("profile", len(pending))
    for outcome, answer in as_answered(ray, pending, timeout_s):
        if "error" in answer:
            outcome.error = answer["error"]
            reporter.advance(outcome.device, f"failed: {outcome.error}")
            continue
        merge_device(manifest, answer)
        outcome.profiled_as, outcome.modes = answer["key"], answer["modes"]
        outcome.skipped += answer["skipped"]
        reporter.advance(outcome.device, f"{len(outcome.engines)} engine(s) profiled")
    if pending:
        reporter.end_stage()
    if any(o.profiled_as for o in outcomes):
        write_manifest(directory, update_pareto(manifest))
    return manifest, outcomes
