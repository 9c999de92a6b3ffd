"""Every point of one token count cut from one export of its full width and depth.

Exporting a point traces the model, serialises and folds its graph with every weight
embedded: at published size 4-9 s of CPU and gigabytes of memory per point, most of it
spent on the weights. The points of one token count differ only in how many blocks run
before the write-out head and in how many FFN units each block keeps, so a family
exports each token count once, at the model's full width and depth, with the latents
after every block as extra outputs (`specialize(..., taps=True)`), and moves that
graph's tensors into the family's weights file (`externalize`). A point is cut from it:

* `cut_to_width`: each block's sliced FFN tensors (`SlicedMlp`: fc1's weight and bias,
  fc2's transposed weight, a narrower width's being their leading rows) keep their place
  in the weights file and lose their trailing rows, and the activation between fc1 and
  fc2 its trailing units: what exporting that width gives (tests/test_export_depths.py
  compares the bytes);
* `cut_to_depth`: the head reads the latents after the point's last block instead of the
  last one's, and whatever no output needs any more (the later blocks, their tensors and
  value infos, the taps) is dropped.

A point costs the copy of a few-MB graph instead of an export. The same cuts serve a
point exported alone, so its file has the same bytes whichever way it was exported and
whatever the grid (a template's depth and width are the model's, never the grid's).
"""

from __future__ import annotations

import re
from typing import Iterable

import onnx
from onnx import helper

from .export_proto import Interface, export_graph, label
from .model.adaperceiver import AdaPerceiver
from .model.config import ffn_hidden
from .model.static import specialize, tap_name
from .space import ConfigPoint
from .weight_store import ExportError, WeightStore, externalize


def cut_to_depth(template: onnx.ModelProto, depth: int, output_names: tuple[str, ...]) -> onnx.ModelProto:
    """The graph of `template` (outputs `output_names`, then the latents after each of its
    blocks) that runs only its first `depth` blocks: the consumers of the last block's
    latents read block `depth`'s instead, the graph outputs are `output_names` alone, and
    nodes, initializers and value infos no output depends on are dropped (node order kept)."""
    source = template.graph
    taps = [o.name for o in source.output[len(output_names):]]
    if [o.name for o in source.output[:len(output_names)]] != list(output_names) \
            or not taps or taps != [tap_name(k) for k in range(len(taps))]:
        raise ExportError(f"{source.name}: not a tapped template (outputs {[o.name for o in source.output]})")
    if not 1 <= depth <= len(taps):
        raise ValueError(f"depth {depth} is outside the template's 1..{len(taps)}")
    last, kept_tap = taps[-1], taps[depth - 1]
    blocks_after = set(taps[depth:])   # the latents of blocks the cut point does not run

    def rewired(node: onnx.NodeProto) -> list[str]:
        return [kept_tap if name == last else name for name in node.input]

    # Walk back from the outputs: a node stays if an output depends on it.
    needed = set(output_names)
    keep = [False] * len(source.node)
    for i in range(len(source.node) - 1, -1, -1):
        node = source.node[i]
        if any(name in needed for name in node.output):
            keep[i] = True
            needed.update(rewired(node))
    produced_after = needed & blocks_after
    if produced_after:   # the head still reads a later block: the template is not what this cut expects
        raise ExportError(f"{source.name}: cut to depth {depth} still needs {sorted(produced_after)}")

    proto = onnx.ModelProto()
    proto.CopyFrom(template)
    graph = proto.graph
    for field in ("node", "initializer", "value_info", "output"):
        graph.ClearField(field)
    for i, node in enumerate(source.node):
        if keep[i]:
            copy = graph.node.add()
            copy.CopyFrom(node)
            if last in node.input:
                del copy.input[:]
                copy.input.extend(rewired(node))
    produced = {name for node in graph.node for name in node.output}
    graph.initializer.extend(t for t in source.initializer if t.name in needed)
    graph.value_info.extend(v for v in source.value_info if v.name in produced)
    graph.output.extend(source.output[:len(output_names)])
    return proto


# The tensors a block's FFN width slices (`model.static.SlicedMlp`): fc1's weight and bias and
# fc2's transposed weight, each (hidden, ...) with a narrower width's as its leading rows.
_SLICED_FFN = re.compile(r"blocks\.\d+\.ffn\.(fc1\.weight|fc1\.bias|fc2\.weight_t)")


def cut_to_width(template: onnx.ModelProto, hidden: int, full_hidden: int) -> onnx.ModelProto | None:
    """The graph of `template` (exported at the full width, FFN hidden `full_hidden`) with
    every block's FFN narrowed to `hidden` units: the sliced tensors keep their place in
    the weights file (or their embedded bytes) and lose their trailing rows, and the
    values between fc1 and fc2 their trailing units. None when the template does not
    name its FFN tensors as the model does (another exporter): export that width instead."""
    proto = onnx.ModelProto()
    proto.CopyFrom(template)
    graph = proto.graph
    sliced = [t for t in graph.initializer if _SLICED_FFN.fullmatch(t.name)]
    if not sliced or any(t.dims[0] != full_hidden for t in sliced):
        return None
    for tensor in sliced:
        row = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        for dim in tensor.dims[1:]:
            row *= dim
        tensor.dims[0] = hidden
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            length = next(e for e in tensor.external_data if e.key == "length")
            length.value = str(hidden * row)
        elif tensor.raw_data:
            tensor.raw_data = tensor.raw_data[:hidden * row]
        else:
            return None
    # The values from each fc1's output to the next fc2 (the activation between them).
    names = {t.name for t in sliced}
    narrowed: set[str] = set()
    for node in graph.node:
        takes = [name for name in node.input if name in names]
        if any(name.endswith("fc1.weight") for name in takes) \
                or (any(name in narrowed for name in node.input) and not takes):
            narrowed.update(node.output)
    for value in graph.value_info:
        if value.name in narrowed:
            last = value.type.tensor_type.shape.dim[-1]
            if last.dim_value != full_hidden:
                return None
            last.dim_value = hidden
    return proto


def by_token_count(points: Iterable[ConfigPoint]) -> dict[int, list[ConfigPoint]]:
    """The points grouped by token count (one template each), in the order the counts first
    appear: how the build's export tasks run them."""
    groups: dict[int, list[ConfigPoint]] = {}
    for point in points:
        groups.setdefault(point.tokens, []).append(point)
    return groups


class DepthTemplates:
    """The family's tapped full-depth graphs: one exported per token count (at the full
    width), each narrower width's cut from it (`cut_to_width`), kept per (tokens, width);
    exported graphs are externalized against the frozen `store` as they are first needed
    (or `known`: ((tokens, width), (template, interface)) pairs made elsewhere, as
    `build_weights(templates=...)` gives the full point's); `point_proto` cuts and labels a
    point."""

    def __init__(self, model: AdaPerceiver, store: WeightStore, *, attention: str | None, batch: int,
                 weights_name: str, exporter: str, known: Iterable = ()):
        if not store.frozen:
            raise ValueError("cut points against a frozen store (see build_weights)")
        self.model, self.store = model, store
        self.attention, self.batch, self.weights_name, self.exporter = attention, batch, weights_name, exporter
        self._templates: dict[tuple[int, int], tuple[onnx.ModelProto, Interface]] = dict(known)

    def template(self, tokens: int, width: int) -> tuple[onnx.ModelProto, Interface]:
        """The tapped graph of (tokens, width): cut from the full width's, exported if need be."""
        key, cfg = (tokens, width), self.model.config
        if key not in self._templates:
            narrowed = None
            if width != cfg.embed_dim:
                full, interface = self.template(tokens, cfg.embed_dim)
                narrowed = cut_to_width(full, ffn_hidden(width, cfg.ffn_ratio), ffn_hidden(cfg.embed_dim, cfg.ffn_ratio))
            self._templates[key] = (narrowed, interface) if narrowed is not None else tapped_template(
                self.model, tokens, width, self.store, attention=self.attention, batch=self.batch,
                weights_name=self.weights_name, exporter=self.exporter)
        return self._templates[key]

    def point_proto(self, point: ConfigPoint, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
        template, interface = self.template(point.tokens, point.width)
        return label(cut_to_depth(template, point.depth, interface.output_names), point, interface, metadata)


def tapped_template(model: AdaPerceiver, tokens: int, width: int, store: WeightStore, *, attention: str | None,
                    batch: int, weights_name: str, exporter: str) -> tuple[onnx.ModelProto, Interface]:
    """The (tokens, width) graph at the model's full depth with every block's latents as an
    output, its tensors moved into `store` (or found there, if frozen), and its interface."""
    point = ConfigPoint(tokens=tokens, width=width, depth=model.config.depth)
    module = specialize(model, point, attention, taps=True)
    proto = export_graph(module, batch, exporter=exporter, store=store, location=weights_name)
    interface = Interface.of(module, batch)
    del module
    externalize(proto, store, weights_name)
    # A parsed proto keeps the memory it was parsed into (protobuf's arena) until it dies,
    # cleared fields included: re-read, the kept template holds only its few MB of graph.
    light = onnx.ModelProto()
    light.ParseFromString(proto.SerializeToString())
    return light, interface
