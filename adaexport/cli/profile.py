"""adaexport profile DIR: measure every engine on this device."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..errors import UsageError
from ..manifest_records import Manifest
from ._app import app, command, console, emit, reporter, warn
from .options import DIR_ARG, JSON_OPT


def _table(manifest: Manifest, device: str, mode: str, ids: list[str]) -> Table:
    table = Table(title=f"{device} / {mode}: {len(ids)} engine(s) profiled")
    for col in ("engine", "p50 ms", "p90", "p99", "min..max", "cv", "runs", "load ms", "rss", "energy/inference"):
        table.add_column(col, justify="left" if col == "engine" else "right")
    for engine in manifest.engines:
        if engine.id not in ids:
            continue
        p = engine.profile_at(device, mode)
        lat, rss, energy = p.latencies(), p.rss_bytes(), p.energy_mj()
        table.add_row(engine.id, f"{lat['p50']:.3f}", f"{lat['p90']:.3f}", f"{lat['p99']:.3f}",
                      f"{lat['min']:.3f}..{lat['max']:.3f}", f"{p.cv:.1f}%" + (" !" if p.warnings else ""),
                      str(p.iterations), f"{p.load_ms:.0f}", "-" if rss is None else f"{rss / 2**20:.1f} MiB",
                      "-" if energy is None else f"{energy:.3f} mJ")
    return table


def _render(result) -> None:
    for reason in result.skipped:
        warn(reason, "not profiled:")
    for mode, ids in result.modes.items():
        console.print(_table(result.manifest, result.device, mode, ids))
    console.print(f"manifest: {result.directory / 'manifest.json'} (profile[{result.device!r}]"
                  f"[{', '.join(map(repr, result.modes))}] of {sum(len(v) for v in result.modes.values())} "
                  "engine run(s))", highlight=False)


@app.command()
@command
def profile(
    directory: Path = DIR_ARG,
    device: Optional[str] = typer.Option(None, "--device", help="Record the numbers as this target (default: the "
                                         "target detected here)."),
    power_mode: Optional[str] = typer.Option(None, "--power-mode", help="Jetson: an nvpmodel mode name, or 'all' to "
                                             "walk every mode (needs root; the original mode is restored)."),
    min_iterations: Optional[int] = typer.Option(None, "--min-iterations", help="At least this many runs per engine."),
    min_duration: Optional[float] = typer.Option(None, "--min-duration", help="And at least this many seconds."),
    warmup: Optional[float] = typer.Option(None, "--warmup", help="Warm-up seconds per engine."),
    rounds: Optional[int] = typer.Option(None, "--rounds", help="Interleaved rounds across the engines."),
    max_cv: Optional[float] = typer.Option(None, "--max-cv", help="Coefficient of variation (%) that triggers a "
                                           "warning and a re-measurement."),
    engines: Optional[str] = typer.Option(None, "--engines", help="Only these engine ids, comma-separated."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="HOST:PORT", help="Profile on every device of this Ray "
                                      "cluster instead of here; see adaexport farm."),
    devices: Optional[str] = typer.Option(None, "--devices", metavar="PATTERNS", help="With --ray: only devices whose "
                                          "target or identity matches these patterns, comma-separated."),
    json_out: bool = JSON_OPT,
) -> None:
    """Measure every engine of a build on this machine (latency percentiles, load time, memory, energy where there is a
    sensor) and record it in the manifest, per device and power mode.

    \b
    Example: adaexport profile family --min-duration 0.5
    """
    from .. import api

    if ray is not None:
        if device is not None or engines is not None:
            raise UsageError("--ray profiles each device as itself: --device and --engines do not apply")
        from .farm import render_farm_profile

        return emit(api.profile_on_farm(directory, ray, devices=devices, power_mode=power_mode,
                                        min_iterations=min_iterations, min_duration=min_duration, warmup=warmup,
                                        rounds=rounds, max_cv=max_cv, reporter=reporter(json_out)), json_out,
                    render_farm_profile)
    if devices is not None:
        raise UsageError("--devices needs --ray")
    wanted = [e.strip() for e in engines.split(",") if e.strip()] if engines is not None else None
    result = api.profile(directory, device=device, power_mode=power_mode, min_iterations=min_iterations,
                         min_duration=min_duration, warmup=warmup, rounds=rounds, max_cv=max_cv, engines=wanted,
                         reporter=reporter(json_out))
    emit(result, json_out, _render)
