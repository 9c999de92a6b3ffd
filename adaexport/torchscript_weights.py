"""A TorchScript export that never serialises the large weights into the proto.

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
