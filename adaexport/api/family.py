"""build, export, compile: a family of engines from a checkpoint, and finishing on the
device what a cross-build left pending."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..manifest_records import EngineRecord, Manifest
from .results import Result

@dataclasses.dataclass
class BuildResult(Result):
    directory: Path
    manifest: Manifest
    exported: int                # points exported in this run (0 when all came from the cache)
    parity_runs: int             # parity checks run in this run
    failures: list[str]          # engines that failed their check (the manifest says why)

    @property
    def manifest_path(self) -> Path:
        return self.directory / "manifest.json"

    @property
    def pending(self) -> list[EngineRecord]:
        """Engines left for `adaexport compile` on the device (TensorRT not installed here)."""
        return [e for e in self.manifest.engines if e.pending]

    def failed_checks(self) -> list[str]:
        return list(self.failures)

    def to_json(self) -> dict[str, Any]:
        return {"manifest": str(self.manifest_path), "exported": self.exported, "parity_runs": self.parity_runs,
                "failures": self.failures, "engines": [e.to_json() for e in self.manifest.engines]}


@dataclasses.dataclass
class CompileResult(Result):
    directory: Path
    finished: list[str]          # the engine ids built and checked (here, or on the farm's devices)
    devices: list[dict] = dataclasses.field(default_factory=list)   # --ray: device, engines, finished

    def to_json(self) -> dict[str, Any]:
        return {"manifest": str(self.directory / "manifest.json"), "finished": self.finished,
                **({"devices": self.devices} if self.devices else {})}


def parse_knobs(tokens, widths, depths) -> dict[str, list[int] | None]:
    """Each knob as "32,64" (the command line's form, checked there) or a list of ints."""
    from ..space import knob_lists

    parsed = knob_lists(*(v if isinstance(v, str) or v is None else None for v in (tokens, widths, depths)))
    for name, value in zip(("tokens", "widths", "depths"), (tokens, widths, depths)):
        if value is not None and not isinstance(value, str):
            parsed[name] = [int(v) for v in value]
    return parsed


def _check_engines(engines, device: str | None) -> None:
    """Each --engines pair must be one the target builds (else it would be skipped silently)."""
    from ..errors import UsageError
    from ..targets import get_target

    target = get_target(device)
    offered = [f"{e.backend}:{p}" for e in target.engines for p in e.precisions]
    unknown = [e for e in engines if e not in offered]
    if unknown:
        raise UsageError(f"--engines {','.join(unknown)}: target {target.name} builds {', '.join(offered)}")


def build(out: str | Path, model: str | Path | None = None, *, device: str | None = None, grid: str | None = None,
          tokens=None, widths=None, depths=None, attention: str | None = None, batch: int = 1,
          profile: str = "default", engines: list[str] | None = None, atol: float | None = None,
          min_agreement: float | None = None, max_drop: float | None = None, tie_margin: float | None = None,
          dataset: str | None = None, measure: bool = True, search: str | Path | None = None, parity: bool = True,
          jobs: int = 1, ray: str | None = None, reporter=None) -> BuildResult:
    """Export, compile and check a family of engines against PyTorch, profile them when
    this machine is the target, and write the manifest (`adaexport build`).

    `tokens`/`widths`/`depths`: "32,64" or a list of ints (None: the grid preset's);
    `device`: a target name or .toml file (None: this machine); `profile`: a build
    profile name or .toml file, whose values `engines` ("backend:precision"), `atol`,
    `min_agreement`, `max_drop` and `tie_margin` override (recorded in the manifest); `reporter`:
    progress (see adaexport.progress; None: silent); `jobs`: worker processes for the
    per-point work, or with `ray` (a Ray cluster's address) that many Ray workers there."""
    from ..build import BuildRequest, run_build
    from ..profiles import load_profile
    from ..progress import QuietReporter
    from ..targets import resolve_target

    if any(v is not None for v in (engines, atol, min_agreement, max_drop, tie_margin)):
        profile = load_profile(profile).with_overrides(engines, atol, min_agreement, max_drop, tie_margin)
        _check_engines(engines or (), device)
    request = BuildRequest(
        out=Path(out), model=None if model is None else Path(model), target=resolve_target(device), profile=profile,
        grid=grid, **parse_knobs(tokens, widths, depths), attention=attention, batch=batch, dataset=dataset,
        parity=parity, measure=measure, search=None if search is None else Path(search),
        jobs=jobs, ray=ray)
    reporter = reporter or QuietReporter()
    try:
        done = run_build(request, reporter)
    finally:
        reporter.close()
    return BuildResult(directory=done.directory, manifest=done.manifest, exported=done.exported,
                       parity_runs=done.parity_runs, failures=list(done.failures))


def export(out: str | Path, model: str | Path | None = None, **options) -> BuildResult:
    """Export one static ONNX model per grid point (sharing one weights file) and the
    manifest, without compiling or checking (`adaexport export`); options as `build`."""
    return build(out, model, **{"dataset": "demo", **options, "parity": False})


def compile(directory: str | Path, device: str | None = None, reporter=None,  # noqa: A001
            dataset: str | None = None, engines: list[str] | None = None, ray: str | None = None) -> CompileResult:
    """On the device: build and check the engines a cross-build left pending (`adaexport
    compile`); needs no torch and nothing from the build host but the build directory
    (and `dataset`, the build's parity data, where it was not the bundled demo).
    `engines`: only these pending engine ids. `ray`: a cluster address; each pending engine
    is built by a device there of the build's target (`device`: another) with its backend,
    and only this process writes the build directory (adaexport.farm.compiling)."""
    from ..progress import QuietReporter

    reporter = reporter or QuietReporter()
    try:
        if ray is not None:
            from ..farm.compiling import compile_with_farm

            jobs = compile_with_farm(Path(directory), ray, target=device, dataset=dataset, engines=engines,
                                     reporter=reporter)
            return CompileResult(directory=Path(directory), finished=[e for j in jobs for e in j.finished],
                                 devices=[j.as_dict() for j in jobs])
        from ..device_compile import finish_pending_engines

        finished = finish_pending_engines(Path(directory), device, reporter, dataset, engines)
    finally:
        reporter.close()
    return CompileResult(directory=Path(directory), finished=finished)
