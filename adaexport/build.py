"""The build pipeline: export a family of static ONNX models, check each against
PyTorch, and write the manifest, with every stage cached by content hash.

Cache records live in DIR/.adaexport/cache/<stage>/<key>.json, each written
atomically *after* the artefact it describes, so a build killed at any point
(SIGKILL included) resumes: a record whose artefact is missing or has another
hash is ignored and redone. Keys hash everything a result depends on, so changing
one option redoes only what depends on it (e.g. a new tolerance re-judges cached
parity metrics without re-exporting or re-running anything).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .atomic import remove_leftovers, write_bytes_atomic
from .backends.onnx_tensors import shared_tensor_table
from .datasets import CALIBRATION_SAMPLES, NO_DATASET, RANDOM_SEED, DatasetError, model_inputs, random_inputs
from .errors import UsageError
from .hashing import file_record
from .manifest import MANIFEST_NAME, SCHEMA_ID, host_info, sha256_file, utc_now, write_manifest
from .model import ATTENTION_MODES, AdaPerceiverConfig, LoadedModel, load_checkpoint
from .model.flops import count_flops, count_params
from .profiles import BuildProfile, load_profile
from .space import ConfigPoint, build_grid, is_front_preset
from .validate import Parity, compare, run_batched, torch_reference

ONNX_DIR = "onnx"
ENGINES_DIR = "engines"
WEIGHTS_NAME = "weights.bin"
CACHE_DIR = ".adaexport/cache"
EXPORTER = "torchscript"  # fixed, so artefact hashes never depend on a fallback


class BuildFailed(RuntimeError):
    """The build ran but an engine failed its check; the manifest records why."""

    def __init__(self, messages: list[str]):
        super().__init__("; ".join(messages))
        self.messages = messages


@dataclasses.dataclass
class BuildRequest:
    out: Path
    model: Path | None = None           # None: the bundled demo
    target: str = "x86-cpu"
    profile: str = "default"
    grid: str | None = None             # a preset; front / front:K are chosen from a search
    search: Path | None = None          # --search FILE for --grid front[:K] (None: search the dataset)
    tokens: list[int] | None = None
    widths: list[int] | None = None
    depths: list[int] | None = None
    attention: str | None = None        # None: the checkpoint's own
    batch: int = 1
    dataset: str | None = None          # None: the demo's data where it fits the model, else "none"
    parity: bool = True                 # False for `adaexport export`
    measure: bool = True                # profile stage (on the device the build is for); --no-profile


@dataclasses.dataclass
class BuildResult:
    manifest: dict
    directory: Path
    exported: int                       # points exported in this run (0 when all were cached)
    parity_runs: int                    # parity checks run in this run
    failures: list[str]


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class Cache:
    """Records of finished work: DIR/.adaexport/cache/<stage>/<key>.json."""

    def __init__(self, directory: Path):
        self.root = directory / CACHE_DIR

    def get(self, stage: str, key: str) -> dict | None:
        path = self.root / stage / f"{key}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def put(self, stage: str, key: str, record: dict) -> None:
        folder = self.root / stage
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(folder / f"{key}.json", json.dumps(record, sort_keys=True).encode())


def _valid(directory: Path, record: dict | None) -> bool:
    """A record counts only if its file is there with the recorded hash."""
    if not record:
        return False
    path = directory / record["file"]
    return path.is_file() and path.stat().st_size == record["size"] and sha256_file(path) == record["sha256"]


def _export_key(base: dict, metadata: dict, weights_key: str, point: ConfigPoint) -> str:
    return _digest({**base, **metadata, "stage": "export", "point": point.as_dict(), "weights_key": weights_key})


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _file_record(directory: Path, path: Path, **extra) -> dict:
    return {**file_record(path, directory), **extra}


def parity_inputs(loaded: LoadedModel, dataset: str, samples: int, batch: int):
    """Real labelled inputs for parity (a multiple of the batch), int8 calibration samples
    (the next ones in the dataset, so engines are not checked on what calibrated them,
    unless the dataset is too small), and a digest identifying both.

    With no dataset (`none`): `samples` seeded random inputs (rounded up to whole
    batches), no labels and no calibration data."""
    cfg = loaded.config
    if dataset == NO_DATASET:
        count = -(-samples // batch) * batch
        inputs = random_inputs(count, cfg.in_channels, cfg.img_size)
        digest = hashlib.sha256(f"random:{RANDOM_SEED}:".encode() + inputs.tobytes()).hexdigest()
        return inputs, None, inputs[:0], digest
    try:
        inputs, labels = model_inputs(dataset, cfg, limit=samples + CALIBRATION_SAMPLES, spread=True)
    except DatasetError as exc:
        raise DatasetError(f"parity data: {exc}") from None
    usable = min(samples, len(inputs)) - min(samples, len(inputs)) % batch
    if usable == 0:
        raise DatasetError(f"parity data: {len(inputs)} sample(s) do not fill one batch of {batch}")
    calibration = inputs[usable:] if len(inputs) - usable >= 16 else inputs[:CALIBRATION_SAMPLES]
    inputs, labels = np.ascontiguousarray(inputs[:usable]), labels[:usable]
    digest = hashlib.sha256(inputs.tobytes() + labels.tobytes() + calibration.tobytes()).hexdigest()
    return inputs, labels, np.ascontiguousarray(calibration), digest


def _demo_fits(loaded: LoadedModel) -> bool:
    from .demo import DEMO_MODEL

    demo_cfg = AdaPerceiverConfig.from_file(DEMO_MODEL / "config.json")
    return (demo_cfg.in_channels, demo_cfg.num_classes) == (loaded.config.in_channels, loaded.config.num_classes)


def resolve_dataset(loaded: LoadedModel, dataset: str | None) -> str:
    """The build's dataset spec: as given (`demo` must fit the model), or without one the
    demo's data where it fits the model and `none` (random inputs, fp32 only) where not."""
    if dataset is None:
        return "demo" if _demo_fits(loaded) else NO_DATASET
    if dataset == "demo" and not _demo_fits(loaded):
        raise UsageError(
            f"the demo's evaluation data (Fashion-MNIST, 1 channel, 10 classes) does not fit {loaded.name} "
            f"({loaded.config.in_channels} channels, {loaded.config.num_classes} classes); "
            "pass --dataset npz:FILE, imagefolder:DIR or fashion-mnist:DIR, or --dataset none (fp32 only)")
    return dataset


def _no_dataset_reason(precision: str) -> str:
    """Why an engine other than fp32 is not built without a dataset."""
    why = "calibrates on real images" if precision == "int8" else "is judged by accuracy on labelled images"
    return f"{precision} {why} and the build has no dataset; pass --dataset SPEC to build it"


def run_build(request: BuildRequest, reporter) -> BuildResult:
    from .demo import DEMO_MODEL
    from .export import build_weights, export_point, write_weights

    if request.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {request.batch}")
    from .targets import get_target

    profile: BuildProfile = load_profile(request.profile)
    target = get_target(request.target)
    loaded = load_checkpoint(request.model if request.model is not None else DEMO_MODEL)
    cfg, model = loaded.config, loaded.model
    attention = request.attention if request.attention is not None else cfg.default_attention
    if attention not in ATTENTION_MODES:
        raise UsageError(f"--attention: attention must be one of {', '.join(ATTENTION_MODES)}, got {attention!r}")
    out = Path(request.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    dataset = resolve_dataset(loaded, request.dataset) if request.parity else (request.dataset or "demo")
    explicit = any(v is not None for v in (request.tokens, request.widths, request.depths))
    preset = request.grid if (request.grid is not None or explicit) else profile.grid_preset
    selection = None
    if is_front_preset(preset) and not explicit:
        from .search import front_grid

        if request.search is None and dataset == NO_DATASET:
            raise UsageError(f"--grid {preset} searches the build's dataset for its front, and there is none: "
                             "pass --dataset SPEC or --search FILE")
        points, selection = front_grid(loaded, attention, preset, request.search, dataset, out, Cache(out),
                                       reporter)
        warnings = []
    else:
        if request.search is not None:
            raise UsageError("--search FILE goes with --grid front or --grid front:K")
        points, warnings = build_grid(cfg, preset, request.tokens, request.widths, request.depths)
    for w in warnings:
        reporter.warn(w)
    choices = [("onnxruntime", "fp32")]  # `export`: the ONNX family alone
    skipped: list[dict] = []
    if request.parity:  # bad data or a missing tolerance fails here, before any work
        choices, unavailable = _engine_choices(target, profile)
        for reason in unavailable:
            reporter.warn(f"{target.name}: not building {reason}")
        if dataset == NO_DATASET:
            skipped = [{"backend": b, "precision": p, "reason": _no_dataset_reason(p)}
                       for b, p in choices if p != "fp32"]
            choices = [(b, p) for b, p in choices if p == "fp32"]
        for _, precision in choices:
            profile.tolerance(precision)
        if dataset == NO_DATASET and request.dataset is None:
            reporter.info(f"no dataset: the demo's data (Fashion-MNIST, 1 channel, 10 classes) does not fit "
                          f"{loaded.name}; fp32 parity on seeded random inputs, reduced precisions not built "
                          "(pass --dataset SPEC for real images)")
        for skip in skipped:
            reporter.warn(f"{target.name}: not building {skip['backend']} {skip['precision']}: {skip['reason']}")
        samples = profile.random_samples if dataset == NO_DATASET else profile.parity_samples
        inputs, labels, calibration, digest = parity_inputs(loaded, dataset, samples, request.batch)

    # every input is checked: only now is anything created (but a search's cache)
    onnx_dir = out / ONNX_DIR
    _make_out(out, onnx_dir)
    _remove_leftovers(out)
    cache = Cache(out)
    versions = _versions()
    base = {"tool": __version__, "model": loaded.sha256, "attention": attention, "batch": request.batch,
            "exporter": EXPORTER, "image_size": cfg.img_size, **versions}
    metadata = {"adaexport.source_sha256": loaded.sha256, "adaexport.tool_version": __version__,
                "adaexport.model_name": loaded.name}

    # 1. the shared weights file (depends on the model, not on the grid)
    weights_key = _digest({**base, "stage": "weights"})
    weights_record = cache.get("weights", weights_key)
    weights_ok = _valid(out, weights_record)
    todo = {}
    for point in points:
        key = _export_key(base, metadata, weights_key, point)
        if not (weights_ok and _valid(out, cache.get("export", key))):
            todo[point] = key
    exported = 0
    reporter.stage("export", len(points))
    for point in points:
        if point not in todo:
            reporter.advance(point.id, "cached")
    if todo:
        # the in-memory store is needed to export against, whether or not its file is current
        store = build_weights(model, attention=attention, batch=request.batch, weights_name=WEIGHTS_NAME,
                              exporter=EXPORTER)
        if not weights_ok:
            write_weights(store, onnx_dir / WEIGHTS_NAME)
            weights_record = _file_record(out, onnx_dir / WEIGHTS_NAME)
            cache.put("weights", weights_key, weights_record)
        for point, key in todo.items():
            result = export_point(model, point, onnx_dir, store, attention=attention, batch=request.batch,
                                  weights_name=WEIGHTS_NAME, metadata=metadata, exporter=EXPORTER)
            cache.put("export", key, _file_record(out, result.path, op_types=result.op_types))
            exported += 1
            reporter.advance(point.id, "exported")
    reporter.end_stage()
    export_records = {p: cache.get("export", _export_key(base, metadata, weights_key, p)) for p in points}

    # 2. engines: the ONNX itself is the ONNX Runtime fp32 engine; every other (backend,
    # precision) the target names is compiled from it (TensorRT without TensorRT: pending)
    engines: list[dict] = []
    failures: list[str] = []
    parity_runs = 0
    if request.parity:
        reporter.stage("engines", len(points) * len(choices))
        references = _ReferenceFamily(model, points, attention, inputs)
    for point in points:
        record = export_records[point]
        base_entry = {"point": point.as_dict(), "flops": count_flops(cfg, point), "params": count_params(cfg, point),
                      "op_types": record["op_types"]}
        reference = _LazyReference(references, point) if request.parity else None
        for backend, precision in choices:
            engine_id = f"{point.id}-{backend}-{precision}"
            if backend == "onnxruntime" and precision == "fp32":
                main = {k: record[k] for k in ("file", "sha256", "size")}
                entry = {"backend": backend, "precision": precision, "status": "ready", **main,
                         "files": [main, {k: weights_record[k] for k in ("file", "sha256", "size")}],
                         "shared_tensors": shared_tensor_table(out / record["file"], WEIGHTS_NAME),
                         "lint": _lint(out, record, backend, precision)}
            else:
                entry = _compiled_engine(out, cache, base, target, record, backend, precision, calibration,
                                         reporter)
            entry = {"id": engine_id, **base_entry, **entry, "parity": None}
            if request.parity and entry["status"] == "ready":
                tol = profile.tolerance(precision)
                result, ran = _parity(out, cache, base, entry, reference, inputs, labels, digest, dataset,
                                     request)
                parity_runs += ran
                entry["parity"] = result.record(tol)
                if dataset == NO_DATASET:
                    entry["parity"].update(inputs="random", seed=RANDOM_SEED)
                if not result.passes(tol):
                    failures.append(result.failure_message(f"{point.id} ({backend} {precision})", tol))
                reporter.advance(engine_id, f"max_abs {result.max_abs:.2g}, top-1 agreement {result.top1_agreement:.3f}")
            elif request.parity:
                reporter.advance(engine_id, "pending: " + entry["extra"]["facts"].get("finish", "built on the device"))
            engines.append(entry)
    if request.parity:
        reporter.end_stage()

    # 3. the manifest
    manifest = {
        "schema": SCHEMA_ID,
        "tool": {"name": "adaexport", "version": __version__},
        "created": utc_now(),
        "model": {
            "name": loaded.name, "sha256": loaded.sha256,
            "task": "classification+features" if cfg.distilled else "classification",
            "attention": attention,
            "input": {"name": "image", "shape": [request.batch, cfg.in_channels, cfg.img_size, cfg.img_size],
                      "dtype": "float32", "layout": "NCHW", "preprocessing": cfg.preprocessing_spec()},
            "outputs": [{"name": "logits", "shape": [request.batch, cfg.num_classes], "dtype": "float32"}]
            + ([{"name": "features", "shape": [request.batch, cfg.num_patches, cfg.output_feat_dim],
                 "dtype": "float32"}] if cfg.distilled else []),
            "trained_grid": {"tokens": list(cfg.mask_token_grans), "widths": list(cfg.mat_dims),
                             "depths": list(range(1, cfg.depth + 1))},
            **({"class_names": list(cfg.class_names)} if cfg.class_names else {}),
        },
        "device": {"target": target.name, "host": host_info(), "backends": _backend_versions(choices),
                   "toolchain": {"torch": versions["torch"], "onnx": versions["onnx"]},
                   "target_facts": target.describe()},
        "build": {"profile": profile.name, "dataset": dataset if request.parity else None,
                  "batch": request.batch, "exporter": EXPORTER, **({"skipped": skipped} if skipped else {}),
                  **({"selection": selection} if selection else {})},
        "weights": {k: weights_record[k] for k in ("file", "sha256", "size")},
        "engines": engines,
    }
    previous = out / MANIFEST_NAME
    _carry_measurements(previous, manifest)
    if request.parity and request.measure and profile.profiling.enabled and not failures:
        _profile_stage(out, cache, manifest, target, profile, reporter)
    if previous.is_file():
        manifest["created"] = _keep_created(previous, manifest)
    write_manifest(out, manifest)
    _prune(onnx_dir, {out / r["file"] for r in export_records.values()} | {onnx_dir / WEIGHTS_NAME})
    if (out / ENGINES_DIR).is_dir():
        keep = {out / f for e in engines for f in e.get("extra", {}).get("files", [])}
        kept = {p for e in engines for p in _beside(out / ENGINES_DIR, e, "support_files", "shared_files")}
        _prune(out / ENGINES_DIR, keep | kept | {p.with_name(p.name + ".json") for p in keep}, every_file=True)
    return BuildResult(manifest=manifest, directory=out, exported=exported, parity_runs=parity_runs,
                       failures=failures)


def _make_out(out: Path, onnx_dir: Path) -> None:
    """Create the build directory, or say in one line why it cannot be (a file in the way,
    /proc, no permission, an immutable or read-only folder)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    try:
        onnx_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):  # writable? (an unnamed file where the system allows)
            pass
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write the build directory there ({exc.strerror or exc})") from None


def _profile_stage(out: Path, cache: Cache, manifest: dict, target, profile: BuildProfile, reporter) -> None:
    """4. profile every ready engine on this machine, when it is the device built for
    (a cross-build leaves it to `adaexport profile DIR` on the device); cached per engine."""
    from .profiling.family import profile_build_stage
    from .targets import detect_target

    try:
        here = detect_target()
    except Exception:  # noqa: BLE001 - an undetectable machine is not the target
        here = None
    if here != target.name:
        reporter.info(f"not profiling: this machine is {here or 'unknown'}, not {target.name}; "
                      f"run `adaexport profile {out}` on the device")
        return
    profile_build_stage(out, manifest, target, profile.profiling,
                        cache_get=lambda key: cache.get("profile", key),
                        cache_put=lambda key, record: cache.put("profile", key, record),
                        digest=_digest, reporter=reporter)


def _carry_measurements(previous: Path, manifest: dict) -> None:
    """Keep what the previous manifest measured (profiles from this and other devices and
    power modes, `adaexport eval` accuracy) for engines whose file, model and shared weights
    are unchanged: a rebuild never drops them; the profile stage then replaces this
    device's current mode."""
    from .pareto import update_pareto

    try:
        old = json.loads(previous.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(old, dict) or not isinstance(old.get("engines"), list):
        return
    same_source = ((old.get("model") or {}).get("sha256") == manifest["model"]["sha256"]
                   and (old.get("weights") or {}).get("sha256") == (manifest.get("weights") or {}).get("sha256"))
    if not same_source:
        return
    by_id = {e.get("id"): e for e in old["engines"] if isinstance(e, dict)}
    for engine in manifest["engines"]:
        before = by_id.get(engine["id"])
        if not before or before.get("sha256") != engine.get("sha256"):
            continue
        for section in ("profile", "accuracy", "accuracies"):
            if before.get(section):
                engine[section] = before[section]
    if old.get("profiling"):
        manifest["profiling"] = old["profiling"]
    update_pareto(manifest)


def _engine_choices(target, profile: BuildProfile) -> tuple[list[tuple[str, str]], list[str]]:
    """The target's (backend, precision) pairs that the profile wants and that can be built
    here or deferred to the device, the ONNX Runtime fp32 engine (the exported ONNX itself)
    always first; and why each other wanted pair cannot be built here."""
    from .backends import engine_choices

    pairs, skipped = [("onnxruntime", "fp32")], []
    for choice in engine_choices(target):
        if not profile.wants(choice.backend, choice.precision):
            continue
        if not (choice.availability or choice.deferred):
            skipped.append(f"{choice.backend} {choice.precision}: {choice.availability.reason}")
        elif (choice.backend, choice.precision) not in pairs:
            pairs.append((choice.backend, choice.precision))
    return pairs, skipped


def _backend_versions(choices) -> dict[str, str]:
    from .backends import backend_versions

    names = sorted({backend for backend, _ in choices})
    return {name: str(facts.get(name, "unknown")) for name, facts in backend_versions(names).items()}


def _lint(out: Path, onnx_record: dict, backend: str, precision: str) -> list[str]:
    """What the backend's ONNX support lacks for this model (empty: nothing)."""
    from .backends import lint_engine

    return lint_engine(out / onnx_record["file"], backend, precision)


def _compiled_engine(out: Path, cache: Cache, base: dict, target, onnx_record: dict, backend: str,
                     precision: str, calibration: np.ndarray, reporter) -> dict:
    """Compile (or record as pending) one engine from a point's ONNX, cached by content."""
    from .backends import compile_or_defer, get_backend

    recipe = get_backend(backend).recipe
    key = _digest({**base, "stage": "compile", "entry": 2, "onnx_sha256": onnx_record["sha256"], "backend": backend,
                   **({"recipe": recipe} if recipe else {}), "precision": precision, "target": target.source,
                   "calibration": hashlib.sha256(calibration.tobytes()).hexdigest() if precision == "int8" else None})
    record = cache.get("compile", key)
    if record is not None and all(_valid(out, f) for f in record["files"]):
        return record["entry"]
    onnx_path = out / onnx_record["file"]
    problems = _lint(out, onnx_record, backend, precision)
    for problem in problems:
        reporter.warn(f"{onnx_path.name} for {backend} {precision}: {problem}")
    engines_dir = out / ENGINES_DIR
    engines_dir.mkdir(exist_ok=True)
    artifact = compile_or_defer(onnx_path, engines_dir, target, backend, precision,
                                calibration if precision == "int8" else None)
    if "trtexec" in artifact.facts:
        reporter.info(f"trtexec equivalent: {artifact.facts['trtexec']}")
    entry = artifact.record(out)
    entry["lint"] = problems
    support = sorted(_beside(engines_dir, entry, "support_files"))
    files = [_file_record(out, p) for p in [*artifact.paths(), artifact.sidecar, *support] if p.is_file()]
    cache.put("compile", key, {"entry": entry, "files": files})
    return entry


def _parity(out: Path, cache: Cache, base: dict, entry: dict, reference, inputs, labels, digest: str, dataset: str,
            request: BuildRequest) -> tuple[Parity, int]:
    """Parity metrics of a ready engine (cached by the engine's hash and the inputs)."""
    key = _digest({**base, "stage": "parity", "engine_sha256": entry["sha256"], "backend": entry["backend"],
                   "precision": entry["precision"], "inputs": digest, "dataset": dataset})
    metrics = cache.get("parity", key)
    ran = 0
    if metrics is None:
        from .backends import open_engine

        session = open_engine(out, entry)
        candidate = run_batched(lambda x: session.run({"image": x}), inputs, request.batch)
        metrics = dataclasses.asdict(compare(reference.outputs(), candidate, labels))
        cache.put("parity", key, metrics)
        ran = 1
    return Parity(**metrics), ran


class _LazyReference:
    """PyTorch's outputs at a point, computed once and only when a parity check runs
    (a cached rebuild needs none); see `_ReferenceFamily` for how."""

    def __init__(self, family: "_ReferenceFamily", point: ConfigPoint):
        self.family, self.point = family, point
        self._outputs = None

    def outputs(self) -> list[np.ndarray]:
        if self._outputs is None:
            self._outputs = self.family.outputs(self.point)
        return self._outputs


class _ReferenceFamily:
    """PyTorch's outputs for the build's points: every depth of one (tokens, width) comes
    from one forward pass that writes out after each block (`model.shared_pass`), computed
    the first time one of those points needs its reference and handed out once per point.
    A distilled model (a features output besides the logits, which the shared pass does
    not give) is run point by point through the static module. Either way the inputs go
    in chunks of 64 (of 1 when the count is not a multiple of 64)."""

    CHUNK = 64

    def __init__(self, model, points: list[ConfigPoint], attention: str, inputs: np.ndarray | None):
        self.model, self.attention, self.inputs = model, attention, inputs
        self.depths: dict[tuple[int, int], set[int]] = {}
        for p in points:
            self.depths.setdefault((p.tokens, p.width), set()).add(p.depth)
        self._ready: dict[ConfigPoint, list[np.ndarray]] = {}
        self.passes = 0  # forward passes run (for the tests)

    @property
    def shared(self) -> bool:
        return not self.model.config.distilled

    def _chunk(self) -> int:
        return self.CHUNK if len(self.inputs) % self.CHUNK == 0 else 1

    def outputs(self, point: ConfigPoint) -> list[np.ndarray]:
        if point in self._ready:
            return self._ready.pop(point)
        if not self.shared:
            from .model.static import specialize

            self.passes += 1
            return torch_reference(specialize(self.model, point, self.attention), self.inputs, self._chunk())
        self._ready = self._shared_pass(point.tokens, point.width, self.depths.get((point.tokens, point.width),
                                                                                   {point.depth}) | {point.depth})
        return self._ready.pop(point)

    def _shared_pass(self, tokens: int, width: int, depths: set[int]) -> dict[ConfigPoint, list[np.ndarray]]:
        import torch

        from .model.shared_pass import PassPlan, SharedPass

        shared = SharedPass(self.model, PassPlan(self.attention, {tokens: (tokens,)}, (width,), tuple(sorted(depths))))
        self.passes += 1
        chunk = self._chunk()
        logits: dict[ConfigPoint, list[np.ndarray]] = {}
        for i in range(0, len(self.inputs), chunk):
            for point, out in shared(torch.from_numpy(self.inputs[i:i + chunk])).items():
                logits.setdefault(point, []).append(out.numpy())
        return {point: [np.concatenate(parts)] for point, parts in logits.items()}


def _keep_created(path: Path, manifest: dict) -> str:
    """A rebuild that changes nothing keeps the manifest byte-identical (same `created`)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return manifest["created"]
    strip = lambda m: {k: v for k, v in m.items() if k != "created"}  # noqa: E731
    return old.get("created", manifest["created"]) if strip(old) == json.loads(json.dumps(strip(manifest))) \
        else manifest["created"]


def _remove_leftovers(out: Path) -> None:
    """Before a build does any work: what killed runs left in the build directory and the
    folders adaexport writes in it (one build per directory at a time)."""
    cache = out / CACHE_DIR
    stages = [p for p in cache.iterdir() if p.is_dir()] if cache.is_dir() else []
    remove_leftovers([out, out / ONNX_DIR, out / ENGINES_DIR, *stages])


def _beside(root: Path, entry: dict, *kinds: str) -> set[Path]:
    """Files a backend keeps beside an engine (facts "support_files": what it is built from, e.g.
    a pending TensorRT engine's QDQ model; "shared_files": caches the family shares)."""
    facts = entry.get("extra", {}).get("facts", {})
    return {Path(os.path.normpath(root / f)) for kind in kinds for f in facts.get(kind, [])}


def _prune(directory: Path, keep: set[Path], every_file: bool = False) -> None:
    """Remove artefacts of points or engines no longer in the family, and temp files of
    killed runs (in the engines folder, every file not kept; backend caches are folders)."""
    for path in directory.iterdir():
        if path.is_file() and path not in keep and (every_file or path.suffix == ".onnx" or path.name.endswith(".tmp")):
            path.unlink()
