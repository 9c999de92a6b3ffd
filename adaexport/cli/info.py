"""adaexport inspect / targets / doctor / version."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .. import __version__
from ._app import app, command, console, emit, envelope, warn
from .options import DEPTH_OPT, JSON_OPT, TOKENS_OPT, WIDTH_OPT


def _render_inspect(result) -> None:
    from ..api.info import si

    if result.kind == "build":
        f = result.fields
        console.print(f"{f['directory']}: {result.name} ({f['task']}, attention {f['attention']}), target "
                      f"{f['target']}, built by {f['built by']} at {f['created']}", highlight=False)
        from ..render import engines_table

        console.print(engines_table(result.manifest))
        return
    table = Table(title=result.name, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for name, value in result.fields.items():
        table.add_row(name, value)
    console.print(table)
    for line in result.warnings:
        warn(line)
    if result.points:
        points = Table(title="points")
        for col in ("point", "tokens", "width", "depth", "FLOPs", "params"):
            points.add_column(col, justify="right" if col != "point" else "left")
        for p in result.points:
            points.add_row(p["id"], str(p["tokens"]), str(p["width"]), str(p["depth"]), si(p["flops"]),
                           f"{p['params']:,}")
        console.print(points)


@app.command()
@command
def inspect(
    model: Optional[Path] = typer.Argument(None, metavar="MODEL|DIR", show_default=False,
                                           help="A checkpoint directory or file, or a build directory; leave out for "
                                           "the bundled demo model."),
    grid: Optional[str] = typer.Option(None, "--grid", help="Also list a preset grid's points with FLOPs and "
                                       "parameters (trained, full, corners)."),
    tokens: Optional[str] = TOKENS_OPT,
    width: Optional[str] = WIDTH_OPT,
    depth: Optional[str] = DEPTH_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Print a model's architecture, parameters, trained grid and FLOPs range, or a build directory's engines.

    \b
    Example: adaexport inspect --grid corners
    """
    from .. import api

    emit(api.inspect(model, grid=grid, tokens=tokens, widths=width, depths=depth), json_out, _render_inspect)


def _render_targets(result) -> None:
    here = result.this_machine
    table = Table(title="device targets" + (f" (this machine: {here})" if here else ""))
    for col in ("target", "engines (in order of preference)", "power modes", "power sensors", "threads"):
        table.add_column(col)
    for t in result.targets:
        engines = ", ".join(f"{e['backend']} {'/'.join(e['precisions'])}"
                            + ("" if t["available_here"][e["backend"]] else " (not here)") for e in t["engines"])
        table.add_row(t["name"] + (" *" if t["name"] == here else ""), engines, ", ".join(t["power_modes"]),
                      ", ".join(t["power_sensors"]), str(t["threads"] or "default"))
    console.print(table)


@app.command()
@command
def targets(json_out: bool = JSON_OPT) -> None:
    """List the device targets (packaged and on ADAEXPORT_TARGETS_PATH), their engines, power modes and sensors."""
    from .. import api

    emit(api.targets(), json_out, _render_targets)


@app.command()
@command
def doctor(
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the JSON report to this file (attach it to a "
                                       "bug report)."),
    device: Optional[str] = typer.Option(None, "--device", help="Compare with this target (default: detected)."),
    json_out: bool = JSON_OPT,
) -> None:
    """On the device: what it really has (TensorRT and its DLA, nvpmodel modes and which need a reboot, power rails,
    energy counters, device memory) next to what its target assumes."""
    from .. import api
    from ..doctor import format_report

    emit(api.doctor(device, out), json_out,
         lambda r: console.print(format_report(r.report), highlight=False, markup=False, soft_wrap=True))


@app.command()
@command
def version(json_out: bool = JSON_OPT) -> None:
    """Print the adaexport version (as --version does)."""
    if json_out:
        print(envelope("version", True, {"version": __version__}))
    else:
        console.print(f"adaexport {__version__}")
