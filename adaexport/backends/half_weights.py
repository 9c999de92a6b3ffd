"""The family's weights in half precision, for the engines that run in fp16 or bf16.

OpenVINO's fp16 and bf16 engines are IRs whose weights are bound at load (`openvino_backend.
half_ir`, `shared_int8.detach_half_weights`). Bound to the fp32 family they would ship 4 bytes
a parameter where their precision needs 2: a deployment of fp16 engines alone would carry
twice the bytes of an fp16 model. So they read ``weights-fp16-<hash>.bin`` beside the family's
``weights.bin``: every float32 of that file as float16 (round to nearest even), at half its
offset, so each tensor of the fp32 file (and every prefix a narrower point reads) is at the
same place, halved. ``<hash>`` is the start of the fp32 file's sha256: the name says which
weights it was made from, a new export gets a new file, and a file of that name is never
stale. One per family, made by the first engine that needs it. A value beyond float16's
range (65504) becomes infinite here; OpenVINO's own float16 compression, which the IR is
compared with byte for byte, clamps or keeps such a tensor in float32 instead, so the IR
keeps its own copy of it (an attention mask's -3.4e38, clamped to -65504: softmax weight 0
either way).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..hashing import sha256_file
from .base import BackendError

_CHUNK = 1 << 24          # float32 values converted at a time (64 MiB read, 32 MiB written)


def half_weights(weights: Path) -> Path:
    """The float16 twin of the float32 weights file `weights` (made now unless it exists)."""
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

