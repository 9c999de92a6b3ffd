"""The family's shared weights file: a content-addressed tensor store (`WeightStore`) and
`externalize`, which moves a model's initializers into it (see adaexport.export for how a
family shares it: every distinct tensor stored once, narrower FFN weights as byte
prefixes of the widest, offsets aligned for mapping)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO, Iterable

import numpy as np
import onnx
from onnx import numpy_helper

EXTERNAL_THRESHOLD = 1024  # bytes; smaller initializers stay embedded in the .onnx file
_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "string_data", "int64_data",
                "double_data", "uint64_data")


class ExportError(RuntimeError):
    """The exporter produced a graph that is not a clean static model."""


def _alignment(nbytes: int) -> int:
    """Large tensors start on a 64 KiB boundary (the mmap granularity runtimes use),
    the rest on 64 bytes."""
    return 1 << 16 if nbytes >= 1 << 20 else 64


def _tensor_bytes(tensor: onnx.TensorProto) -> bytes:
    """The tensor's data as ONNX raw_data: little-endian, row-major."""
    if tensor.HasField("raw_data") and tensor.raw_data:
        return tensor.raw_data
    array = numpy_helper.to_array(tensor)
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


class WeightStore:
    """A content-addressed, append-only tensor file.

    `add(data)` returns (offset, length) of bytes equal to `data`: the offset of an
    identical tensor already stored, of a stored tensor that `data` is a prefix of,
    or of `data` appended now (aligned, zero padding). Stored tensors are indexed by the
    hash of their first `key_bytes` bytes; a tensor's candidates (those sharing its
    head) are compared with it byte for byte, read back from the file. No hash of a
    whole tensor is computed: at published size hashing the 560 MB was 0.3 s of every
    token count's export, where the comparison with the one candidate a tensor of
    trained (or random) weights has costs a read from the page cache and a memcmp.
    """

    def __init__(self, file: BinaryIO, key_bytes: int = EXTERNAL_THRESHOLD):
        self.file = file
        self.key_bytes = key_bytes
        self.frozen = False  # once frozen, add() only finds tensors and returns None for new ones
        self.size = 0
        self._by_head: dict[bytes, list[tuple[int, int]]] = {}
        self._scratch = bytearray()
        self.stats = {"stored": 0, "exact": 0, "prefix": 0, "stored_bytes": 0, "referenced_bytes": 0}

    def index(self) -> dict:
        """What a frozen store knows about its tensors, as plain data: with the written file,
        `from_index` makes an equal store in another process (build --jobs)."""
        if not self.frozen:
            raise ValueError("only a frozen store has a final index")
        return {"key_bytes": self.key_bytes, "size": self.size,
                "by_head": {k: list(v) for k, v in self._by_head.items()}}

    @classmethod
    def from_index(cls, path: Path, index: dict) -> "WeightStore":
        """The frozen store whose bytes are the file at `path` and whose tensors `index` lists."""
        store = cls(open(path, "rb"), key_bytes=index["key_bytes"])  # noqa: SIM115 - closed by the caller
        store.size, store.frozen = index["size"], True
        store._by_head = {k: list(v) for k, v in index["by_head"].items()}
        return store

    def attach(self, path: Path) -> None:
        """Read the stored bytes from `path` (the store written out, same bytes) from now on,
        releasing the in-memory copy: at published size that is the checkpoint's size again
        for the rest of the build. Only a frozen store, which never appends."""
        if not self.frozen:
            raise ValueError("only a frozen store reads from its written file")
        if Path(path).stat().st_size != self.size:
            raise ValueError(f"{path}: {Path(path).stat().st_size} bytes, the store holds {self.size}")
        old, self.file = self.file, open(path, "rb")  # noqa: SIM115 - lives as long as the store
        old.close()

    def _holds(self, offset: int, data) -> bool:
        """Whether the stored bytes at `offset` start with `data` (read into one buffer kept
        for every comparison, not a new tensor-sized one each time)."""
        if len(self._scratch) < len(data):
            self._scratch = bytearray(len(data))
        stored = memoryview(self._scratch)[:len(data)]
        self.file.seek(offset)
        got = self.file.readinto(stored)
        self.file.seek(0, os.SEEK_END)
        return got == len(data) and np.array_equal(np.frombuffer(stored, np.uint8), np.frombuffer(data, np.uint8))

    def add(self, data: bytes) -> tuple[int, int] | None:
        if len(data) < self.key_bytes:
            raise ValueError(f"tensors under {self.key_bytes} bytes are not stored (got {len(data)})")
        self.stats["referenced_bytes"] += len(data)
        head = hashlib.sha256(data[:self.key_bytes]).digest()
        candidates = self._by_head.get(head, [])
        # an identical tensor first, then those `data` is a prefix of, in the order stored
        for offset, length in sorted(candidates, key=lambda candidate: candidate[1] != len(data)):
            if length >= len(data) and self._holds(offset, data):
                self.stats["exact" if length == len(data) else "prefix"] += 1
                return offset, len(data)
        if self.frozen:
            return None
        pad = -self.size % _alignment(len(data))
        self.file.seek(0, os.SEEK_END)
        if pad:
            self.file.write(b"\0" * pad)
        offset = self.size + pad
        self.file.write(data)
        self.size = offset + len(data)
        self._by_head.setdefault(head, []).append((offset, len(data)))
        self.stats["stored"] += 1
        self.stats["stored_bytes"] += len(data)
        return offset, len(data)


def externalize(proto: onnx.ModelProto, store: WeightStore, location: str,
                threshold: int = EXTERNAL_THRESHOLD) -> None:
    """Move every initializer of at least `threshold` bytes into `store` and point the
    TensorProto at it (external data: location, offset, length). With a frozen store,
    tensors it does not hold stay embedded."""
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            place = {e.key: e.value for e in tensor.external_data}
            if place.get("location") != location:
                raise ExportError(f"{tensor.name}: already external, in {place.get('location')}")
            point_to(tensor, location, int(place["offset"]), int(place["length"]))  # in canonical form
            continue
        data = _tensor_bytes(tensor)
        if len(data) < threshold:
            continue
        found = store.add(data)
        if found is not None:
            point_to(tensor, location, *found)


def point_to(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    """Make `tensor` read its data from `location` at (offset, length), and hold none itself."""
    for field in _DATA_FIELDS:
        tensor.ClearField(field)
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


TABLE_SUFFIX = ".tensors.json"     # weights.bin -> weights.tensors.json


def table_path(weights: Path) -> Path:
    """Where the tensor table of the weights file `weights` lies (beside it)."""
    weights = Path(weights)
    return weights.with_name(weights.stem + TABLE_SUFFIX)


def _output_channel_axis(node: onnx.NodeProto, index: int, ndim: int) -> int | None:
    """The axis of an initializer's output channels where `node` reads it as a weight
    (Gemm/MatMul input B, Conv W), else None."""
    if index != 1:
        return None
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm" and ndim == 2:
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if node.op_type == "MatMul" and ndim == 2:
        return 1
    return None


def tensor_table(protos: Iterable[onnx.ModelProto], location: str) -> list[dict]:
    """The float32 tensors `protos` (the templates that lay the weights file out, one per trained
    token count) read from `location`, one entry per stored tensor, in file order: name, offset,
    length, dims and, for a weight of a Gemm, MatMul or Conv (what int8 engines quantize), the
    axis of its output channels ("axis": None for the rest, and for a tensor read as a weight
    along two axes). A tensor read whole by one template and as a prefix by another (a rotary
    table at fewer tokens) is listed once, whole.

    The weights file alone does not say where a tensor ends; narrower points read prefixes
    of these tensors. int8 engines lay out the family's int8 weights from it (`int8_twin`)."""
    by_offset: dict[int, dict] = {}
    for proto in protos:
        axes: dict[str, list] = {}
        for node in proto.graph.node:
            for index, name in enumerate(node.input):
                axes.setdefault(name, []).append((node, index))
        for tensor in proto.graph.initializer:
            place = {e.key: e.value for e in tensor.external_data}
            if tensor.data_location != onnx.TensorProto.EXTERNAL or place.get("location") != location \
                    or tensor.data_type != onnx.TensorProto.FLOAT:
                continue
            found = {_output_channel_axis(node, index, len(tensor.dims)) for node, index in axes.get(tensor.name, ())}
            entry = {"name": tensor.name, "offset": int(place["offset"]), "length": int(place["length"]),
                     "dims": [int(d) for d in tensor.dims], "axis": found.pop() if len(found) == 1 else None}
            known = by_offset.get(entry["offset"])
            if known is None or entry["length"] > known["length"]:
                by_offset[entry["offset"]] = entry
    return [by_offset[offset] for offset in sorted(by_offset)]
