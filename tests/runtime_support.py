"""Shared pieces of the runtime tests: one small real build, and measurements written per
the manifest contract (docs/DESIGN.md, "Measurements in the manifest") for table-driven
choice tests before `adaexport profile` / `adaexport eval` have run on it."""

from __future__ import annotations

import shutil
from pathlib import Path

from adaexport.manifest import read_manifest, write_manifest
from adaexport.pareto import update_pareto

from .conftest import ROOT, run_cli

DEVICE = "x86-cpu"
# ONNX Runtime fp32 only: 4 points, ~10 s
BUILD_ARGS = ("--build-profile", str(ROOT / "tests/data/profiles/ort-fp32.toml"),
              "--tokens", "8,32", "--width", "32", "--depth", "1,4")


def small_family(tmp_path_factory) -> Path:
    """A real build, made once per test session and reused (callers copy it to modify it)."""
    out = tmp_path_factory.getbasetemp() / "runtime-family"
    if not (out / "manifest.json").is_file():
        proc = run_cli("build", "--out", str(out), *BUILD_ARGS)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def copy_family(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".adaexport"))
    return dst


def measured_copy(family: Path, dst: Path):
    """A copy of ``family`` whose p90 latency and top-1 both grow with FLOPs:
    (directory, {id: p90 ms}, {id: top-1})."""
    import json

    out = copy_family(family, dst)
    engines = json.loads((out / "manifest.json").read_text())["engines"]
    ordered = sorted(engines, key=lambda e: e["flops"])
    latency = {e["id"]: 1.0 + i for i, e in enumerate(ordered)}
    accuracy = {e["id"]: 0.80 + 0.01 * i for i, e in enumerate(ordered)}
    write_measurements(out, latency_p90=latency, accuracy=accuracy)
    return out, latency, accuracy


def write_measurements(directory: Path, latency_p90: dict[str, float] | None = None,
                       accuracy: dict[str, float] | None = None, energy_mj: dict[str, float] | None = None,
                       idle_power_w: float = 1.0, rss: dict[str, int] | None = None,
                       device: str = DEVICE, mode: str = "default") -> dict:
    """Add profile / accuracy fields for some engines (p50 = 0.8 x p90, mean = 0.85 x p90)."""
    manifest = read_manifest(directory)
    for engine in manifest["engines"]:
        eid = engine["id"]
        if latency_p90 and eid in latency_p90:
            p90 = latency_p90[eid]
            stats = {"p50": 0.8 * p90, "p90": p90, "p95": 1.05 * p90, "p99": 1.2 * p90, "mean": 0.85 * p90,
                     "std": 0.05 * p90, "min": 0.7 * p90, "max": 1.5 * p90}
            energy = {"per_inference_mj": None, "active_power_w": None, "idle_power_w": None,
                      "source": None, "reason": "no sensor"}
            if energy_mj and eid in energy_mj:
                energy = {"per_inference_mj": energy_mj[eid], "active_power_w": 5.0, "idle_power_w": idle_power_w,
                          "source": "test", "reason": None}
            profile = {"latency_ms": stats, "cv": 5.0, "throughput_ips": 1000.0 / stats["mean"], "iterations": 100,
                       "duration_s": 1.0, "rounds": 3, "batch": 1, "threads": 1, "load_ms": 5.0, "energy": energy,
                       "warnings": [], "measured": "2026-01-01T00:00:00Z",
                       "memory": {"rss_bytes": (rss or {}).get(eid, 50 * 2**20), "backend_bytes": None,
                                  "backend_source": None}}
            engine.setdefault("profile", {}).setdefault(device, {})[mode] = profile
        if accuracy and eid in accuracy:
            engine["accuracy"] = {"dataset": "demo", "samples": 2000, "top1": accuracy[eid], "top5": 0.99,
                                  "reference_top1": accuracy[eid], "reference_top5": 0.99}
    update_pareto(manifest)
    write_manifest(directory, manifest)
    return manifest
