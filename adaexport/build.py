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
from .datasets import DatasetError, model_inputs
from .errors import UsageError
from .manifest import MANIFEST_NAME, SCHEMA_ID, host_info, sha256_file, utc_now, write_manifest
from .model import ATTENTION_MODES, LoadedModel, load_checkpoint
from .model.flops import count_flops, count_params
from .profiles import BuildProfile, load_profile
from .space import ConfigPoint, build_grid
from .validate import Parity, compare, run_batched, torch_reference

ONNX_DIR = "onnx"
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
    grid: str | None = None
    tokens: list[int] | None = None
    widths: list[int] | None = None
    depths: list[int] | None = None
    attention: str | None = None        # None: the checkpoint's own
    batch: int = 1
    dataset: str = "demo"
    parity: bool = True                 # False for `adaexport export`


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
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / f"{key}.json")


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
    return {"file": path.relative_to(directory).as_posix(), "sha256": sha256_file(path),
            "size": path.stat().st_size, **extra}


def _ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def parity_inputs(loaded: LoadedModel, dataset: str, samples: int, batch: int) -> tuple[np.ndarray, str]:
    """Real inputs for parity (a multiple of the batch) and a digest identifying them."""
    cfg = loaded.config
    try:
        inputs, _ = model_inputs(dataset, cfg, limit=samples)
    except DatasetError as exc:
        raise DatasetError(f"parity data: {exc}") from None
    usable = len(inputs) - len(inputs) % batch
    if usable == 0:
        raise DatasetError(f"parity data: {len(inputs)} sample(s) do not fill one batch of {batch}")
    inputs = np.ascontiguousarray(inputs[:usable])
    return inputs, hashlib.sha256(inputs.tobytes()).hexdigest()


def _check_dataset_fits(loaded: LoadedModel, dataset: str) -> None:
    if dataset == "demo":
        from .demo import DEMO_MODEL

        demo_cfg = load_checkpoint(DEMO_MODEL).config if loaded.path.resolve() != DEMO_MODEL.resolve() else loaded.config
        if (demo_cfg.in_channels, demo_cfg.num_classes) != (loaded.config.in_channels, loaded.config.num_classes):
            raise UsageError(
                f"the demo's evaluation data (Fashion-MNIST, 1 channel, 10 classes) does not fit {loaded.name} "
                f"({loaded.config.in_channels} channels, {loaded.config.num_classes} classes); "
                "pass --dataset npz:FILE or fashion-mnist:DIR")


def run_build(request: BuildRequest, reporter) -> BuildResult:
    from .demo import DEMO_MODEL
    from .export import build_weights, export_point, write_weights

    if request.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {request.batch}")
    profile: BuildProfile = load_profile(request.profile)
    loaded = load_checkpoint(request.model if request.model is not None else DEMO_MODEL)
    cfg, model = loaded.config, loaded.model
    attention = request.attention or cfg.default_attention
    if attention not in ATTENTION_MODES:
        raise UsageError(f"--attention: attention must be one of {', '.join(ATTENTION_MODES)}, got {attention!r}")
    explicit = any(v is not None for v in (request.tokens, request.widths, request.depths))
    preset = request.grid if (request.grid or explicit) else profile.grid_preset
    points, warnings = build_grid(cfg, preset, request.tokens, request.widths, request.depths)
    for w in warnings:
        reporter.warn(w)
    if request.parity:  # bad data fails here, before any work
        _check_dataset_fits(loaded, request.dataset)
        tolerance = profile.tolerance("fp32")
        inputs, digest = parity_inputs(loaded, request.dataset, profile.parity_samples, request.batch)

    out = Path(request.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    onnx_dir = out / ONNX_DIR
    onnx_dir.mkdir(parents=True, exist_ok=True)
    cache = Cache(out)
    versions = _versions()
    base = {"tool": __version__, "model": loaded.sha256, "attention": attention, "batch": request.batch,
            "exporter": EXPORTER, "image_size": cfg.img_size, **versions}
    metadata = {"adaexport.source_sha256": loaded.sha256, "adaexport.tool_version": __version__,
                "adaexport.model_name": loaded.name}

    # 1. the shared weights file (depends on the model, not on the grid)
    weights_key = _digest({**base, "stage": "weights"})
    weights_record = cache.get("weights", weights_key)
    store = None
    todo = []
    for point in points:
        key = _export_key(base, metadata, weights_key, point)
        record = cache.get("export", key)
        if not (_valid(out, weights_record) and _valid(out, record)):
            todo.append((point, key))
    exported = 0
    reporter.stage("export", len(points))
    for point in points:
        if all(point != p for p, _ in todo):
            reporter.advance(point.id, "cached")
    if todo:
        if not _valid(out, weights_record):
            store = build_weights(model, attention=attention, batch=request.batch, weights_name=WEIGHTS_NAME,
                                  exporter=EXPORTER)
            write_weights(store, onnx_dir / WEIGHTS_NAME)
            weights_record = _file_record(out, onnx_dir / WEIGHTS_NAME)
            cache.put("weights", weights_key, weights_record)
        else:
            store = build_weights(model, attention=attention, batch=request.batch, weights_name=WEIGHTS_NAME,
                                  exporter=EXPORTER)
        for point, key in todo:
            result = export_point(model, point, onnx_dir, store, attention=attention, batch=request.batch,
                                  weights_name=WEIGHTS_NAME, metadata=metadata, exporter=EXPORTER)
            cache.put("export", key, _file_record(out, result.path, op_types=result.op_types))
            exported += 1
            reporter.advance(point.id, "exported")
    reporter.end_stage()
    export_records = {p: cache.get("export", _export_key(base, metadata, weights_key, p)) for p in points}

    # 2. parity of every model against PyTorch, on real inputs
    parity: dict[ConfigPoint, dict | None] = {p: None for p in points}
    failures: list[str] = []
    parity_runs = 0
    if request.parity:
        reporter.stage("parity", len(points))
        for point in points:
            record = export_records[point]
            key = _digest({**base, "stage": "parity", "onnx_sha256": record["sha256"],
                           "weights_sha256": weights_record["sha256"], "samples": profile.parity_samples,
                           "dataset": request.dataset})
            metrics = cache.get("parity", key)
            if metrics is None:
                from .model.static import specialize

                reference = torch_reference(specialize(model, point, attention), inputs, request.batch)
                session = _ort_session(out / record["file"])
                candidate = run_batched(lambda x: session.run(None, {"image": x}), inputs, request.batch)
                metrics = dataclasses.asdict(compare(reference, candidate)) | {"inputs": digest}
                cache.put("parity", key, metrics)
                parity_runs += 1
            result = Parity(**{k: metrics[k] for k in ("max_abs", "max_rel", "top1_agreement", "samples")})
            parity[point] = result.record(tolerance)
            engine = f"{point.id} (onnxruntime fp32)"
            if not result.passes(tolerance):
                failures.append(result.failure_message(engine, tolerance))
            reporter.advance(point.id, f"max_abs {result.max_abs:.2g}, top-1 agreement {result.top1_agreement:.3f}")
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
        "device": {"target": request.target, "host": host_info(), "backends": {"onnxruntime": versions["onnxruntime"]},
                   "toolchain": {"torch": versions["torch"], "onnx": versions["onnx"]}},
        "build": {"profile": profile.name, "dataset": request.dataset if request.parity else None,
                  "batch": request.batch, "exporter": EXPORTER},
        "weights": {k: weights_record[k] for k in ("file", "sha256", "size")},
        "engines": [
            {"id": f"{p.id}-onnxruntime-fp32", "point": p.as_dict(), "backend": "onnxruntime", "precision": "fp32",
             "file": export_records[p]["file"], "sha256": export_records[p]["sha256"],
             "size": export_records[p]["size"], "flops": count_flops(cfg, p), "params": count_params(cfg, p),
             "status": "ready", "parity": parity[p], "op_types": export_records[p]["op_types"]}
            for p in points
        ],
    }
    previous = out / MANIFEST_NAME
    if previous.is_file():
        manifest["created"] = _keep_created(previous, manifest)
    write_manifest(out, manifest)
    _prune(onnx_dir, {out / r["file"] for r in export_records.values()} | {onnx_dir / WEIGHTS_NAME})
    return BuildResult(manifest=manifest, directory=out, exported=exported, parity_runs=parity_runs,
                       failures=failures)


def _keep_created(path: Path, manifest: dict) -> str:
    """A rebuild that changes nothing keeps the manifest byte-identical (same `created`)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return manifest["created"]
    strip = lambda m: {k: v for k, v in m.items() if k != "created"}  # noqa: E731
    return old.get("created", manifest["created"]) if strip(old) == json.loads(json.dumps(strip(manifest))) \
        else manifest["created"]


def _prune(onnx_dir: Path, keep: set[Path]) -> None:
    """Remove .onnx files of points no longer in the family, and temp files of killed runs."""
    for path in onnx_dir.iterdir():
        if path.is_file() and path not in keep and (path.suffix == ".onnx" or path.name.endswith(".tmp")):
            path.unlink()
