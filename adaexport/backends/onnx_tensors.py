"""The external-data table of a family ONNX, written into the manifest at build time.

The family's fp32 engines keep their large weights in the shared ``weights.bin``; each
initializer names its bytes there (``external_data``: location, offset, length). To hand
ONNX Runtime those tensors once for every session (``SessionOptions.add_initializer``) the
runtime needs that table; the build writes it into the engine's manifest entry
(``shared_tensors``, ``manifest_records.SharedTensor``), so the runtime never parses an
ONNX file. Toolchain only (imports onnx).
"""

from __future__ import annotations

from pathlib import Path

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
