"""adaexport select / run: the embedded runtime's choice, from the command line (issue 6)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from .cli import app, console, err_console, fail, tagged, user_errors  # noqa: F401  (commands register on app)
from .errors import UsageError

DIR_ARG = typer.Argument(..., help="Build directory (holds manifest.json).")


def _limits(latency_ms, power_w, memory_mb, rate_hz, percentile):
    from .runtime import Limits

    try:
        return Limits(latency_ms=latency_ms, power_w=power_w,
                      memory_bytes=int(memory_mb * 2**20) if memory_mb is not None else None,
                      rate_hz=rate_hz, percentile=percentile)
    except ValueError as exc:
        raise UsageError(f"limits: {exc}") from None


def _runtime(directory: Path, limits, power_mode, device, preload: str, **kw):
    from .runtime import Runtime, RuntimeUnavailable

    try:
        return Runtime(directory, limits=limits, power_mode=power_mode, device=device, preload=preload, **kw)
    except (ValueError, RuntimeUnavailable) as exc:
        raise UsageError(str(exc)) from None


def _rows(rt):
    """One row per engine: the chosen one first, then the others best-first."""
    from .runtime.policy import rank_key

    decision = rt.decision
    candidates = {c.id: c for c in rt._controller.candidates}
    key = rank_key(list(candidates.values()))
    ordered = sorted(candidates.values(), key=key)
    rows = []
    for c in ordered:
        if c.id == decision.engine:
            state, why = ("chosen" if decision.fits else "fallback"), decision.reason
        else:
            state, why = "rejected", decision.rejected.get(c.id, "")
        rows.append({"id": c.id, "state": state, "reason": why, "accuracy": c.accuracy, "flops": c.flops,
                     "latency_ms": c.latency(rt.limits.percentile, rt.status.slowdown)})
    rows.sort(key=lambda r: r["state"] == "rejected")
    rows += [{"id": eid, "state": "unavailable", "reason": why, "accuracy": None, "flops": None, "latency_ms": None}
             for eid, why in rt.problems.items()]
    return rows


@app.command()
@user_errors
def select(
    directory: Path = DIR_ARG,
    latency_ms: Optional[float] = typer.Option(None, "--latency-ms", help="Latency limit (ms) at --percentile."),
    power_w: Optional[float] = typer.Option(None, "--power-w", help="Power limit (W): energy x rate + idle."),
    memory_mb: Optional[float] = typer.Option(None, "--memory-mb", help="Resident memory limit (MiB)."),
    rate_hz: Optional[float] = typer.Option(None, "--rate-hz", help="Request rate the power limit assumes."),
    power_mode: Optional[str] = typer.Option(None, "--power-mode", help="Power mode (default: the device's)."),
    percentile: str = typer.Option("p90", "--percentile", help="Profile statistic for the latency limit."),
    device: Optional[str] = typer.Option(None, "--device", help="Whose profile (default: the manifest's)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show which engine the runtime would serve with under these limits, and why each
    other engine was not chosen."""
    limits = _limits(latency_ms, power_w, memory_mb, rate_hz, percentile)
    rt = _runtime(directory, limits, power_mode, device, "lazy")
    status, rows = rt.status, _rows(rt)
    if as_json:
        print(json.dumps({"engine": status.engine, "fits": status.fits, "reason": status.reason,
                          "device": status.device, "mode": status.mode,
                          "limits": {"latency_ms": latency_ms, "power_w": power_w, "memory_mb": memory_mb,
                                     "rate_hz": rate_hz, "percentile": percentile},
                          "engines": rows}, indent=2))
        return
    console.print(Text.assemble(f"device {status.device or '(not profiled)'}, power mode {status.mode}: ",
                                (str(status.engine), "bold"), f" ({status.reason})"), highlight=False)
    table = Table()
    for col in ("engine", "", f"{percentile} ms", "top-1", "FLOPs", "why"):
        table.add_column(col, justify="right" if col in (f"{percentile} ms", "top-1", "FLOPs") else "left")
    for r in rows:
        table.add_row(r["id"], r["state"], f"{r['latency_ms']:.3g}" if r["latency_ms"] is not None else "-",
                      f"{100 * r['accuracy']:.2f}%" if r["accuracy"] is not None else "-",
                      f"{r['flops'] / 1e6:.1f}M" if r["flops"] else "-", r["reason"])
    console.print(table)


@app.command()
@user_errors
def run(
    directory: Path = DIR_ARG,
    input_file: Path = typer.Option(..., "--input", "-i", help="Image (.png, .jpg) or .npy array to classify."),
    latency_ms: Optional[float] = typer.Option(None, "--latency-ms", help="Latency limit (ms) at --percentile."),
    power_w: Optional[float] = typer.Option(None, "--power-w", help="Power limit (W)."),
    power_mode: Optional[str] = typer.Option(None, "--power-mode", help="Power mode (default: the device's)."),
    percentile: str = typer.Option("p90", "--percentile", help="Profile statistic for the latency limit."),
    device: Optional[str] = typer.Option(None, "--device", help="Whose profile (default: the manifest's)."),
    top: int = typer.Option(1, "--top", help="How many classes to print."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Classify an image with the engine the runtime chooses under these limits."""
    import numpy as np

    from .runtime.preprocess import InputError, load_image, to_model_input

    if top < 1:
        raise UsageError(f"--top must be >= 1, got {top}")
    limits = _limits(latency_ms, power_w, None, None, percentile)
    rt = _runtime(directory, limits, power_mode, device, "lazy")
    spec = rt.manifest["model"]["input"]
    try:
        x = to_model_input(load_image(input_file, spec["shape"][1]), spec)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    result = rt.infer(x)
    logits = result.outputs[0][0]
    z = np.exp(logits - logits.max())
    probs = z / z.sum()
    order = np.argsort(-probs)[:top]
    names = rt.class_names or [str(i) for i in range(len(probs))]
    classes = [{"class": int(i), "name": names[i], "probability": float(probs[i])} for i in order]
    if as_json:
        print(json.dumps({"engine": result.engine, "fits": rt.status.fits, "classes": classes}, indent=2))
        return
    for c in classes:
        console.print(f"{c['name']}  {100 * c['probability']:.1f}%  (class {c['class']}, engine {result.engine})",
                      highlight=False)
    if not rt.status.fits:
        err_console.print(tagged("warning:", "yellow", rt.status.reason), highlight=False)
