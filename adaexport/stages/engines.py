"""Stages `compile` and `parity`: the engines of every point, then each ready engine checked
against PyTorch. Both hand their uncached work to the build's executor as tasks (one
engine to compile; one (tokens, width) of engines to check, whose every depth shares one
reference pass) and record the results in the cache in the build's order."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from ..backends.ort_prepacked import SHARING as FAMILY_SHARING
from ..build_cache import digest
from ..datasets import NO_DATASET, RANDOM_SEED
from ..heap import release_free_heap
from ..manifest_records import EngineRecord, FileRecord, ParityRecord, entry_facts, family_onnx_entry, with_lint
from ..model.flops import count_flops, count_params
from ..space import ConfigPoint
from ..validate import Parity, compare, run_batched
from .context import BuildContext
from .export import ENGINES_DIR
from .jobs import worker_state
from .reference import ReferenceFamily


@dataclasses.dataclass
class CompileTask:
    engine_id: str
    onnx_record: dict
    backend: str
    precision: str
    target: object              # targets.Target (a frozen dataclass)

    def __str__(self) -> str:
        return f"compile {self.engine_id}"


def lint(out: Path, onnx: FileRecord, backend: str, precision: str) -> list[str]:
    """What the backend's ONNX support lacks for this model (empty: nothing)."""
    from ..backends import lint_engine

    return lint_engine(out / onnx.file, backend, precision)


def beside(root: Path, facts: dict, *kinds: str) -> set[Path]:
    """Files a backend keeps beside an engine (its sidecar's `facts` "support_files": what it
    is built from, e.g. a pending TensorRT engine's QDQ model; "shared_files": caches the
    family shares)."""
    return {Path(os.path.normpath(root / f)) for kind in kinds for f in facts.get(kind, [])}


def compile_one(task: CompileTask) -> dict:
    """Compile (or record as pending) one engine from its point's ONNX: the cache record
    (entry, files), the lint problems and the trtexec line. Runs in a worker (or inline)."""
    from ..backends import compile_or_defer, get_backend
    from ..hashing import file_record

    state = worker_state()
    out, onnx = state.setup.out, FileRecord.pick(task.onnx_record)
    problems = lint(out, onnx, task.backend, task.precision)
    engines_dir = out / ENGINES_DIR
    engines_dir.mkdir(exist_ok=True)
    calibration = state.setup.data.calibration if task.precision == "int8" else None
    artifact = compile_or_defer(out / onnx.file, engines_dir, task.target, task.backend, task.precision, calibration)
    sharing = get_backend(task.backend).weight_sharing(artifact)      # the manifest's weight_sharing
    entry = with_lint({**artifact.record(out), "weight_sharing": sharing}, problems)
    support = sorted(beside(engines_dir, entry_facts(entry), "support_files"))
    files = [file_record(p, out) for p in [*artifact.paths(), artifact.sidecar, *support] if p.is_file()]
    return {"entry": entry, "files": files, "problems": problems, "trtexec": artifact.facts.get("trtexec")}


def compile_stage(ctx: BuildContext) -> None:
    """Every engine entry of the build, in order (per point, per choice): the ONNX itself is
    the ONNX Runtime fp32 engine; every other (backend, precision) is compiled from it
    (TensorRT without TensorRT: pending), cached by content."""
    from ..backends import get_backend

    out, cache = ctx.out, ctx.cache
    slots: list[tuple[dict, dict | None]] = []     # (the point's fields, the engine's entry or None: to compile)
    tasks, keys = [], []
    calibration = hashlib.sha256(ctx.data.calibration.data).hexdigest() if ctx.data is not None else None
    weights = FileRecord.pick(ctx.weights_record)
    for point in ctx.points:
        record = ctx.export_records[point]
        onnx = FileRecord.pick(record)
        head = {"point": point.as_dict(), "flops": count_flops(ctx.cfg, point, attention=ctx.attention),
                "params": count_params(ctx.cfg, point), "op_types": record["op_types"]}
        for backend, precision in ctx.choices:
            engine_id = f"{point.id}-{backend}-{precision}"
            if backend == "onnxruntime" and precision == "fp32":
                slots.append(({"engine_id": engine_id, **head}, family_onnx_entry(
                    onnx, weights, FAMILY_SHARING, lint(out, onnx, backend, precision))))
                continue
            recipe = get_backend(backend).recipe
            key = digest({**ctx.base, "stage": "compile", "entry": 3, "onnx_sha256": onnx.sha256,
                          "backend": backend, **({"recipe": recipe} if recipe else {}), "precision": precision,
                          "target": ctx.target.source, "calibration": calibration if precision == "int8" else None})
            cached = cache.get("compile", key)
            if cached is not None and all(cache.valid(f) for f in cached["files"]):
                slots.append(({"engine_id": engine_id, **head}, cached["entry"]))
            else:
                slots.append(({"engine_id": engine_id, **head}, None))
                tasks.append(CompileTask(engine_id, record, backend, precision, ctx.target))
                keys.append((len(slots) - 1, key))
    if tasks:
        ctx.reporter.stage("compile", len(tasks))
        for i, result in ctx.executor.run(compile_one, tasks):
            slot, key = keys[i]
            for problem in result["problems"]:
                ctx.reporter.warn(f"{Path(tasks[i].onnx_record['file']).name} for {tasks[i].backend} "
                                  f"{tasks[i].precision}: {problem}")
            if result["trtexec"]:
                ctx.reporter.info(f"trtexec equivalent: {result['trtexec']}")
            cache.put("compile", key, {"entry": result["entry"], "files": result["files"]})
            slots[slot] = (slots[slot][0], result["entry"])
            engine = EngineRecord.new(**slots[slot][0], entry=result["entry"])
            ctx.reporter.advance(tasks[i].engine_id, "compiled" if engine.ready else
                                 "pending: " + engine.facts().get("finish", "built on the device"))
        ctx.reporter.end_stage()
    ctx.engines = [EngineRecord.new(**head, entry=entry) for head, entry in slots]


@dataclasses.dataclass
class ParityTask:
    tokens: int
    width: int
    entries: list[EngineRecord]  # the engines of this (tokens, width) to check, in build order

    def __str__(self) -> str:
        return f"parity t{self.tokens}_w{self.width} ({', '.join(e.id for e in self.entries)})"


def parity_one(task: ParityTask) -> list[dict]:
    """Parity metrics of each engine of the task against PyTorch (one reference pass for
    every depth). Runs in a worker (or inline)."""
    from ..backends import open_engine

    state = worker_state()
    data, out = state.setup.data, state.setup.out
    points = [ConfigPoint(**e.point.to_json()) for e in task.entries]
    family = ReferenceFamily(state.loaded.model, points, state.setup.attention, data.inputs)
    references: dict[ConfigPoint, list] = {}
    metrics = []
    for entry, point in zip(task.entries, points):
        if point not in references:
            references[point] = family.outputs(point)
            release_free_heap()       # the forward pass's activations
        # closed before the next opens: at published size a full-depth engine holds ~0.7 GB
        with open_engine(out, entry) as session:
            candidate = run_batched(lambda x: session.run({"image": x}), data.inputs, state.setup.batch)
        release_free_heap()
        metrics.append(dataclasses.asdict(compare(references[point], candidate, data.labels)))
    return metrics


def parity_stage(ctx: BuildContext) -> None:
    """Check every ready engine against PyTorch on the build's inputs (metrics cached by the
    engine's hash and the inputs; tolerances judged afresh), in the build's order."""
    if not ctx.request.parity:
        return
    ready = [e for e in ctx.engines if e.ready]
    # "metrics" 2: `flipped` holds each changed sample's gap to the engine's class (1: PyTorch's top-1 margin)
    keys = {e.id: digest({**ctx.base, "stage": "parity", "metrics": 2, "engine_sha256": e.sha256, "backend": e.backend,
                          "precision": e.precision, "inputs": ctx.data.digest, "dataset": ctx.dataset})
            for e in ready}
    metrics = {e.id: ctx.cache.get("parity", keys[e.id]) for e in ready}
    groups: dict[tuple[int, int], list[EngineRecord]] = {}
    for e in ready:
        if metrics[e.id] is None:
            groups.setdefault((e.point.tokens, e.point.width), []).append(e)
    tasks = [ParityTask(t, w, entries) for (t, w), entries in groups.items()]
    ctx.reporter.stage("parity", len(ready))
    for e in ready:
        if metrics[e.id] is not None:
            ctx.reporter.advance(e.id, "cached")
    for i, results in ctx.executor.run(parity_one, tasks):
        for entry, result in zip(tasks[i].entries, results):
            ctx.cache.put("parity", keys[entry.id], result)
            metrics[entry.id] = result
            ctx.parity_runs += 1
            ctx.reporter.advance(entry.id, f"max_abs {result['max_abs']:.2g}, "
                                 f"top-1 agreement {result['top1_agreement']:.3f}")
    ctx.reporter.end_stage()
    for entry in ready:
        result, tol = Parity(**metrics[entry.id]), ctx.profile.tolerance(entry.precision)
        entry.parity = ParityRecord.from_json(result.record(tol))
        if ctx.dataset == NO_DATASET:
            entry.parity.inputs, entry.parity.seed = "random", RANDOM_SEED
        if not result.passes(tol):
            ctx.failures.append(result.failure_message(f"{entry.point.id} ({entry.backend} {entry.precision})", tol))
