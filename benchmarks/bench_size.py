"""Family size on disk: one shared weights file vs one self-contained file per point.

* shared layout: `export_family` into a fresh directory, as `adaexport build` lays
  it out (weights.bin + one small .onnx per point); the sizes of the files written;
* one self-contained file per point: each point's `export_point_proto` (every weight
  embedded, what a plain `torch.onnx.export` per point would give), its serialized
  length summed (what `onnx.save` writes for it);
* the full model's parameters: sum of numel x element size of the dynamic model's
  parameters (float32), the least any layout that keeps every weight can take.

Sizes are deterministic (exports are byte-reproducible), so they are measured once
and have no spread.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench_common import Context, param_bytes, ratio_row, value_row

NAME = "size"


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def run(ctx: Context) -> list[dict]:
    from adaexport.export import export_family, export_point_proto
    from adaexport.model.static import specialize

    n = len(ctx.points)
    with tempfile.TemporaryDirectory(prefix="adaexport-bench-size-") as tmp:
        exported, weights = export_family(ctx.model, ctx.points, Path(tmp), attention=ctx.attention,
                                          batch=ctx.batch, weights_name="weights.bin", exporter=ctx.exporter)
        weights_bytes = weights.stat().st_size
        graph_bytes = {e.point.id: e.path.stat().st_size for e in exported}
        listed = sorted(p.name for p in Path(tmp).iterdir())
    expected = sorted([f"{p.id}.onnx" for p in ctx.points] + ["weights.bin"])
    if listed != expected:
        raise AssertionError(f"export_family left unexpected files: {sorted(set(listed) - set(expected))}")
    onnx_bytes = sum(graph_bytes.values())
    shared = weights_bytes + onnx_bytes

    standalone = {}
    for point in ctx.points:
        proto = export_point_proto(specialize(ctx.model, point, ctx.attention), ctx.batch, exporter=ctx.exporter)
        standalone[point.id] = len(proto.SerializeToString(deterministic=True))
        del proto
    per_point = sum(standalone.values())
    params = param_bytes(ctx.model)
    count = sum(p.numel() for p in ctx.model.parameters())
    dtypes = "/".join(sorted({str(p.dtype).removeprefix("torch.") for p in ctx.model.parameters()}))
    largest = max(standalone, key=standalone.get)

    return [
        value_row(NAME, f"full model parameters ({dtypes})", params,
                  note=f"{_mib(params)}; {count:,} parameters", key="params"),
        value_row(NAME, "shared: weights.bin", weights_bytes, note=_mib(weights_bytes), key="weights"),
        value_row(NAME, f"shared: {n} .onnx graphs", onnx_bytes,
                  note=f"{_mib(onnx_bytes)}; {onnx_bytes // n:,} B per point on average", key="graphs"),
        value_row(NAME, "shared layout, total", shared, note=_mib(shared), key="shared"),
        value_row(NAME, f"{n} self-contained files, total", per_point,
                  note=f"{_mib(per_point)}; largest {largest} {standalone[largest]:,} B",
                  key="self_contained", per_point=dict(sorted(standalone.items()))),
        ratio_row(NAME, "self-contained / shared", [per_point / shared], key="self_contained_vs_shared"),
        ratio_row(NAME, "weights.bin / parameters", [weights_bytes / params], key="weights_vs_params"),
        ratio_row(NAME, "shared / parameters", [shared / params], key="shared_vs_params"),
        ratio_row(NAME, "self-contained / parameters", [per_point / params], key="self_contained_vs_params"),
    ]
