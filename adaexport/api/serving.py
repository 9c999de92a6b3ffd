"""select, run: the embedded runtime's choice under limits, and one classification with it."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .results import Result


@dataclasses.dataclass
class SelectResult(Result):
    engine: str | None
    fits: bool
    reason: str
    device: str | None
    mode: str
    percentile: str
    limits: dict[str, float | None]
    engines: list[dict]                 # one row per engine: chosen first, then best-first, then unavailable
    warnings: list[str]                 # engines the runtime could not use, each with the reason

    def to_json(self) -> dict[str, Any]:
        return {"engine": self.engine, "fits": self.fits, "reason": self.reason, "device": self.device,
                "mode": self.mode, "limits": {**self.limits, "percentile": self.percentile}, "engines": self.engines}


@dataclasses.dataclass
class RunResult(Result):
    engine: str
    fits: bool
    reason: str
    classes: list[dict]                 # the top classes: class, name, probability
    warnings: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"engine": self.engine, "fits": self.fits, "classes": self.classes}


def _limits(latency_ms, power_w, memory_mb, rate_hz, percentile):
    from ..checks import optional_number
    from ..runtime import Limits

    memory_mb = optional_number(memory_mb, "--memory-mb", UsageError, above=0)  # before the int(): inf, NaN
    try:
        return Limits(latency_ms=latency_ms, power_w=power_w,
                      memory_bytes=int(memory_mb * 2**20) if memory_mb is not None else None,
                      rate_hz=rate_hz, percentile=percentile)
    except ValueError as exc:
        raise UsageError(f"limits: {exc}") from None


def _check_device_and_mode(directory: Path, device, power_mode) -> None:
    """device: one this build was profiled on, or a known target; power_mode: one that
    device was profiled in, one its target names, or `default`."""
    from ..manifest import read_records
    from ..manifest_records import DEFAULT_MODE, target_of
    from ..targets import get_target, list_targets

    if device is None and power_mode is None:
        return
    manifest = read_records(directory)
    profiled = manifest.profiled_devices()
    if device is not None and device not in profiled and device not in list_targets():
        raise UsageError(f"--device {device}: not a device target, nor profiled in this build (profiled: "
                         f"{', '.join(profiled) or 'none'}; targets: {', '.join(list_targets())})")
    if power_mode is None:
        return
    device = device or manifest.default_device() or manifest.device.target
    modes = [DEFAULT_MODE, *manifest.profiled_modes(manifest.resolve_device(device) or device)]
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
    """The runtime logs each engine it cannot use; these lines are collected into the
    result's `warnings`, so that when nothing can serve the error stays the only line."""
    handler = _Collect()
    logger = logging.getLogger("adaexport.runtime")
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _no_engine(problems: dict, directory: Path) -> UsageError:
    why = "; ".join(f"{k}: {v}" for k, v in list(problems.items())[:3])
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return UsageError(f"{directory}: no engine can serve here: {why or 'the manifest lists none'}{more}")


def _runtime(directory: Path, limits, power_mode, device, warnings: list[str]):
    from ..runtime import Runtime, RuntimeUnavailable

    _check_device_and_mode(directory, device, power_mode)
    try:
        with _runtime_log() as lines:
            rt = Runtime(directory, limits=limits, power_mode=power_mode, device=device, preload="lazy")
    except (ValueError, RuntimeUnavailable) as exc:
        raise UsageError(str(exc)) from None
    if not rt.engines():
        raise _no_engine(rt.problems, directory)
    warnings += lines
    return rt


def _rows(rt) -> list[dict]:
    """One row per engine: the chosen one first, then the others best-first."""
    from ..runtime.policy import rank_key

    decision = rt.decision
    candidates = list(rt._controller.candidates)
    rows = []
    for c in sorted(candidates, key=rank_key(candidates)):
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


def select(directory: str | Path, *, latency_ms: float | None = None, power_w: float | None = None,
           memory_mb: float | None = None, rate_hz: float | None = None, power_mode: str | None = None,
           percentile: str = "p90", device: str | None = None) -> SelectResult:
    """Which engine the runtime would serve with under these limits, and why each other
    engine was not chosen (`adaexport select`)."""
    directory, warnings = Path(directory), []
    rt = _runtime(directory, _limits(latency_ms, power_w, memory_mb, rate_hz, percentile), power_mode, device,
                  warnings)
    status = rt.status
    return SelectResult(engine=status.engine, fits=status.fits, reason=status.reason, device=status.device,
                        mode=status.mode, percentile=percentile,
                        limits={"latency_ms": latency_ms, "power_w": power_w, "memory_mb": memory_mb,
                                "rate_hz": rate_hz}, engines=_rows(rt), warnings=warnings)


def run(directory: str | Path, input_file: str | Path, *, latency_ms: float | None = None,
        power_w: float | None = None, power_mode: str | None = None, percentile: str = "p90",
        device: str | None = None, top: int = 1) -> RunResult:
    """Classify an image (.png, .jpg) or .npy array with the engine the runtime chooses
    under these limits (`adaexport run`)."""
    import numpy as np

    from ..runtime import RuntimeUnavailable
    from ..runtime.preprocess import InputError, load_image, to_model_input

    if top < 1:
        raise UsageError(f"--top must be >= 1, got {top}")
    directory, input_file, warnings = Path(directory), Path(input_file), []
    rt = _runtime(directory, _limits(latency_ms, power_w, None, None, percentile), power_mode, device, warnings)
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
        with _runtime_log() as lines:
            result = rt.infer(x)
    except RuntimeUnavailable:  # every engine failed to open when first used
        raise _no_engine(rt.problems, directory) from None
    warnings += lines
    logits = result.outputs[0][0]
    z = np.exp(logits - logits.max())
    probs = z / z.sum()
    names = rt.class_names or [str(i) for i in range(len(probs))]
    classes = [{"class": int(i), "name": names[i], "probability": float(probs[i])} for i in np.argsort(-probs)[:top]]
    return RunResult(engine=result.engine, fits=rt.status.fits, reason=rt.status.reason, classes=classes,
                     warnings=warnings)
