"""Soak: many threads serving through one Runtime while another flips the limits.

    python benchmarks/bench_soak.py [DIR] [--threads 4] [--calls 10000] [--json FILE]

DIR is a profiled build directory (default: a mixed ONNX Runtime + OpenVINO family of the
demo, 2 points x 5 engine kinds, built and profiled into a temporary directory with the
`quick` build profile). The soak runs on a temporary copy whose engines are ranked (top-1)
in the order of their profiled p90, so that a latency limit at an engine's p90 selects
that very engine: the flipping limit walks every engine of every backend. Every engine is
preloaded; each of ``--threads`` threads makes ``--calls`` calls of ``Runtime.infer`` on
images drawn from 16 held-out images, while one more thread sets the latency limit to
each engine's p90 in turn, every millisecond. Reported:

* errors: exceptions that escaped ``infer`` (must be 0);
* mis-tagged: results whose outputs are not exactly what the engine they name gives for
  that image, run alone on the same session before the threads start (must be 0);
* the engines that served and how often, the number of limit changes, calls per second;
* resident memory (VmRSS) after preloading, after 10% and 50% of the calls and at the end:
  growth in the second half is what a leak would show (the first calls still add
  OpenVINO infer requests, up to one per thread and engine, and allocator arenas).

Exits 1 when an error or a mis-tagged output occurred.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench_common import ROOT, machine_facts


def rss_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def build_mixed(out: Path) -> Path:
    """The demo's t8_w32 points at depths 1 and 2, every x86-cpu engine kind, profiled."""
    cmd = [sys.executable, "-m", "adaexport", "build", "--out", str(out), "--build-profile", "quick",
           "--tokens", "8", "--width", "32", "--depth", "1,2"]
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    return out


def ranked_copy(directory: Path, dst: Path) -> Path:
    """A copy of the build whose top-1 grows with each engine's p90 (outputs stay real)."""
    import shutil

    from adaexport.manifest import read_manifest, write_manifest
    from adaexport.manifest_records import EngineRecord, Manifest
    from adaexport.pareto import update_pareto

    shutil.copytree(directory, dst, ignore=shutil.ignore_patterns(".adaexport"))
    manifest = read_manifest(dst)
    device = Manifest.from_json(manifest).default_device()
    p90 = {e["id"]: EngineRecord.from_json(e).latency_ms(device, statistic="p90") for e in manifest["engines"]}
    ranked = sorted((e for e in p90 if p90[e] is not None), key=lambda e: (p90[e], e))
    for engine in manifest["engines"]:
        if engine["id"] in ranked:
            engine["accuracy"] = {"dataset": "soak-ranking", "samples": 1,
                                  "top1": 0.5 + 0.01 * ranked.index(engine["id"])}
    update_pareto(manifest)
    write_manifest(dst, manifest)
    return dst


def held_out_images(limit: int) -> np.ndarray:
    from adaexport.datasets import model_inputs
    from adaexport.demo import DEMO_MODEL
    from adaexport.model import AdaPerceiverConfig

    x, _ = model_inputs("demo", AdaPerceiverConfig.from_file(DEMO_MODEL / "config.json"), limit=limit)
    return np.ascontiguousarray(x, dtype=np.float32)


def soak(directory: Path, threads: int, calls: int) -> dict:
    from adaexport.runtime import Runtime

    images = held_out_images(16)
    with Runtime(directory, preload="all") as rt:
        engines = rt.engines()
        p90 = {c.id: c.latency_ms.get("p90") for c in rt._controller.candidates if c.latency_ms}
        limits = sorted({v for v in p90.values() if v})
        if len(limits) < 2:
            raise SystemExit(f"{directory}: fewer than two profiled engines (run `adaexport profile` first)")
        reference = {(e, i): rt.pool.get(e).run({rt.input_name: images[i:i + 1]})[0]
                     for e in engines for i in range(len(images))}
        rss_loaded = rss_bytes()
        served: collections.Counter = collections.Counter()
        errors: list[str] = []
        mistagged = [0]
        done = [0]
        lock = threading.Lock()
        rss_warm: list[int | None] = []
        stop = threading.Event()

        def worker(seed: int) -> None:
            rng = np.random.default_rng(seed)
            local: collections.Counter = collections.Counter()
            bad = 0
            for n in range(calls):
                i = int(rng.integers(0, len(images)))
                try:
                    result = rt.infer(images[i])
                except Exception as exc:  # noqa: BLE001 - counted, the soak goes on
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                local[result.engine] += 1
                if not np.array_equal(result.outputs[0], reference[(result.engine, i)]):
                    bad += 1
                if n in (calls // 10, calls // 2) and seed == 0:
                    rss_warm.append(rss_bytes())
            with lock:
                served.update(local)
                mistagged[0] += bad
                done[0] += 1

        def flipper() -> None:
            k = 0
            while not stop.is_set():
                rt.set_limits(latency_ms=limits[k % len(limits)] * 1.001)
                k += 1
                time.sleep(0.001)
            flips[0] = k

        flips = [0]
        pool = [threading.Thread(target=worker, args=(s,)) for s in range(threads)]
        flip_thread = threading.Thread(target=flipper)
        start = time.perf_counter()
        flip_thread.start()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        elapsed = time.perf_counter() - start
        stop.set()
        flip_thread.join()
        rss_end = rss_bytes()
    kinds = collections.Counter("-".join(e.split("-")[-2:]) for e in served.elements())
    return {"threads": threads, "calls_per_thread": calls, "calls": threads * calls, "errors": len(errors),
            "error_examples": sorted(set(errors))[:5], "mistagged": mistagged[0], "limit_changes": flips[0],
            "seconds": elapsed, "calls_per_s": threads * calls / elapsed, "engines_served": dict(served),
            "engine_kinds_served": dict(kinds), "engines_loaded": len(engines),
            "rss_loaded_bytes": rss_loaded, "rss_warm_bytes": rss_warm[0] if rss_warm else None,
            "rss_half_bytes": rss_warm[1] if len(rss_warm) > 1 else None, "rss_end_bytes": rss_end,
            "rss_growth_after_warmup_bytes": (rss_end - rss_warm[0]) if rss_warm and rss_end and rss_warm[0] else None,
            "rss_growth_second_half_bytes": (rss_end - rss_warm[1]) if len(rss_warm) > 1 and rss_end else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", type=Path)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.directory or build_mixed(Path(tmp) / "mixed")
        report = soak(ranked_copy(directory, Path(tmp) / "ranked"), args.threads, args.calls)
    report["machine"] = {**machine_facts(1), "load_average": os.getloadavg()}
    mib = lambda b: "-" if b is None else f"{b / 2**20:.1f} MiB"  # noqa: E731
    print(f"soak: {report['calls']} calls ({report['threads']} threads x {report['calls_per_thread']}) in "
          f"{report['seconds']:.1f} s ({report['calls_per_s']:.0f}/s) while the limit changed "
          f"{report['limit_changes']} times")
    print(f"errors: {report['errors']}  mis-tagged outputs: {report['mistagged']}  "
          f"engines loaded: {report['engines_loaded']}")
    print("served: " + ", ".join(f"{k} {v}" for k, v in sorted(report["engine_kinds_served"].items())))
    print(f"RSS: loaded {mib(report['rss_loaded_bytes'])}, after 10% {mib(report['rss_warm_bytes'])}, "
          f"after 50% {mib(report['rss_half_bytes'])}, end {mib(report['rss_end_bytes'])} (growth after warm-up "
          f"{mib(report['rss_growth_after_warmup_bytes'])}, in the second half "
          f"{mib(report['rss_growth_second_half_bytes'])})")
    print(f"machine: {report['machine']['cpu']}, {report['machine']['usable_cpus']} usable CPUs, "
          f"load average {', '.join(f'{x:.2f}' for x in report['machine']['load_average'])}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if report["errors"] or report["mistagged"] else 0


if __name__ == "__main__":
    sys.exit(main())
