"""``adaexport compile DIR --ray ADDRESS``: finish a build's pending engines on farm devices.

A cross-build leaves engines pending that only a device of the build's target can build
(TensorRT plans; any backend that ``defers``). The driver

1. gives each backend with pending engines to a live device of the build's target that
   advertises that backend (``adaexport-target=``, ``adaexport-backend=`` resources), one
   job per device; a backend no device serves is named with the target it needs;
2. ships each device the inputs a local ``adaexport compile`` reads (``compile_inputs``:
   the manifest, with the build profile's text in it, the pending engines' sidecars and
   sources, the ONNX and shared weights of their points, which are the parity references),
   each file put into Ray's object store once;
3. runs the device's own ``adaexport compile --engines ...`` on that copy (the same build,
   parity check and dataset as a local run; torch is never needed there);
4. takes back the files the compile made and the finished engines' manifest entries, and
   alone writes them into the build directory: each file atomically, then the manifest
   once. ``adaexport compile --ray`` writes nothing unless every device succeeded
   (``all_or_nothing``); ``profile --ray`` keeps what the others finished.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..errors import EnvironmentProblem
from ..manifest_records import EngineRecord, Manifest
from .cluster import FarmDevice
from .shipping import FilePuts, as_answered, build_files, changed_since, land_files, run_adaexport, unpacked


class FarmCompileFailed(EnvironmentProblem, RuntimeError):
    """No device on the cluster can finish the pending engines, or one failed doing it
    (exit 3); nothing of the compile was written."""


@dataclasses.dataclass
class CompileJob:
    device: str                         # identity key of the device that builds them
    target: str
    engines: list[str]                  # the pending engine ids it is given
    finished: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def plan_jobs(pending: list, devices: list[FarmDevice], target: str) -> tuple[list[CompileJob], list[str]]:
    """Which device builds which pending engines (records): for each backend, the first live
    device of ``target`` with that backend installed, one job per device; and, for each
    backend no device serves, why (one line naming the target and backend)."""
    by_backend: dict[str, list[str]] = {}
    for engine in pending:
        by_backend.setdefault(engine.backend, []).append(engine.id)
    jobs: dict[str, CompileJob] = {}
    unserved = []
    for backend, ids in by_backend.items():
        device = next((d for d in devices if d.alive and d.target == target and backend in d.backends), None)
        if device is None:
            unserved.append(f"no live device of target {target} with the {backend} backend to finish {len(ids)} "
                            f"pending {backend} engine(s) (adaexport farm join --device {target} on one)")
            continue
        jobs.setdefault(device.key, CompileJob(device.key, target, [])).engines.extend(ids)
    return list(jobs.values()), unserved


def compile_inputs(directory: Path, manifest, pending: list) -> list[str]:
    """The build-directory files a device compile of ``pending`` reads: all but the build
    cache and the files only ready engines read (the pending points' ONNX Runtime fp32
    engines, their parity references, are kept)."""
    from ..device_compile import parity_reference

    keep = {r.file for e in pending for r in parity_reference(manifest, e).file_records()}
    only_ready = {r.file for e in manifest.engines if e.ready for r in e.file_records()} - keep
    return [rel for rel in build_files(Path(directory)) if rel not in only_ready]


def compile_here(names: list[str], engine_ids: list[str], target: str, dataset: str | None,
                 *contents: bytes) -> dict[str, Any]:
    """Runs on a device: finish ``engine_ids`` of the shipped build with this machine's
    ``adaexport compile``; returns the files it made or changed and their manifest entries."""
    with unpacked(names, contents) as root:
        before = build_files(root)
        report, error = run_adaexport("compile", str(root), "--device", target, "--engines", ",".join(engine_ids),
                                      *(["--dataset", dataset] if dataset else []))
        if error is not None:
            return {"error": error}
        files = changed_since(root, before)
        files.pop("manifest.json", None)            # the driver merges the finished engines' entries
        manifest = Manifest.from_json(json.loads((root / "manifest.json").read_text(encoding="utf-8")))
    finished = report["finished"]
    return {"finished": finished, "files": files,
            "entries": [e.to_json() for e in manifest.engines if e.id in finished]}


def _land(directory: Path, manifest: Manifest, answers: list[dict]) -> None:
    """Write what the devices made (each file atomically), then the manifest once."""
    from ..manifest import write_manifest

    for answer in answers:
        land_files(directory, answer["files"])
    entries = {e["id"]: EngineRecord.from_json(e) for answer in answers for e in answer["entries"]}
    manifest.engines = [entries.get(e.id, e) for e in manifest.engines]
    write_manifest(directory, manifest)


def compile_on_farm(directory: Path, ray, devices: list[FarmDevice], *, target: str | None = None,
                    dataset: str | None = None, engines: list[str] | None = None, reporter=None,
                    all_or_nothing: bool = True, timeout_s: float | None = None) -> tuple[list[CompileJob], list[str]]:
    """Finish the pending engines of the build in ``directory`` on ``devices`` (connected
    ``ray``); returns the jobs (with what each finished, or why it failed) and the reasons
    no device could take some. With ``all_or_nothing`` (``adaexport compile --ray``) either
    is FarmCompileFailed and nothing is written."""
    from ..device_compile import pending_engines
    from ..manifest import read_records
    from ..progress import SilentReporter

    directory = Path(directory)
    reporter = reporter or SilentReporter()
    records = read_records(directory)
    pending = pending_engines(records, engines)
    target = target or records.device.target
    jobs, unserved = plan_jobs(pending, devices, target)
    if unserved and all_or_nothing:
        raise FarmCompileFailed(unserved[0])
    if not jobs:
        return jobs, unserved
    names = compile_inputs(directory, records, [e for e in pending if any(e.id in j.engines for j in jobs)])
    puts = FilePuts(ray, directory)
    remote = ray.remote(compile_here)
    resources = {d.key: d.resource for d in devices}
    running = {}
    reporter.stage("compile", sum(len(j.engines) for j in jobs))
    for job in jobs:
        reporter.info(f"farm: {len(job.engines)} pending engine(s) to {job.device}")
        ref = remote.options(resources={resources[job.device]: 1}, num_cpus=0, max_retries=0).remote(
            names, job.engines, target, dataset, *puts.refs_of(names))
        running[ref] = job
    answers = []
    for job, answer in as_answered(ray, running, timeout_s):
        if "error" in answer:
            job.error = answer["error"]                # the caller names it (exit 3, or the device's outcome)
            continue
        job.finished = answer["finished"]
        answers.append(answer)
        for ident in job.finished:
            reporter.advance(ident, f"built on {job.device}")
    reporter.end_stage()
    failed = [j for j in jobs if j.error]
    if failed and all_or_nothing:
        raise FarmCompileFailed(f"device {failed[0].device} failed: {failed[0].error} (nothing was written)")
    if answers:
        _land(directory, records, answers)
    return jobs, unserved


def compile_with_farm(directory: Path, address: str, *, target: str | None = None, dataset: str | None = None,
                      engines: list[str] | None = None, reporter=None) -> list[CompileJob]:
    """``adaexport compile DIR --ray ADDRESS``: every pending engine (of ``engines``) built on
    a live device of the build's target (``target``: another one) that has its backend;
    FarmCompileFailed when none can or one fails, with nothing written."""
    from ..device_compile import pending_engines
    from ..manifest import read_records
    from .cluster import connect, devices_from_nodes

    if not pending_engines(read_records(directory), engines):
        if reporter is not None:
            reporter.info(f"{directory}: no pending engines")
        return []
    ray = connect(address)
    jobs, _ = compile_on_farm(directory, ray, devices_from_nodes(ray.nodes()), target=target, dataset=dataset,
                              engines=engines, reporter=reporter)
    return jobs
