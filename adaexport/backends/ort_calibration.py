"""MinMax calibration for onnxruntime.quantization that does not copy the model's weights.

``quantize_static`` calibrates with its own ``MinMaxCalibrater``, which loads the model with
its weights a second time (the quantizer holds the first), writes and loads an augmented
copy, and runs it in a session that prepacks every MatMul weight and grows an arena: at
published size (575 MB of float32 weights) the full point's int8 compile peaked at 2,952 MiB
of anonymous memory, 5.4x the checkpoint (benchmarks/README.md, "Memory of a whole build").

`minmax_ranges` computes the same statistic, each calibrated tensor's smallest and largest
value over the calibration samples, with the graph alone in memory: the tensors ORT's
calibrator selects (every float input and output of a node of the quantized op types that is
not an initializer) become ReduceMin/ReduceMax outputs of the point's own graph, which a
session reads its weights for from their external data (memory-mapped by ONNX Runtime at
page-aligned offsets, as the family's ``weights.bin`` lays them out), with prepacking, the
memory arena and memory patterns off, one batch at a time, in priority-based order with each
ReduceMin/ReduceMax right after its tensor's producer (so each activation is freed once
reduced). `quantize_static` then takes the ranges through its calibration cache (``calibration_cache_path``, which onnxruntime 1.32 has;
where quantize_static lacks it, `onnxruntime_backend.quantize_qdq` lets it calibrate itself),
so the quantizer itself, its QDQ layout, scales and biases, is ORT's unchanged.

With ``prepack=True`` the session is configured as ORT's calibrator configures its own
(prepacked weights), and the ranges, hence the QDQ model, are bit for bit those of
``quantize_static`` calibrating itself; without prepacking MLAS accumulates the GEMMs in
another order, which moves a range by float32 rounding (a scale by an ulp or two).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Sequence

import numpy as np

FLOAT_TYPES = (1, 10)    # TensorProto FLOAT, FLOAT16: what ORT's calibrator calibrates


def cache_supported() -> bool:
    """Whether this onnxruntime's quantize_static takes precomputed ranges (``calibration_cache_path``)."""
    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def calibrated_tensors(model, op_types: Sequence[str]) -> list[str]:
    """The tensors of the graph-only `model` whose ranges static quantization needs: every
    float input and output of a node of `op_types` that is not an initializer, in graph order."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {v.name: v.type for v in [*graph.value_info, *graph.output, *graph.input]}
    constants = {t.name for t in model.graph.initializer}
    names: dict[str, None] = {}
    for node in model.graph.node:
        if node.op_type not in op_types:
            continue
        for name in [*node.input, *node.output]:
            kind = types.get(name)
            if kind is not None and kind.HasField("tensor_type") and kind.tensor_type.elem_type in FLOAT_TYPES \
                    and name not in constants:
                names[name] = None
    return list(names)


def _augmented(model, names: list[str]) -> list[str]:
    """Add a ReduceMin and a ReduceMax output (all axes, dims kept) for each of `names` to
    `model`, each pair right after the node that produces its tensor (a graph input's first),
    so that a session run in priority-based order reduces a tensor as soon as it exists and
    frees it (appended at the end, they kept every calibrated activation alive until the end:
    0.64 GB at the published full point); returns the added outputs, min then max per tensor."""
    from onnx import helper

    index = {name: i for i, name in enumerate(names)}
    outputs = [f"calibration_{i}_{op}" for i in range(len(names)) for op in ("ReduceMin", "ReduceMax")]
    model.graph.output.extend(helper.make_empty_tensor_value_info(out) for out in outputs)

    def reducers(name: str) -> list:
        return [helper.make_node(op, [name], [f"calibration_{index[name]}_{op}"],
                                 name=f"calibration_{index[name]}_{op}", keepdims=1)
                for op in ("ReduceMin", "ReduceMax")]

    nodes = [r for value in model.graph.input if value.name in index for r in reducers(value.name)]
    for node in model.graph.node:
        nodes.append(node)
        nodes += [r for out in node.output if out in index for r in reducers(out)]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return outputs


def minmax_ranges(src: Path, batches: Sequence[np.ndarray], input_name: str, op_types: Sequence[str], *,
                  prepack: bool = False):
    """onnxruntime.quantization.TensorsData (MinMax) of the model at `src` over `batches`,
    its weights read from their external data, never copied into the process."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData

    from .shared_int8 import FOLDER_OPTION

    model = onnx.load(str(src), load_external_data=False)
    names = calibrated_tensors(model, op_types)
    outputs = _augmented(model, names)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED    # each tensor reduced, then freed (_augmented)
    options.log_severity_level = 3
    options.add_session_config_entry("session.disable_prepacking", "0" if prepack else "1")
    options.add_session_config_entry(FOLDER_OPTION, os.fspath(Path(src).resolve().parent))
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del model
    low: list[np.ndarray] = []
    high: list[np.ndarray] = []
    for batch in batches:
        values = session.run(outputs, {input_name: batch})
        lows, highs = values[0::2], values[1::2]
        if not low:
            low = [v.reshape(-1) for v in lows]
            high = [v.reshape(-1) for v in highs]
            continue
        low = [np.minimum(a, v.reshape(-1)) for a, v in zip(low, lows)]
        high = [np.maximum(a, v.reshape(-1)) for a, v in zip(high, highs)]
    del session
    if not low:
        raise ValueError("no calibration batch")
    return TensorsData(CalibrationMethod.MinMax, {n: (lo, hi) for n, lo, hi in zip(names, low, high)})
