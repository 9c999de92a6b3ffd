"""The manifest's records: the model, the device, the engines (their files, parity,
precision, how they share their weights), their profiles and accuracy (the measured sections'
records live in ``manifest_measured``), and the queries and updates the commands share.

Standard library only (the runtime reads the manifest through them). ``Manifest.from_json``
reads a parsed manifest.json, checking every modelled field (``ManifestError`` naming its
JSON path); ``Manifest.to_json`` writes it back unchanged. Every reader and writer of the
manifest goes through these records (and ``manifest.new_manifest`` for a new build's), so
the manifest's keys are spelled here, in ``manifest_measured``, ``manifest_reader``,
``manifest`` and the JSON Schema only. Where the numbers live is described in
docs/DESIGN.md ("Measurements in the manifest").
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .manifest_fields import (
    DEFAULT_MODE, SCHEMA_ID, FLOPS_FRONT, ManifestError, Record, boolean, dict_of, field, format_path, integer,
    list_of, matching, nonempty, number, one_of, optional, path_problem, record, sha256, short, text,
)
from .manifest_measured import AccuracyRecord, DeviceProfiling, ModeRun, ProfileRecord

__all__ = ["AccuracyRecord", "DEFAULT_MODE", "DeviceProfiling", "DeviceRecord", "EngineRecord", "FLOPS_FRONT",
           "FileRecord", "InputSpec", "Manifest", "ManifestError", "ModeRun", "ModelRecord", "ParityRecord", "Point",
           "ProfileRecord", "SCHEMA_ID", "WeightSharing"]

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

    @classmethod
    def pick(cls, data: dict) -> "FileRecord":
        """The file record within a larger one (a build cache's export record, say)."""
        return cls.from_json({f.name: data[f.name] for f in cls._fields()})


@dataclass
class WeightSharing(Record):
    """How an engine's weights are held when the runtime keeps several engines of the family
    loaded, as its backend says at build time: the engines of one ``group`` map the same
    weight pages (each distinct page resident once); ``group`` null: the engine holds its own
    weights, and ``how`` says why it cannot share."""
    CLOSED = True
    group: str | None = field(optional(nonempty), required=True)
    how: str = field(nonempty, required=True)


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
    tie_margin: float | None = field(optional(number(0)))   # near-ties: in standard deviations of the logits


@dataclass
class ParityRecord(Record):
    """How an engine compares with PyTorch (or, on the device, with a reference engine)."""
    max_abs: float = field(number(0), required=True)
    max_rel: float = field(number(0), required=True)
    top1_agreement: float = field(_fraction, required=True)
    samples: int = field(_posint, required=True)
    tolerance: Tolerance = field(record(Tolerance), required=True)
    passed: bool = field(boolean, required=True)
    accuracy_drop: float | None = field(optional(number()))   # PyTorch's top-1 - the engine's, in points
    near_ties: int | None = field(optional(integer(0)))       # changed samples PyTorch nearly tied (not judged)
    inputs: str | None = field(optional(one_of("dataset", "random")))   # random: seeded random inputs
    seed: int | None = field(optional(integer(0)))            # with inputs random: their seed


_profiles = dict_of(dict_of(record(ProfileRecord)))   # device -> mode -> ProfileRecord


@dataclass
class Point(Record):
    CLOSED = True
    tokens: int = field(_posint, required=True)
    width: int = field(_posint, required=True)
    depth: int = field(_posint, required=True)

    @property
    def id(self) -> str:
        """The point's name, as ``space.ConfigPoint.id`` writes it: ``t8_w32_d1``."""
        return f"t{self.tokens}_w{self.width}_d{self.depth}"


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
    weight_sharing: WeightSharing | None = field(optional(record(WeightSharing)))   # None: a build before it was recorded
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

    def latency_ms(self, device: str | None, mode: str = DEFAULT_MODE, statistic: str = "p50") -> float | None:
        """One latency statistic (p50, p90, ..., mean) on ``device`` in ``mode``, or None."""
        found = self.profile_at(device, mode)
        return None if found is None else found.latency(statistic)

    def accuracy_on(self, device: str | None = None) -> float | None:
        """Measured top-1 (0..1): as measured on ``device`` when evaluated there (int8
        accuracy differs between CPUs), else the latest evaluation; None if never."""
        found = (self.accuracies.get(device) if device else None) or self.accuracy
        return None if found is None or found.top1 is None else float(found.top1)

    def facts(self) -> dict:
        """The compiled artifact's facts (its sidecar's), e.g. a pending engine's ``finish``."""
        return sidecar_facts(self.sidecar)

    def sidecar_files(self) -> list[str]:
        """The files the backend wrote for the engine, as its sidecar lists them."""
        return list((self.sidecar or {}).get("files") or [])

    @classmethod
    def new(cls, engine_id: str, point: dict, flops: int, params: int, op_types: list, entry: dict
            ) -> "EngineRecord":
        """A build's engine before its parity check: its point's facts, then what the
        backend recorded of it (``entry``: backend, precision, status, files...)."""
        return cls.from_json({"id": engine_id, "point": point, "flops": flops, "params": params,
                              "op_types": op_types, **entry, "parity": None})


def sidecar_facts(sidecar: dict | None) -> dict:
    """The facts of a compiled artifact's sidecar (``extra``) JSON, e.g. ``finish``, ``support_files``."""
    return dict((sidecar or {}).get("facts") or {})


def entry_facts(entry: dict) -> dict:
    """The sidecar facts of what a backend recorded of an engine (``EngineRecord.new``'s ``entry``)."""
    return sidecar_facts(entry.get(EngineRecord.KEYS["sidecar"]))


def with_lint(entry: dict, problems: list[str]) -> dict:
    """A backend's entry with what the backend's ONNX support lacks for the model."""
    return {**entry, "lint": problems}


def family_onnx_entry(main: FileRecord, weights: FileRecord, sharing: dict, lint: list) -> dict:
    """What a build records of the fp32 engine that is a point's ONNX itself (run by ONNX
    Runtime, its tensors in the shared weights file; ``sharing``: how its sessions share
    their weights, a ``WeightSharing``'s JSON), in ``EngineRecord.new``'s ``entry``."""
    files = [main.to_json(), weights.to_json()]
    return with_lint({"backend": "onnxruntime", "precision": "fp32", "status": "ready", **main.to_json(),
                      "size": main.size + weights.size, "files": files, "weight_sharing": sharing}, lint)


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
    profiling: dict = field(dict_of(record(DeviceProfiling)), factory=dict)   # device -> DeviceProfiling
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

    def same_but_created(self, other: "Manifest") -> bool:
        """Whether the two differ in nothing but ``created`` (as JSON; key order aside)."""
        strip = lambda m: json.loads(json.dumps({k: v for k, v in m.to_json().items()  # noqa: E731
                                                 if k != m._key("created")}))
        return strip(self) == strip(other)

    def tool_version(self) -> str | None:
        """The adaexport version that wrote the manifest."""
        return self.tool.get("version")

    def engine(self, engine_id: str) -> EngineRecord:
        return next(e for e in self.engines if e.id == engine_id)

    def by_id(self) -> dict[str, EngineRecord]:
        return {e.id: e for e in self.engines}

    # ------------------------------------------------------------- where the numbers live

    def profiled_devices(self) -> list[str]:
        """Every device with at least one profiled engine (or a profiling section), first seen first."""
        seen = dict.fromkeys(self.profiling)
        for engine in self.engines:
            seen.update(dict.fromkeys(engine.profile))
        return list(seen)

    def profiled_modes(self, device: str) -> list[str]:
        """The power modes of ``device`` with at least one profiled engine."""
        seen: dict[str, None] = {}
        for engine in self.engines:
            seen.update(dict.fromkeys(engine.profile.get(device) or {}))
        return list(seen)

    def default_device(self) -> str | None:
        """The first profiled device of the manifest's own target, else the only profiled
        device, else None."""
        devices = self.profiled_devices()
        mine = [d for d in devices if target_of(d) == self.device.target]
        if mine:
            return mine[0]
        return devices[0] if len(devices) == 1 else None

    def device_identities(self) -> dict[str, dict | None]:
        """Every profiled device and the identity facts recorded with it (None: none)."""
        return {d: self.profiling[d].identity if d in self.profiling else None for d in self.profiled_devices()}

    def resolve_device(self, name: str) -> str | None:
        """A profiled device by its key, or by its target's name (the first profiled machine of
        that target); None when neither is profiled."""
        devices = self.profiled_devices()
        if name in devices:
            return name
        return next((d for d in devices if target_of(d) == name), None)

    def front(self, device: str | None, mode: str = DEFAULT_MODE) -> list[str]:
        """The stored front of ``device``/``mode``, else the FLOPs front."""
        if device and front_key(device, mode) in self.pareto:
            return list(self.pareto[front_key(device, mode)])
        return list(self.pareto.get(FLOPS_FRONT, []))

    def modes_of(self, device: str) -> dict[str, ModeRun]:
        """The power modes recorded in ``profiling[device]``."""
        return dict(self.profiling[device].modes) if device in self.profiling else {}

    def set_pareto(self, fronts: dict[str, list[str]]) -> None:
        """Store the fronts; with none, the manifest has no ``pareto`` key at all."""
        self.pareto = dict(fronts)
        if not fronts:
            self.key_order = tuple(k for k in self.key_order if k != self._key("pareto"))

    def set_profile(self, device: str, mode: str, profiles: dict[str, dict], section: DeviceProfiling) -> None:
        """Record one device's run in one power mode: ``profiles`` (engine id -> the
        profile's JSON) and the device's ``profiling`` section; other devices' and other
        modes' numbers are kept."""
        for engine in self.engines:
            if engine.id in profiles:
                engine.profile = {**engine.profile, device: {**engine.profile.get(device, {}),
                                                             mode: ProfileRecord.from_json(profiles[engine.id])}}
        self.profiling = {**self.profiling, device: section}

    def carry_measurements(self, old: "Manifest") -> None:
        """Keep what ``old`` measured (profiles, accuracies, the profiling sections) for the
        engines whose file is unchanged, when both were built from the same model and
        shared weights: a rebuild never drops them."""
        weights = lambda m: m.weights.sha256 if m.weights else None  # noqa: E731
        if (old.model.sha256, weights(old)) != (self.model.sha256, weights(self)):
            return
        before = old.by_id()
        for engine in self.engines:
            previous = before.get(engine.id)
            if previous is None or previous.sha256 != engine.sha256:
                continue
            for name in ("profile", "accuracy", "accuracies"):
                if getattr(previous, name):
                    setattr(engine, name, getattr(previous, name))
        if old.profiling:
            self.profiling = old.profiling


def front_key(device: str, mode: str) -> str:
    """The key of a device's power mode in the manifest's ``pareto`` fronts."""
    return f"{device}/{mode}"


def target_of(device: str) -> str:
    """The target class of a profile key (``x86-cpu:<model>:<hash>`` or ``x86-cpu``)."""
    return device.split(":", 1)[0]
