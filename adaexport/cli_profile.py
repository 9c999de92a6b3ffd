"""adaexport profile DIR: measure every engine on this device (issue 5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .cli import app, console, err_console, fail, tagged, user_errors  # noqa: F401  (commands register on app)


def _table(manifest: dict, device: str, mode: str, ids: list[str]) -> Table:
    table = Table(title=f"{device} / {mode}: {len(ids)} engine(s) profiled")
    for col in ("engine", "p50 ms", "p90", "p99", "min..max", "cv", "runs", "load ms", "rss", "energy/inference"):
        table.add_column(col, justify="left" if col == "engine" else "right")
    for engine in manifest["engines"]:
        if engine["id"] not in ids:
            continue
        p = engine["profile"][device][mode]
        lat, energy = p["latency_ms"], p["energy"]
        rss = p["memory"]["rss_bytes"]
        table.add_row(engine["id"], f"{lat['p50']:.3f}", f"{lat['p90']:.3f}", f"{lat['p99']:.3f}",
                      f"{lat['min']:.3f}..{lat['max']:.3f}", f"{p['cv']:.1f}%" + (" !" if p["warnings"] else ""),
                      str(p["iterations"]), f"{p['load_ms']:.0f}", "-" if rss is None else f"{rss / 2**20:.1f} MiB",
                      "-" if energy["per_inference_mj"] is None else f"{energy['per_inference_mj']:.3f} mJ")
    return table


@app.command()
@user_errors
def profile(
    directory: Path = typer.Argument(..., help="A build directory (holding manifest.json)."),
    device: Optional[str] = typer.Option(None, "--device", help="Record the numbers as this target "
                                                               "(default: the target detected here)."),
    power_mode: Optional[str] = typer.Option(None, "--power-mode", help="Jetson: an nvpmodel mode name, or 'all' "
                                             "to walk every mode (needs root; the original mode is restored)."),
    min_iterations: Optional[int] = typer.Option(None, "--min-iterations", help="At least this many runs per engine."),
    min_duration: Optional[float] = typer.Option(None, "--min-duration", help="And at least this many seconds."),
    warmup: Optional[float] = typer.Option(None, "--warmup", help="Warm-up seconds per engine."),
    rounds: Optional[int] = typer.Option(None, "--rounds", help="Interleaved rounds across the engines."),
    max_cv: Optional[float] = typer.Option(None, "--max-cv", help="Coefficient of variation (%) that triggers "
                                                                  "a warning and a re-measurement."),
    engines: Optional[str] = typer.Option(None, "--engines", help="Only these engine ids, comma-separated."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Profile on every device of this Ray cluster "
                                      "(HOST:PORT) instead of here; see adaexport farm."),
    devices: Optional[str] = typer.Option(None, "--devices", help="With --ray: only devices whose target or "
                                          "identity matches these patterns, comma-separated."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document and no progress."),
) -> None:
    """Measure every engine of a build on this machine (latency percentiles, load time,
    memory, energy where there is a sensor) and record it in the manifest, per device and
    power mode, never touching another device's numbers."""
    from .manifest import read_manifest, write_manifest
    from .profiles import ProfileError, load_profile
    from .profiling.family import device_key, profile_manifest
    from .profiling.modes_plan import plan_modes
    from .hardware.power_modes import walk_power_modes
    from .progress import make_reporter
    from .targets import get_target, resolve_target

    if ray is not None:
        from .cli_farm import profile_on_farm_command
        from .farm.profiling import profile_options

        if device is not None or engines is not None:
            fail("--ray profiles each device as itself: --device and --engines do not apply")
        return profile_on_farm_command(directory, ray, devices, profile_options(
            power_mode, min_iterations, min_duration, warmup, rounds, max_cv), json_out)
    if devices is not None:
        fail("--devices needs --ray")
    manifest = read_manifest(directory)
    target = get_target(resolve_target(device))
    try:
        settings = load_profile(manifest.get("build", {}).get("profile") or "default").profiling
    except ProfileError:
        settings = load_profile("default").profiling
    settings = settings.replace(min_iterations=min_iterations, min_duration_s=min_duration, warmup_s=warmup,
                                rounds=rounds, max_cv=max_cv)
    wanted = [e.strip() for e in engines.split(",") if e.strip()] if engines is not None else None
    modes, switch = plan_modes(target, power_mode)
    reporter = make_reporter(json_out, err_console)
    done: dict[str, list[str]] = {}
    skipped: list[str] = []
    skipped_modes: dict[str, str] = {}     # power modes not profiled, and why (a reboot, a switch that did not take)

    def skip_mode(name: str, why: str) -> None:
        skipped_modes[name] = why
        reporter.warn(f"power mode {name} not profiled: {why}")

    device_id, _ = device_key(target)

    def run(mode: str) -> None:
        results, skipped[:] = profile_manifest(directory, manifest, target, device=device_id, mode=mode,
                                               settings=settings, wanted=wanted, reporter=reporter)
        write_manifest(directory, manifest)       # each mode is kept as soon as it is measured
        done[mode] = list(results)

    try:
        if switch:
            walk_power_modes(modes, run, on_switch=lambda name: reporter.info(f"nvpmodel: switched to {name} "
                                                                              "(read back)"),
                             on_skip=skip_mode)
        else:
            for mode in modes:
                run(mode)
    finally:
        reporter.close()
    if not done and skipped_modes:
        fail("no power mode profiled: " + "; ".join(f"{m}: {why}" for m, why in skipped_modes.items()))
    if json_out:
        print(json.dumps({"manifest": str(Path(directory) / "manifest.json"), "device": device_id,
                          "target": target.name,
                          "modes": list(done), "skipped_modes": skipped_modes, "skipped": skipped,
                          "engines": {e["id"]: {m: e["profile"][device_id][m] for m in done if e["id"] in done[m]}
                                      for e in manifest["engines"] if any(e["id"] in ids for ids in done.values())}},
                         indent=1))
        return
    for reason in skipped:
        err_console.print(tagged("not profiled:", "yellow", reason), highlight=False)
    for mode, ids in done.items():
        console.print(_table(manifest, device_id, mode, ids))
    console.print(f"manifest: {Path(directory) / 'manifest.json'} (profile[{device_id!r}]"
                  f"[{', '.join(map(repr, done))}] of {sum(len(v) for v in done.values())} engine run(s))",
                  highlight=False)
