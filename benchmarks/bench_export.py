"""Export time: the shared weights file, one point, and a whole family.

Per repeat, in a fresh temporary directory:

1. the weights file: `lay_out_weights` (one tapped template exported per trained token
   count, the full point's first, their tensors laid out in a temp file beside the weights
   file, renamed when complete);
2. every point of the grid on its own with `export_point` against that file:
   specialise + export the point's proto + externalize into the shared store +
   write (atomic, fsync) + the ONNX full checker, exactly what `adaexport build`
   does per point. The repeat's figure is the median over the grid's points;
3. then, in another fresh directory, the whole family with `export_family` (weights
   file + every point), timed end to end.

The process is warm (imports done, one untimed export before the first repeat), so
the figures are per-export costs, not interpreter start-up. Each point's CPU time
(`time.process_time`, this process's user + system) is recorded beside its wall time,
and the process's peak RSS (`ru_maxrss`) after the run.

Run alone (`python benchmarks/bench_export.py --model CKPT --tokens 32,256 --width 416,832
--depth 6,21`) it measures one cold family export the way `adaexport build` does it:
checkpoint load, weights file, then every point, printing CPU and wall seconds per point,
the peak RSS against the checkpoint's size, and the load average before and after
(`--published` uses the cached published-size checkpoint, `published_model.py`).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_common import Context, load_average, measure, ratio_row, time_row, value_row

NAME = "export"


def _weights_and_points(ctx: Context, directory: Path) -> tuple[float, float, dict, dict]:
    from adaexport.export import export_point, lay_out_weights
    from adaexport.export_depths import DepthTemplates

    made: list = []

    def weights():
        return lay_out_weights(ctx.model, directory / "weights.bin", attention=ctx.attention, batch=ctx.batch,
                               exporter=ctx.exporter, templates=made)

    def with_cpu(fn):
        """fn's result and the CPU seconds of the call alone (not `measure`'s collection before it)."""
        start = time.process_time()
        result = fn()
        return result, time.process_time() - start

    weights_s, (store, weights_cpu) = measure(lambda: with_cpu(weights))
    templates = DepthTemplates(ctx.model, store, attention=ctx.attention, batch=ctx.batch, weights_name="weights.bin",
                               exporter=ctx.exporter, known=made)
    per_point, cpu = {}, {}
    for point in _template_order(ctx.points):
        seconds, (_, cpu[point.id]) = measure(lambda: with_cpu(lambda: export_point(
            ctx.model, point, directory, store, attention=ctx.attention, batch=ctx.batch, weights_name="weights.bin",
            exporter=ctx.exporter, templates=templates)))
        per_point[point.id] = seconds
    return weights_s, weights_cpu, per_point, cpu


def _template_order(points: list) -> list:
    """The points grouped by token count, as the build's export tasks run them: the first
    point of a group pays its template's export, the others are cut from it."""
    from adaexport.export_depths import by_token_count

    return [p for group in by_token_count(points).values() for p in group]


def _family(ctx: Context, directory: Path) -> float:
    from adaexport.export import export_family

    seconds, (exported, _) = measure(lambda: export_family(
        ctx.model, ctx.points, directory, attention=ctx.attention, batch=ctx.batch,
        weights_name="weights.bin", exporter=ctx.exporter))
    assert len(exported) == len(ctx.points), "export_family did not export every point"
    return seconds


def warm_up(ctx: Context) -> None:
    """One untimed export, so the first timed one does not pay for lazy imports: of the
    bundled demo's smallest point, whatever the benchmark's model, so that the process's
    peak RSS is the family export's (a published-size point exported with its weights
    embedded would set it)."""
    from adaexport.demo import DEMO_MODEL
    from adaexport.export import export_point_proto
    from adaexport.model import load_checkpoint
    from adaexport.model.static import specialize
    from adaexport.space import ConfigPoint

    demo = load_checkpoint(DEMO_MODEL).model
    cfg = demo.config
    export_point_proto(specialize(demo, ConfigPoint(min(cfg.mask_token_grans), min(cfg.mat_dims), 1), ctx.attention),
                       ctx.batch, exporter=ctx.exporter)


def templates_exported(points: list, trained: set[int]) -> set[str]:
    """The ids of the points whose export includes their token count's template: the first
    of each token count (`by_token_count`) the model was not trained at (the weights file's
    layout exported a template for every trained one, `trained`)."""
    from adaexport.export_depths import by_token_count

    return {group[0].id for tokens, group in by_token_count(points).items() if tokens not in trained}


def run(ctx: Context) -> list[dict]:
    """The rows above; ``ctx.export_family=False`` (run_all --published) leaves out the
    export_family row, which exports every point a second time."""
    family = ctx.export_family
    n = len(ctx.points)
    weights_s, point_medians, separate_sums, family_s, cpu_medians, weights_cpu = [], [], [], [], [], []
    by_point: dict[str, list[float]] = {}
    cpu_by_point: dict[str, list[float]] = {}
    for _ in range(ctx.repeats):
        with tempfile.TemporaryDirectory(prefix="adaexport-bench-points-") as tmp:
            w, w_cpu, per_point, cpu = _weights_and_points(ctx, Path(tmp))
        weights_s.append(w)
        weights_cpu.append(w_cpu)
        cpu_medians.append(statistics.median(cpu.values()))
        point_medians.append(statistics.median(per_point.values()))
        separate_sums.append(w + sum(per_point.values()))
        for pid, seconds in per_point.items():
            by_point.setdefault(pid, []).append(seconds)
            cpu_by_point.setdefault(pid, []).append(cpu[pid])
        if family:
            with tempfile.TemporaryDirectory(prefix="adaexport-bench-family-") as tmp:
                family_s.append(_family(ctx, Path(tmp)))
    export_cpu = {pid: statistics.median(v) for pid, v in cpu_by_point.items()}
    with_template = templates_exported(ctx.points, set(ctx.model.config.mask_token_grans))
    template_cpu = [v for pid, vs in cpu_by_point.items() if pid in with_template for v in vs]
    cut_cpu = [v for pid, vs in cpu_by_point.items() if pid not in with_template for v in vs]
    ctx.shared.update(export_cpu=export_cpu, weights_cpu=statistics.median(weights_cpu),
                      cut_cpu=statistics.median(cut_cpu))

    typical = {pid: statistics.median(v) for pid, v in by_point.items()}
    fastest = min(typical, key=typical.get)
    slowest = max(typical, key=typical.get)
    per_point_in_family = [f / n for f in family_s]
    rows = [
        time_row(NAME, "weights file (lay_out_weights)", weights_s,
                 f"{len(ctx.model.config.mask_token_grans)} templates (one per trained token count) exported, "
                 "their tensors laid out and written", key="weights"),
        time_row(NAME, f"one point (median over {n} points)", point_medians,
                 f"export_point incl. checker; fastest {fastest} {typical[fastest]:.3f} s, "
                 f"slowest {slowest} {typical[slowest]:.3f} s",
                 key="point", per_point={pid: v for pid, v in sorted(by_point.items())}),
        time_row(NAME, f"one point, CPU seconds (median over {n} points)", cpu_medians,
                 "time.process_time of export_point (user + system of this process)", key="point_cpu"),
        time_row(NAME, f"one point, CPU seconds, every point x repeat ({n} x {ctx.repeats})",
                 [v for vs in cpu_by_point.values() for v in vs],
                 "after the weights file; spread over the points and repeats", key="point_cpu_all"),
        time_row(NAME, f"a point cut from its token count's template, CPU seconds ({len(cut_cpu)} = points x repeats)",
                 cut_cpu, "export_point of a point whose template is already exported", key="cut_cpu"),
        *([time_row(NAME, f"a token count's template (its first point), CPU seconds ({len(template_cpu)})",
                    template_cpu, "export_point exporting the tapped full-width, full-depth graph, then the cut",
                    key="template_cpu")] if template_cpu else []),
        time_row(NAME, "weights file, CPU seconds", weights_cpu,
                 "lay_out_weights (with every trained token count's template)", key="weights_cpu"),
        value_row(NAME, "peak RSS of the process", peak_rss_bytes(), note="ru_maxrss after every export above",
                  key="peak_rss"),
        ratio_row(NAME, "peak RSS / checkpoint size", [peak_rss_bytes() / checkpoint_bytes(ctx.model_path)],
                  note=f"checkpoint {checkpoint_bytes(ctx.model_path) / 2**20:.0f} MiB on disk; the process "
                       "(checkpoint load, warm-up and every export above)", key="peak_rss_vs_checkpoint"),
        time_row(NAME, f"weights + {n} points, exported one by one", separate_sums,
                 "sum of the two rows above, per repeat", key="separate"),
    ]
    if family:
        rows.append(time_row(NAME, f"family of {n} points (export_family)", family_s,
                             f"weights file + every point; median {statistics.median(per_point_in_family):.3f} s "
                             "per point", key="family"))
    return rows


def checkpoint_bytes(path: Path) -> int:
    """The checkpoint's bytes on disk (a directory's files, or the one file)."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.glob("*") if p.is_file())
    return path.stat().st_size


def peak_rss_bytes() -> int:
    """This process's peak resident set (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    """One cold family export as `adaexport build` does it, CPU seconds per point and peak RSS."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="checkpoint (default: the bundled demo)")
    parser.add_argument("--published", action="store_true", help="the cached published-size checkpoint")
    parser.add_argument("--tokens", type=_ints, default=None)
    parser.add_argument("--width", type=_ints, default=None)
    parser.add_argument("--depth", type=_ints, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from adaexport.export import export_point, lay_out_weights
    from adaexport.export_depths import DepthTemplates
    from adaexport.model import load_checkpoint
    from adaexport.space import build_grid

    if args.published:
        from published_model import published_checkpoint

        args.model = published_checkpoint()
    if args.model is None:
        from adaexport.demo import DEMO_MODEL

        args.model = DEMO_MODEL
    print(f"load average before: {load_average()}", flush=True)
    start = time.process_time()
    loaded = load_checkpoint(args.model)
    print(f"checkpoint load: {time.process_time() - start:.2f} s CPU; peak RSS {peak_rss_bytes() / 2**20:.0f} MiB",
          flush=True)
    explicit = any(v is not None for v in (args.tokens, args.width, args.depth))
    points, _ = build_grid(loaded.config, None if explicit else "corners", args.tokens, args.width, args.depth)
    size = checkpoint_bytes(args.model)
    attention = loaded.config.default_attention
    cpu = []
    with tempfile.TemporaryDirectory(prefix="adaexport-bench-export-") as tmp:
        directory = Path(tmp)
        start = time.process_time()
        made: list = []
        store = lay_out_weights(loaded.model, directory / "weights.bin", attention=attention, exporter="torchscript",
                                templates=made)
        print(f"weights file (and the full point's template): {time.process_time() - start:.2f} s CPU; "
              f"peak RSS {peak_rss_bytes() / 2**20:.0f} MiB", flush=True)
        templates = DepthTemplates(loaded.model, store, attention=attention, weights_name="weights.bin",
                                   exporter="torchscript", batch=1, known=made)
        for point in _template_order(points):
            start, wall = time.process_time(), time.perf_counter()
            export_point(loaded.model, point, directory, store, attention=attention, weights_name="weights.bin",
                         exporter="torchscript", templates=templates)
            cpu.append(time.process_time() - start)
            print(f"{point.id}: {cpu[-1]:.2f} s CPU, {time.perf_counter() - wall:.2f} s wall; "
                  f"peak RSS {peak_rss_bytes() / 2**20:.0f} MiB", flush=True)
        store.file.close()
    print(f"points: {len(cpu)}, CPU s per point median {statistics.median(cpu):.2f} (min {min(cpu):.2f}, "
          f"max {max(cpu):.2f}, mean {statistics.mean(cpu):.2f}); peak RSS {peak_rss_bytes() / 2**20:.0f} MiB = "
          f"{peak_rss_bytes() / size:.2f}x the checkpoint ({size / 2**20:.0f} MiB); "
          f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
