"""adaexport select / run: the embedded runtime's choice, from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from ._app import app, command, console, emit, warn
from .options import DIR_ARG, JSON_OPT

LATENCY_OPT = typer.Option(None, "--latency-ms", help="Latency limit (ms) at --percentile.")
POWER_MODE_OPT = typer.Option(None, "--power-mode", help="Power mode (default: the device's).")
PERCENTILE_OPT = typer.Option("p90", "--percentile", help="Profile statistic for the latency limit.")
DEVICE_OPT = typer.Option(None, "--device", help="Whose profile (default: the manifest's).")


def _render_select(result) -> None:
    console.print(Text.assemble(f"device {result.device or '(not profiled)'}, power mode {result.mode}: ",
                                (str(result.engine), "bold"), f" ({result.reason})"), highlight=False)
    pct = result.percentile
    table = Table()
    for col in ("engine", "", f"{pct} ms", "top-1", "FLOPs", "why"):
        table.add_column(col, justify="right" if col in (f"{pct} ms", "top-1", "FLOPs") else "left")
    for r in result.engines:
        table.add_row(r["id"], r["state"], f"{r['latency_ms']:.3g}" if r["latency_ms"] is not None else "-",
                      f"{100 * r['accuracy']:.2f}%" if r["accuracy"] is not None else "-",
                      f"{r['flops'] / 1e6:.1f}M" if r["flops"] else "-", r["reason"])
    console.print(table)


@app.command()
@command
def select(
    directory: Path = DIR_ARG, latency_ms: Optional[float] = LATENCY_OPT,
    power_w: Optional[float] = typer.Option(None, "--power-w", help="Power limit (W): energy x rate + idle."),
    memory_mb: Optional[float] = typer.Option(None, "--memory-mb", help="Resident memory limit (MiB)."),
    rate_hz: Optional[float] = typer.Option(None, "--rate-hz", help="Request rate the power limit assumes."),
    power_mode: Optional[str] = POWER_MODE_OPT, percentile: str = PERCENTILE_OPT,
    device: Optional[str] = DEVICE_OPT, json_out: bool = JSON_OPT,
) -> None:
    """Show which engine the runtime would serve with under these limits, and why each other engine was not chosen.

    \b
    Example: adaexport select family --latency-ms 2.5
    """
    from .. import api

    result = api.select(directory, latency_ms=latency_ms, power_w=power_w, memory_mb=memory_mb, rate_hz=rate_hz,
                        power_mode=power_mode, percentile=percentile, device=device)
    for line in result.warnings:
        warn(line)
    emit(result, json_out, _render_select)


def _render_run(result) -> None:
    for c in result.classes:
        console.print(f"{c['name']}  {100 * c['probability']:.1f}%  (class {c['class']}, engine {result.engine})",
                      highlight=False)
    if not result.fits:
        warn(result.reason)


@app.command()
@command
def run(
    directory: Path = DIR_ARG,
    input_file: Path = typer.Option(..., "--input", "-i", help="Image (.png, .jpg) or .npy array to classify.",
                                    show_default=False),
    latency_ms: Optional[float] = LATENCY_OPT,
    power_w: Optional[float] = typer.Option(None, "--power-w", help="Power limit (W)."),
    power_mode: Optional[str] = POWER_MODE_OPT, percentile: str = PERCENTILE_OPT,
    device: Optional[str] = DEVICE_OPT,
    top: int = typer.Option(1, "--top", help="How many classes to print."),
    json_out: bool = JSON_OPT,
) -> None:
    """Classify an image with the engine the runtime chooses under these limits.

    \b
    Example: adaexport run family --input frame.png --top 3
    """
    from .. import api

    result = api.run(directory, input_file, latency_ms=latency_ms, power_w=power_w, power_mode=power_mode,
                     percentile=percentile, device=device, top=top)
    for line in result.warnings:
        warn(line)
    emit(result, json_out, _render_run)
