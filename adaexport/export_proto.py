"""One point's graph, in memory: exported from a static module, folded, checked static and
labelled (see adaexport.export for the family's files, adaexport.export_depths for the
points cut from one export).

The graphs are static: fixed input (batch, C, H, W) named `image`, outputs in the
module's `output_names` order, opset 17 (read by ONNX Runtime 1.17+, OpenVINO and
TensorRT 8.6+), and no shape-dependent, control-flow, Resize or complex-number ops
(`FORBIDDEN_OPS`, checked on every export).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import warnings
from typing import Iterable

import onnx
import torch

from .model.static import StaticAdaPerceiver
from .space import ConfigPoint
from .weight_store import ExportError, WeightStore

OPSET = 17
EXPORTERS = ("auto", "torchscript", "dynamo")
METADATA_PREFIX = "adaexport."

# Ops a static export must not contain: shape-dependent computation, control flow,
# resampling and complex-number / spectral ops.
FORBIDDEN_OPS = frozenset({
    "Shape", "Size", "If", "Loop", "Scan", "Resize", "Upsample", "NonZero",
    "DFT", "STFT", "ComplexMul", "ComplexMulConj",
})
_COMPLEX_TYPES = frozenset({onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128})


def _export_torchscript(module: StaticAdaPerceiver, example: torch.Tensor, store: WeightStore | None = None,
                        location: str | None = None) -> onnx.ModelProto:
    """TorchScript's export of `module`, every weight embedded; with `store`, the large
    weights go straight into it and are never serialised. Without the exporter's
    whole-graph shape inference, which `fold` does again (`torchscript_weights`)."""
    from . import torchscript_weights
    from .heap import large_blocks_mapped

    table: dict = {}
    buffer = io.BytesIO()
    with large_blocks_mapped(), warnings.catch_warnings(), torchscript_weights.skipped_graph_shape_inference(), \
            (torchscript_weights.parameter_table(table) if store is not None else contextlib.nullcontext()):
        # The legacy exporter's deprecation notice, and tracer warnings about Python
        # numbers taken from shapes: the shapes are static, so those are constants.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=OPSET,
                          input_names=["image"], output_names=[*module.output_names, *module.tap_names],
                          do_constant_folding=True, export_params=store is None,
                          keep_initializers_as_inputs=False)
    proto = onnx.ModelProto()
    proto.ParseFromString(buffer.getbuffer())  # no copy of the (weights-sized) buffer first
    if store is not None:
        torchscript_weights.place_weights(proto, table, store, location)
    return proto


def _export_dynamo(module: StaticAdaPerceiver, example: torch.Tensor) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, opset_version=OPSET,
                                    input_names=["image"], output_names=[*module.output_names, *module.tap_names],
                                    optimize=True, verify=False, report=False, verbose=False)
    return program.model_proto


def _raw_export(module: StaticAdaPerceiver, example: torch.Tensor, exporter: str,
                store: WeightStore | None = None, location: str | None = None) -> onnx.ModelProto:
    if exporter == "torchscript":
        return _export_torchscript(module, example, store, location)
    if exporter == "dynamo":
        return _export_dynamo(module, example)
    # auto: the TorchScript exporter is several times faster here and gives the same
    # graph once folded; the dynamo exporter takes over where it is gone or fails.
    try:
        return _export_torchscript(module, example, store, location)
    except Exception as first:  # noqa: BLE001 - any failure means: try the other exporter
        try:
            return _export_dynamo(module, example)
        except Exception as second:
            raise ExportError(f"{module.point.id}: ONNX export failed (torchscript: {first}; "
                              f"dynamo: {second})") from second


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Turn Constant nodes holding a tensor into initializers, so that every weight-like
    tensor is an initializer the weights file can take."""
    kept = []
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1 \
                and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def _strip_debug_info(proto: onnx.ModelProto) -> None:
    """Drop doc strings and exporter metadata (stack traces with local paths): they carry
    nothing a runtime needs and would make the bytes depend on where the code lives."""
    proto.doc_string = ""
    graph = proto.graph
    graph.doc_string = ""
    for node in graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
    for values in (graph.input, graph.output, graph.value_info, graph.initializer):
        for value in values:
            value.doc_string = ""
            del value.metadata_props[:]
    del graph.metadata_props[:]
    del proto.metadata_props[:]


def _tensor_shape(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value.type.tensor_type.shape.dim]


def op_types(proto: onnx.ModelProto) -> list[str]:
    """Sorted unique op types of the main graph (domain-qualified outside the default one)."""
    return sorted({n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
                   for n in proto.graph.node})


def verify_static(proto: onnx.ModelProto, input_shape: Iterable[int], output_names: Iterable[str]) -> None:
    """Raise ExportError unless the graph is the clean static model this module promises."""
    name = proto.graph.name
    graph = proto.graph
    if [i.name for i in graph.input] != ["image"]:
        raise ExportError(f"{name}: graph inputs are {[i.name for i in graph.input]}, expected ['image']")
    image = graph.input[0]
    if image.type.tensor_type.elem_type != onnx.TensorProto.FLOAT or _tensor_shape(image) != list(input_shape):
        raise ExportError(f"{name}: input image is {_tensor_shape(image)} "
                          f"(type {image.type.tensor_type.elem_type}), expected float32 {list(input_shape)}")
    if [o.name for o in graph.output] != list(output_names):
        raise ExportError(f"{name}: graph outputs are {[o.name for o in graph.output]}, expected {list(output_names)}")
    for out in graph.output:
        shape = _tensor_shape(out)
        if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
            raise ExportError(f"{name}: output {out.name} has no static shape ({shape})")
    bad = sorted({n.op_type for n in graph.node if n.op_type in FORBIDDEN_OPS}
                 | {f"{n.domain}.{n.op_type}" for n in graph.node if n.domain not in ("", "ai.onnx")}
                 | {f"{n.op_type} with a subgraph" for n in graph.node
                    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute)})
    if bad:
        raise ExportError(f"{name}: the exported graph is not static, it contains {', '.join(bad)}")
    complex_values = [v.name for v in list(graph.input) + list(graph.output) + list(graph.value_info)
                      if v.type.tensor_type.elem_type in _COMPLEX_TYPES]
    complex_values += [t.name for t in graph.initializer if t.data_type in _COMPLEX_TYPES]
    if complex_values:
        raise ExportError(f"{name}: complex-valued tensors in the graph: {', '.join(complex_values[:5])}")
    if proto.functions:
        raise ExportError(f"{name}: the graph calls local functions {[f.name for f in proto.functions]}")


@dataclasses.dataclass(frozen=True)
class Interface:
    """What a point's graph promises outside: its input shape, outputs and attention mode
    (the same for every depth of a (tokens, width))."""
    attention: str
    input_shape: tuple[int, int, int, int]   # (batch, channels, height, width) of `image`
    output_names: tuple[str, ...]

    @classmethod
    def of(cls, module: StaticAdaPerceiver, batch: int) -> "Interface":
        return cls(module.attention_mode, (batch, module.config.in_channels, module.image_size, module.image_size),
                   tuple(module.output_names))


def point_metadata(point: ConfigPoint, interface: Interface) -> dict[str, str]:
    """The metadata_props every exported model carries about its point."""
    return {
        "adaexport.point.id": point.id,
        "adaexport.point.tokens": str(point.tokens),
        "adaexport.point.width": str(point.width),
        "adaexport.point.depth": str(point.depth),
        "adaexport.attention": interface.attention,
        "adaexport.batch": str(interface.input_shape[0]),
        "adaexport.image_size": str(interface.input_shape[-1]),
        "adaexport.outputs": ",".join(interface.output_names),
    }


def set_metadata(proto: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Replace the model's metadata_props with `metadata`, in key order."""
    del proto.metadata_props[:]
    for key in sorted(metadata):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(metadata[key])


def fold(proto: onnx.ModelProto) -> onnx.ModelProto:
    """onnxscript's `optimizer.optimize` as it runs on these graphs, with the one rewrite
    rule that fires on them (Flatten -> Reshape, the logits' flatten) instead of its 46
    default rules: the pattern matcher tries every rule at every node, which was 70% of a
    published-size export (17.7 of 25 s at the full point) and changed nothing else.
    `tests/test_export.py` checks the result is byte-identical to `optimize` (both
    attention modes, a distilled model); pass order and options are optimize's."""
    import onnx_ir as ir
    from onnx_ir.passes import common
    from onnxscript.optimizer._constant_folding import (DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT,
                                                        DEFAULT_CONSTANT_FOLD_OUTPUT_SIZE_LIMIT, FoldConstantsPass)
    from onnxscript.rewriter import RewritePass
    from onnxscript.rewriter.rules.common import flatten_to_reshape_rule

    model = ir.serde.deserialize_model(proto)
    passes = ir.passes.Sequential(
        common.InlinePass(),
        ir.passes.PassManager([FoldConstantsPass(shape_inference=True, input_size_limit=DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT,
                                                 output_size_limit=DEFAULT_CONSTANT_FOLD_OUTPUT_SIZE_LIMIT, should_fold=lambda node: None),
                               RewritePass([flatten_to_reshape_rule]), common.RemoveUnusedNodesPass(),
                               common.RemoveUnusedFunctionsPass(), common.RemoveUnusedOpsetsPass()],
                              steps=2, early_stop=True),
        common.RemoveUnusedNodesPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common.LiftSubgraphInitializersToMainGraphPass(), common.DeduplicateInitializersPass(),
        common.CommonSubexpressionEliminationPass(), common.OutputFixPass(), common.NameFixPass())
    passes(model)
    return ir.serde.serialize_model(model)


def export_graph(module: StaticAdaPerceiver, batch: int = 1, *, exporter: str = "auto",
                 store: WeightStore | None = None, location: str | None = None) -> onnx.ModelProto:
    """Export one static module to an in-memory ModelProto, folded (no image-independent
    work left, no Shape arithmetic) and stripped of exporter debug info; outputs
    `module.output_names` then its taps (`specialize(..., taps=True)`). Not yet labelled:
    see `label`. Every weight is embedded, or with `store` (and the TorchScript exporter)
    the large ones are placed in it as external data at `location` without ever being
    serialised (`torchscript_weights`); `externalize` moves the rest. Limited by protobuf
    to models under 2 GiB, which every AdaPerceiver size is."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    module.eval()
    with torch.no_grad():
        proto = _raw_export(module, torch.zeros(Interface.of(module, batch).input_shape, dtype=torch.float32), exporter,
                            store, location)
    # Fold what the exporter left: shape arithmetic traced from static shapes, and
    # Constant nodes (becoming initializers).
    proto = fold(proto)
    _constants_to_initializers(proto.graph)
    _strip_debug_info(proto)
    return proto


VALUE_PREFIX = "t"   # an intermediate value's name in a point's file: t0, t1, ... (hexadecimal)


def compact_names(proto: onnx.ModelProto) -> None:
    """Rename every intermediate value `t<n>` (in the order the nodes produce them) and drop
    the graph's value infos. The exporter's value names ("/blocks.13/attn/Reshape_3_output_0")
    and its value infos (shapes any runtime infers again) were half of a point's graph: at
    published size the whole trained grid's 378 graphs add 0.08x an fp32 model to the
    family with them (0.17x an fp16 model), and about half without. The graph's input,
    outputs and initializers keep their names, and every node the exporter's name (what
    profilers and TensorRT's layer names show)."""
    graph = proto.graph
    kept = {v.name for v in graph.input} | {v.name for v in graph.output} | {t.name for t in graph.initializer}
    renamed: dict[str, str] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
        for i, name in enumerate(node.output):
            if name and name not in kept:
                new = f"{VALUE_PREFIX}{len(renamed):x}"
                while new in kept:     # an initializer already named so: never the case for exported graphs
                    new += "_"
                renamed[name] = node.output[i] = new
    del graph.value_info[:]


def label(proto: onnx.ModelProto, point: ConfigPoint, interface: Interface,
          metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """Name the graph after `point`, verify it is the static model promised (`verify_static`),
    make its names compact (`compact_names`) and set its metadata: the point's
    (`point_metadata`) plus `metadata`."""
    proto.graph.name = point.id
    verify_static(proto, interface.input_shape, interface.output_names)
    compact_names(proto)
    props = point_metadata(point, interface)
    for key, value in (metadata or {}).items():
        if key in props and props[key] != str(value):
            raise ValueError(f"metadata key {key!r} is set by the exporter ({props[key]!r})")
        props[key] = str(value)
    set_metadata(proto, props)
    return proto


def export_point_proto(module: StaticAdaPerceiver, batch: int = 1, *, exporter: str = "auto",
                       metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """Export one static module on its own, every weight embedded, labelled (`label`): what a
    self-contained file of the point holds. A family cuts its points from one export per
    (tokens, width) instead (`export_depths`)."""
    return label(export_graph(module, batch, exporter=exporter), module.point, Interface.of(module, batch), metadata)
