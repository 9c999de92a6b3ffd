"""The cost of building the model's whole trained grid, extrapolated from the measured points.

From what `bench_export` and `bench_build` measured on the benchmark's points (left in
``ctx.shared``), each per-point cost is fitted as a straight line in one property of the
point (least squares over the measured points) and summed over every trained point P of
the checkpoint (378 at published size: 6 token counts x 3 widths x 21 depths):

* export CPU  = weights file (every trained token count's template) + points x a cut
                                                                      (bench_export: medians)
* compile CPU = sum over kinds k of sum_P (a_k + b_k * params(p))   (the cold build, per engine)
* parity CPU  = sum over kinds k of sum_P (a_k + b_k * flops(p))    (open + run, per engine)
              + sum over (tokens, width) of (a + b * flops(tokens, width, deepest))  (reference)
* bytes       = sum over kinds k of (files its engines share, once
                + sum_P (a_k + b_k * params(p)) for each engine's own files); the grid's
                total counts each file once (kinds share some: the ONNX family, OpenVINO fp16
                and bf16's float16 twins), per point or, read by several points, once

params(p) and flops(p) are `count_params` / `count_flops` of the point. Every fit, its
coefficients and the measured range are in the row's note and in ``--json``. A line in
params or FLOPs is a model, not a measurement: the depth-6 and depth-21 corners bracket the
trained depths 1..21, so depths under 6 are extrapolated below the measured range.
"""

from __future__ import annotations

from bench_common import Context, value_row

NAME = "cost"


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(a, b) of y = a + b x by least squares (a flat line through the mean for one x)."""
    import numpy as np

    if len(set(xs)) < 2:
        return float(np.mean(ys)), 0.0
    b, a = np.polyfit(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), 1)
    return float(a), float(b)


def _sum_fit(measured: dict[str, float], prop: dict[str, float], grid_props: list[float]) -> tuple[float, str]:
    """sum over the grid of the fitted line, and the formula with its coefficients."""
    names = list(measured)
    a, b = _fit([prop[n] for n in names], [measured[n] for n in names])
    return sum(a + b * x for x in grid_props), f"{a:.3g} + {b:.3g} x"


def run(ctx: Context) -> list[dict]:
    from adaexport.model.flops import count_flops, count_params
    from adaexport.space import ConfigPoint, build_grid

    shared = ctx.shared
    if "manifest" not in shared or "export_cpu" not in shared:
        raise RuntimeError("the cost extrapolation needs the export and build benchmarks of the same run")
    cfg = ctx.loaded.config
    grid, _ = build_grid(cfg, "trained")
    n = len(grid)
    params = {p.id: count_params(cfg, p) / 1e6 for p in [*ctx.points, *grid]}
    flops = {p.id: count_flops(cfg, p) / 1e9 for p in [*ctx.points, *grid]}
    grid_params = [params[p.id] for p in grid]
    grid_flops = [flops[p.id] for p in grid]
    kinds = shared["kinds"]
    rows = []

    # the trained grid's token counts are the trained ones: the weights file's layout exported
    # their templates (bench_export's weights_cpu), every point is a cut
    export = shared["weights_cpu"] + n * shared["cut_cpu"]
    rows.append(value_row(NAME, f"export CPU, {n} points", round(export), "s", key="export",
                          note=f"weights file {shared['weights_cpu']:.1f} s (with every trained token count's "
                               f"template) + {n} cuts x {shared['cut_cpu']:.3f} s; bench_grid exports them all"))
    compile_total = 0.0
    notes = []
    for k in kinds:
        if shared["compile_cpu"][k]:
            total, formula = _sum_fit(shared["compile_cpu"][k], params, grid_params)
            compile_total += total
            notes.append(f"{k} {total:.0f} s = sum({formula} params/M)")
    notes.append(f"int8 as measured, with {shared['calibration']} calibration images")
    rows.append(value_row(NAME, f"compile CPU, {n} points x {sum(1 for k in kinds if shared['compile_cpu'][k])} "
                                "compiled kinds", round(compile_total), "s", key="compile", note="; ".join(notes)))
    parity_total, notes = 0.0, []
    for k in kinds:
        total, formula = _sum_fit(shared["parity_cpu"][k], flops, grid_flops)
        parity_total += total
        notes.append(f"{k} {total:.0f} s = sum({formula} GFLOPs)")
    deepest = max(p.depth for p in grid)
    pairs = sorted({(p.tokens, p.width) for p in grid})
    pair_flops = {f"t{t}_w{w}": count_flops(cfg, ConfigPoint(t, w, deepest)) / 1e9 for t, w in pairs}
    measured_ref = shared["reference_cpu"]            # {(tokens, width): CPU s}
    ref_props = {tw: count_flops(cfg, ConfigPoint(*tw, max(p.depth for p in ctx.points))) / 1e9
                 for tw in measured_ref}
    reference, formula = _sum_fit(measured_ref, ref_props, list(pair_flops.values()))
    parity_total += reference
    notes.append(f"reference {reference:.0f} s = {len(pairs)} x ({formula} GFLOPs at depth {deepest})")
    rows.append(value_row(NAME, f"parity CPU, {n} points x {len(kinds)} kinds, {shared['samples']} samples",
                          round(parity_total), "s", key="parity", note="; ".join(notes)))
    total_cpu = export + compile_total + parity_total
    rows.append(value_row(NAME, "build CPU, whole trained grid", round(total_cpu / 3600, 2), "CPU h", key="cpu_h",
                          note=f"export + compile + parity above ({total_cpu:.0f} s); no profiling"))
    rows.extend(_bytes_rows(shared["manifest"], kinds, params, grid_params, n))
    return rows


def _bytes_rows(manifest: dict, kinds: list[str], params: dict, grid_params: list[float], n: int) -> list[dict]:
    """Bytes of the whole grid per kind: files shared by its engines once, each engine's own
    files fitted in the point's parameters; the ONNX family's files counted with ONNX
    Runtime fp32 only (the other kinds read them)."""
    from adaexport.space import ConfigPoint

    onnx = {f["file"] for e in manifest["engines"] if (e["backend"], e["precision"]) == ("onnxruntime", "fp32")
            for f in e["files"]}
    rows, total = [], 0.0
    for k in kinds:
        engines = [e for e in manifest["engines"] if f"{e['backend']} {e['precision']}" == k
                   and e.get("status", "ready") == "ready"]
        owners: dict[str, list[str]] = {}
        sizes: dict[str, int] = {}
        for e in engines:
            for f in e["files"]:
                if k == "onnxruntime fp32" or f["file"] not in onnx:
                    owners.setdefault(f["file"], []).append(e["id"])
                    sizes[f["file"]] = f["size"]
        common = sum(sizes[f] for f, who in owners.items() if len(who) > 1)
        own = {ConfigPoint(**e["point"]).id: sum(sizes[f["file"]] for f in e["files"]
                                                  if f["file"] in owners and len(owners[f["file"]]) == 1)
               for e in engines}
        per_engine, formula = _sum_fit(own, params, grid_params)
        grid_bytes = common + per_engine
        total += grid_bytes
        rows.append(value_row(NAME, f"{k}: bytes on disk, {n} engines", round(grid_bytes), key=f"{k}_bytes",
                              note=f"shared {common:,} B + sum({formula} params/M) B per engine"))
    # The grid's total: kinds share files (the ONNX family; OpenVINO fp16 and bf16 read the same
    # float16 twins), so each file once: read by engines of several points, once for the grid;
    # else once for its point, fitted in the point's parameters like the rows above.
    readers: dict[str, set[str]] = {}
    sizes = {}
    for e in manifest["engines"]:
        if e.get("status", "ready") == "ready":
            for f in e["files"]:
                readers.setdefault(f["file"], set()).add(ConfigPoint(**e["point"]).id)
                sizes[f["file"]] = f["size"]
    family = sum(sizes[f] for f, points in readers.items() if len(points) > 1)
    built = set().union(*readers.values())
    per_point = {point: sum(sizes[f] for f, points in readers.items() if points == {point}) for point in built}
    grid_per_point, formula = _sum_fit(per_point, params, grid_params)
    rows.append(value_row(NAME, f"bytes on disk, whole trained grid ({n} points x {len(kinds)} kinds)",
                          round(family + grid_per_point), key="bytes",
                          note=f"every file once: read by several points {family:,} B + sum({formula} params/M) B "
                               f"per point (the kinds above sum to {round(total):,} B, counting files they share "
                               "once per kind)"))
    return rows
