"""Family size on disk: one shared weights file vs one self-contained file per point.

* shared layout: `export_family` into a fresh directory, as `adaexport build` lays
  it out (weights.bin + one small .onnx per point); the sizes of the files written;
* one self-contained file per point: each point's `export_point_proto` (every weight
  embedded, what a plain `torch.onnx.export` per point would give), its serialized
  length summed (what `onnx.save` writes for it);
* the full model's parameters: sum of numel x element size of the dynamic model's
  parameters (float32), the least any layout that keeps every weight can take.

* engine families (`engine_families`): every (backend, precision) of the x86-cpu target
  that compiles here, each engine compiled from the exported family as `adaexport build`
  does (`compile_engine` into `engines/` beside `onnx/`): the distinct files the family's
  engines read, split into what the family adds (its own files: IR, quantized models,
  sidecars, OpenVINO fp16/bf16's float16 twins of the points and of weights.bin) and the
  fp32 ONNX family's files it reads (the point .onnx files and weights.bin), each and
  together against one full model at that precision (parameters x 4, 2 or 1 bytes). int8 engines
  are compiled for the smallest and the full point only (two points are enough to see
  whether a family stores its weights once; NNCF and ONNX Runtime's quantizer take a
  minute per point at published size) and calibrate on seeded random inputs: this
  measures bytes, never accuracy.

Sizes are deterministic (exports are byte-reproducible), so they are measured once
and have no spread.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench_common import Context, param_bytes, ratio_row, value_row

NAME = "size"
PRECISION_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
CALIBRATION = 16      # random inputs: enough for the quantizers to run; sizes do not depend on them


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def run(ctx: Context) -> list[dict]:
    from adaexport.export import export_family, export_point_proto
    from adaexport.model.static import specialize

    n = len(ctx.points)
    with tempfile.TemporaryDirectory(prefix="adaexport-bench-size-") as tmp:
        onnx_dir = Path(tmp) / "onnx"
        exported, weights = export_family(ctx.model, ctx.points, onnx_dir, attention=ctx.attention,
                                          batch=ctx.batch, weights_name="weights.bin", exporter=ctx.exporter)
        weights_bytes = weights.stat().st_size
        graph_bytes = {e.point.id: e.path.stat().st_size for e in exported}
        listed = sorted(p.name for p in onnx_dir.iterdir())
        table_bytes = (onnx_dir / "weights.tensors.json").stat().st_size
        engine_rows = engine_families(ctx, exported, Path(tmp), param_bytes(ctx.model))
    expected = sorted([f"{p.id}.onnx" for p in ctx.points] + ["weights.bin", "weights.tensors.json"])
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
        value_row(NAME, "shared: weights.bin", weights_bytes, key="weights",
                  note=f"{_mib(weights_bytes)}; its tensor table weights.tensors.json {table_bytes:,} B (read by "
                       "the int8 compile only)"),
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
        *engine_rows,
    ]


def engine_families(ctx: Context, exported: list, build: Path, params: int) -> list[dict]:
    """One row per (backend, precision) family of the x86-cpu target that compiles here: the
    bytes of the distinct files its engines read, what the family adds against one full
    model at that precision, and what it reads of the ONNX family."""
    import numpy as np

    from adaexport.backends import compile_engine, engine_choices
    from adaexport.datasets import random_inputs

    cfg = ctx.model.config
    calibration = random_inputs(CALIBRATION, cfg.in_channels, cfg.img_size)
    by_size = sorted(exported, key=lambda e: (e.point.tokens * e.point.width * e.point.depth, e.point.id))
    rows = []
    for choice in engine_choices("x86-cpu"):
        if not choice.availability or (choice.backend, choice.precision) == ("onnxruntime", "fp32"):
            continue
        family = by_size if choice.precision != "int8" else [by_size[0], *by_size[-1:][:len(by_size) - 1]]
        read: dict[Path, int] = {}
        for model in family:
            art = compile_engine(model.path, build / "engines", "x86-cpu", choice.backend, choice.precision,
                                 calibration_inputs=np.ascontiguousarray(calibration), threads=1)
            for path in [*art.paths(), art.sidecar]:
                read[path.resolve()] = path.stat().st_size
        fp32_family = {(build / "onnx" / name).resolve() for name in ["weights.bin", *(f"{m.point.id}.onnx"
                                                                                        for m in exported)]}
        own = sum(size for path, size in read.items() if path not in fp32_family)
        shared = sum(size for path, size in read.items() if path in fp32_family)
        weights = sum(size for path, size in read.items() if path.suffix == ".bin" and path.parent.name == "onnx")
        full = params * PRECISION_BYTES[choice.precision] // 4
        label = f"{choice.backend} {choice.precision}, {len(family)} points"
        rows.append(value_row(NAME, f"{label}: own files", own, key=f"{choice.backend}_{choice.precision}_own",
                              note=f"{_mib(own)}; reads {_mib(shared)} of the fp32 ONNX family's files",
                              points=len(family), reads_onnx_family=shared, family_weights=weights))
        rows.append(ratio_row(NAME, f"{label}: own / one full {choice.precision} model", [own / full],
                              key=f"{choice.backend}_{choice.precision}_own_vs_full"))
        rows.append(ratio_row(NAME, f"{label}: every file it reads / one full {choice.precision} model",
                              [(own + shared) / full], key=f"{choice.backend}_{choice.precision}_all_vs_full"))
    return rows
