"""profile: measure every engine of a build on this machine and record it in the manifest."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..errors import EnvironmentProblem
from ..manifest_records import Manifest
from .results import Result


@dataclasses.dataclass
class ProfileResult(Result):
    directory: Path
    manifest: Manifest
    device: str                         # the device key the numbers are recorded under
    target: str
    modes: dict[str, list[str]]         # power mode -> the engine ids profiled in it
    skipped: list[str]                  # engines not profiled, each with the reason
    skipped_modes: dict[str, str]       # power modes not profiled, and why

    def to_json(self) -> dict[str, Any]:
        done = self.modes
        return {"manifest": str(self.directory / "manifest.json"), "device": self.device, "target": self.target,
                "modes": list(done), "skipped_modes": self.skipped_modes, "skipped": self.skipped,
                "engines": {e.id: {m: e.profile_at(self.device, m).to_json() for m in done if e.id in done[m]}
                            for e in self.manifest.engines if any(e.id in ids for ids in done.values())}}


def _settings(manifest: Manifest, **overrides):
    """The build profile's [profiling] settings (the manifest's own copy of the profile
    where it has one), with the command's overrides."""
    from ..profiles import ProfileError, profile_of_manifest

    try:
        settings = profile_of_manifest(manifest).profiling
    except ProfileError:
        from ..profiles import load_profile

        settings = load_profile("default").profiling
    return settings.replace(**overrides)


def profile(directory: str | Path, *, device: str | None = None, power_mode: str | None = None,
            min_iterations: int | None = None, min_duration: float | None = None, warmup: float | None = None,
            rounds: int | None = None, max_cv: float | None = None, engines: list[str] | None = None,
            reporter=None) -> ProfileResult:
    """Measure every engine (or `engines`) of a build here: latency percentiles, load time,
    memory, energy where there is a sensor; recorded per device and power mode, each mode
    written to the manifest as soon as it is measured (`adaexport profile`)."""
    from ..manifest import read_records, write_manifest
    from ..profiling.family import device_key, profile_manifest
    from ..profiling.modes_plan import plan_modes
    from ..hardware.power_modes import walk_power_modes
    from ..progress import QuietReporter
    from ..targets import get_target

    directory = Path(directory)
    manifest = read_records(directory)
    target = get_target(device)
    settings = _settings(manifest, min_iterations=min_iterations, min_duration_s=min_duration, warmup_s=warmup,
                         rounds=rounds, max_cv=max_cv)
    modes, switch = plan_modes(target, power_mode)
    reporter = reporter or QuietReporter()
    done: dict[str, list[str]] = {}
    skipped: list[str] = []
    skipped_modes: dict[str, str] = {}
    device_id, _ = device_key(target)

    def skip_mode(name: str, why: str) -> None:
        skipped_modes[name] = why
        reporter.warn(f"power mode {name} not profiled: {why}")

    def run(mode: str) -> None:
        results, skipped[:] = profile_manifest(directory, manifest, target, device=device_id, mode=mode,
                                               settings=settings, wanted=engines, reporter=reporter)
        write_manifest(directory, manifest)       # each mode is kept as soon as it is measured
        done[mode] = list(results)

    try:
        if switch:
            walk_power_modes(modes, run, on_skip=skip_mode,
                             on_switch=lambda name: reporter.info(f"nvpmodel: switched to {name} (read back)"))
        else:
            for mode in modes:
                run(mode)
    finally:
        reporter.close()
    if not done and skipped_modes:
        raise EnvironmentProblem("no power mode profiled: "
                                 + "; ".join(f"{m}: {why}" for m, why in skipped_modes.items()))
    return ProfileResult(directory=directory, manifest=manifest, device=device_id, target=target.name, modes=done,
                         skipped=list(skipped), skipped_modes=skipped_modes)
