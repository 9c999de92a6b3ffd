"""int8 engines that keep no weights of their own: they read the family's int8 twin.

`int8_twin` lays out the family's weights once in int8 (per output channel, the full tensors'
scales) with the other tensors in float32: one byte a weight parameter for every int8 engine
of the family, whatever the number of points and of backends.

ONNX Runtime: a static QDQ model (onnxruntime.quantization.quantize_static) stores each
quantized weight as an int8 initializer ``<w>_quantized`` read by ``DequantizeLinear(q,
scale, zero_point)``: one int8 copy of the point's weights per engine. `share_weights`
rewrites the model so that ``<w>_quantized``, its scales and zero points are the twin's
bytes (external data: the weight's leading rows, its scales, the zero run), and the float
tensors the quantizer left (position tables, latents, norms, biases of MatMul + Add) read the
twin's float32 copies. A Gemm or Conv whose bias the quantizer made int32 (bias scale = input
scale x weight scale) gets it computed in the graph from the twin's float bias and weight
scales, as the quantizer computes it (`_bias_quantizers`; ONNX Runtime folds it at load), so
the engine keeps no bias of its own. The point's calibration (activation scales) is the
quantizer's, unchanged. A tensor the quantizer quantized that the twin keeps in float32 (a
MatMul's constant first input) becomes ``QuantizeLinear`` of the twin's float copy with the
quantizer's own scales, where that gives exactly the quantizer's bytes (ONNX's rounding, half
to even, saturating; ONNX Runtime folds it at session creation). Any other keeps its embedded
copy, and the count of each is recorded.
Names are made compact as in the point's ONNX (`_compact`).

The rewritten model reads the twin in the family's ONNX folder, which is not the engine's
folder: ONNX Runtime refuses external data outside a model's folder, so the session loads the
model from bytes with ``session.model_external_initializers_file_folder_path`` set to that
folder (`session_source`).

OpenVINO (NNCF's FakeQuantize IR): `bind_openvino_weights` binds every weight of the point read
from the family's ONNX to its int8 values in the twin, converted and times the family's scales
(the form an engine runs), and NNCF quantizes that model (SmoothQuant off): it calibrates the
activations for those weights and places no FakeQuantize over them, and its statistics model
holds int8 weights, not float32 ones. `detach_openvino_weights` turns each bound weight, and
every float32 Constant whose bytes are one of the point's external float tensors (compared byte
for byte), into a Parameter. At load `attach_openvino_weights` binds each weight again to its
int8 values in the twin (memory-mapped) converted and times the family's scales, which the CPU
plugin runs as int8 weights, and any other tensor to its float32 bytes in the twin
(memory-mapped, no copy). (Engines compiled before the weights were bound for NNCF keep a
FakeQuantize over each weight, whose ranges the table binds to the scales times the level
count: still read.) The IR keeps the graph, NNCF's activation ranges and the point's
own constants. OpenVINO, like ONNX Runtime, refuses external data outside a model's folder and
reads an IR's constants from one ``.bin``, so the binding is done on the model in memory, with
openvino only. (OpenVINO cannot run ONNX Runtime's QDQ models themselves: its CPU plugin
rejects their per-column scales, "Check 'any_of(scale.size(), OC, 1U)' failed", openvino
2026.4, so each backend keeps its own quantizer and both read the one twin.)

Either backend's target may set ``int8_weights = "embedded"`` (`int8_weights`): an int8 copy
of the weights in each engine, with the point's own scales, and a faster load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .base import BackendError, graph_bytes, safe_artifact_path
from .onnx_tensors import readers

FOLDER_OPTION = "session.model_external_initializers_file_folder_path"
SHARED_PREFIX = "shared:"     # an OpenVINO int8 IR's Parameter that stands for a weight of the family's file


def int8_weights(settings: dict, backend: str) -> str:
    """The target's [backends.<backend>] int8_weights: "shared" (default: the family's int8
    twin, one copy for every int8 engine of the family) or "embedded" (an int8 copy in each
    engine, with the point's own scales: a faster load)."""
    value = settings.get("int8_weights", "shared")
    if value not in ("shared", "embedded"):
        raise BackendError(f"{backend}: int8_weights must be \"shared\" or \"embedded\", got {value!r}")
    return value


def float_weights(source) -> dict[str, Any]:
    """name -> the source ONNX's (a path, or its graph loaded without external data) external
    float32 TensorProto (location, offset, length)."""
    import onnx

    proto = source if isinstance(source, onnx.ModelProto) else onnx.load(str(source), load_external_data=False)
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


def _external(name: str, data_type: int, dims, location: str, offset: int, length: int):
    """A TensorProto reading its data from `location` at (offset, length)."""
    import onnx

    from ..weight_store import point_to

    tensor = onnx.TensorProto(name=name, data_type=data_type, dims=[int(d) for d in dims])
    point_to(tensor, location, offset, length)
    return tensor


def _twin_slot(twin, floats: dict[str, Any], name: str) -> tuple[Any, tuple, int]:
    """(the twin's slot for the source's external float tensor `name`, None where it has none;
    the tensor's dims; its length in bytes)."""
    from .int8_twin import locate

    _, offset, length = external_entry(floats[name])
    dims = tuple(floats[name].dims)
    return locate(twin, offset, length, dims), dims, length


def _family_file(floats: dict[str, Any], source: Path) -> tuple[Path | None, str | None]:
    """(the one family weights file the point at `source` reads its external tensors `floats`
    from, None) or (None, why there is none)."""
    locations = sorted({external_entry(t)[0] for t in floats.values()})
    if len(locations) != 1:
        return None, "the point reads no family weights" if not locations else "the point reads several weights files"
    return Path(source).parent / locations[0], None


def _family_twin(floats: dict[str, Any], source: Path, qmax: int):
    """(the family's int8 twin the point at `source` reads, None) or (None, why there is none)."""
    from .int8_twin import int8_twin

    weights, why = _family_file(floats, source)
    if weights is None:
        return None, why
    twin = int8_twin(weights, qmax)
    return (twin, None) if twin is not None else (None, "the family has no tensor table (exported by an older "
                                                         "adaexport)")


class _QdqModel:
    """A QDQ model's initializers, producers and consumers."""

    def __init__(self, model):
        self.model = model
        self.inits = {t.name: t for t in model.graph.initializer}
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.consumers = readers(model.graph)

    def array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.inits[name])

    def dequantized_from(self, value: str, constant: bool = True):
        """The DequantizeLinear node producing `value` (from initializers only, unless not
        `constant`: an activation's, whose scale alone is one), or None."""
        node = self.producer.get(value)
        if node is None or node.op_type != "DequantizeLinear" or len(node.input) < 2 \
                or any(i not in self.inits for i in (node.input if constant else node.input[1:])):
            return None
        return node


INT32_BOUNDS = ("int32_bias_min", "int32_bias_max")     # float64 initializers: Clip's bounds before the Cast


def _bias_quantizers(qdq: _QdqModel, weight_dq, weight_scale: str, float_bias, zeros) -> tuple[list, dict] | None:
    """The int32 biases of the Gemm/Conv nodes reading the weight `weight_dq` dequantizes,
    computed in the graph from the family's float bias (`float_bias(node)`: the float32 bias of
    the point's node of that name, the twin's copy as an external TensorProto or the point's
    own where its file embeds it; or None) and the family's weight scales (`weight_scale`), as
    onnxruntime.quantization computes them: bias scale = input scale x weight scale (Mul, in
    float32), bias = the float bias / the bias scale in float64, rounded half to even,
    saturated to int32 (Cast, Div, Round, Clip, Cast). ONNX Runtime folds these constant nodes
    when a session loads the engine, before its QDQ fusions, so the engine runs as with
    initializers and keeps no per-point bias (0.5 MB of a full-depth published engine).
    Returns (the nodes, {initializer: what takes its place, None where a node computes it});
    None where a consumer's bias cannot be (then the weight keeps its own scales). A float bias
    (one the quantizer left) needs nothing."""
    from onnx import TensorProto, helper

    nodes: list = []
    replaced: dict[str, Any] = {}
    for node in qdq.consumers.get(weight_dq.output[0], []):
        if node.op_type not in ("Gemm", "Conv") or len(node.input) < 3 or not node.input[2]:
            continue
        if node.input[2] in qdq.inits:
            continue                                       # a float bias
        bias_dq, input_dq = qdq.dequantized_from(node.input[2]), qdq.dequantized_from(node.input[0], False)
        if bias_dq is None or input_dq is None or qdq.inits[bias_dq.input[0]].data_type != TensorProto.INT32:
            return None
        quantized, scale = bias_dq.input[0], bias_dq.input[1]
        source = float_bias(node)
        if source is None or quantized in replaced or list(source.dims) != list(qdq.inits[quantized].dims):
            return None
        bias = TensorProto()           # named apart: the quantizer's DequantizeLinear outputs the bias's name
        bias.CopyFrom(source)
        bias.name = f"{source.name}_float"
        step = [f"{quantized}_{name}" for name in ("bias64", "scale64", "divided", "rounded", "clipped")]
        double = TensorProto.DOUBLE
        nodes += [helper.make_node("Mul", [input_dq.input[1], weight_scale], [scale], name=f"{scale}_Mul"),
                  helper.make_node("Cast", [bias.name], [step[0]], name=step[0], to=double),
                  helper.make_node("Cast", [scale], [step[1]], name=step[1], to=double),
                  helper.make_node("Div", [step[0], step[1]], [step[2]], name=step[2]),
                  helper.make_node("Round", [step[2]], [step[3]], name=step[3]),
                  helper.make_node("Clip", [step[3], *INT32_BOUNDS], [step[4]], name=step[4]),
                  helper.make_node("Cast", [step[4]], [quantized], name=f"{quantized}_Cast", to=TensorProto.INT32)]
        replaced.update({quantized: None, scale: None, bias.name: bias})
        if len(bias_dq.input) > 2 and bias_dq.input[2]:
            replaced[bias_dq.input[2]] = zeros(bias_dq.input[2], TensorProto.INT32, int(np.prod(bias.dims)))
    return nodes, replaced


def _int32_bounds() -> list:
    from onnx import numpy_helper

    info = np.iinfo(np.int32)
    return [numpy_helper.from_array(np.array(bound, np.float64), name)
            for name, bound in zip(INT32_BOUNDS, (info.min, info.max))]


def _compact(model, named: set[str]) -> None:
    """Names as the point's own graph has them (`export_proto.compact_names`): intermediate values
    numbered, no value infos (the quantizer's shape inference left one per tensor, which ONNX
    Runtime infers again), and a name only on the nodes of the point's graph (the quantizer's
    and this rewrite's Q/DQ and bias nodes go unnamed, as ONNX allows). A full-depth published
    engine's graph shrank from 300 kB to 110 kB. `named`: the point's node names."""
    from ..export_proto import compact_names

    compact_names(model)
    for node in model.graph.node:
        if node.name not in named:
            node.name = ""


STAND_IN = "adaexport_stand_in_"    # a zero tensor the quantizer reads in place of a group of weights
WEIGHT_READERS = ("MatMul", "Gemm", "Conv")    # the ops whose input 1, a weight, the quantizer quantizes per channel


class StandInError(BackendError):
    """A stand-in weight the quantizer left in a form `share_weights` cannot bind to the twin."""


def write_stand_ins(source: Path, dst: Path) -> int:
    """Write the point at `source` to `dst` for onnxruntime.quantization with its weights (the
    external float tensors read only as a MatMul, Gemm or Conv weight) replaced by stand-ins:
    one zero tensor per shape and reading (op, transB), which the quantizer quantizes as it
    would the weights, and the point's other tensors embedded. Its QDQ layout, activation
    scales and node names are those of the point's (the ranges come from calibrating the point
    itself), and `share_weights(..., stand_ins=True)` gives each weight its own DequantizeLinear
    over the twin's int8 values and scales, which replace the quantizer's anyway. The quantizer
    then holds kilobytes of weights, not the point's float32 ones and their int8 copy (0.7 GB at
    the published full point). Returns the number of weights stood in for."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_tensor

    model = onnx.load(str(source), load_external_data=False)
    reading = readers(model.graph)
    stand_ins: dict[tuple, Any] = {}
    kept, count = [], 0
    for tensor in model.graph.initializer:
        nodes = reading.get(tensor.name, [])
        keys = {(tuple(tensor.dims), n.op_type, tuple((a.name, a.i) for a in n.attribute if a.name == "transB"))
                for n in nodes}
        if tensor.data_location == onnx.TensorProto.EXTERNAL and tensor.data_type == onnx.TensorProto.FLOAT \
                and nodes and len(keys) == 1 and all(
                    n.op_type in WEIGHT_READERS and i == 1 for n in nodes for i, name in enumerate(n.input)
                    if name == tensor.name):
            key = keys.pop()
            if key not in stand_ins:
                stand_ins[key] = onnx.numpy_helper.from_array(np.zeros(key[0], np.float32),
                                                              f"{STAND_IN}{len(stand_ins)}")
            for node in nodes:
                node.input[:] = [stand_ins[key].name if i == tensor.name else i for i in node.input]
            count += 1
            continue
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            load_external_data_for_tensor(tensor, str(Path(source).parent))
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
        kept.append(tensor)
    del model.graph.initializer[:]
    model.graph.initializer.extend([*kept, *stand_ins.values()])
    onnx.save(model, str(dst))
    return count


def _unshare(model, point) -> set[str]:
    """In the QDQ model quantized from `write_stand_ins`'s model, give every weight read through
    a stand-in's DequantizeLinear its own (the quantizer's names: <weight>_quantized, _scale,
    _zero_point; the weight is the one the point's node of the same name reads there), with
    placeholder initializers `share_weights` replaces by the twin's; drop the stand-ins.
    Returns the placeholders' names (StandInError where anything else reads a stand-in)."""
    import onnx
    from onnx import helper

    weight_of = {n.name: list(n.input) for n in point.graph.node}
    inits = {t.name: t for t in model.graph.initializer}
    reading = readers(model.graph)
    placeholders: dict[str, Any] = {}
    nodes = []
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or not node.input[0].startswith(STAND_IN):
            nodes.append(node)
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        dims = list(inits[node.input[0]].dims)
        for consumer in reading.get(node.output[0], []):
            for index, value in enumerate(consumer.input):
                if value != node.output[0]:
                    continue
                if index >= len(weight_of.get(consumer.name, [])):
                    raise StandInError(f"the quantizer's node {consumer.name!r} is not the point's")
                weight = weight_of[consumer.name][index]
                out = f"{weight}_DequantizeLinear_Output"
                if f"{weight}_quantized" not in placeholders:
                    names = [f"{weight}_{part}" for part in ("quantized", "scale", "zero_point")]
                    nodes.append(helper.make_node("DequantizeLinear", names, [out], axis=axis))
                    for name, data_type, shape in zip(names, (onnx.TensorProto.INT8, onnx.TensorProto.FLOAT,
                                                              onnx.TensorProto.INT8), (dims, [dims[axis]], [dims[axis]])):
                        placeholders[name] = onnx.TensorProto(name=name, data_type=data_type, dims=shape)
                consumer.input[index] = out
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    remaining = [t for t in model.graph.initializer if not t.name.startswith(STAND_IN)]
    del model.graph.initializer[:]
    model.graph.initializer.extend([*remaining, *placeholders.values()])
    stray = sorted({i for n in model.graph.node for i in n.input if i.startswith(STAND_IN)})
    if stray:
        raise StandInError(f"the quantizer left {stray[0]} in a form the twin cannot replace")
    return set(placeholders)


def _refuse_placeholders(names, placeholders: set[str]) -> None:
    """StandInError where one of `names` is a placeholder (`_unshare`): it holds no values, so
    a stand-in weight the twin does not replace cannot stay in the engine."""
    left = sorted(set(names) & placeholders)
    if left:
        raise StandInError(f"the stand-in weight behind {left[0]} cannot read the family's int8 twin")


def share_weights(qdq: Path, source: Path, qmax: int = 127, stand_ins: bool = False) -> dict[str, Any]:
    """Rewrite the QDQ model at `qdq` (weights embedded, quantized from `source`, or from
    `write_stand_ins`'s model of it where `stand_ins`) in place so that it reads the family's
    int8 weights (`int8_twin`: one byte a parameter, the scales of the full tensors) and its
    other float tensors from that file; returns the facts (the file it reads, tensors shared
    and kept). StandInError where a stand-in weight cannot read the twin (quantize the point
    itself then)."""
    import onnx
    from onnx import helper

    from .int8_twin import int8_view, read_array

    point = onnx.load(str(source), load_external_data=False)
    floats = float_weights(point)
    own = {t.name: t for t in point.graph.initializer
           if t.data_location != onnx.TensorProto.EXTERNAL and t.data_type == onnx.TensorProto.FLOAT}
    twin, why = _family_twin(floats, source, qmax)
    if twin is None:
        if stand_ins:
            raise StandInError(f"stand-in weights need the family's int8 twin ({why})")
        return {"weights": f"embedded int8 ({why})", "shared_tensors": 0}
    twin_file = twin.path.name
    quantized = onnx.load(str(qdq))
    placeholders = _unshare(quantized, point) if stand_ins else set()
    qdq_model = _QdqModel(quantized)
    inits = qdq_model.inits
    replace: dict[str, Any] = {}     # initializer -> the one that takes its place

    def zeros(name: str, data_type: int, count: int):
        size = 4 * count if data_type == 6 else count
        return _external(name, data_type, [count], twin_file, twin.zeros_at, size)

    def twin_float(name: str, slot, length: int):
        """The source's tensor `name` read from its float32 copy in the twin (external data)."""
        return _external(name, onnx.TensorProto.FLOAT, floats[name].dims, twin_file, slot.at, length)

    bias_of = {n.name: n.input[2] for n in point.graph.node if n.op_type in ("Gemm", "Conv") and len(n.input) > 2}

    def float_bias(node):
        """The float32 bias of the point's node named as `node` (the quantizer keeps node names,
        not a bias's: it renames one that several nodes share): the twin's copy (external), the
        point's own where its file embeds it (a tensor under 1 KiB), or None."""
        name = bias_of.get(node.name) if node.name else None
        if name in own:
            return own[name]
        if name not in floats:
            return None
        slot, _, length = _twin_slot(twin, floats, name)
        return None if slot is None or slot.axis is not None else twin_float(name, slot, length)

    quantize_nodes, bias_nodes, dropped, kept = [], [], set(), 0
    for node in qdq_model.model.graph.node:
        if node.op_type != "DequantizeLinear" or not node.input[0].endswith("_quantized"):
            continue
        name = node.input[0][:-len("_quantized")]
        if name not in floats or node.input[0] not in inits or node.input[0] in replace or node.input[0] in dropped:
            continue
        if inits[node.input[0]].data_type == onnx.TensorProto.INT32:
            continue            # a bias, quantized in the graph with its weight (`_bias_quantizers`)
        slot, dims, length = _twin_slot(twin, floats, name)
        if len(node.input) < 3 or slot is None or any(i not in inits for i in node.input) \
                or inits[node.input[0]].data_type != onnx.TensorProto.INT8 \
                or inits[node.input[2]].data_type != onnx.TensorProto.INT8:
            kept += 1
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if slot.axis is not None:
            # a weight: the family's int8 values and scales; biases quantized for them in the graph
            (q_at, q_len), (s_at, s_len) = int8_view(twin, slot, dims)
            channels = s_len // 4
            biases = _bias_quantizers(qdq_model, node, node.input[1], float_bias, zeros)
            if axis != slot.axis or list(inits[node.input[1]].dims) != [channels] or biases is None:
                kept += 1
                continue
            replace[node.input[0]] = _external(node.input[0], onnx.TensorProto.INT8, dims, twin_file, q_at, q_len)
            replace[node.input[1]] = _external(node.input[1], onnx.TensorProto.FLOAT, [channels], twin_file, s_at,
                                               s_len)
            replace[node.input[2]] = zeros(node.input[2], onnx.TensorProto.INT8, channels)
            bias_nodes += biases[0]
            for name, tensor in biases[1].items():
                if tensor is None:
                    dropped.add(name)
                elif name not in replace:
                    replace[name] = tensor
            continue
        # a tensor the family keeps in float32 that this quantizer quantized: QuantizeLinear of
        # the twin's float copy at load, where that gives exactly the quantizer's bytes
        if node.input[0] in placeholders:
            kept += 1
        weights = read_array(twin.path, slot.at, "<f4", dims)
        stored, scale, zero_point = (qdq_model.array(i) for i in node.input[:3])
        if name in inits or stored.dtype != np.int8 or stored.shape != dims \
                or not np.array_equal(_requantized(weights, scale, zero_point, axis), stored):
            kept += 1
            continue
        dropped.add(node.input[0])
        replace[name] = twin_float(name, slot, length)
        quantize_nodes.append(helper.make_node("QuantizeLinear", [name, node.input[1], node.input[2]],
                                               [node.input[0]], name=f"{name}_QuantizeLinear", axis=axis))
    _refuse_placeholders(placeholders - set(replace), placeholders)     # a stand-in the twin did not replace
    # the float tensors the quantizer left as they were (embedded in its output): read from the twin
    for name, tensor in inits.items():
        if name in replace or name not in floats or tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        slot, dims, length = _twin_slot(twin, floats, name)
        if slot is None or slot.axis is not None or not np.array_equal(
                qdq_model.array(name), read_array(twin.path, slot.at, "<f4", dims)):
            continue
        replace[name] = twin_float(name, slot, length)
    # the point's tensors now read from the twin (a weight: its int8 values; or a float tensor)
    shared = sum(1 for name in floats if any(n in replace for n in (name, name + "_quantized", name + "_float")))
    model = qdq_model.model
    added = [replace[n] for n in replace if n not in inits] + (_int32_bounds() if bias_nodes else [])
    remaining = [replace.get(t.name, t) for t in model.graph.initializer if t.name not in dropped] + added
    del model.graph.initializer[:]
    model.graph.initializer.extend(remaining)
    # nodes of constants only first: topological
    nodes = quantize_nodes + bias_nodes + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    _compact(model, {n.name for n in point.graph.node})
    tmp = Path(str(qdq) + ".shared")
    tmp.write_bytes(model.SerializeToString(deterministic=True))
    os.replace(tmp, qdq)
    bits = "7-bit" if twin.qmax < 127 else "8-bit"
    return {"weights": f"the family's int8 weights, {twin_file} ({bits}, symmetric per output channel, scales "
                       "of the full model's tensors; biases quantized for them in the graph)",
            "shared_tensors": shared, "embedded_tensors": kept, "reads": [twin_file]}


def session_source(path: Path, runtime: dict[str, Any], options) -> str | bytes:
    """What to hand ort.InferenceSession: the path, or, for an engine reading the family's
    weights from another folder (runtime "external_data_dir", relative to the engine's
    folder), the model's bytes with that folder set on `options` (decompressed: `compress_graph`)."""
    folder = runtime.get("external_data_dir")
    if not folder:
        return os.fspath(path)
    options.add_session_config_entry(FOLDER_OPTION, os.fspath((Path(path).parent / folder).resolve()))
    return graph_bytes(path)


def _mapped(maps: dict, folder: Path, location: str, offset: int, length: int, dims, mode: str = "r",
            dtype: str = "<f4") -> np.ndarray:
    """`dtype` (float32 unless said) tensor `dims` at `offset` of `folder`/`location`, a view of
    its memory map (one per file, kept in `maps`; mode "c": copy-on-write, so OpenVINO may
    share it)."""
    if location not in maps:
        maps[location] = np.memmap(Path(folder) / location, dtype=np.uint8, mode=mode)
    view = maps[location][offset:offset + length]
    kind = np.dtype(dtype)
    if view.size != length or length != kind.itemsize * int(np.prod(dims, dtype=np.int64)):
        raise BackendError(f"{location}: {length} bytes at {offset} are not a {kind.name} tensor of shape "
                           f"{list(dims)}")
    return view.view(kind).reshape(dims)


def _fake_quantize_consumers(node) -> list | None:
    """The FakeQuantize nodes reading `node`'s output as their data input, or None where
    anything else reads it too."""
    readers = [target.get_node() for target in node.output(0).get_target_inputs()]
    if any(r.get_type_name() != "FakeQuantize" for r in readers):
        return None
    return readers


def _bind_absmax_ranges(fq, data: np.ndarray, name: str, place: list, parameter) -> None:
    """A FakeQuantize of 255 levels over a float tensor the family keeps in float32 (the read-in
    queries: NNCF quantizes them as a MatMul's constant input): where its ranges are exactly
    -/+ the tensor's largest magnitude over the axes they are 1 along (as NNCF sets them,
    per row), make them Parameters bound at load to that, computed from the twin's copy at
    `place` (`_bound_node`), so the IR keeps no per-row ranges (26 kB at 256 tokens)."""
    if int(fq.get_levels()) != 255:
        return
    ranges = [fq.input_value(i).get_node() for i in range(1, 5)]
    if any(r.get_type_name() != "Constant" for r in ranges):
        return
    values = [r.get_data() for r in ranges]
    shape = values[0].shape
    if len(shape) != data.ndim or any(v.shape != shape for v in values):
        return
    axes = [i for i, d in enumerate(shape) if d == 1]
    absmax = np.abs(data).max(axis=tuple(axes), keepdims=True).astype(np.float32)
    if absmax.shape != shape or not all(np.array_equal(v, sign * absmax) for v, sign in zip(values, (-1, 1, -1, 1))):
        return
    low, high = (parameter(f"{SHARED_PREFIX}{name}:absmax{sign:+d}", shape,
                           {"absmax": place, "dims": list(data.shape), "axes": axes, "times": sign})
                 for sign in (-1, 1))
    for index, port in ((1, low), (2, high), (3, low), (4, high)):
        fq.input(index).replace_source_output(port.output(0))


def _family_constants(model, source: Path, floats: dict[str, Any], half: Path | None = None):
    """(node, tensor name) for every float32 Constant of the ov.Model `model` whose bytes are one
    of `source`'s external float tensors `floats` (compared byte for byte; a point's own
    constant, or one a quantizer changed, is not); given `half`, the family's float16 twin
    (`half_weights`: each tensor at half its offset), every float16 Constant whose bytes are
    such a tensor's there."""
    import hashlib

    import openvino as ov

    def squeezed(dims) -> tuple:      # OpenVINO gives a Gemm's bias [n] as [1, n]
        return tuple(int(d) for d in dims if d != 1)

    by_shape: dict[tuple, list[str]] = {}
    for name, tensor in floats.items():
        by_shape.setdefault(squeezed(tensor.dims), []).append(name)
    maps: dict[str, np.memmap] = {}
    digests: dict[str, str] = {}

    def family_tensor(name: str) -> np.ndarray:
        location, offset, length = external_entry(floats[name])
        if half is not None:
            return _mapped(maps, half.parent, half.name, offset // 2, length // 2, tuple(floats[name].dims),
                           dtype="<f2")
        return _mapped(maps, Path(source).parent, location, offset, length, tuple(floats[name].dims))

    def digest(array: np.ndarray) -> str:
        return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()

    element = ov.Type.f32 if half is None else ov.Type.f16
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Constant" or node.get_element_type() != element:
            continue
        shape = squeezed(node.get_output_shape(0))
        if shape not in by_shape:
            continue
        data = node.get_data()
        wanted = digest(data)
        for name in by_shape[shape]:
            if name not in digests:
                digests[name] = digest(family_tensor(name))
            if digests[name] == wanted and np.array_equal(family_tensor(name).reshape(data.shape), data):
                yield node, name
                break
    maps.clear()


def _int8_entry(twin, slot, shape) -> dict[str, Any]:
    """A table entry for a weight of `shape` at the twin's `slot`: its int8 values and scales."""
    from .int8_twin import int8_view

    (q_at, count), (s_at, s_len) = int8_view(twin, slot, shape)
    return {"int8": [q_at, count], "scales": [s_at, s_len], "axis": slot.axis}


def bind_openvino_weights(model, source: Path) -> list[np.memmap]:
    """Compile side, before NNCF: bind every weight of the ov.Model `model` (read from `source`)
    to the family's int8 values as an engine binds them at load (`_bound_node`: the int8
    Constant, converted, times the family's scales), the Multiply named "shared:<tensor>".
    NNCF then calibrates the activations of the model that runs, leaves the weights in that
    int8 form (no FakeQuantize over them), and its statistics model holds int8 weights, not
    float32 ones (the full published point's compile peaked at 640 MiB of anonymous memory,
    against 1,157 with float32 weights). `detach_openvino_weights` turns these back into
    Parameters. Returns the memory maps the bound Constants read: keep them until saved."""
    floats = float_weights(source)
    twin, _ = _family_twin(floats, source, 127)
    if twin is None:
        return []
    maps: dict[str, np.memmap] = {}
    for node, name in list(_family_constants(model, source, floats)):
        slot, dims, _ = _twin_slot(twin, floats, name)
        if slot is None or slot.axis is None or tuple(node.get_output_shape(0)) != dims:
            continue          # a tensor the family keeps in float32: detached after quantization
        bound = _bound_node(maps, twin.path.parent, twin.path.name, _int8_entry(twin, slot, dims), dims)
        bound.set_friendly_name(SHARED_PREFIX + name)
        for target in node.output(0).get_target_inputs():
            target.replace_source_output(bound.output(0))
    model.validate_nodes_and_infer_types()
    return list(maps.values())


def detach_openvino_weights(model, source: Path, out_dir: Path) -> tuple[dict[str, dict], dict[str, Any]]:
    """Compile side: in the ov.Model `model` (quantized from `source` with its weights bound to
    the twin by `bind_openvino_weights`, or kept as they are), replace every weight bound to
    the twin, and every float32 Constant whose bytes are one of `source`'s external float
    tensors, with a Parameter "shared:<tensor>" that `attach_openvino_weights` binds at load to
    the family's int8 weights (`int8_twin`): a weight dequantized from its int8 values and the
    family's scales (which OpenVINO's CPU plugin runs as int8 weights), any other tensor to its
    float32 copy there. Returns (the table `attach_openvino_weights` reads: {weights file relative to
    `out_dir`: {parameter: entry}}, facts: the tensors shared, and those of the point's file
    tensors the IR holds itself, changed or folded by the quantizer)."""
    import openvino as ov
    from openvino import opset13 as ops

    from .onnx_tensors import family_relpath

    floats = float_weights(source)
    twin, why = _family_twin(floats, source, 127)
    if twin is None:
        return {}, {"weights": f"embedded float32 under the quantizer's FakeQuantize ({why})", "shared_tensors": 0,
                    "embedded_tensors": len(floats)}
    entries: dict[str, Any] = {}
    params: dict[str, Any] = {}

    def parameter(name: str, shape, entry) -> Any:
        if name not in params:
            params[name] = ops.parameter(list(shape), ov.Type.f32, name=name)
            entries[name] = entry
        return params[name]

    bound = [(node, node.get_friendly_name()[len(SHARED_PREFIX):]) for node in model.get_ordered_ops()
             if node.get_type_name() == "Multiply" and node.get_friendly_name().startswith(SHARED_PREFIX)]
    for node, name in [*bound, *_family_constants(model, source, floats)]:
        if name not in floats:
            continue
        slot, _, length = _twin_slot(twin, floats, name)
        if slot is None:
            continue
        shape = tuple(node.get_output_shape(0))
        if slot.axis is None:
            source_param = parameter(SHARED_PREFIX + name, shape, [slot.at, length])
            for fq in _fake_quantize_consumers(node) or []:
                _bind_absmax_ranges(fq, node.get_data(), name, [slot.at, length], parameter)
        elif node.get_type_name() == "Multiply":      # bound to the twin before quantization
            source_param = parameter(SHARED_PREFIX + name, shape, _int8_entry(twin, slot, shape))
        else:
            continue      # a float32 weight under the quantizer's own FakeQuantize: stays in the IR
        for target in node.output(0).get_target_inputs():
            target.replace_source_output(source_param.output(0))
    shared = [n for n, entry in entries.items() if "times" not in entry]     # not the ranges
    kept = len(floats) - len(shared)     # the point's tensors in the file that the IR does not read from it
    if not params:
        return {}, {"weights": "embedded (no weight matched the family's float weights)", "shared_tensors": 0,
                    "embedded_tensors": kept}
    model.add_parameters(list(params.values()))
    model.validate_nodes_and_infer_types()
    rel = family_relpath(twin.path, out_dir)
    return {rel: entries}, {"weights": f"the family's int8 weights, {twin.path.name} (8-bit, symmetric per output "
                                       "channel, scales of the full model's tensors; bound to them before "
                                       "quantization: the activations calibrated with them, no FakeQuantize "
                                       "over them)",
                            "shared_tensors": len(shared), "embedded_tensors": kept}


def detach_half_weights(model, source: Path, out_dir: Path) -> tuple[dict[str, dict], dict[str, Any]]:
    """Compile side of OpenVINO's fp16/bf16 IR: in the ov.Model `model` (read from `source` and
    compressed to float16 by OpenVINO, each weight a float16 Constant and a Convert marked as
    its decompression), replace every float16 Constant whose bytes are the family's float16
    twin's copy of one of `source`'s tensors (`half_weights`) with a float16 Parameter
    "shared:<tensor>" that `attach_openvino_weights` binds at load to those bytes
    (memory-mapped). The decompression mark stays on the Convert in the IR, so the CPU plugin
    keeps such weights in float16 and converts them as it runs (in bf16 it otherwise folds
    every one to float32 first: the published full point compiled with 1.1 GB of anonymous
    memory, 0.37 GB this way). Returns (the table, facts) as `detach_openvino_weights`."""
    import openvino as ov
    from openvino import opset13 as ops

    from .half_weights import half_weights
    from .onnx_tensors import family_relpath

    floats = float_weights(source)
    weights, why = _family_file(floats, source)
    if weights is None:
        return {}, {"weights": f"embedded float16 ({why})", "shared_tensors": 0, "embedded_tensors": len(floats)}
    half = half_weights(weights)
    entries: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for node, name in list(_family_constants(model, source, floats, half)):
        shape = tuple(node.get_output_shape(0))
        if SHARED_PREFIX + name not in params:
            _, offset, length = external_entry(floats[name])
            params[SHARED_PREFIX + name] = ops.parameter(list(shape), ov.Type.f16, name=SHARED_PREFIX + name)
            entries[SHARED_PREFIX + name] = {"float16": [offset // 2, length // 2]}
        for target in node.output(0).get_target_inputs():
            target.replace_source_output(params[SHARED_PREFIX + name].output(0))
    if not params:
        return {}, {"weights": "embedded float16 (no weight matched the family's float16 twin)",
                    "shared_tensors": 0, "embedded_tensors": len(floats)}
    model.add_parameters(list(params.values()))
    model.validate_nodes_and_infer_types()
    return {family_relpath(half, out_dir): entries}, {
        "weights": f"the family's weights in float16, {half.name}, bound at load (memory-mapped) and kept in "
                   "float16 by the plugin (decompressed as it runs)",
        "shared_tensors": len(params), "embedded_tensors": len(floats) - len(params)}


def _scales(root: Path, file: str, entry: dict, ndim: int) -> np.ndarray:
    """A twin entry's float32 scales, shaped to broadcast along its axis over `ndim` dimensions."""
    from .int8_twin import read_array

    s_at, s_len = (int(v) for v in entry["scales"])
    shape = [1] * ndim
    shape[int(entry["axis"])] = -1
    return read_array(Path(root) / file, s_at, "<f4", [s_len // 4]).reshape(shape)


def _bound_node(maps: dict, root: Path, file: str, entry, shape):
    """What a Parameter of `shape` stands for, as an OpenVINO node: a float32 or float16 tensor of
    the file (a Constant over its map), a weight (its int8 values, a Constant over the map, converted
    and times its scales: the CPU plugin runs that as int8 weights, or folds it into a
    FakeQuantize over it), or a FakeQuantize range (the scales times a step count: engines of
    OpenVINO recipe 7; or -/+ a float tensor's largest magnitude along some axes)."""
    from openvino import Type
    from openvino import opset13 as ops

    shape = tuple(int(d) for d in shape)
    if isinstance(entry, list):
        offset, length = (int(v) for v in entry)
        return ops.constant(_mapped(maps, root, file, offset, length, shape, mode="c"), shared_memory=True)
    if "float16" in entry:       # a float16 tensor of the family's twin (detach_half_weights)
        offset, length = (int(v) for v in entry["float16"])
        return ops.constant(_mapped(maps, root, file, offset, length, shape, mode="c", dtype="<f2"),
                            shared_memory=True)
    if "absmax" in entry:        # a FakeQuantize range: -/+ a float tensor's largest magnitude (_bind_absmax_ranges)
        offset, length = (int(v) for v in entry["absmax"])
        data = _mapped(maps, root, file, offset, length, [int(d) for d in entry["dims"]], mode="c")
        absmax = np.abs(data).max(axis=tuple(int(a) for a in entry["axes"]), keepdims=True)
        if absmax.shape != shape:
            raise BackendError(f"{file}: a tensor of shape {list(data.shape)} does not reduce to a range of shape "
                               f"{list(shape)}")
        return ops.constant((np.float32(entry["times"]) * absmax).astype(np.float32))
    scales = _scales(root, file, entry, len(shape))
    if scales.size != shape[int(entry["axis"])]:
        raise BackendError(f"{file}: {scales.size} scales for a tensor of shape {list(shape)}")
    if "times" in entry:
        return ops.constant((np.float32(entry["times"]) * scales).astype(np.float32))
    q_at, count = (int(v) for v in entry["int8"])
    values = _mapped(maps, root, file, q_at, count, shape, mode="c", dtype="i1")
    weights = ops.convert(ops.constant(values, shared_memory=True), Type.f32)
    return ops.multiply(weights, ops.constant(scales))


def attach_openvino_weights(model, table: dict[str, dict], root: Path) -> list[np.memmap]:
    """Runtime side: bind every Parameter of the ov.Model `model` named in `table` ({weights
    file relative to `root`: {parameter: entry}}, from `detach_openvino_weights`) to what it
    stands for in that file (`_bound_node`): memory-mapped copy-on-write, no read until
    compiled, no copy. Returns the maps: keep them while the model or its compiled form may
    read them."""
    params = {p.get_friendly_name(): p for p in model.get_parameters()}
    maps: dict[str, np.memmap] = {}
    for file, tensors in table.items():
        if not safe_artifact_path(file, shared=True):
            raise BackendError(f"unsafe shared weights path {file!r}")
        for name, entry in tensors.items():
            param = params.pop(name, None)
            if param is None:
                raise BackendError(f"the engine has no input {name!r} for the family's weights")
            node = _bound_node(maps, Path(root), file, entry, param.get_output_shape(0))
            for target in param.output(0).get_target_inputs():
                target.replace_source_output(node.output(0))
            model.remove_parameter(param)
    model.validate_nodes_and_infer_types()
    return list(maps.values())
