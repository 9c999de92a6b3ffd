"""int8 QDQ engines that keep no weights of their own: quantized at load from the family's weights.

A static QDQ model (onnxruntime.quantization.quantize_static) stores each quantized weight
as an int8 initializer ``<w>_quantized`` read by ``DequantizeLinear(q, scale, zero_point)``:
one int8 copy of the point's weights per engine (16 MB for a 2-block point of the
published model, ~145 MB for its full point). `share_weights` rewrites the model so
that each such weight is ``QuantizeLinear(w, scale, zero_point)`` of the float tensor
``w`` that the point's ONNX already reads from the family's ``weights.bin``: the engine
file keeps the graph, the scales and zero points (per output channel, computed by the
quantizer from the point's own weights, so accuracy is the quantizer's) and the small
tensors; ONNX Runtime folds the QuantizeLinear of a constant at session creation, so
the int8 kernels (and outputs) are those of the embedded model.

A tensor is rewritten only where it is int8 (biases are int32: opset 17 has no
QuantizeLinear to int32) and QuantizeLinear of the float weights gives exactly the
quantizer's int8 bytes (checked here with ONNX's rounding, half to even, saturating);
any other keeps its embedded copy, and the count of each is recorded.

The rewritten model reads ``weights.bin`` in the family's ONNX folder, which is not the
engine's folder: ONNX Runtime refuses external data outside a model's folder, so the
session loads the model from bytes with ``session.model_external_initializers_file_folder_path``
set to that folder (`session_source`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

FOLDER_OPTION = "session.model_external_initializers_file_folder_path"


def _float_weights(source: Path) -> dict[str, Any]:
    """name -> the source ONNX's external float32 TensorProto (location, offset, length)."""
    import onnx

    proto = onnx.load(str(source), load_external_data=False)
    return {t.name: t for t in proto.graph.initializer
            if t.data_location == onnx.TensorProto.EXTERNAL and t.data_type == onnx.TensorProto.FLOAT}


def _external(tensor) -> tuple[str, int, int]:
    entries = {e.key: e.value for e in tensor.external_data}
    return entries["location"], int(entries.get("offset", 0)), int(entries["length"])


def _requantized(weights: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    """QuantizeLinear as ONNX defines it: round half to even, saturate to the zero point's type."""
    shape = [1] * weights.ndim
    if scale.ndim:
        shape[axis] = -1
    info = np.iinfo(zero_point.dtype)
    q = np.rint(weights / scale.reshape(shape).astype(np.float32)) + zero_point.reshape(shape).astype(np.int32)
    return np.clip(q, info.min, info.max).astype(zero_point.dtype)


def share_weights(qdq: Path, source: Path) -> dict[str, Any]:
    """Rewrite the QDQ model at `qdq` (weights embedded, quantized from `source`) in place so
    that its quantized weights are QuantizeLinear of `source`'s external float weights; returns
    the facts (the file it reads, tensors shared and kept)."""
    import onnx
    from onnx import helper, numpy_helper

    floats = _float_weights(source)
    model = onnx.load(str(qdq))
    initializers = {t.name: t for t in model.graph.initializer}
    folder = Path(source).parent
    views: dict[str, np.memmap] = {}
    quantize_nodes, dropped, kept = [], set(), 0
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or not node.input[0].endswith("_quantized"):
            continue
        name = node.input[0][:-len("_quantized")]
        if name not in floats or node.input[0] not in initializers or node.input[0] in dropped:
            continue
        if len(node.input) < 3 or node.input[1] not in initializers or node.input[2] not in initializers:
            kept += 1
            continue
        location, offset, length = _external(floats[name])
        if location not in views:
            views[location] = np.memmap(folder / location, dtype=np.uint8, mode="r")
        dims = tuple(floats[name].dims)
        weights = np.frombuffer(views[location][offset:offset + length], dtype="<f4").reshape(dims)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        stored = numpy_helper.to_array(initializers[node.input[0]])
        scale = numpy_helper.to_array(initializers[node.input[1]])
        zero_point = numpy_helper.to_array(initializers[node.input[2]])
        if stored.dtype != np.int8 or zero_point.dtype != np.int8 or name in initializers or stored.shape != dims \
                or not np.array_equal(_requantized(weights, scale, zero_point, axis), stored):
            # int32 biases (no QuantizeLinear to int32 at opset 17), a float copy still in the
            # model, or bytes the quantizer made otherwise: the embedded copy stays
            kept += 1
            continue
        dropped.add(node.input[0])
        quantize_nodes.append(helper.make_node("QuantizeLinear", [name, node.input[1], node.input[2]],
                                               [node.input[0]], name=f"{name}_QuantizeLinear", axis=axis))
    views.clear()
    if not dropped:
        return {"weights": "embedded int8 (no weight matched the family's float weights)", "shared_tensors": 0,
                "embedded_tensors": kept}
    remaining = [t for t in model.graph.initializer if t.name not in dropped]
    remaining += [floats[n[:-len("_quantized")]] for n in sorted(dropped)]
    del model.graph.initializer[:]
    model.graph.initializer.extend(remaining)
    nodes = quantize_nodes + list(model.graph.node)     # a QuantizeLinear of a constant: first is topological
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    tmp = Path(str(qdq) + ".shared")
    tmp.write_bytes(model.SerializeToString(deterministic=True))
    os.replace(tmp, qdq)
    files = sorted({_external(floats[n[:-len("_quantized")]])[0] for n in dropped})
    return {"weights": f"quantized at load from the family's {', '.join(files)} (QuantizeLinear of the float "
                       "weights with the quantizer's per-channel scales)",
            "shared_tensors": len(dropped), "embedded_tensors": kept, "reads": files}


def session_source(path: Path, runtime: dict[str, Any], options) -> str | bytes:
    """What to hand ort.InferenceSession: the path, or, for an engine reading the family's
    weights from another folder (runtime "external_data_dir", relative to the engine's
    folder), the model's bytes with that folder set on `options`."""
    folder = runtime.get("external_data_dir")
    if not folder:
        return os.fspath(path)
    options.add_session_config_entry(FOLDER_OPTION, os.fspath((Path(path).parent / folder).resolve()))
    return Path(path).read_bytes()
