"""The external-data table of a family ONNX, written into the manifest at build time.

The family's fp32 engines keep their large weights in the shared ``weights.bin``; each
initializer names its bytes there (``external_data``: location, offset, length). To hand
ONNX Runtime those tensors once for every session (``SessionOptions.add_initializer``) the
runtime needs that table; the build writes it into the engine's manifest entry
(``shared_tensors``, ``manifest_records.SharedTensor``), so the runtime never parses an
ONNX file. Toolchain only (imports onnx).

`family_files` lists what an engine that reads a point's ONNX reads (the ONNX and its
weights file), as paths relative to the engine's folder (`family_relpath`).
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import BackendError, safe_artifact_path

# Ops whose weight input (index 1) ONNX Runtime's optimisers use as is. Other initializers
# (e.g. a table multiplied elementwise) may be rewritten in place by a graph optimiser
# (reshaped to fold an Unsqueeze), which goes wrong for an initializer the session does
# not own, so only these are shared.
WEIGHT_INPUTS = {"MatMul": 1, "Gemm": 1, "Conv": 1}


def shared_tensor_table(path: str | Path, weights_name: str) -> list[dict]:
    """The external initializers of the ONNX at ``path`` stored in ``weights_name`` that
    sessions can safely share (read only as the weight input of MatMul, Gemm or Conv), as
    ``{"name", "offset", "length", "dtype", "shape"}`` rows in file order."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    model = onnx.load(str(path), load_external_data=False)
    uses: dict[str, list[tuple[str, int]]] = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            uses.setdefault(name, []).append((node.op_type, index))
    rows = []
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        consumers = uses.get(tensor.name, [])
        if info.get("location") != weights_name or not consumers \
                or not all(WEIGHT_INPUTS.get(op) == index for op, index in consumers):
            continue
        rows.append({"name": tensor.name, "offset": int(info.get("offset", 0)), "length": int(info["length"]),
                     "dtype": tensor_dtype_to_np_dtype(tensor.data_type).name, "shape": list(tensor.dims)})
    return rows


def external_locations(path: str | Path) -> list[str]:
    """The files (relative to the ONNX's folder) holding the external tensors of the ONNX at
    ``path``. On a device without the onnx package (`adaexport compile` of a pending
    TensorRT engine) the family's layout answers: its ONNX keep every external tensor in
    the one weights file beside them (export.py writes them so)."""
    try:
        import onnx
    except ImportError:
        return ["weights.bin"] if (Path(path).parent / "weights.bin").is_file() else []

    model = onnx.load(str(path), load_external_data=False)
    return sorted({entry.value for tensor in model.graph.initializer
                   if tensor.data_location == onnx.TensorProto.EXTERNAL
                   for entry in tensor.external_data if entry.key == "location"})


def family_relpath(path: Path, out_dir: Path) -> str:
    """`path` relative to an artifact folder `out_dir`, for an engine that reads the family's
    files (BackendError unless it lies inside the folder or the one above)."""
    rel = os.path.relpath(Path(path).resolve(), Path(out_dir).resolve()).replace(os.sep, "/")
    if not safe_artifact_path(rel, shared=True):
        raise BackendError(f"{Path(path).name} lies outside {Path(out_dir).resolve().parent}: an engine that reads "
                           "the family's files must be compiled into a folder beside them (e.g. engines/ next to onnx/)")
    return rel


def family_files(onnx_path: str | Path, out_dir: str | Path) -> list[str]:
    """What an engine reading a point's ONNX of the family reads, relative to its folder
    `out_dir`: the ONNX, then the files holding its external tensors (the family's weights.bin)."""
    onnx_path = Path(onnx_path)
    try:
        locations = external_locations(onnx_path)
    except (OSError, ValueError) as exc:
        raise BackendError(f"{onnx_path.name}: cannot read its tensor table ({exc})") from None
    return [family_relpath(onnx_path, out_dir)] + [family_relpath(onnx_path.parent / f, out_dir) for f in locations]
