"""The manifest's records: the model, the device, the engines (their files, parity,
precision, the shared-weights table), their profiles and accuracy.

Standard library only (the runtime reads the manifest through them). ``Manifest.from_json``
reads a parsed manifest.json, checking every modelled field (``ManifestError`` naming its
JSON path); ``Manifest.to_json`` writes it back unchanged. Where the numbers live is
described in docs/DESIGN.md ("Measurements in the manifest").
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .manifest_fields import (
    DEFAULT_MODE, SCHEMA_ID, FLOPS_FRONT, ManifestError, Record, boolean, dict_of, field, format_path, integer,
    list_of, matching, nonempty, number, one_of, optional, path_problem, record, sha256, short, text,
)

__all__ = ["AccuracyRecord", "DEFAULT_MODE", "DeviceRecord", "EngineRecord", "FLOPS_FRONT", "FileRecord",
           "InputSpec", "Manifest", "ManifestError", "ModelRecord", "ParityRecord", "Point", "ProfileRecord",
           "SCHEMA_ID", "SharedTensor"]

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
STATUSES = ("ready", "pending")
_fraction = number(0, 1)
_size = integer(0)
_posint = integer(1)


def _relpath(value, path):
    problem = path_problem(value)
    if problem:
        raise ManifestError(f"{format_path(path)}: unsafe path {short(value, 1000)}: {problem}")
    return value


dataclass = dataclasses.dataclass(kw_only=True)


@dataclass
class FileRecord(Record):
    """One file an engine reads: its path in the build directory, sha256 and size."""
    CLOSED = True
    file: str = field(_relpath, required=True)
    sha256: str = field(sha256, required=True)
    size: int = field(_size, required=True)


@dataclass
class SharedTensor(Record):
    """One row of a family ONNX's external-data table: a tensor whose bytes are
    ``weights.bin[offset:offset + length]``, shareable between sessions (a MatMul, Gemm or
    Conv weight), written at build time so the runtime need not parse the ONNX."""
    CLOSED = True
    name: str = field(nonempty, required=True)
    offset: int = field(_size, required=True)
    length: int = field(_size, required=True)
    dtype: str = field(nonempty, required=True)
    shape: list = field(list_of(_size), required=True)


@dataclass
class Preprocessing(Record):
    resize: int = field(_posint, required=True)
    crop: int = field(_posint, required=True)
    mean: list = field(list_of(number(), 1), required=True)
    std: list = field(list_of(number(above=0), 1), required=True)
    interpolation: str = field(nonempty, required=True)


@dataclass
class InputSpec(Record):
    """The engines' one input: its name, static shape (N, C, H, W) and preprocessing."""
    name: str = field(nonempty, required=True)
    shape: list = field(list_of(_posint, 4, 4), required=True)
    dtype: str = field(one_of("float32"), required=True)
    layout: str = field(one_of("NCHW"), required=True)
    preprocessing: Preprocessing = field(record(Preprocessing), required=True)


@dataclass
class ModelRecord(Record):
    name: str = field(nonempty, required=True)
    sha256: str = field(sha256, required=True)
    task: str = field(one_of("classification", "classification+features"), required=True)
    attention: str = field(one_of("full", "block"), required=True)
    input: InputSpec = field(record(InputSpec), required=True)
    outputs: list = field(list_of(dict_of(lambda v, p: v), 1), required=True)
    trained_grid: dict = field(dict_of(list_of(_posint)), required=True)
    class_names: list | None = field(optional(list_of(text)))


@dataclass
class DeviceRecord(Record):
    """The target the build is for, the building host and the backend versions."""
    target: str = field(nonempty, required=True)
    host: dict = field(dict_of(lambda v, p: v), required=True)
    backends: dict = field(dict_of(text), required=True)
    target_facts: dict | None = field(optional(dict_of(lambda v, p: v)))


@dataclass
class Tolerance(Record):
    max_abs: float | None = field(optional(number(0)))
    min_top1_agreement: float | None = field(optional(_fraction))
    max_accuracy_drop: float | None = field(optional(number(0)))


@dataclass
class ParityRecord(Record):
    """How an engine compares with PyTorch (or, on the device, with a reference engine)."""
    max_abs: float = field(number(0), required=True)
    max_rel: float = field(number(0), required=True)
    top1_agreement: float = field(_fraction, required=True)
    samples: int = field(_posint, required=True)
    tolerance: Tolerance = field(record(Tolerance), required=True)
    passed: bool = field(boolean, required=True)


@dataclass
class AccuracyRecord(Record):
    """top-1/top-5 (0..1) of ``adaexport eval`` next to PyTorch's at the same point."""
    dataset: str | None = field(optional(text))
    samples: int | None = field(optional(integer(0)))
    top1: float | None = field(optional(_fraction))
    top5: float | None = field(optional(_fraction))
    reference_top1: float | None = field(optional(_fraction))
    reference_top5: float | None = field(optional(_fraction))
    evaluated: str | None = field(optional(text))
    device: str | None = field(optional(text))


def _number_or_none(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass
class ProfileRecord(Record):
    """One engine measured on one device in one power mode (``adaexport profile``)."""
    latency_ms: dict = field(dict_of(lambda v, p: v), factory=dict)
    session: dict = field(dict_of(lambda v, p: v), factory=dict)
    memory: dict = field(dict_of(lambda v, p: v), factory=dict)
    energy: dict = field(dict_of(lambda v, p: v), factory=dict)
    load_ms: float | None = field(optional(number(0)))

    def latency(self, statistic: str = "p50") -> float | None:
        value = _number_or_none(self.latency_ms.get(statistic))
        return None if value is None else float(value)

    def latencies(self) -> dict[str, float]:
        """Every latency statistic that is a number (p50, p90, ..., mean), in ms."""
        return {k: float(v) for k, v in self.latency_ms.items() if _number_or_none(v) is not None}

    def memory_bytes(self) -> int | None:
        """What the engine holds: its resident-set growth, plus the device memory the
        resident set cannot see (Jetson nvmap, a GPU's) where measured; None unmeasured."""
        rss = _number_or_none(self.memory.get("rss_bytes"))
        return None if rss is None else int(rss + (_number_or_none(self.memory.get("device_bytes")) or 0))

    def energy_mj(self) -> float | None:
        return _number_or_none(self.energy.get("per_inference_mj"))

    def idle_power_w(self) -> float | None:
        return _number_or_none(self.energy.get("idle_power_w"))


_profiles = dict_of(dict_of(record(ProfileRecord)))   # device -> mode -> ProfileRecord


@dataclass
class Point(Record):
    CLOSED = True
    tokens: int = field(_posint, required=True)
    width: int = field(_posint, required=True)
    depth: int = field(_posint, required=True)


@dataclass
class EngineRecord(Record):
    """One engine of the family: one (point, backend, precision)."""
    KEYS = {"sidecar": "extra"}
    id: str = field(nonempty, required=True)
    point: Point = field(record(Point), required=True)
    backend: str = field(nonempty, required=True)
    precision: str = field(one_of(*PRECISIONS), required=True)
    file: str = field(_relpath, required=True)
    sha256: str | None = field(sha256)
    size: int | None = field(_size)
    flops: int = field(integer(0), required=True)
    params: int = field(integer(0), required=True)
    status: str | None = field(one_of(*STATUSES))
    parity: ParityRecord | None = field(optional(record(ParityRecord)), required=True)
    files: list = field(list_of(record(FileRecord), 1), factory=list)
    shared_tensors: list = field(list_of(record(SharedTensor)), factory=list)
    profile: dict = field(_profiles, factory=dict)
    accuracy: AccuracyRecord | None = field(optional(record(AccuracyRecord)))
    accuracies: dict = field(dict_of(record(AccuracyRecord)), factory=dict)
    sidecar: dict | None = field(optional(dict_of(lambda v, p: v)))   # JSON "extra": files, runtime, facts

    @property
    def ready(self) -> bool:
        return (self.status or "ready") == "ready"

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    @property
    def is_family_onnx(self) -> bool:
        """The fp32 engine that is the family's exported .onnx itself (run by ONNX Runtime,
        its tensors in the shared weights file): every compiled engine has a sidecar."""
        return self.sidecar is None and self.precision == "fp32" and self.file.endswith(".onnx")

    def file_records(self) -> list[FileRecord]:
        """Every file the engine reads (main file, the backend's other files, the sidecar
        and, for the family's ONNX, the shared weights); for an entry written before that
        list existed, its main file alone."""
        return list(self.files) or [FileRecord(file=self.file, sha256=self.sha256 or "", size=self.size)]

    def profile_at(self, device: str | None, mode: str = DEFAULT_MODE) -> ProfileRecord | None:
        """The engine's profile on ``device`` in power mode ``mode``, or None if not profiled."""
        return (self.profile.get(device) or {}).get(mode) if device else None

    def accuracy_on(self, device: str | None = None) -> float | None:
        """Measured top-1 (0..1): as measured on ``device`` when evaluated there (int8
        accuracy differs between CPUs), else the latest evaluation; None if never."""
        found = (self.accuracies.get(device) if device else None) or self.accuracy
        return None if found is None or found.top1 is None else float(found.top1)

    def facts(self) -> dict:
        """The compiled artifact's facts (its sidecar's), e.g. a pending engine's ``finish``."""
        return dict((self.sidecar or {}).get("facts") or {})


def _pareto(value, path):
    return dict_of(list_of(nonempty))(value, path)


_created = matching(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|\+00:00)$",
                    "an ISO-8601 UTC timestamp such as 2025-01-31T12:00:00Z")


@dataclass
class Manifest(Record):
    """DIR/manifest.json."""
    schema: str = field(one_of(SCHEMA_ID), required=True)
    tool: dict = field(dict_of(lambda v, p: v), required=True)
    created: str = field(_created, required=True)
    model: ModelRecord = field(record(ModelRecord), required=True)
    device: DeviceRecord = field(record(DeviceRecord), required=True)
    weights: FileRecord | None = field(optional(record(FileRecord)), required=True)
    engines: list = field(list_of(record(EngineRecord)), required=True)
    profiling: dict = field(dict_of(dict_of(lambda v, p: v)), factory=dict)
    pareto: dict = field(_pareto, factory=dict)
    build: dict | None = field(optional(dict_of(lambda v, p: v)))

    @classmethod
    def from_json(cls, data: Any, path: tuple = ()) -> "Manifest":
        if isinstance(data, dict) and "schema" in data and data["schema"] != SCHEMA_ID:
            raise ManifestError(f"$.schema: unsupported manifest schema {short(data['schema'])} "
                                f"(this adaexport reads {SCHEMA_ID!r})")
        manifest = super().from_json(data, path)
        problem = next(iter(manifest.problems()), None)
        if problem:
            raise ManifestError(f"{format_path(problem[0])}: {problem[1]}")
        return manifest

    def problems(self):
        """(json path, message) of the rules a schema cannot state: unique engine ids, pareto
        ids that exist, and the sha256 and size every ready engine must have."""
        seen: dict[str, int] = {}
        for i, engine in enumerate(self.engines):
            if engine.ready:
                for key in ("sha256", "size"):
                    if getattr(engine, key) is None:
                        yield ("engines", i), f"a ready engine needs {key!r} (only a pending one may lack it)"
            if engine.id in seen:
                yield ("engines", i, "id"), f"duplicate engine id {short(engine.id)} (also engines[{seen[engine.id]}])"
            else:
                seen[engine.id] = i
        for mode, ids in self.pareto.items():
            for j, eid in enumerate(ids):
                if eid not in seen:
                    yield ("pareto", mode, j), f"unknown engine id {short(eid)}"

    def engine(self, engine_id: str) -> EngineRecord:
        return next(e for e in self.engines if e.id == engine_id)

    def by_id(self) -> dict[str, EngineRecord]:
        return {e.id: e for e in self.engines}

    # ------------------------------------------------------------- where the numbers live

    def profiled_devices(self) -> list[str]:
        """Every device with at least one profiled engine (or a profiling section), first seen first."""
        return profiled_devices(self.profiling, [e.profile for e in self.engines])

    def profiled_modes(self, device: str) -> list[str]:
        return profiled_modes([e.profile for e in self.engines], device)

    def default_device(self) -> str | None:
        """The first profiled device of the manifest's own target, else the only profiled
        device, else None."""
        return default_device(self.profiled_devices(), self.device.target)

    def device_identities(self) -> dict[str, dict | None]:
        """Every profiled device and the identity facts recorded with it (None: none)."""
        return {d: (self.profiling.get(d) or {}).get("identity") for d in self.profiled_devices()}

    def resolve_device(self, name: str) -> str | None:
        """A profiled device by its key, or by its target's name; None when neither is profiled."""
        return resolve_device(self.profiled_devices(), name)

    def front(self, device: str | None, mode: str = DEFAULT_MODE) -> list[str]:
        """The stored front of ``device``/``mode``, else the FLOPs front."""
        if device and front_key(device, mode) in self.pareto:
            return list(self.pareto[front_key(device, mode)])
        return list(self.pareto.get(FLOPS_FRONT, []))

    def modes_of(self, device: str) -> dict:
        """The power modes recorded in ``profiling[device]``."""
        return dict((self.profiling.get(device) or {}).get("modes") or {})


def front_key(device: str, mode: str) -> str:
    """The key of a device's power mode in ``manifest["pareto"]``."""
    return f"{device}/{mode}"


def target_of(device: str) -> str:
    """The target class of a profile key (``x86-cpu:<model>:<hash>`` or ``x86-cpu``)."""
    return device.split(":", 1)[0]


# The rules behind Manifest's device queries, over plain mappings (``measurements`` applies
# them to a manifest's JSON): ``profiles`` is each engine's device -> mode -> profile.

def profiled_devices(profiling: dict, profiles) -> list[str]:
    seen = dict.fromkeys(profiling)
    for profile in profiles:
        seen.update(dict.fromkeys(profile))
    return list(seen)


def profiled_modes(profiles, device: str) -> list[str]:
    seen: dict[str, None] = {}
    for profile in profiles:
        seen.update(dict.fromkeys(profile.get(device) or {}))
    return list(seen)


def default_device(devices: list[str], own_target: str | None) -> str | None:
    mine = [d for d in devices if target_of(d) == own_target]
    if mine:
        return mine[0]
    return devices[0] if len(devices) == 1 else None


def resolve_device(devices: list[str], name: str) -> str | None:
    if name in devices:
        return name
    return next((d for d in devices if target_of(d) == name), None)
