"""A TorchScript export that never serialises the large weights into the proto.

`torch.onnx.export(..., export_params=True)` copies every weight into the ModelProto it
serialises; the export then parses those bytes back, folds a graph holding them and
hashes them into the family's weights file: at published size 560 MB copied four times
and about a third of the export's CPU. With `export_params=False` the exporter writes the
graph alone, the weights becoming graph inputs named as in its parameter table (the
model's parameters and buffers after its constant folding). `export_to_store` takes that
table as the exporter computed it (the one function `torch.onnx.export` calls to build it,
wrapped for the call: private to torch, which is pinned) and turns each input back into an
initializer: the tensors the folding passes could ever read (at most
`FOLD_INPUT_LIMIT` elements: onnxscript's constant-folding input limit; the
initializer deduplication reads only smaller ones) are embedded as the exporter would have,
the larger ones go straight into the weights store as external data, read from the torch
tensor's memory. After the usual folding and `externalize`, the model is the one the
embedded export gives (`tests/test_export_depths.py` compares the bytes).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Iterator

import numpy as np
import onnx
import torch

from .weight_store import EXTERNAL_THRESHOLD, WeightStore, point_to

FOLD_INPUT_LIMIT = 8192   # onnxscript's DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT (elements)


@contextlib.contextmanager
def _parameter_table(into: dict) -> Iterator[None]:
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


def export_to_store(module: torch.nn.Module, example: torch.Tensor, output_names: list[str], opset: int,
                    store: WeightStore, location: str) -> onnx.ModelProto:
    """`module` exported by TorchScript with its large tensors in `store` (external data at
    `location`; embedded when a frozen store does not hold them) and the rest embedded."""
    table: dict[str, torch.Tensor] = {}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), _parameter_table(table):
        warnings.simplefilter("ignore")   # the legacy exporter's notices (see export._export_torchscript)
        torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=opset, input_names=["image"],
                          output_names=output_names, do_constant_folding=True, export_params=False,
                          keep_initializers_as_inputs=False)
    proto = onnx.ModelProto()
    proto.ParseFromString(buffer.getbuffer())
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
        found = store.add(data) if array.size > FOLD_INPUT_LIMIT and len(data) >= EXTERNAL_THRESHOLD else None
        if found is None:
            tensor.raw_data = data.tobytes()
        else:
            point_to(tensor, location, *found)
    return proto
