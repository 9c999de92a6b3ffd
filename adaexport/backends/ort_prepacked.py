"""Sharing a family's weights between ONNX Runtime sessions without giving up prepacking.

MLAS prepacks every constant MatMul/Gemm weight into the layout its kernels read; a session
that runs on the plain, unpacked tensors (``SessionOptions.add_initializer`` of one shared
buffer turns prepacking off) is 6-30% slower. ONNX Runtime can instead write the prepacked
buffers beside a saved optimised model (``session.save_external_prepacked_constant_
initializers``, external data, 4 KiB-aligned) and, loading that model, memory-maps them
and runs on the mapped pages. So, once per device:

1. every family ONNX is saved optimised (the "all" level the sessions run at: hardware
   specific, hence a device-local cache keyed by the CPU's kernel-selecting features and
   the ONNX Runtime version) with its prepacked buffers external;
2. the points' external data (original tensors and prepacked buffers) go into ONE file,
   ``prepacked.bin``, each distinct byte string once (sha256), page-aligned; every point's
   model is rewritten to read its tensors there.

Every session of the family then maps the same file: the pages of a buffer used by several
points are resident once (the kernel's page cache; other processes share them too), and
each session runs on prepacked weights. Original tensors that a kernel prepacked are mapped
but never read, so they cost disk, not memory. The cache's ``prepacked.json`` records, per
model, the spans its session keeps resident (``PrepackedFamily.spans``), so the runtime
counts the shared pages once (``runtime.memory``). The cache's disk cost: the family's distinct
tensors twice (original + packed), beside ``weights.bin``; see docs/DESIGN.md.

Standard library, numpy-free; onnx and onnxruntime are imported on use.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from ..atomic import atomic_path
from ..hashing import sha256_file
from .base import BackendError, EngineIntegrityError

CACHE_ROOT = Path(".adaexport") / "ort-prepacked"   # inside the build directory
PACKED = "prepacked.bin"
META = "prepacked.json"
ALIGN = 4096                       # ONNX Runtime maps external data at page-aligned offsets
MECHANISM = "onnxruntime prepacked weights, memory-mapped from one deduplicated file"
GROUP = "onnxruntime-prepacked"
# The family ONNX engines' manifest record (``weight_sharing``): they share through this cache.
SHARING = {"group": GROUP, "how": MECHANISM}
FORMAT = 2                         # 2: each model's resident pages recorded (the cache key names it)
_PREPACKED_KEY = "prepacked_"      # external_data entries "prepacked_N": "KEY|offset;length;..."


def cache_key(engines: list, weights_sha256: str | None) -> str:
    """What the cache depends on: ONNX Runtime's version, the CPU's kernel-selecting features,
    the family's weights and every engine file."""
    import onnxruntime as ort

    from ..hardware.machine import cpu_facts

    facts = {"format": FORMAT, "onnxruntime": ort.__version__, "cpu": cpu_facts(), "weights": weights_sha256,
             "engines": sorted((e.id, e.sha256) for e in engines)}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def _save_optimised(src: Path, dst: Path) -> None:
    """ONNX Runtime's optimised model of ``src`` ("all" level) with its prepacked buffers."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(dst)
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", dst.name + ".data")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    options.add_session_config_entry("session.save_external_prepacked_constant_initializers", "1")
    try:
        ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise BackendError(f"onnxruntime could not prepack {src.name}: {exc}") from None


class _Deduplicated:
    """An append-only file in which every distinct byte string is stored once, page-aligned."""

    def __init__(self, path: Path):
        self.file = open(path, "wb")
        self.offsets: dict[str, int] = {}
        self.size = 0

    def put(self, data: bytes) -> int:
        key = hashlib.sha256(data).hexdigest()
        found = self.offsets.get(key)
        if found is None:
            pad = -self.size % ALIGN
            self.file.write(b"\0" * pad)
            found = self.offsets[key] = self.size + pad
            self.file.write(data)
            self.size = found + len(data)
        return found

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


def _relocate(model_path: Path, packed: _Deduplicated) -> tuple[Any, list[list[int]]]:
    """The model at ``model_path`` with every external tensor and prepacked buffer moved into
    ``packed`` (its own data file is read, not changed), and the ``[offset, length]`` in
    ``packed`` of what its session keeps resident: the prepacked buffers, and the tensors no
    kernel prepacked (a prepacked tensor's original is mapped but never read)."""
    import onnx

    proto = onnx.load(str(model_path), load_external_data=False)
    data_files: dict[str, Any] = {}
    resident: set[tuple[int, int]] = set()

    def read(location: str, offset: int, length: int) -> bytes:
        if location not in data_files:
            data_files[location] = open(model_path.parent / location, "rb")
        f = data_files[location]
        f.seek(offset)
        return f.read(length)

    try:
        for tensor in proto.graph.initializer:
            entries = {e.key: e for e in tensor.external_data}
            if "location" not in entries:
                continue
            location = entries["location"].value
            offset, length = int(entries["offset"].value), int(entries["length"].value)
            entries["offset"].value = str(packed.put(read(location, offset, length)))
            buffers = []
            for key, entry in entries.items():
                if key.startswith(_PREPACKED_KEY):        # "KEY|offset;length;..." (one buffer each)
                    name, _, where = entry.value.partition("|")
                    fields = where.split(";")
                    blob = read(location, int(fields[0]), int(fields[1]))
                    fields[0] = str(packed.put(blob))
                    entry.value = f"{name}|{';'.join(fields)}"
                    buffers.append((int(fields[0]), len(blob)))
            resident.update(buffers or [(int(entries["offset"].value), length)])
            entries["location"].value = PACKED
    finally:
        for f in data_files.values():
            f.close()
    return proto, sorted([o, n] for o, n in resident)


def build_cache(directory: Path, engines: list, out: Path) -> dict:
    """Write the family's prepacked models and their one data file into ``out`` (made
    atomically: a folder renamed into place); returns the cache's description."""
    import onnx

    from . import verify_engines

    verify_engines(directory, engines)      # what is packed is what was built
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".prepacking-", dir=out.parent))
    try:
        packed = _Deduplicated(stage / PACKED)
        models = {}
        for engine in engines:
            scratch = stage / "scratch"
            scratch.mkdir()
            saved = scratch / "model.onnx"
            _save_optimised(Path(directory) / engine.file, saved)
            proto, resident = _relocate(saved, packed)
            shutil.rmtree(scratch)
            name = f"{engine.id}.onnx"
            onnx.save(proto, str(stage / name))
            models[engine.id] = {"file": name, "sha256": sha256_file(stage / name), "resident": resident}
        packed.close()
        meta = {"mechanism": MECHANISM, "models": models, "packed": {
            "file": PACKED, "bytes": packed.size, "sha256": sha256_file(stage / PACKED)}}
        with atomic_path(stage / META) as tmp:
            tmp.write_text(json.dumps(meta, indent=1))
        try:
            os.replace(stage, out)
        except OSError:
            if not (out / META).is_file():      # another process finished first: keep its cache
                raise
        _prune(out)
        return meta
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _prune(kept: Path) -> None:
    """Remove the caches of other keys beside ``kept`` (an older ONNX Runtime, CPU or build:
    never read again); staging folders of builds in progress stay."""
    for other in kept.parent.iterdir():
        if other != kept and other.is_dir() and not other.name.startswith("."):
            shutil.rmtree(other, ignore_errors=True)


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


class PrepackedFamily:
    """A family's prepacked ONNX Runtime models (built on first use, then reused), checked
    against their recorded sha256 before a session opens one."""

    def __init__(self, directory: Path, engines: list, weights_sha256: str | None):
        self.directory = Path(directory)
        self.engines = [e for e in engines if e.is_family_onnx]
        key = cache_key(self.engines, weights_sha256)
        self.path = self.directory / CACHE_ROOT / key
        if not self.path.is_dir() and not os.access(_existing_parent(self.path), os.W_OK):
            # a read-only build directory: the user's cache (the key names the family's bytes)
            home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
            self.path = home / "adaexport" / "ort-prepacked" / key
        self._meta: dict | None = None
        self._lock = threading.Lock()

    def meta(self) -> dict:
        with self._lock:
            if self._meta is None:
                meta_file = self.path / META
                if not meta_file.is_file():
                    build_cache(self.directory, self.engines, self.path)
                self._meta = json.loads(meta_file.read_text())
                packed = self._meta["packed"]
                self._check(packed)
            return self._meta

    def _check(self, record: dict) -> None:
        path = self.path / record["file"]
        if not path.is_file() or sha256_file(path) != record["sha256"]:
            raise EngineIntegrityError(f"the prepacked cache {path} differs from what was written "
                                       f"(delete {self.path} to rebuild it)")

    def model(self, engine_id: str) -> Path:
        """The prepacked model of the family engine ``engine_id``, checked."""
        record = self.meta()["models"].get(engine_id)
        if record is None:
            raise BackendError(f"{engine_id} is not a family ONNX engine of the prepacked cache")
        self._check(record)
        return self.path / record["file"]

    def spans(self, engine_id: str) -> list[tuple[int, int]]:
        """The (offset, length) spans of ``prepacked.bin`` that a session of ``engine_id`` keeps
        resident, in whole pages (``ALIGN``): the pages every session mapping them shares."""
        return [(int(o), -(-int(n) // ALIGN) * ALIGN) for o, n in self.meta()["models"][engine_id]["resident"]]

    def describe(self) -> str:
        """How the sessions opened from this cache share (``OrtSession.options["sharing"]``)."""
        return f"prepacked weights mapped from {self.path / PACKED}"

    @property
    def bytes_on_disk(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir()) if self.path.is_dir() else 0
