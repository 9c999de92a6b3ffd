"""The whole trained grid's ONNX families, exported for real: bytes on disk and export CPU.

`bench_cost` extrapolates the whole trained grid (378 points at published size) from the
benchmark's 8 points; a line fitted on two token counts cannot see what depends on the
others (until session 10, every point of the 4 middle token counts embedded its own
read-in queries and attention mask). The ONNX families cost little to make, so this
exports them all instead of extrapolating:

* `export_family` of every trained point into a fresh directory, as `adaexport build`
  lays it out (weights.bin, its tensor table, one .onnx per point); process CPU time of the
  whole export, the weights file included;
* every point's OpenVINO fp16/bf16 IR (`openvino_backend.half_ir`: ``.xml.xz`` + ``.bin.xz``,
  one IR for both precisions, bound at load to the family's ``weights-fp16-<hash>.bin``);
* bytes: the fp32 family (weights.bin + every .onnx) against one full fp32 model
  (parameters x 4 B), the float16 family (its twin + every point's IR) against one fp16
  model (x 2 B); the per-point graphs' range and their sum, per token count.

The int8 families' graphs (ONNX Runtime's QDQ models, OpenVINO's IRs) need a calibration
per point, about 1.4 CPU h for the grid at published size: `bench_cost` extrapolates those.
Sizes are deterministic (exports are byte-reproducible): measured once, no spread.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench_common import Context, ratio_row, time_row, value_row

NAME = "grid"


def run(ctx: Context) -> list[dict]:
    from adaexport.backends.openvino_backend import half_ir
    from adaexport.export import export_family
    from adaexport.space import build_grid

    cfg = ctx.loaded.config
    grid, _ = build_grid(cfg, "trained")
    full_params = sum(p.numel() for p in ctx.model.parameters())   # as bench_size's one full model
    with tempfile.TemporaryDirectory(prefix="adaexport-bench-grid-") as tmp:
        onnx_dir = Path(tmp) / "onnx"
        start = time.process_time()
        exported, weights = export_family(ctx.model, grid, onnx_dir, attention=ctx.attention, batch=ctx.batch,
                                          weights_name="weights.bin", exporter=ctx.exporter)
        export_cpu = time.process_time() - start
        engines = Path(tmp) / "engines"
        start = time.process_time()
        halves = {e.point: half_ir(e.path, engines, e.point.id)[0][:2] for e in exported}
        half_cpu = time.process_time() - start
        graphs = {e.point: e.path.stat().st_size for e in exported}
        half_graphs = {p: sum((engines / f).stat().st_size for f in files) for p, files in halves.items()}
        weights_bytes = weights.stat().st_size
        half_files = {path.name for path in onnx_dir.glob("weights-fp16-*.bin")}
        if len(half_files) != 1:
            raise AssertionError(f"expected one float16 twin of the weights, found {sorted(half_files)}")
        half_bytes = (onnx_dir / half_files.pop()).stat().st_size
        table_bytes = (onnx_dir / "weights.tensors.json").stat().st_size

    n = len(grid)
    rows = [time_row(NAME, f"export CPU, {n} points (weights file included)", [export_cpu], key="export_cpu",
                     note=f"export_family of the whole trained grid: {len(cfg.mask_token_grans)} templates "
                          f"(one per trained token count), {n} cuts, each checked; "
                          f"{export_cpu / n:.3f} s a point on average"),
            time_row(NAME, f"OpenVINO fp16/bf16 IRs, CPU, {n} points", [half_cpu], key="half_cpu",
                     note="half_ir of every point, the family's weights-fp16 file included")]
    for label, precision, shared, per_point, bytes_per_param in (
            ("fp32: weights.bin + every .onnx", "fp32", weights_bytes + table_bytes, graphs, 4),
            ("fp16/bf16: weights-fp16 + every point's OpenVINO IR (.xml.xz + .bin.xz)", "fp16", half_bytes,
             half_graphs, 2)):
        one_model = full_params * bytes_per_param
        total = shared + sum(per_point.values())
        by_tokens = {}
        for point, size in per_point.items():
            by_tokens.setdefault(point.tokens, []).append(size)
        spread = ", ".join(f"t{t} {min(s) / 1e3:.0f}-{max(s) / 1e3:.0f} kB" for t, s in sorted(by_tokens.items()))
        rows += [
            value_row(NAME, f"{precision} family, {n} points: bytes on disk", total, key=f"{precision}_bytes",
                      points=n, shared_bytes=shared, graph_bytes=sum(per_point.values()), one_model=one_model,
                      note=f"{label}: shared {shared:,} B + {n} graphs {sum(per_point.values()):,} B "
                           f"(median {statistics.median(per_point.values()) / 1e3:.0f} kB; {spread})"),
            ratio_row(NAME, f"{precision} family, {n} points / one full {precision} model", [total / one_model],
                      key=f"{precision}_vs_model",
                      note=f"one full model = {full_params:,} parameters x {bytes_per_param} B = {one_model:,} B; "
                           f"the graphs alone {sum(per_point.values()) / one_model:.3f}x"),
        ]
    return rows
