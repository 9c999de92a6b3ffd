"""The backend interface, artifacts and sessions.

A backend turns one static ONNX model into an engine for a device and runs it:

* toolchain side: ``available(precision)``, ``versions()``, ``compile(onnx, target,
  precision, options) -> Artifact`` (may import onnx and the backend's own tools);
* runtime side: ``open(artifact) -> Session``, which imports only numpy and the
  backend's runtime library (never torch, onnx, typer or rich), so an embedded app
  on a device can load engines without the toolchain.

Backends are found through the ``adaexport.backends`` entry-point group (a
``name = "module:Class"`` entry; see pyproject.toml), so another package can add
one; the built-in ones are also known without installed metadata (`registry`).

Every artifact has a small JSON sidecar next to its main file (``<file>.json``)
holding its backend, precision, files, the options its session applies and the
facts of its build, so ``open(path)`` needs nothing else. Files are written to a
temporary directory inside the output directory and renamed into place, the sidecar
last: an interrupted compile leaves no sidecar, and no half-written engine.

This module imports the standard library and numpy only.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import lzma
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..atomic import STAGING_PREFIX, move_into_place, write_bytes_atomic  # noqa: F401 - re-exported for the backends
from ..errors import EXIT_ENVIRONMENT, BackendError  # noqa: F401 - BackendError: defined with the other user errors
from ..hashing import file_record, sha256_file  # noqa: F401 - sha256_file re-exported for the backends

SIDECAR_SUFFIX = ".json"
ARTIFACT_SCHEMA = "adaexport.artifact/1"
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


# --------------------------------------------------------------------------- errors


class BackendUnavailable(BackendError):
    """The backend (or the precision asked of it) cannot be used here; the message says why."""

    exit_code = EXIT_ENVIRONMENT


class EngineIntegrityError(BackendError):
    """An engine file that is missing or differs from the hash its manifest recorded."""


class PlanMismatch(BackendError):
    """An engine built for another system (TensorRT version, GPU, Jetson Linux release)."""

    exit_code = EXIT_ENVIRONMENT


# --------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str | None = None       # why not, when not ok

    def __bool__(self) -> bool:
        return self.ok

    @classmethod
    def yes(cls) -> "Availability":
        return cls(True, None)

    @classmethod
    def no(cls, reason: str) -> "Availability":
        return cls(False, reason)


@dataclasses.dataclass
class CompileOptions:
    """What a compile needs besides the ONNX, the target and the precision."""
    out_dir: Path                                   # where the artifact's files go
    name: str | None = None                         # file stem; default "<onnx stem>-<backend>-<precision>"
    calibration: np.ndarray | None = None           # int8: real preprocessed inputs (N, C, H, W) float32
    threads: int | None = None                      # None: the target's
    timing_cache: Path | None = None                # tensorrt: the family's timing-cache file
    dla_core: int | None = None                     # tensorrt: build for this DLA core (GPU fallback on)
    workspace_mb: int | None = None                 # tensorrt: None: the target's
    optimization_level: int | None = None           # tensorrt builder level; None: the target's
    check: bool = True                              # open the result once and run it on zeros
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Artifact:
    """A compiled engine: its files (relative to `root`; files[0] is the one to open),
    the options its session applies, and facts about how it was made.

    `name` is set for an engine that owns no file but its sidecar (``<name>.json`` in
    `root`): it reads the family's files, e.g. an OpenVINO engine that opens the point's
    ONNX and its shared weights. Such files (all of a named engine's, and any after the
    first of another, e.g. the ONNX a weight-stripped TensorRT plan is refitted from) may
    lie beside `root` ("../onnx/...", inside the build directory, `root`'s parent), never
    further out."""
    backend: str
    precision: str
    files: list[str]
    root: Path
    runtime: dict[str, Any] = dataclasses.field(default_factory=dict)
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)
    status: str = "ready"                           # ready | pending (tensorrt built later on the device)
    inputs: list[dict[str, Any]] = dataclasses.field(default_factory=list)    # name, shape, dtype
    outputs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    name: str | None = None                         # set: the engine owns only its sidecar <name>.json

    @property
    def path(self) -> Path:
        return self.root / self.files[0]

    @property
    def sidecar(self) -> Path:
        return self.root / (self.name + SIDECAR_SUFFIX) if self.name else sidecar_path(self.path)

    def paths(self) -> list[Path]:
        return [self.root / f for f in self.files]

    def to_json(self) -> dict[str, Any]:
        hashes = {}
        if self.status == "ready":
            hashes = {f: {"sha256": sha256_file(self.root / f), "size": (self.root / f).stat().st_size}
                      for f in self.files}
        return {"schema": ARTIFACT_SCHEMA, "backend": self.backend, "precision": self.precision,
                "status": self.status, "files": list(self.files), "hashes": hashes, "runtime": self.runtime,
                "inputs": self.inputs, "outputs": self.outputs, "facts": self.facts,
                **({"name": self.name} if self.name else {})}

    def record(self, relative_to: Path | None = None) -> dict[str, Any]:
        """The artifact's part of a manifest engine entry: backend, precision, status, file
        (relative to `relative_to`, default the artifact's root: the main file, or the sidecar
        of an engine that owns no other file), its sha256, under "files" the hash and size of
        every file a ready engine reads (its sidecar included: it holds the options the
        session applies; the family's shared files too), "size" their total (every byte the
        engine reads, shared ones included), and under "extra" every file, the session
        options and the facts."""
        base = Path(relative_to) if relative_to is not None else self.root

        def rel(path: Path) -> str:
            return os.path.relpath(path, base).replace(os.sep, "/")

        files = [rel(p) for p in self.paths()] + ([rel(self.sidecar)] if self.name else [])
        main = self.sidecar if self.name else self.path
        entry: dict[str, Any] = {"backend": self.backend, "precision": self.precision, "status": self.status,
                                 "file": rel(main),
                                 "extra": {"files": files, "runtime": self.runtime, "facts": self.facts}}
        if self.status == "ready":
            entry["sha256"] = sha256_file(main)
            entry["files"] = [file_record(p, base) for p in [*self.paths(), self.sidecar]]
            entry["size"] = sum(r["size"] for r in entry["files"])
        return entry

    def verify(self) -> None:
        """Raise BackendError unless every file is there with the hash the sidecar recorded."""
        try:
            recorded = json.loads(self.sidecar.read_text()).get("hashes", {})
        except (OSError, ValueError) as exc:
            raise BackendError(f"{self.sidecar}: cannot read ({exc})") from None
        for name in self.files:
            path = self.root / name
            if not path.is_file():
                raise BackendError(f"{path}: missing")
            if name in recorded and sha256_file(path) != recorded[name]["sha256"]:
                raise BackendError(f"{path}: its sha256 differs from the one recorded at compile time")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Artifact":
        """The artifact whose main file (or sidecar) is `path`."""
        path = Path(path)
        side = path if path.suffix == SIDECAR_SUFFIX else sidecar_path(path)  # no engine file is .json
        try:
            raw = json.loads(side.read_text())
        except FileNotFoundError:
            raise BackendError(f"{path}: no artifact description {side.name} next to it "
                               "(not an adaexport engine, or its compile did not finish)") from None
        except (OSError, ValueError) as exc:
            raise BackendError(f"{side}: unreadable artifact description ({exc})") from None
        if raw.get("schema") != ARTIFACT_SCHEMA:
            raise BackendError(f"{side}: not an {ARTIFACT_SCHEMA} description")
        files = list(raw["files"])
        name = raw.get("name")
        if name is not None and (not isinstance(name, str) or side.name != name + SIDECAR_SUFFIX):
            raise BackendError(f"{side}: its name {name!r} is not the sidecar's")
        for index, file in enumerate(files):   # files after the first may be the family's (beside the folder)
            if not safe_artifact_path(file, shared=name is not None or index > 0):
                raise BackendError(f"{side}: unsafe file path {file!r}")
        return cls(backend=raw["backend"], precision=raw["precision"], files=files, root=side.parent,
                   runtime=dict(raw.get("runtime", {})), facts=dict(raw.get("facts", {})),
                   status=raw.get("status", "ready"), inputs=list(raw.get("inputs", [])),
                   outputs=list(raw.get("outputs", [])), name=name)


def sidecar_path(main_file: Path) -> Path:
    return main_file.with_name(main_file.name + SIDECAR_SUFFIX)


def safe_artifact_path(file: str, shared: bool = False) -> bool:
    """Whether an artifact may name `file`: relative and inside its folder, or, for an
    engine reading the family's `shared` files, inside the folder above (one "../" at most,
    leading, as in "../onnx/weights.bin")."""
    parts = Path(file).parts
    if os.path.isabs(file) or not parts:
        return False
    if shared and parts[0] == "..":
        parts = parts[1:]
    return bool(parts) and ".." not in parts


class Session(abc.ABC):
    """A loaded engine. `run` takes {input name: array} and returns the outputs in the
    model's output order, as numpy arrays the caller owns."""

    input_names: list[str]
    output_names: list[str]
    # The options the session runs with (threads, providers, shared weights, precision):
    # recorded with every profile, so the runtime can tell whether a profile is of the
    # session it would serve with.
    options: dict[str, Any] = {}

    @abc.abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        ...

    def close(self) -> None:
        """Release the engine (also done when the session is garbage-collected)."""

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_feed(session: Session, inputs: dict[str, np.ndarray]) -> None:
    names = session.input_names
    if len(inputs) == len(names) and all(n in inputs for n in names):   # every call: keep it cheap
        return
    missing = [n for n in names if n not in inputs]
    extra = [n for n in inputs if n not in names]
    if missing or extra:
        raise ValueError(f"inputs {sorted(inputs)} do not match the engine's {session.input_names}")


class Backend(abc.ABC):
    """One inference backend. Subclasses set `name` and `runtime_modules` (the modules
    its runtime side may import besides numpy and the standard library)."""

    name: str = ""
    runtime_modules: tuple[str, ...] = ()   # what the runtime needs to open its engines (checked before opening)
    precisions: tuple[str, ...] = PRECISIONS
    extension: str = ""
    recipe: str | None = None       # bumped when the same inputs compile differently (build cache keys)
    thread_option: str | None = None          # the open() override that pins intra-op threads, if any
    accepts_providers: bool = False           # open() takes ONNX Runtime-style execution providers
    defers: bool = False            # unavailable here: the build records its engines as pending (pending())
    distributions: tuple[str, ...] = ()       # the packages whose installed version is its version fact

    # -- both sides
    @abc.abstractmethod
    def available(self, precision: str | None = None) -> Availability:
        """Whether this backend (and `precision` of it) can compile and run here, and why not."""

    @abc.abstractmethod
    def versions(self) -> dict[str, Any]:
        """Version facts to record in the manifest (library versions, device facts)."""

    # -- toolchain side
    @abc.abstractmethod
    def compile(self, onnx_path: Path, target, precision: str, options: CompileOptions) -> Artifact:
        """Compile one ONNX model for `target` (a Target) at `precision` into options.out_dir."""

    # -- runtime side
    @abc.abstractmethod
    def open(self, artifact: "Artifact | str | os.PathLike", **overrides: Any) -> Session:
        """Load an artifact (or the path of its main file) and return a session."""

    # -- deferred builds (backends with ``defers``: built later on the device)
    def pending(self, onnx_path: Path, target, precision: str, options: CompileOptions) -> Artifact:
        """Record an engine to be built on the device: its sidecar with status "pending"."""
        raise BackendError(f"{self.name} cannot defer a build to the device")

    def finish_pending(self, artifact: "Artifact | str | os.PathLike", target=None,
                       options: CompileOptions | None = None) -> Artifact:
        """Build a pending engine here (``adaexport compile DIR``)."""
        raise BackendError(f"{self.name} has no pending engines to finish")

    def support_table(self, version: str | None = None):
        """The ONNX operators and opsets this backend reads (a ``lint.OpSupport``), for the
        compatibility lint; None: no table, the lint checks nothing."""
        return None

    def lint_graph(self, proto, *, precision: str | None = None, dla: bool = False) -> list[str]:
        """What this backend refuses in an ONNX graph beyond its operator table (one line each)."""
        return []

    def weight_sharing(self, artifact: "Artifact") -> dict[str, Any]:
        """How the artifact's weights are held when the runtime keeps several engines of the
        family loaded (the manifest's ``weight_sharing``): ``group`` names the engines that map
        the same weight pages, None when the engine holds its own, and ``how`` says how it
        shares or why it cannot."""
        return {"group": None, "how": f"not shared: a {self.name} engine holds its own weights"}

    # -- helpers shared by the backends
    def require(self, precision: str | None = None) -> None:
        state = self.available(precision)
        if not state:
            what = f"{self.name} {precision}" if precision else self.name
            raise BackendUnavailable(f"{what} is not available: {state.reason}")

    def check_precision(self, precision: str) -> None:
        if precision not in self.precisions:
            raise BackendError(f"{self.name} does not build {precision!r} engines "
                               f"(it builds {', '.join(self.precisions)})")

    def artifact_name(self, onnx_path: Path, precision: str, options: CompileOptions) -> str:
        return options.name or f"{Path(onnx_path).stem}-{self.name}-{precision}"


# --------------------------------------------------------------------------- files


def digest_array(array: np.ndarray | None) -> str | None:
    if array is None:
        return None
    array = np.ascontiguousarray(array)
    return hashlib.sha256(str((array.dtype.str, array.shape)).encode() + array.tobytes()).hexdigest()


class Staging:
    """A temporary directory inside the output directory; `commit` renames its files into
    the output directory (atomic per file, in the order given) and removes it. Used as a
    context manager, it is removed whatever happens."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.out_dir))

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, name: str) -> Path:
        return self.dir / name

    def commit(self, names: Iterable[str]) -> None:
        for name in names:
            move_into_place(self.dir / name, self.out_dir / name)


COMPRESSED = ".xz"


def compress_graph(path: Path) -> str:
    """Replace the file at `path` (an engine's graph, or an OpenVINO IR's small .bin; its weights
    elsewhere) with its xz (LZMA preset 9e; no timestamp or name, so the bytes depend on the
    content alone); returns the new name.

    An int8 engine that reads the family's int8 twin is a graph and nothing else, of
    repetitive text (an OpenVINO IR's XML: 1.5 MB at full published depth, 37 kB compressed)
    or protobuf (ONNX Runtime's QDQ model: 238 kB, 23 kB). Over the 378 points of the trained
    grid the graphs, not the weights, were most of such a family's bytes. Both runtimes read a
    model from memory (`graph_bytes`), and such an engine cannot run without adaexport's
    binding of the twin in any case; ``unxz`` gives the plain file to look at."""
    path = Path(path)
    target = path.with_name(path.name + COMPRESSED)
    with open(path, "rb") as src:
        data = lzma.compress(src.read(), format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)
    write_bytes_atomic(target, data)
    path.unlink()
    return target.name


def graph_bytes(path: Path) -> bytes:
    """An engine's file, decompressed where `compress_graph` stored it compressed."""
    data = Path(path).read_bytes()
    if Path(path).name.endswith(COMPRESSED):
        try:
            return lzma.decompress(data, format=lzma.FORMAT_XZ)
        except lzma.LZMAError as exc:
            raise EngineIntegrityError(f"{Path(path).name}: not a readable xz file ({exc})") from None
    return data


def finalize(artifact: Artifact, session: "Session", check: bool) -> Artifact:
    """The end of every compile: record the session's inputs and outputs in the artifact,
    run it once on zeros (`check`), close it, and write the sidecar last."""
    artifact.inputs, artifact.outputs = session.io()
    feed = zeros_feed(artifact.inputs)
    if check and feed is not None:
        session.run(feed)
    session.close()
    write_sidecar(artifact)
    return artifact


def write_sidecar(artifact: Artifact) -> Path:
    """Write the artifact's sidecar atomically (after its files are in place)."""
    text = json.dumps(artifact.to_json(), indent=2, sort_keys=True) + "\n"
    write_bytes_atomic(artifact.sidecar, text.encode())
    return artifact.sidecar


def calibration_batches(calibration: np.ndarray, batch: int, limit: int | None = None) -> list[np.ndarray]:
    """Split real calibration inputs into the engine's fixed batch (dropping a partial tail)."""
    if calibration is None or len(calibration) < batch:
        raise BackendError(f"int8 needs calibration inputs: at least one batch of {batch} real samples")
    data = np.ascontiguousarray(calibration, dtype=np.float32)
    usable = len(data) - len(data) % batch
    if limit is not None:
        usable = min(usable, max(batch, limit - limit % batch))
    return [data[i:i + batch] for i in range(0, usable, batch)]


def io_spec(names: Sequence[str], shapes: Sequence[Sequence[int]], dtypes: Sequence[str]) -> list[dict[str, Any]]:
    """Input/output descriptions; a dynamic dimension stays a string (or None)."""
    return [{"name": n, "shape": [d if d is None or isinstance(d, str) else int(d) for d in s], "dtype": str(t)}
            for n, s, t in zip(names, shapes, dtypes)]


def zeros_feed(specs: list[dict[str, Any]]) -> dict[str, np.ndarray] | None:
    """Zero inputs for a smoke run of an engine, or None when a shape is not static."""
    if not all(isinstance(d, int) for s in specs for d in s["shape"]):
        return None
    return {s["name"]: np.zeros(s["shape"], dtype=s["dtype"]) for s in specs}
