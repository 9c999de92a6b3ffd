"""Shared pieces of the build benchmarks: the run context, timing, rows, machine facts.

A benchmark module exposes `run(ctx: Context) -> list[dict]`; each dict is one row
made by `time_row`, `value_row` or `ratio_row`. Times are wall-clock
(`time.perf_counter`) in seconds, repeated `ctx.repeats` times, reported as the
median with min..max over the repeats; sizes are deterministic and measured once.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Context:
    loaded: Any            # adaexport.model.LoadedModel
    model_path: Path
    grid: str              # grid preset name, or "tokens .. x widths .. x depths .." (see grid_args)
    points: list           # list[ConfigPoint]
    attention: str
    batch: int
    repeats: int
    threads: int
    profile: str           # build profile used by the rebuild benchmark
    exporter: str          # the exporter `adaexport build` uses
    dataset: str | None = None     # the build's --dataset (None: the build's default)
    rounds: int | None = None      # speed: interleaved rounds (None: bench_speed's default)
    calls: int | None = None       # speed: calls per engine per round, their median kept
    export_family: bool = True     # export: also time export_family (a second export of every point)
    shared: dict = dataclasses.field(default_factory=dict)  # what one benchmark leaves for the next

    def grid_args(self) -> dict:
        """BuildRequest's grid arguments: the preset by its name, else the points' axes."""
        from adaexport.space import PRESETS

        if self.grid in PRESETS:
            return {"grid": self.grid}
        return {"tokens": sorted({p.tokens for p in self.points}), "widths": sorted({p.width for p in self.points}),
                "depths": sorted({p.depth for p in self.points})}

    @property
    def model(self):
        return self.loaded.model


def measure(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call, after a garbage collection so that a collection
    left over from earlier work does not land inside the timed call."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _row(benchmark: str, name: str, unit: str, values: list[float], note: str = "", **extra) -> dict:
    values = [float(v) for v in values]
    if not values:
        raise ValueError(f"{benchmark}/{name}: no values")
    return {"benchmark": benchmark, "name": name, "unit": unit, "n": len(values),
            "median": statistics.median(values), "min": min(values), "max": max(values),
            "values": values, "note": note, **extra}


def time_row(benchmark: str, name: str, seconds: list[float], note: str = "", **extra) -> dict:
    return _row(benchmark, name, "s", seconds, note, **extra)


def value_row(benchmark: str, name: str, value: int, unit: str = "bytes", note: str = "", **extra) -> dict:
    return _row(benchmark, name, unit, [value], note, **extra)


def ratio_row(benchmark: str, name: str, ratios: list[float], note: str = "", **extra) -> dict:
    return _row(benchmark, name, "x", ratios, note, **extra)


def param_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


# --- machine facts ---


def _cpuinfo() -> tuple[str, int | None]:
    """(CPU model name, physical core count) from /proc/cpuinfo where there is one."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), None
    model, cores, current = None, set(), {}
    for line in text.splitlines() + [""]:
        if not line.strip():
            if "core id" in current:
                cores.add((current.get("physical id"), current["core id"]))
            current = {}
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        current[key] = value
        if model is None and key in ("model name", "Model", "Hardware", "cpu model"):
            model = value
    return model or platform.processor() or platform.machine(), (len(cores) or None)


FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def _cpu_flags() -> list[str]:
    """The matrix-related flags /proc/cpuinfo lists (what bf16 and int8 engines can use)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.partition(":")[2].split())
                return [f for f in FLAGS if f in present]
    except OSError:
        pass
    return []


def _mem_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _git_revision() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine_facts(threads: int) -> dict:
    import onnx
    import onnxruntime
    import torch

    import adaexport

    try:
        import onnxscript
        onnxscript_version = onnxscript.__version__
    except ImportError:  # pragma: no cover - a toolchain dependency
        onnxscript_version = None
    model, physical = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    return {
        "cpu": model,
        "cpu_flags": _cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical,
        "usable_cpus": usable,
        "memory_bytes": _mem_total(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "versions": {"adaexport": adaexport.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "onnxscript": onnxscript_version},
        "threads": {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads(),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                    "onnxruntime_intra_op": 1, "requested": threads},
        "git": _git_revision(),
    }
