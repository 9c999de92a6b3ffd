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

OpenVINO int8 engines (NNCF's FakeQuantize IR) share the same way: NNCF quantizes the point
read from the family's ONNX with its weights left as they are (SmoothQuant off, weight
compression off), and `detach_openvino_weights` turns every float32 Constant whose bytes
are one of the point's external float tensors (compared byte for byte) into a Parameter, so
the saved IR keeps the graph, the FakeQuantize ranges and the point's own constants. At
load `attach_openvino_weights` binds each such Parameter to its bytes in ``weights.bin``
(memory-mapped, no copy); OpenVINO's CPU plugin folds FakeQuantize of a constant into int8
weights when it compiles, as it does for the model NNCF returns. OpenVINO, like ONNX
Runtime, refuses external data outside a model's folder and reads an IR's constants from
one ``.bin``, so the binding is done on the model in memory, with openvino only.

Either backend's target may set ``int8_weights = "embedded"`` (`int8_weights`): an int8 copy
of the weights in each engine, a faster load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .base import BackendError, safe_artifact_path

FOLDER_OPTION = "session.model_external_initializers_file_folder_path"
SHARED_PREFIX = "shared:"     # an OpenVINO int8 IR's Parameter that stands for a weight of the family's file


def int8_weights(settings: dict, backend: str) -> str:
    """The target's [backends.<backend>] int8_weights: "shared" (default: quantized at load
    from the family's weights.bin, no copy on disk, a slower load) or "embedded" (an int8
    copy in each engine)."""
    value = settings.get("int8_weights", "shared")
    if value not in ("shared", "embedded"):
        raise BackendError(f"{backend}: int8_weights must be \"shared\" or \"embedded\", got {value!r}")
    return value


def float_weights(source: Path) -> dict[str, Any]:
    """name -> the source ONNX's external float32 TensorProto (location, offset, length)."""
    import onnx

    proto = onnx.load(str(source), load_external_data=False)
    return {t.name: t for t in proto.graph.initializer
            if t.data_location == onnx.TensorProto.EXTERNAL and t.data_type == onnx.TensorProto.FLOAT}


def external_entry(tensor) -> tuple[str, int, int]:
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

    floats = float_weights(source)
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
        dims = tuple(floats[name].dims)
        weights = _mapped(views, folder, *external_entry(floats[name]), dims)
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
    files = sorted({external_entry(floats[n[:-len("_quantized")]])[0] for n in dropped})
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


def _mapped(maps: dict, folder: Path, location: str, offset: int, length: int, dims, mode: str = "r") -> np.ndarray:
    """float32 tensor `dims` at `offset` of `folder`/`location`, a view of its memory map
    (one per file, kept in `maps`; mode "c": copy-on-write, so OpenVINO may share it)."""
    if location not in maps:
        maps[location] = np.memmap(Path(folder) / location, dtype=np.uint8, mode=mode)
    view = maps[location][offset:offset + length]
    if view.size != length or length != 4 * int(np.prod(dims, dtype=np.int64)):
        raise BackendError(f"{location}: {length} bytes at {offset} are not a float32 tensor of shape {list(dims)}")
    return view.view("<f4").reshape(dims)


def detach_openvino_weights(model, source: Path, out_dir: Path) -> tuple[dict[str, dict], dict[str, Any]]:
    """Compile side: in the ov.Model `model` (quantized from `source` with its weights kept as
    they are), replace every float32 Constant whose bytes are one of `source`'s external float
    tensors with a Parameter "shared:<tensor>". Returns (the table `attach_openvino_weights`
    reads: {weights file relative to `out_dir`: {parameter: [offset, length]}}, facts: the
    tensors shared, and those of the point's file tensors the IR holds itself, changed or
    folded by the quantizer)."""
    import hashlib

    import openvino as ov
    from openvino import opset13 as ops

    from .onnx_tensors import family_relpath

    floats = float_weights(source)
    by_shape: dict[tuple, list[str]] = {}
    for name, tensor in floats.items():
        by_shape.setdefault(tuple(tensor.dims), []).append(name)
    maps: dict[str, np.memmap] = {}
    digests: dict[str, str] = {}

    def family_tensor(name: str) -> np.ndarray:
        location, offset, length = external_entry(floats[name])
        return _mapped(maps, Path(source).parent, location, offset, length, tuple(floats[name].dims))

    def digest(array: np.ndarray) -> str:
        return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()

    params: dict[str, Any] = {}
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Constant" or node.get_element_type() != ov.Type.f32:
            continue
        shape = tuple(node.get_output_shape(0))
        if shape not in by_shape:
            continue
        data = node.get_data()
        wanted = digest(data)
        for name in by_shape[shape]:
            if name not in digests:
                digests[name] = digest(family_tensor(name))
            if digests[name] == wanted and np.array_equal(family_tensor(name), data):
                break
        else:
            continue       # the point's own constant, or a tensor the quantizer changed: stays in the IR
        if name not in params:
            params[name] = ops.parameter(list(shape), ov.Type.f32, name=SHARED_PREFIX + name)
        for target in node.output(0).get_target_inputs():
            target.replace_source_output(params[name].output(0))
    maps.clear()
    kept = len(floats) - len(params)     # the point's tensors in the file that the IR does not read from it
    if not params:
        return {}, {"weights": "embedded (no weight matched the family's float weights)", "shared_tensors": 0,
                    "embedded_tensors": kept}
    model.add_parameters(list(params.values()))
    model.validate_nodes_and_infer_types()
    table: dict[str, dict] = {}
    for name in params:
        location, offset, length = external_entry(floats[name])
        rel = family_relpath(Path(source).parent / location, out_dir)
        table.setdefault(rel, {})[SHARED_PREFIX + name] = [offset, length]
    files = sorted({external_entry(floats[n])[0] for n in params})
    return table, {"weights": f"quantized at load from the family's {', '.join(files)} (FakeQuantize of the float "
                              "weights with NNCF's ranges)",
                   "shared_tensors": len(params), "embedded_tensors": kept}


def attach_openvino_weights(model, table: dict[str, dict], root: Path) -> list[np.memmap]:
    """Runtime side: bind every Parameter of the ov.Model `model` named in `table` ({weights
    file relative to `root`: {parameter: [offset, length]}}, from `detach_openvino_weights`)
    to its bytes in that file, memory-mapped copy-on-write (no read until compiled, no copy).
    Returns the maps: keep them while the model or its compiled form may read them."""
    from openvino import opset13 as ops

    params = {p.get_friendly_name(): p for p in model.get_parameters()}
    maps: dict[str, np.memmap] = {}
    for file, tensors in table.items():
        if not safe_artifact_path(file, shared=True):
            raise BackendError(f"unsafe shared weights path {file!r}")
        for name, (offset, length) in tensors.items():
            param = params.pop(name, None)
            if param is None:
                raise BackendError(f"the engine has no input {name!r} for the family's weights")
            array = _mapped(maps, Path(root), file, int(offset), int(length), tuple(param.get_output_shape(0)),
                            mode="c")
            constant = ops.constant(array, shared_memory=True)
            for target in param.output(0).get_target_inputs():
                target.replace_source_output(constant.output(0))
            model.remove_parameter(param)
    model.validate_nodes_and_infer_types()
    return list(maps.values())
