"""The family's weights in int8, for the int8 engines: one byte a parameter, stored once.

A point's quantizer computes a weight's scales from the point's own tensor. For ``fc2``
(stored (h, D), output channels as columns) a narrower point's column scales differ from the
full tensor's, so its int8 bytes are not a prefix of the full model's: int8 engines quantized
on their own can only share the fp32 ``weights.bin`` (4 bytes a parameter, 4.1x an int8 model
at published size) or carry their own copy. So the family fixes the quantization of every
weight once, from the full tensors:

* ``weights-int8-<hash>.bin`` beside ``weights.bin`` (``weights-int7-...`` for 7-bit weights,
  `reduce_range`): every tensor of the tensor table (`weight_store.tensor_table`, written with
  ``weights.bin`` from the full point's template) in file order. A weight (a Gemm, MatMul or
  Conv input B / W) is stored as int8, symmetric per output channel with the full tensor's
  scales (absmax / qmax, round half to even), followed by those scales in float32; any other
  tensor (norms, biases, latents, position tables) in float32, as in ``weights.bin``. Then a
  run of zero bytes, the zero points of every weight (int8) and bias (int32). ``<hash>`` is the
  start of ``weights.bin``'s sha256, so a file of that name is never stale.
* A point reads leading bytes: a narrower point's weight is the leading rows of the full
  tensor (export lays them out so), its int8 bytes are the leading bytes of the full tensor's,
  and its scales are the leading ones (output channels as rows) or all of them (as columns:
  coarser than the point's own, the price of one copy; `bench_int8_accuracy` measures it).

`slots` lays the file out (deterministically, from the table); `int8_twin` writes it once;
`locate` finds where a point's tensor lies in it. ONNX Runtime's QDQ engines read it as their
initializers (`shared_int8.share_weights`), OpenVINO's quantized IR binds its weights to it at
load (`shared_int8.attach_openvino_weights`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..hashing import sha256_file
from ..weight_store import table_path
from .base import BackendError

_ALIGN = 64


@dataclasses.dataclass(frozen=True)
class Slot:
    """One tensor of the weights file and where the twin holds it."""
    name: str
    offset: int            # in weights.bin
    length: int            # bytes in weights.bin (float32)
    dims: tuple
    axis: int | None       # output-channel axis of a weight stored in int8; None: stored in float32
    at: int                # in the twin: its int8 bytes, or its float32 bytes
    scales_at: int = -1    # in the twin: the float32 scales of a weight, one per output channel

    @property
    def channels(self) -> int:
        return int(self.dims[self.axis]) if self.axis is not None else 0


@dataclasses.dataclass(frozen=True)
class Twin:
    path: Path
    slots: dict[int, Slot]     # by offset in weights.bin
    zeros_at: int
    zeros_length: int
    qmax: int


def _aligned(n: int) -> int:
    return n + (-n % _ALIGN)


def read_table(weights: Path) -> list[dict] | None:
    """The tensor table written beside `weights` (None when there is none: a family exported
    before tables were written)."""
    path = table_path(weights)
    if not path.is_file():
        return None
    try:
        table = json.loads(path.read_text())
        return list(table["tensors"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackendError(f"{path.name}: not a tensor table ({exc})") from None


def slots(table: list[dict]) -> tuple[dict[int, Slot], int, int]:
    """The twin's layout from the tensor table: the slots by offset in weights.bin, where the
    zero run starts, and its length. Tensors sharing an offset (one stored tensor read by two
    names) share a slot, stored in int8 only when every name is a weight on the same axis."""
    merged: dict[int, dict] = {}
    for entry in table:
        ndim_ok = entry["axis"] is not None and len(entry["dims"]) >= 2
        axis = entry["axis"] if ndim_ok else None
        old = merged.get(entry["offset"])
        if old is None:
            merged[entry["offset"]] = {**entry, "axis": axis}
        else:
            if entry["length"] > old["length"]:
                old.update(name=entry["name"], length=entry["length"], dims=entry["dims"])
            if old["axis"] != axis:
                old["axis"] = None
    out: dict[int, Slot] = {}
    at, widest = 0, 0
    for offset in sorted(merged):
        entry = merged[offset]
        dims, axis, length = tuple(entry["dims"]), entry["axis"], int(entry["length"])
        if length != 4 * int(np.prod(dims, dtype=np.int64)):
            raise BackendError(f"tensor table: {entry['name']} has {length} bytes, not float32 {list(dims)}")
        if axis is None:
            out[offset] = Slot(entry["name"], offset, length, dims, None, at)
            at = _aligned(at + length)
        else:
            scales_at = _aligned(at + length // 4)
            out[offset] = Slot(entry["name"], offset, length, dims, axis, at, scales_at)
            at = _aligned(scales_at + 4 * int(dims[axis]))
            widest = max(widest, int(dims[axis]))
    return out, at, 4 * widest


def quantize(weights: np.ndarray, axis: int, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values, float32 scales): symmetric per channel along `axis`, scale = absmax / qmax
    (1 for an all-zero channel), round half to even, saturating at +-qmax."""
    others = tuple(a for a in range(weights.ndim) if a != axis)
    absmax = np.abs(weights).max(axis=others).astype(np.float32)
    scales = np.where(absmax > 0, absmax / np.float32(qmax), np.float32(1)).astype(np.float32)
    shape = [1] * weights.ndim
    shape[axis] = -1
    q = np.clip(np.rint(weights / scales.reshape(shape)), -qmax, qmax).astype(np.int8)
    return q, scales


def twin_name(weights: Path, qmax: int) -> str:
    bits = {127: "int8", 63: "int7"}.get(qmax)
    if bits is None:
        raise BackendError(f"int8 weights: qmax {qmax} (127: 8-bit, 63: 7-bit)")
    weights = Path(weights)
    return f"{weights.stem}-{bits}-{sha256_file(weights)[:16]}{weights.suffix}"


def int8_twin(weights: Path, qmax: int = 127) -> Twin | None:
    """The int8 twin of the family's weights file `weights` (written now unless it exists);
    None when the family has no tensor table (exported before this layout)."""
    weights = Path(weights)
    table = read_table(weights)
    if table is None:
        return None
    layout, zeros_at, zeros_length = slots(table)
    path = weights.with_name(twin_name(weights, qmax))
    size = zeros_at + zeros_length
    if not (path.is_file() and path.stat().st_size == size):
        source = np.memmap(weights, dtype=np.uint8, mode="r")
        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            for slot in layout.values():
                if slot.offset + slot.length > source.size:
                    raise BackendError(f"{weights.name}: {slot.name} lies beyond its {source.size} bytes")
                values = source[slot.offset:slot.offset + slot.length].view("<f4").reshape(slot.dims)
                out.seek(slot.at)
                if slot.axis is None:
                    out.write(np.asarray(values).tobytes())
                    continue
                q, scales = quantize(np.asarray(values), slot.axis, qmax)
                out.write(q.tobytes())
                out.seek(slot.scales_at)
                out.write(scales.astype("<f4").tobytes())
            out.truncate(size)     # the zero run (and the padding) reads as zeros
        del source
    return Twin(path, layout, zeros_at, zeros_length, qmax)


def locate(twin: Twin, offset: int, length: int, dims) -> Slot | None:
    """The slot a point's float32 tensor (`offset`, `length` in weights.bin, shape `dims`)
    reads, or None where the twin cannot serve it: not the start of a table tensor, longer
    than it, or, for a weight, not its leading rows."""
    slot = twin.slots.get(int(offset))
    dims = tuple(int(d) for d in dims)
    if slot is None or length > slot.length or length != 4 * int(np.prod(dims, dtype=np.int64)):
        return None
    if slot.axis is not None and (len(dims) != len(slot.dims) or dims[1:] != slot.dims[1:]):
        return None
    return slot


def int8_view(twin: Twin, slot: Slot, dims) -> tuple[tuple[int, int], tuple[int, int]]:
    """((offset, length) of the int8 values, (offset, length) of the float32 scales) in the
    twin of a point's weight of shape `dims` read from `slot` (its leading rows)."""
    count = int(np.prod(dims, dtype=np.int64))
    channels = int(dims[slot.axis])
    return (slot.at, count), (slot.scales_at, 4 * channels)


def read_array(path: Path, offset: int, dtype: str, dims) -> np.ndarray:
    """`dims` values of `dtype` at `offset` of the file (a copy)."""
    count = int(np.prod(dims, dtype=np.int64))
    return np.fromfile(path, dtype=dtype, count=count, offset=offset).reshape(tuple(dims))
