"""TensorRT on the DLA: int8 from a calibration cache, and where the layers really run.

* int8 on the DLA follows NVIDIA's own DLA tooling (Deep-Learning-Accelerator-SW,
  tools/qdq-translator): TensorRT 8.6/10.x does not map a Q/DQ network onto the DLA,
  so the network is built from the model *without* Q/DQ nodes (the exported fp32 ONNX)
  with BuilderFlag.INT8 + FP16 and the activation scales of the calibrated QDQ model
  handed over as a calibration cache (what ``trtexec --calib=FILE --int8 --fp16
  --useDLACore=N`` reads). The cache is TensorRT's text format: a header line
  ``TRT-<version>-EntropyCalibration2`` (version = TensorRT's NV_TENSORRT_VERSION:
  major*1000+minor*100+patch before 10, major*10000+minor*100+patch from 10) and one
  ``<tensor name>: <float32 scale as hex>`` line per activation tensor, scale = amax/127.
* Placement after fusion: TensorRT's builder log lists the layers it placed
  (``[DlaLayer] {ForeignNode[...]}`` / ``[GpuLayer] ...`` under "Layers Running on
  DLA/GPU"), and the engine inspector (IEngineInspector, JSON) lists the built engine's
  layers. `placement_report` combines both; the per-layer ``can_run_on_DLA`` answers
  are computed before fusion and are kept only as such.

Stdlib only apart from onnx (read lazily, toolchain side).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any, Iterable

from .onnx_tensors import readers

CACHE_ALGORITHM = "EntropyCalibration2"


def calibration_version(version: str) -> int:
    """TensorRT's NV_TENSORRT_VERSION integer for a version string ("10.3.0" -> 100300, "8.6.1" -> 8601)."""
    parts = [int(p) for p in re.findall(r"\d+", version)[:3]] + [0, 0, 0]
    major, minor, patch = parts[:3]
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def activation_scales(qdq_path: str | Path) -> dict[str, float]:
    """Tensor name (in the model without Q/DQ nodes) -> per-tensor int8 scale, read from the
    activation QuantizeLinear nodes of a QDQ model (weights, whose Q input is an initializer,
    are quantized by TensorRT itself). A quantized graph output is renamed by the quantizer;
    its scale goes to the graph output's name, as qdq-translator does."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(qdq_path), load_external_data=False).graph
    initializers = {t.name: t for t in graph.initializer}
    constants = {n.output[0]: next(a.t for a in n.attribute if a.name == "value")
                 for n in graph.node if n.op_type == "Constant"}
    outputs = {o.name for o in graph.output}
    consumers = readers(graph)
    scales: dict[str, float] = {}
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in initializers:
            continue
        tensor = initializers.get(node.input[1]) or constants.get(node.input[1])
        if tensor is None:
            continue
        scale = numpy_helper.to_array(tensor)
        if scale.size != 1:
            continue                       # per-channel activations: not a calibration-cache entry
        name = node.input[0]
        for dq in consumers.get(node.output[0], []):
            if dq.op_type == "DequantizeLinear" and dq.output[0] in outputs:
                name = dq.output[0]
        scales[name] = float(scale.reshape(()))
    return scales


def _hex(value: float) -> str:
    return format(struct.unpack("<I", struct.pack("<f", value))[0], "x")


def cache_text(scales: dict[str, float], version: str) -> str:
    """The calibration cache TensorRT `version` reads, for these activation scales."""
    lines = [f"TRT-{calibration_version(version)}-{CACHE_ALGORITHM}"]
    lines += [f"{name}: {_hex(scale)}" for name, scale in scales.items()]
    return "\n".join(lines) + "\n"


def read_cache(text: str) -> dict[str, float]:
    """Tensor name -> scale from a calibration cache's text (the header line is skipped)."""
    scales = {}
    for line in text.splitlines()[1:]:
        name, sep, value = line.rpartition(":")
        if sep and value.strip():
            scales[name.strip()] = struct.unpack("<f", struct.pack("<I", int(value.strip(), 16)))[0]
    return scales


def write_cache(path: str | Path, scales: dict[str, float], version: str) -> bytes:
    """Write the cache for TensorRT `version` at path (unchanged when it already says that); its bytes."""
    data = cache_text(scales, version).encode()
    path = Path(path)
    if not path.is_file() or path.read_bytes() != data:
        from ..atomic import write_bytes_atomic

        write_bytes_atomic(path, data)
    return data


# --------------------------------------------------------------------------- placement

_LOG_TAGS = {"[DlaLayer]": "dla", "[GpuLayer]": "gpu"}


def placement_from_log(lines: Iterable[str]) -> dict[str, list[str]]:
    """The builder log's layer placement: {"dla": [...], "gpu": [...]} (after DLA subgraph
    partitioning: one ``{ForeignNode[first...last]}`` entry per DLA subgraph)."""
    found: dict[str, list[str]] = {"dla": [], "gpu": []}
    for line in lines:
        for tag, where in _LOG_TAGS.items():
            if tag in line:
                found[where].append(line.split(tag, 1)[1].strip())
    return found


def engine_layers(info: str | dict) -> list[dict[str, Any]]:
    """The layers of an engine inspector JSON document (names only or detailed), as
    {"name", "type"} (type None when the engine was built without detailed verbosity)."""
    import json

    data = json.loads(info) if isinstance(info, str) else info
    layers = []
    for layer in data.get("Layers", []):
        if isinstance(layer, dict):
            layers.append({"name": str(layer.get("Name", "")), "type": layer.get("LayerType")})
        else:
            layers.append({"name": str(layer), "type": None})
    return layers


def placement_report(dla_core: int | None, log_lines: Iterable[str], layers: list[dict[str, Any]] | None,
                     unsupported_before_fusion: list[dict[str, Any]]) -> dict[str, Any]:
    """Where an engine's layers run after fusion, for the sidecar's ``dla`` facts."""
    from_log = placement_from_log(log_lines)
    report: dict[str, Any] = {"dla_core": dla_core, "unsupported_before_fusion": unsupported_before_fusion}
    if dla_core is None:
        report["summary"] = "GPU engine (no DLA)"
        return report
    on_dla = list(from_log["dla"])
    if layers is not None:
        on_dla += [l["name"] for l in layers if "dla" in str(l["type"] or "").lower() and l["name"] not in on_dla]
        report["engine_layers"] = len(layers)
    report.update(on_dla=on_dla, on_gpu=from_log["gpu"],
                  source="TensorRT builder log (Layers Running on DLA/GPU)"
                         + (" and the engine inspector" if layers is not None else ""))
    if on_dla:
        shown = ", ".join(on_dla[:3]) + (f" and {len(on_dla) - 3} more" if len(on_dla) > 3 else "")
        report["summary"] = (f"DLA core {dla_core} after fusion: {len(on_dla)} DLA subgraph(s) ({shown}), "
                             f"{len(from_log['gpu'])} layer(s) on the GPU")
    else:
        report["summary"] = f"DLA core {dla_core} requested, but no layer runs on the DLA after fusion"
    return report
