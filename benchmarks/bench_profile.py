"""Repeatability of `adaexport profile` and how latency scales with FLOPs.

Builds the family once (parity on, profile stage off) in a temporary directory, then
profiles every engine twice in the same process with the build profile's
``[profiling]`` settings (interleaved rounds, re-measurement above the CV threshold),
the target's backends pinned to ``--threads`` threads. Reported:

* repeatability: Spearman's rank correlation of the engines ordered by p50 in run 1 vs
  run 2 (1.0: the same order), and the largest and median relative p50 difference
  |p50_2 - p50_1| / min(p50_1, p50_2) over the engines;
* scaling: per engine kind (backend + precision), the log-log slope of p50 against
  the point's FLOPs across the family and the correlation of the logs (slope 1:
  latency proportional to FLOPs; a small slope: fixed per-run overhead dominates);
* the wall time of one profiling run and the share of engines whose CV stayed above
  the threshold after re-measurement.

Run alone:   python benchmarks/bench_profile.py [--grid trained|corners] [--profile default|quick]
             [--engines onnxruntime:fp32,openvino:fp32] [--threads T] [--json FILE]
or through run_all.py once "profile" is in its BENCHMARKS.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_common import Context, value_row

NAME = "profile"


def _build(ctx: Context, out: Path, engines: list[str] | None):
    from adaexport.build import BuildRequest, run_build
    from adaexport.progress import QuietReporter

    profile = ctx.profile
    if engines:   # a profile that builds only these engine kinds (same tolerances and settings)
        from adaexport.profiles import load_profile

        text = load_profile(profile).source
        if "[build]" in text:
            raise ValueError(f"profile {profile} already has a [build] table; pass a profile without one")
        extra = Path(out.parent) / "bench-profile.toml"
        extra.write_text(text + "\n[build]\nengines = [" + ", ".join(f'"{e}"' for e in engines) + "]\n")
        profile = str(extra)
    result = run_build(BuildRequest(out=out, model=ctx.model_path, profile=profile, **ctx.grid_args(),
                                    attention=ctx.attention, batch=ctx.batch, parity=True, measure=False),
                       QuietReporter())
    if result.failures:
        raise AssertionError(f"the build failed parity: {result.failures[0]}")
    return profile


def _profile_once(out: Path, settings, threads: int) -> tuple[dict, float]:
    from adaexport.manifest import read_records
    from adaexport.profiling.family import profile_manifest
    from adaexport.targets import get_target

    manifest = read_records(out)
    target = dataclasses.replace(get_target(manifest.device.target), threads=threads)
    started = time.perf_counter()
    results, _ = profile_manifest(out, manifest, target, device=target.name, mode="default", settings=settings)
    return {e.id: (e, results[e.id]) for e in manifest.engines if e.id in results}, time.perf_counter() - started


def run(ctx: Context, engines: list[str] | None = None) -> list[dict]:
    from adaexport.profiles import load_profile
    from adaexport.profiling import stats

    with tempfile.TemporaryDirectory(prefix="adaexport-bench-profile-") as tmp:
        out = Path(tmp) / "family"
        settings = load_profile(_build(ctx, out, engines)).profiling
        first, first_s = _profile_once(out, settings, ctx.threads)
        second, second_s = _profile_once(out, settings, ctx.threads)
    ids = sorted(first)
    p1 = [first[i][1]["latency_ms"]["p50"] for i in ids]
    p2 = [second[i][1]["latency_ms"]["p50"] for i in ids]
    rel = [abs(b - a) / min(a, b) for a, b in zip(p1, p2)]
    worst = ids[max(range(len(ids)), key=lambda k: rel[k])]
    max_cv = settings.max_cv
    noisy = sum(1 for run in (first, second) for _, p in run.values() if p["cv"] > max_cv)
    note = f"{len(ids)} engines, {ctx.threads} thread(s)"
    rows = [
        value_row(NAME, "p50 rank correlation, run 1 vs run 2 (Spearman)", stats.spearman(p1, p2), "rho", note),
        value_row(NAME, "largest relative p50 difference", 100 * max(rel), "%", f"{worst}"),
        value_row(NAME, "median relative p50 difference", 100 * statistics.median(rel), "%", note),
        value_row(NAME, "one profiling run (wall)", first_s, "s", f"run 2: {second_s:.1f} s"),
        value_row(NAME, f"engines with CV > {max_cv:g}% after re-measurement", noisy / (2 * len(ids)) * 100, "%",
                  "both runs"),
    ]
    kinds = sorted({(e.backend, e.precision) for e, _ in first.values()})
    for backend, precision in kinds:
        members = [i for i in ids if (first[i][0].backend, first[i][0].precision) == (backend, precision)]
        if len(members) < 3:
            continue
        flops = [float(first[i][0].flops) for i in members]
        for label, run_ in (("run 1", first), ("run 2", second)):
            p50 = [run_[i][1]["latency_ms"]["p50"] for i in members]
            slope, r = stats.loglog_fit(flops, p50)
            rows.append(value_row(NAME, f"{backend} {precision}: log-log slope of p50 vs FLOPs ({label})", slope,
                                  "", f"r = {r:.3f}, rho = {stats.spearman(flops, p50):.3f}, "
                                      f"p50 {min(p50):.3f}..{max(p50):.3f} ms over {len(members)} points"))
    return rows


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", choices=("trained", "corners"), default="trained")
    parser.add_argument("--profile", default="default", help="build profile (its [profiling] settings are used)")
    parser.add_argument("--engines", help="only these engine kinds, e.g. onnxruntime:fp32,openvino:fp32")
    parser.add_argument("--threads", type=int, default=1, help="threads of every backend and of torch (default 1)")
    parser.add_argument("--json", type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run_all import pin_threads

    pin_threads(args.threads)
    from adaexport.build import EXPORTER
    from adaexport.demo import DEMO_MODEL
    from adaexport.model import load_checkpoint
    from adaexport.space import build_grid
    from bench_common import load_average

    loaded = load_checkpoint(DEMO_MODEL)
    points, _ = build_grid(loaded.config, args.grid)
    ctx = Context(loaded=loaded, model_path=DEMO_MODEL, grid=args.grid, points=points,
                  attention=loaded.config.default_attention, batch=1, repeats=1, threads=args.threads,
                  profile=args.profile, exporter=EXPORTER)
    load_start = load_average()
    started = time.perf_counter()
    rows = run(ctx, args.engines.split(",") if args.engines else None)
    for row in rows:
        unit = f" {row['unit']}" if row["unit"] else ""
        print(f"{row['name']:<72} {row['median']:>10.4g}{unit:<4} {row['note']}")
    print(f"grid {args.grid} ({len(points)} points), profile {args.profile}, threads {args.threads}; "
          f"load average {load_start} -> {load_average()}; {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
