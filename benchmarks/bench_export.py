"""Export time: the shared weights file, one point, and a whole family.

Per repeat, in a fresh temporary directory:

1. the weights file: `build_weights` (the full point exported once, its tensors laid
   out in memory) + `write_weights`;
2. every point of the grid on its own with `export_point` against that file:
   specialise + export the point's proto + externalize into the shared store +
   write (atomic, fsync) + the ONNX full checker, exactly what `adaexport build`
   does per point. The repeat's figure is the median over the grid's points;
3. then, in another fresh directory, the whole family with `export_family` (weights
   file + every point), timed end to end.

The process is warm (imports done, one untimed export before the first repeat), so
the figures are per-export costs, not interpreter start-up.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from bench_common import Context, measure, time_row

NAME = "export"


def _weights_and_points(ctx: Context, directory: Path) -> tuple[float, dict]:
    from adaexport.export import build_weights, export_point, write_weights

    def weights():
        store = build_weights(ctx.model, attention=ctx.attention, batch=ctx.batch, weights_name="weights.bin",
                              exporter=ctx.exporter)
        write_weights(store, directory / "weights.bin")
        return store

    weights_s, store = measure(weights)
    per_point = {}
    for point in ctx.points:
        seconds, _ = measure(lambda: export_point(ctx.model, point, directory, store, attention=ctx.attention,
                                                  batch=ctx.batch, weights_name="weights.bin",
                                                  exporter=ctx.exporter))
        per_point[point.id] = seconds
    return weights_s, per_point


def _family(ctx: Context, directory: Path) -> float:
    from adaexport.export import export_family

    seconds, (exported, _) = measure(lambda: export_family(
        ctx.model, ctx.points, directory, attention=ctx.attention, batch=ctx.batch,
        weights_name="weights.bin", exporter=ctx.exporter))
    assert len(exported) == len(ctx.points), "export_family did not export every point"
    return seconds


def warm_up(ctx: Context) -> None:
    """One untimed export, so the first timed one does not pay for lazy imports."""
    from adaexport.export import export_point_proto
    from adaexport.model.static import specialize

    export_point_proto(specialize(ctx.model, ctx.points[0], ctx.attention), ctx.batch, exporter=ctx.exporter)


def run(ctx: Context) -> list[dict]:
    n = len(ctx.points)
    weights_s, point_medians, separate_sums, family_s = [], [], [], []
    by_point: dict[str, list[float]] = {}
    for _ in range(ctx.repeats):
        with tempfile.TemporaryDirectory(prefix="adaexport-bench-points-") as tmp:
            w, per_point = _weights_and_points(ctx, Path(tmp))
        weights_s.append(w)
        point_medians.append(statistics.median(per_point.values()))
        separate_sums.append(w + sum(per_point.values()))
        for pid, seconds in per_point.items():
            by_point.setdefault(pid, []).append(seconds)
        with tempfile.TemporaryDirectory(prefix="adaexport-bench-family-") as tmp:
            family_s.append(_family(ctx, Path(tmp)))

    typical = {pid: statistics.median(v) for pid, v in by_point.items()}
    fastest = min(typical, key=typical.get)
    slowest = max(typical, key=typical.get)
    per_point_in_family = [f / n for f in family_s]
    return [
        time_row(NAME, "weights file (build_weights + write)", weights_s,
                 "the full point exported once, its tensors laid out and written", key="weights"),
        time_row(NAME, f"one point (median over {n} points)", point_medians,
                 f"export_point incl. checker; fastest {fastest} {typical[fastest]:.3f} s, "
                 f"slowest {slowest} {typical[slowest]:.3f} s",
                 key="point", per_point={pid: v for pid, v in sorted(by_point.items())}),
        time_row(NAME, f"weights + {n} points, exported one by one", separate_sums,
                 "sum of the two rows above, per repeat", key="separate"),
        time_row(NAME, f"family of {n} points (export_family)", family_s,
                 f"weights file + every point; median {statistics.median(per_point_in_family):.3f} s per point",
                 key="family"),
    ]
