"""The external-data table of an ONNX file, read without the onnx package.

The family's fp32 engines keep their large weights in the shared ``weights.bin``; each
initializer names its bytes there (``external_data``: location, offset, length). To
hand ONNX Runtime those tensors once for every session (``SessionOptions.add_initializer``)
the runtime needs that table, and it must not import onnx on a device. An ONNX file is a
protocol-buffers message, so this module reads the few fields it needs straight from the
wire format (field numbers from onnx/onnx.proto, stable since ONNX 1.0):

    ModelProto.graph = 7; GraphProto.initializer = 5;
    TensorProto: dims = 1, data_type = 2, name = 8, external_data = 13, data_location = 14;
    StringStringEntryProto: key = 1, value = 2.

Everything else is skipped by wire type. A malformed file raises ValueError.

`family_files` lists what an engine that reads a point's ONNX reads (the ONNX and its
weights file), as paths relative to the engine's folder (`family_relpath`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .base import BackendError, safe_artifact_path

# onnx.TensorProto.DataType -> numpy dtype name, for the types a weights file holds
DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
          10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


@dataclasses.dataclass(frozen=True)
class ExternalTensor:
    name: str
    location: str
    offset: int
    length: int
    dtype: str          # numpy dtype name
    shape: tuple[int, ...]


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes, start: int = 0, end: int | None = None):
    """(field number, wire type, value) of each field of a message in buf[start:end];
    value is an int for varints, a (start, end) span for length-delimited fields."""
    pos, end = start, len(buf) if end is None else end
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = (pos, pos + size), pos + size
        elif wire == 5:
            value, pos = None, pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > end:
            raise ValueError("field runs past the end of its message")
        yield number, wire, value


def _tensor(buf: bytes, start: int, end: int) -> ExternalTensor | None:
    name, dtype, location, dims, entries = "", None, 0, [], {}
    for number, wire, value in _fields(buf, start, end):
        if number == 1 and wire == 0:
            dims.append(value)
        elif number == 1 and wire == 2:  # packed dims
            pos = value[0]
            while pos < value[1]:
                dim, pos = _varint(buf, pos)
                dims.append(dim)
        elif number == 2 and wire == 0:
            dtype = value
        elif number == 8 and wire == 2:
            name = buf[value[0]:value[1]].decode("utf-8")
        elif number == 13 and wire == 2:
            key = val = ""
            for n, w, v in _fields(buf, *value):
                if w == 2 and n in (1, 2):
                    text = buf[v[0]:v[1]].decode("utf-8")
                    key, val = (text, val) if n == 1 else (key, text)
            entries[key] = val
        elif number == 14 and wire == 0:
            location = value
    if location != _EXTERNAL:
        return None
    if dtype not in DTYPES or "location" not in entries:
        raise ValueError(f"initializer {name!r}: unsupported external tensor (type {dtype})")
    return ExternalTensor(name=name, location=entries["location"], offset=int(entries.get("offset", 0)),
                          length=int(entries.get("length", -1)), dtype=DTYPES[dtype], shape=tuple(dims))


def external_tensors(path: str | Path) -> list[ExternalTensor]:
    """The initializers of the ONNX model at ``path`` whose data lives in an external file."""
    buf = Path(path).read_bytes()
    found: list[ExternalTensor] = []
    for number, wire, value in _fields(buf):
        if number == 7 and wire == 2:  # graph
            for n, w, v in _fields(buf, *value):
                if n == 5 and w == 2:  # initializer
                    tensor = _tensor(buf, *v)
                    if tensor is not None:
                        found.append(tensor)
    return found


# Ops whose weight input (index 1) ONNX Runtime's optimisers use as is. Other initializers
# (e.g. a table multiplied elementwise) may be rewritten in place by a graph optimiser
# (reshaped to fold an Unsqueeze), which goes wrong for an initializer the session does
# not own, so only these are shared.
WEIGHT_INPUTS = {"MatMul": 1, "Gemm": 1, "Conv": 1}


def _consumers(buf: bytes, graph: tuple[int, int]) -> dict[str, list[tuple[str, int]]]:
    """tensor name -> [(op type, input index)] of every node reading it."""
    uses: dict[str, list[tuple[str, int]]] = {}
    for n, w, v in _fields(buf, *graph):
        if n != 1 or w != 2:  # GraphProto.node
            continue
        inputs, op = [], ""
        for fn, fw, fv in _fields(buf, *v):
            if fn == 1 and fw == 2:
                inputs.append(buf[fv[0]:fv[1]].decode("utf-8"))
            elif fn == 4 and fw == 2:
                op = buf[fv[0]:fv[1]].decode("utf-8")
        for index, name in enumerate(inputs):
            uses.setdefault(name, []).append((op, index))
    return uses


def shareable_tensors(path: str | Path) -> list[ExternalTensor]:
    """The external initializers of ``path`` that sessions can safely share: those read only
    as the weight input of MatMul, Gemm or Conv."""
    buf = Path(path).read_bytes()
    graph = next((v for n, w, v in _fields(buf) if n == 7 and w == 2), None)
    if graph is None:
        raise ValueError(f"{Path(path).name}: no graph")
    uses = _consumers(buf, graph)
    shared = []
    for tensor in external_tensors(path):
        consumers = uses.get(tensor.name, [])
        if consumers and all(WEIGHT_INPUTS.get(op) == index for op, index in consumers):
            shared.append(tensor)
    return shared


def family_relpath(path: Path, out_dir: Path) -> str:
    """`path` relative to an artifact folder `out_dir`, for an engine that reads the family's
    files (BackendError unless it lies inside the folder or the one above)."""
    rel = os.path.relpath(Path(path).resolve(), Path(out_dir).resolve()).replace(os.sep, "/")
    if not safe_artifact_path(rel, shared=True):
        raise BackendError(f"{Path(path).name} lies outside {Path(out_dir).resolve().parent}: an engine that reads "
                           "the family's files must be compiled into a folder beside them (e.g. engines/ next to onnx/)")
    return rel


def family_files(onnx_path: str | Path, out_dir: str | Path) -> list[str]:
    """What an engine reading a point's ONNX of the family reads, relative to its folder
    `out_dir`: the ONNX, then the files holding its external tensors (the family's weights.bin)."""
    onnx_path = Path(onnx_path)
    try:
        locations = sorted({t.location for t in external_tensors(onnx_path)})
    except (OSError, ValueError) as exc:
        raise BackendError(f"{onnx_path.name}: cannot read its tensor table ({exc})") from None
    return [family_relpath(onnx_path, out_dir)] + [family_relpath(onnx_path.parent / f, out_dir) for f in locations]
