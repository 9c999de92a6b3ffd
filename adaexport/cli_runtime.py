"""adaexport select / run: the embedded runtime's choice, from the command line (issue 6)."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from .cli import app, console, err_console, fail, tagged, user_errors  # noqa: F401  (commands register on app)
from .errors import UsageError

DIR_ARG = typer.Argument(..., help="Build directory (holds manifest.json).")


def _limits(latency_ms, power_w, memory_mb, rate_hz, percentile):
    from .checks import optional_number
    from .runtime import Limits

    memory_mb = optional_number(memory_mb, "--memory-mb", UsageError, above=0)  # before the int(): inf, NaN
    try:
        return Limits(latency_ms=latency_ms, power_w=power_w,
                      memory_bytes=int(memory_mb * 2**20) if memory_mb is not None else None,
                      rate_hz=rate_hz, percentile=percentile)
    except ValueError as exc:
        raise UsageError(f"limits: {exc}") from None


def _check_device_and_mode(directory: Path, device, power_mode) -> None:
    """--device: a device this build was profiled on, or a known target; --power-mode: one
    that device was profiled in, one its target names, or `default`."""
    from .manifest import read_manifest
    from .measurements import DEFAULT_MODE, default_device, profiled_devices, profiled_modes, resolve_device, \
        target_of
    from .targets import get_target, list_targets

    if device is None and power_mode is None:
        return
    manifest = read_manifest(directory)
    profiled = profiled_devices(manifest)
    if device is not None and device not in profiled and device not in list_targets():
        raise UsageError(f"--device {device}: not a device target, nor profiled in this build (profiled: "
                         f"{', '.join(profiled) or 'none'}; targets: {', '.join(list_targets())})")
    if power_mode is None:
        return
    device = device or default_device(manifest) or manifest["device"]["target"]
    modes = [DEFAULT_MODE, *profiled_modes(manifest, resolve_device(manifest, device) or device)]
    if target_of(device) in list_targets():
        modes += [m.name for m in get_target(target_of(device)).power_modes]
    if power_mode not in modes:
        raise UsageError(f"--power-mode {power_mode}: {device} has no such power mode "
                         f"(known: {', '.join(dict.fromkeys(modes))})")


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def _runtime_log():
    """The runtime logs each engine it cannot use (through logging, to stderr); the CLI
    collects those lines and prints them as warnings (_warn) once it knows something can
    serve, so that an error stays the only line."""
    handler = _Collect()
    logger = logging.getLogger("adaexport.runtime")
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _warn(lines: list[str]) -> None:
    for line in lines:
        err_console.print(tagged("warning:", "yellow", line), highlight=False)


def _no_engine(rt_problems: dict, directory: Path) -> UsageError:
    why = "; ".join(f"{k}: {v}" for k, v in list(rt_problems.items())[:3])
    more = f" (and {len(rt_problems) - 3} more)" if len(rt_problems) > 3 else ""
    return UsageError(f"{directory}: no engine can serve here: {why or 'the manifest lists none'}{more}")


def _runtime(directory: Path, limits, power_mode, device, preload: str, **kw):
    from .runtime import Runtime, RuntimeUnavailable

    _check_device_and_mode(directory, device, power_mode)
    try:
        with _runtime_log() as warnings:
            rt = Runtime(directory, limits=limits, power_mode=power_mode, device=device, preload=preload, **kw)
    except (ValueError, RuntimeUnavailable) as exc:
        raise UsageError(str(exc)) from None
    if not rt.engines():
        raise _no_engine(rt.problems, directory)
    _warn(warnings)
    return rt


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

    from .runtime import RuntimeUnavailable
    from .runtime.preprocess import InputError, load_image, to_model_input

    if top < 1:
        raise UsageError(f"--top must be >= 1, got {top}")
    limits = _limits(latency_ms, power_w, None, None, percentile)
    rt = _runtime(directory, limits, power_mode, device, "lazy")
    spec = rt.manifest.model.input
    try:
        pixels = load_image(input_file, spec.shape[1])
    except InputError as exc:
        raise UsageError(str(exc)) from None
    try:
        x = to_model_input(pixels, spec)
    except InputError as exc:
        raise UsageError(f"{input_file}: {exc}") from None
    try:
        with _runtime_log() as warnings:
            result = rt.infer(x)
    except RuntimeUnavailable:  # every engine failed to open when first used
        raise _no_engine(rt.problems, directory) from None
    _warn(warnings)
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
