"""The TorchScript exporter's internals this project relies on (torch is pinned): an export
that never serialises the large weights into the proto, and one without the graph-level
shape inference whose results the written model does not carry.

`torch.onnx.export(..., export_params=True)` copies every weight into the ModelProto it
serialises; the export then parses those bytes back, folds a graph holding them and
hashes them into the family's weights file: at published size 560 MB copied four times
and about a third of the export's CPU. With `export_params=False` the exporter writes the
graph alone, the weights becoming graph inputs named as in its parameter table (the
model's parameters and buffers after its constant folding). `parameter_table` takes that
table as the exporter computed it (the one function `torch.onnx.export` calls to build it,
wrapped for the call: private to torch, which is pinned) and `place_weights` turns each
input back into an initializer: the tensors the folding passes could ever read (at most
onnxscript's constant-folding input limit, 8,192 elements; the
initializer deduplication reads only smaller ones) are embedded as the exporter would have,
the larger ones go straight into the weights store as external data, read from the torch
tensor's memory. After the usual folding and `externalize`, the model is the one the
embedded export gives (`tests/test_export_depths.py` compares the bytes).

The exporter also runs ONNX shape inference over the whole graph twice (after the
conversion and after its constant folding): a third of its time at published size
(0.9 s of a 3.8 s template export). The model it writes carries none of those shapes (no
value_info; the outputs' types come from the trace), and `export_proto.fold` infers every
shape again, so `skipped_graph_shape_inference` makes both passes no-ops for the call:
the folded model is byte-identical (`tests/test_export_depths.py`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import onnx
import torch

from .weight_store import EXTERNAL_THRESHOLD, WeightStore, point_to


@contextlib.contextmanager
def parameter_table(into: dict) -> Iterator[None]:
    """Collect the exporter's {input name: tensor} table while torch.onnx.export runs."""
    from torch.onnx._internal.torchscript_exporter import utils

    real = utils._model_to_graph

    def recording(*args, **kwargs):
        graph, params, outputs = real(*args, **kwargs)
        into.update(params)
        return graph, params, outputs

    utils._model_to_graph = recording
    try:
        yield
    finally:
        utils._model_to_graph = real


@contextlib.contextmanager
def skipped_graph_shape_inference() -> Iterator[None]:
    """Make the exporter's whole-graph shape inference passes no-ops while torch.onnx.export
    runs (see the module docstring); the per-node inference its conversion uses stays."""
    real = torch._C._jit_pass_onnx_graph_shape_type_inference
    torch._C._jit_pass_onnx_graph_shape_type_inference = lambda *args, **kwargs: None
    try:
        yield
    finally:
        torch._C._jit_pass_onnx_graph_shape_type_inference = real


def place_weights(proto: onnx.ModelProto, table: dict[str, torch.Tensor], store: WeightStore, location: str) -> None:
    """Turn the weight inputs of `proto` (exported with `export_params=False`, `table` its
    parameter table) back into initializers: those over the folding passes' input limit in
    `store` (external data at `location`; embedded when a frozen store does not hold them),
    the rest embedded."""
    from onnxscript.optimizer._constant_folding import DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT   # what export.fold uses

    graph = proto.graph
    inputs = list(graph.input)
    del graph.input[:]
    for value in inputs:
        if value.name not in table:
            graph.input.add().CopyFrom(value)
            continue
        array = table[value.name].detach().contiguous().numpy()
        tensor = graph.initializer.add()
        tensor.name = value.name
        tensor.dims.extend(array.shape)
        tensor.data_type = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
        data = memoryview(np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False))).cast("B")
        large = array.size > DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT and len(data) >= EXTERNAL_THRESHOLD
        found = store.add(data) if large else None
        if found is None:
            tensor.raw_data = data.tobytes()
        else:
            point_to(tensor, location, *found)
