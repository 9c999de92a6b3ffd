"""The family's weights in half precision, for the engines that run in fp16 or bf16.

OpenVINO's fp16 and bf16 engines read a point's ONNX directly (no IR of their own). Read
from the fp32 family they would ship 4 bytes a parameter where their precision needs 2: a
deployment of fp16 engines alone would carry twice the bytes of an fp16 model. So they read
the point's half twin instead:

* ``weights-fp16-<hash>.bin`` beside the family's ``weights.bin``: every float32 of that file
  as float16 (round to nearest even), at half its offset, so each tensor of the fp32 file
  (and every prefix a narrower point reads) is at the same place, halved. ``<hash>`` is the
  start of the fp32 file's sha256: the name says which weights it was made from, a new
  export gets a new file, and a file of that name is never stale. One per family, made by
  the first engine that needs it.
* ``<point>.fp16.onnx`` beside ``<point>.onnx``: the same graph, each external float32
  initializer ``w`` replaced by its float16 twin in that file and a ``Cast(to=float)`` node
  producing ``w`` (the ONNX form of OpenVINO's compressed weights: its CPU plugin decompresses
  them when it compiles, then packs the weights in the precision it runs). Small tensors
  embedded in the point's ONNX stay as they are; an external tensor that is not float32 is
  embedded.

Both live in the family's ``onnx/`` folder because OpenVINO's ONNX frontend refuses external
data outside the model's folder. A weight beyond float16's range (65504) would become
infinite: a tensor holding one is embedded in the twin in float32 instead, except an
attention mask (read only by Add nodes that feed a Softmax, `_is_mask`), whose -3.4e38
becomes -inf: either way the softmax gives those scores weight 0, exactly.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..hashing import sha256_file
from .base import BackendError

HALF_SUFFIX = ".fp16.onnx"
_CHUNK = 1 << 24          # float32 values converted at a time (64 MiB read, 32 MiB written)
_CAST_SUFFIX = "__fp16"   # the float16 initializer of a weight `w` is `w__fp16`


def half_weights(weights: Path) -> Path:
    """The float16 twin of the float32 weights file `weights` (made now unless it exists).
    Values beyond float16's range become infinite here: `half_twin` keeps the tensors
    holding such values in float32."""
    weights = Path(weights)
    size = weights.stat().st_size
    if size % 4:
        raise BackendError(f"{weights.name}: {size} bytes is not a whole number of float32 values")
    half = weights.with_name(f"{weights.stem}-fp16-{sha256_file(weights)[:16]}{weights.suffix}")
    if half.is_file() and half.stat().st_size == size // 2:
        return half
    source = np.memmap(weights, dtype="<f4", mode="r") if size else np.zeros(0, "<f4")
    with atomic_path(half) as tmp, open(tmp, "wb") as out, np.errstate(over="ignore"):
        for start in range(0, source.size, _CHUNK):
            out.write(np.asarray(source[start:start + _CHUNK]).astype("<f2").tobytes())
    del source
    return half


@functools.lru_cache(maxsize=4)
def _infinities(half: Path, size: int, mtime_ns: int) -> np.ndarray:
    """Byte offsets (ascending) of the infinite values of the float16 file `half`: one scan
    per file and process (the file is named by its source's hash; size and mtime key the
    cache), where reading each tensor's bytes again cost 0.24 s per published-size point."""
    data = np.memmap(half, dtype="<f2", mode="r") if size else np.zeros(0, "<f2")
    found = [start + np.flatnonzero(np.isinf(np.asarray(data[start:start + _CHUNK])))
             for start in range(0, data.size, _CHUNK)]
    return 2 * np.concatenate(found) if found else np.zeros(0, np.int64)


def _fits_half(source: Path, half: Path, offset: int, length: int, mask: bool = False) -> bool:
    """Whether the float32 tensor at `offset` in `source` is finite in its float16 twin
    wherever it is finite (no value beyond 65504; an attention mask's -3.4e38 is not). With
    `mask` (the tensor is only ever added to attention scores before a softmax, `_is_mask`),
    a value below float16's range may become -inf: the softmax gives it weight 0 either way."""
    stat = half.stat()
    infinite = _infinities(half, stat.st_size, stat.st_mtime_ns)
    start, end = np.searchsorted(infinite, [offset // 2, (offset + length) // 2])
    if start == end:
        return True
    twin = np.fromfile(half, dtype="<f2", count=length // 4, offset=offset // 2)
    values = np.fromfile(source, dtype="<f4", count=length // 4, offset=offset)
    lost = np.isinf(twin) & np.isfinite(values)
    if mask:
        lost &= ~(twin < 0)
    return not lost.any()


def _is_mask(graph, name: str) -> bool:
    """Whether the tensor `name` is only read as an additive attention mask: by Add nodes whose
    output only Softmax nodes read (how the export applies `attn_bias`)."""
    from .onnx_tensors import readers

    read_by = readers(graph)
    outputs = {o.name for o in graph.output}
    adds = read_by.get(name, [])
    return bool(adds) and all(
        node.op_type == "Add" and all(out not in outputs and read_by.get(out)
                                      and all(r.op_type == "Softmax" for r in read_by[out]) for out in node.output)
        for node in adds)


def half_twin(onnx_path: Path) -> Path:
    """The point's ONNX reading the family's float16 weights (`half_weights`), written
    beside it as ``<point>.fp16.onnx`` (rewritten only when its bytes change)."""
    import onnx
    from onnx import helper
    from onnx.external_data_helper import load_external_data_for_tensor

    from ..weight_store import point_to
    from .shared_int8 import external_entry

    onnx_path = Path(onnx_path)
    model = onnx.load(str(onnx_path), load_external_data=False)
    casts, kept = [], []
    half_name: str | None = None
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            kept.append(tensor)
            continue
        location, offset, length = external_entry(tensor)
        source = onnx_path.parent / location
        half = half_weights(source) if tensor.data_type == onnx.TensorProto.FLOAT else None
        if half is None or offset % 4 or length % 4 or not (
                _fits_half(source, half, offset, length)
                or _is_mask(model.graph, tensor.name) and _fits_half(source, half, offset, length, mask=True)):
            # not a float32 weight, or one float16 cannot hold: embedded in the twin as it is
            load_external_data_for_tensor(tensor, str(onnx_path.parent))
            kept.append(tensor)
            continue
        if half_name not in (None, half.name):
            raise BackendError(f"{onnx_path.name}: its weights lie in more than one file")
        half_name = half.name
        twin = onnx.TensorProto(name=tensor.name + _CAST_SUFFIX, data_type=onnx.TensorProto.FLOAT16,
                                dims=tensor.dims)
        point_to(twin, half.name, offset // 2, length // 2)
        kept.append(twin)
        casts.append(helper.make_node("Cast", [twin.name], [tensor.name], name=tensor.name + "__to_float",
                                      to=onnx.TensorProto.FLOAT))
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    nodes = [*casts, *model.graph.node]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    data = model.SerializeToString(deterministic=True)
    path = onnx_path.with_name(onnx_path.name.removesuffix(".onnx") + HALF_SUFFIX)
    if not (path.is_file() and path.read_bytes() == data):
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    return path
