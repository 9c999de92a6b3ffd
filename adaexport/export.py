"""Export a family of static ONNX models, one per configuration point, sharing one weights file.

Each point is specialised (`adaexport.model.static.specialize`), exported in memory
with every weight embedded (`export_point_proto`), then its initializers are moved
into one external-data file shared by the whole family (`WeightStore`):

* every distinct tensor is stored once, found by content (the blocks, heads and
  embeddings are the same bytes in every point);
* a tensor that is a byte prefix of one already stored is not stored again: its
  external-data entry points at the same offset with a smaller length. The sliced
  FFN weights are laid out for this (fc1 as (h, D), fc2 transposed to (h, D), see
  `SlicedMlp`), so every narrower width reads the leading bytes of the full width's
  tensors. The family costs about one full model's weights on disk, not one per point.

The weights file holds exactly the tensors of the model's full point (all tokens,
full width, every block), whatever the grid: it depends only on the model, the
attention mode, the batch and the exporter, so each point can be exported (and
cached, and resumed) on its own against it. A point's tensors that are not in it
(the few image-independent constants that depend on the token count: read-in
queries, rotary tables, the mask) stay embedded in that point's .onnx file.

Tensors under `EXTERNAL_THRESHOLD` bytes (biases, norms, reshape targets) stay
embedded in the .onnx file: the shared file saves nothing worth a separate read
for them. Offsets in the weights file are aligned (`weight_store._alignment`) so runtimes can
map large tensors directly.

The graphs are static: fixed input (batch, C, H, W) named `image`, outputs in the
module's `output_names` order, opset 17 (read by ONNX Runtime 1.17+, OpenVINO and
TensorRT 8.6+), and no shape-dependent, control-flow, Resize or complex-number ops
(`FORBIDDEN_OPS`, checked on every export).

Files are written atomically (`atomic.atomic_path`: a temp name in the output directory,
then a rename),
the weights file before the .onnx files that reference it, and the bytes depend
only on the model, the points and the arguments: exporting a family twice gives
byte-identical files.
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

import onnx
import torch

from .atomic import atomic_path, write_bytes_atomic
from .model.adaperceiver import AdaPerceiver
from .model.static import StaticAdaPerceiver, specialize
from .space import ConfigPoint
from .weight_store import EXTERNAL_THRESHOLD, ExportError, WeightStore, externalize  # noqa: F401 - re-exported

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


@dataclasses.dataclass
class ExportedModel:
    point: ConfigPoint
    path: Path  # the .onnx file
    op_types: list[str]  # sorted unique op types used in the graph


# --- one point, in memory ---


def _export_torchscript(module: StaticAdaPerceiver, example: torch.Tensor) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The legacy exporter's deprecation notice, and tracer warnings about Python
        # numbers taken from shapes: the shapes are static, so those are constants.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=OPSET,
                          input_names=["image"], output_names=list(module.output_names),
                          do_constant_folding=True, export_params=True,
                          keep_initializers_as_inputs=False)
    proto = onnx.ModelProto()
    proto.ParseFromString(buffer.getbuffer())  # no copy of the (weights-sized) buffer first
    return proto


def _export_dynamo(module: StaticAdaPerceiver, example: torch.Tensor) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, opset_version=OPSET,
                                    input_names=["image"], output_names=list(module.output_names),
                                    optimize=True, verify=False, report=False, verbose=False)
    return program.model_proto


def _raw_export(module: StaticAdaPerceiver, example: torch.Tensor, exporter: str) -> onnx.ModelProto:
    if exporter == "torchscript":
        return _export_torchscript(module, example)
    if exporter == "dynamo":
        return _export_dynamo(module, example)
    # auto: the TorchScript exporter is several times faster here and gives the same
    # graph once folded; the dynamo exporter takes over where it is gone or fails.
    try:
        return _export_torchscript(module, example)
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


def point_metadata(module: StaticAdaPerceiver, batch: int) -> dict[str, str]:
    """The metadata_props every exported model carries about its point."""
    point = module.point
    return {
        "adaexport.point.id": point.id,
        "adaexport.point.tokens": str(point.tokens),
        "adaexport.point.width": str(point.width),
        "adaexport.point.depth": str(point.depth),
        "adaexport.attention": module.attention_mode,
        "adaexport.batch": str(batch),
        "adaexport.image_size": str(module.image_size),
        "adaexport.outputs": ",".join(module.output_names),
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


def export_point_proto(module: StaticAdaPerceiver, batch: int = 1, *, exporter: str = "auto",
                       metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """Export one static module to an in-memory ModelProto with all weights embedded.

    The graph is folded (no image-independent work left, no Shape arithmetic),
    stripped of exporter debug info, verified static (`verify_static`) and labelled
    with the point (`point_metadata`) plus `metadata`. Limited by protobuf to models
    under 2 GiB, which every AdaPerceiver size is.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    cfg = module.config
    shape = (batch, cfg.in_channels, module.image_size, module.image_size)
    module.eval()
    with torch.no_grad():
        proto = _raw_export(module, torch.zeros(shape, dtype=torch.float32), exporter)
    # Fold what the exporter left: shape arithmetic traced from static shapes, and
    # Constant nodes (becoming initializers).
    proto = fold(proto)
    _constants_to_initializers(proto.graph)
    _strip_debug_info(proto)
    proto.graph.name = module.point.id
    verify_static(proto, shape, module.output_names)
    props = point_metadata(module, batch)
    for key, value in (metadata or {}).items():
        if key in props and props[key] != str(value):
            raise ValueError(f"metadata key {key!r} is set by the exporter ({props[key]!r})")
        props[key] = str(value)
    set_metadata(proto, props)
    return proto


# --- files ---


def _check_weights_name(weights_name: str) -> None:
    if os.sep in weights_name or weights_name in ("", ".", "..") or not weights_name.strip():
        raise ValueError(f"weights_name must be a plain file name, got {weights_name!r}")
    if weights_name.endswith(".onnx"):
        raise ValueError(f"weights_name must not end in .onnx ({weights_name!r})")


def build_weights(model: AdaPerceiver, *, attention: str | None, batch: int = 1,
                  weights_name: str = "weights.bin", exporter: str = "auto",
                  file: BinaryIO | None = None) -> WeightStore:
    """The family's weights, in memory (or in `file`, an empty binary file opened for
    reading and writing, which keeps a published-size build from holding them twice): the
    tensors of the model's full point, laid out once. The returned store is frozen:
    points exported against it only reference it."""
    _check_weights_name(weights_name)
    store = WeightStore(io.BytesIO() if file is None else file)
    full = specialize(model, ConfigPoint.full(model.config), attention)
    externalize(export_point_proto(full, batch, exporter=exporter), store, weights_name)
    store.frozen = True
    return store


def write_weights(store: WeightStore, path: Path) -> Path:
    """Write the store's bytes to `path` atomically (temp file, fsync, rename); a frozen
    store then reads from that file (`attach`) instead of holding its bytes in memory."""
    if isinstance(store.file, io.BytesIO):
        write_bytes_atomic(path, store.file.getbuffer())
    else:
        store.file.seek(0)
        write_bytes_atomic(path, store.file.read())
    if store.frozen:
        store.attach(path)
    return path


def export_point(model: AdaPerceiver, point: ConfigPoint, out_dir: Path, store: WeightStore, *,
                 attention: str | None, batch: int = 1, weights_name: str = "weights.bin",
                 metadata: dict[str, str] | None = None, exporter: str = "auto",
                 check: bool = True) -> ExportedModel:
    """Export one point to out_dir/{point.id}.onnx referencing the (frozen) shared store,
    whose file out_dir/weights_name must already be written (the checker reads it)."""
    if not store.frozen:
        raise ValueError("export points against a frozen store (see build_weights)")
    module = specialize(model, point, attention)
    proto = export_point_proto(module, batch, exporter=exporter, metadata=metadata)
    del module
    externalize(proto, store, weights_name)
    path = Path(out_dir) / f"{point.id}.onnx"
    with atomic_path(path) as tmp:
        tmp.write_bytes(proto.SerializeToString(deterministic=True))
        if check:
            # Beside the weights file, so the checker resolves the external data.
            onnx.checker.check_model(str(tmp), full_check=True)
    return ExportedModel(point=point, path=path, op_types=op_types(proto))


def export_family(model: AdaPerceiver, points: list[ConfigPoint], out_dir: Path, *, attention: str | None,
                  batch: int = 1, weights_name: str = "weights.bin", metadata: dict[str, str] | None = None,
                  on_exported: Callable[[ExportedModel], None] | None = None,
                  exporter: str = "auto", check: bool = True) -> tuple[list[ExportedModel], Path]:
    """Export one ONNX per point into out_dir (files named f"{point.id}.onnx") plus one shared
    external-data file out_dir/weights_name. Returns (exported models, weights path).

    The weights file is written first (`build_weights`), then each .onnx file, verified
    with the ONNX checker (`check`) before it takes its final name; `on_exported` is
    called as each lands. The returned list follows `points`.
    """
    out_dir = Path(out_dir)
    if not points:
        raise ValueError("no points to export")
    if len(set(points)) != len(points):
        raise ValueError("the points are not unique")
    out_dir.mkdir(parents=True, exist_ok=True)
    store = build_weights(model, attention=attention, batch=batch, weights_name=weights_name, exporter=exporter)
    weights_path = write_weights(store, out_dir / weights_name)
    exported = []
    for point in points:
        result = export_point(model, point, out_dir, store, attention=attention, batch=batch,
                              weights_name=weights_name, metadata=metadata, exporter=exporter, check=check)
        exported.append(result)
        if on_exported is not None:
            on_exported(result)
    return exported, weights_path
