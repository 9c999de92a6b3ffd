"""farm join / farm ls / profile --ray: devices on a Ray cluster (see adaexport.farm).
Ray missing or a cluster out of reach is `FarmUnavailable` (exit 3)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..errors import EXIT_ENVIRONMENT
from .results import Result


@dataclasses.dataclass
class FarmJoinResult(Result):
    command: list[str]                  # the `ray start` command that joins this machine

    def to_json(self) -> dict[str, Any]:
        return {"command": self.command}


def farm_join(address: str, device: str | None = None, ray_args: list[str] | None = None) -> FarmJoinResult:
    """The `ray start` command that joins this machine to the cluster at `address` as an
    adaexport device (its identity, target and backends as custom resources); the CLI runs it."""
    from ..farm.cluster import join_command

    return FarmJoinResult(join_command(address, device, list(ray_args or [])))


@dataclasses.dataclass
class FarmDevicesResult(Result):
    address: str
    devices: list[dict]                 # key, target, backends, power_modes, nodes, alive (error when it failed)

    def to_json(self) -> dict[str, Any]:
        return {"devices": self.devices}


def farm_ls(address: str) -> FarmDevicesResult:
    """The devices on the cluster at `address` (`adaexport farm ls`)."""
    from ..farm.cluster import list_devices

    return FarmDevicesResult(address, list_devices(address))


@dataclasses.dataclass
class FarmProfileResult(Result):
    directory: Path
    outcomes: list                      # adaexport.farm.profiling.DeviceOutcome, one per device

    def failed_checks(self) -> list[str]:
        return [f"{o.device}: {o.error}" for o in self.outcomes if o.error]

    def exit_code(self) -> int:
        return EXIT_ENVIRONMENT if self.failed_checks() else 0   # a device that failed is the farm's doing

    def to_json(self) -> dict[str, Any]:
        return {"manifest": str(self.directory / "manifest.json"), "devices": [o.as_dict() for o in self.outcomes]}


def profile_on_farm(directory: str | Path, address: str, *, devices: str | None = None, power_mode: str | None = None,
                    min_iterations: int | None = None, min_duration: float | None = None,
                    warmup: float | None = None, rounds: int | None = None,
                    max_cv: float | None = None, reporter=None) -> FarmProfileResult:
    """`adaexport profile DIR --ray ADDRESS`: the build's pending engines are first built on
    the selected devices of its target that have their backend, then every selected device
    (`devices`: patterns on target or identity) profiles the engines it can run; the
    manifest gets each one's section. `reporter`: a line per device as it answers."""
    from ..farm.profiling import profile_on_farm as run, profile_options
    from ..progress import QuietReporter

    options = profile_options(power_mode, min_iterations, min_duration, warmup, rounds, max_cv)
    reporter = reporter or QuietReporter()
    try:
        _, outcomes = run(Path(directory), address, devices=devices, options=options, reporter=reporter)
    finally:
        reporter.close()
    return FarmProfileResult(Path(directory), outcomes)
