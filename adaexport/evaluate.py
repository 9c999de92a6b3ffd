"""adaexport eval: top-1/top-5 of every ready engine on a labelled dataset, next to the
PyTorch model's accuracy at the same point, stored in ``engines[i].accuracy``.

Engines are exported at a static batch, so the inputs run in chunks of that batch, the
last one padded (the padding's outputs are dropped). The PyTorch reference runs once per
point and is cached in the build's cache (keyed by the model, point, attention and the
exact inputs), so evaluating again, or evaluating the other engines of a point, costs it
nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from .datasets import DatasetError, model_inputs
from .errors import UsageError
from .manifest import read_records, utc_now, write_manifest
from .manifest_records import AccuracyRecord, Manifest
from .pareto import update_pareto


@dataclasses.dataclass
class EvalResult:
    manifest: Manifest
    evaluated: list[str]
    skipped: list[tuple[str, str]]  # (engine id, why)
    samples: int


def topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per sample: whether its label is among the k highest logits."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return (top == labels[:, None]).any(axis=1)


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of samples whose label is among the k highest logits."""
    return float(topk_hits(logits, labels, k).mean())


def scores(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float | None]:
    """(top-1, top-5); top-5 only with more than 5 classes (else it is always 1)."""
    return topk_accuracy(logits, labels, 1), (topk_accuracy(logits, labels, 5) if logits.shape[1] > 5 else None)


def padded_batches(inputs: np.ndarray, batch: int):
    """Chunks of exactly `batch` rows (the last one padded by repeating its final row) and
    the number of real rows in each."""
    for start in range(0, len(inputs), batch):
        chunk = inputs[start:start + batch]
        real = len(chunk)
        if real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)])
        yield np.ascontiguousarray(chunk), real


def run_engine(session, input_name: str, inputs: np.ndarray, batch: int) -> np.ndarray:
    """The engine's logits (its first output) for every input."""
    out = []
    for chunk, real in padded_batches(inputs, batch):
        out.append(np.asarray(session.run({input_name: chunk})[0])[:real])
    return np.concatenate(out)


def _load_model(manifest: Manifest, model_path: Path | None):
    from .demo import DEMO_MODEL
    from .model import load_checkpoint

    loaded = load_checkpoint(model_path if model_path is not None else DEMO_MODEL)
    want = manifest.model.sha256
    if loaded.sha256 != want:
        where = "the bundled demo model" if model_path is None else str(model_path)
        raise UsageError(f"the build was made from model {manifest.model.name} (sha256 {want[:12]}…), "
                         f"not {where} (sha256 {loaded.sha256[:12]}…); pass that checkpoint with --model")
    return loaded


def check_demo_fits(dataset: str, cfg) -> None:
    if dataset == "demo" and (cfg.in_channels, cfg.num_classes) != (1, 10):
        raise UsageError(f"the demo's evaluation data (Fashion-MNIST, 1 channel, 10 classes) does not fit this "
                         f"model ({cfg.in_channels} channels, {cfg.num_classes} classes); pass --dataset SPEC")


class ReferenceAccuracy:
    """PyTorch's top-1/top-5 per point, computed once and cached in DIR/.adaexport/cache."""

    def __init__(self, directory: Path, loaded, attention: str, inputs: np.ndarray, labels: np.ndarray):
        from .build_cache import Cache

        self.cache = Cache(Path(directory))
        self.loaded, self.attention, self.inputs, self.labels = loaded, attention, inputs, labels
        self.data_digest = hashlib.sha256(inputs.tobytes() + labels.tobytes()).hexdigest()

    def __call__(self, point: dict) -> tuple[float, float | None]:
        key = hashlib.sha256(json.dumps({"model": self.loaded.sha256, "point": point, "attention": self.attention,
                                         "data": self.data_digest}, sort_keys=True).encode()).hexdigest()
        record = self.cache.get("reference", key)
        if record is None:
            from .reference import reference_logits
            from .space import ConfigPoint

            logits = reference_logits(self.loaded.model, ConfigPoint(**point), self.attention, self.inputs)
            top1, top5 = scores(logits, self.labels)
            record = {"top1": top1, "top5": top5}
            self.cache.put("reference", key, record)
        return record["top1"], record["top5"]


def evaluate(directory: Path, dataset: str, limit: int | None, reporter, model_path: Path | None = None) -> EvalResult:
    """Evaluate every ready engine of a build, store the accuracies, recompute the Pareto
    fronts and write the manifest (atomically)."""
    from .backends import open_engine, verify_engines
    from .device_identity import this_machine

    directory = Path(directory)
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be >= 1, got {limit}")
    manifest = read_records(directory)
    loaded = _load_model(manifest, model_path)
    check_demo_fits(dataset, loaded.config)
    try:
        inputs, labels = model_inputs(dataset, loaded.config, limit)
    except DatasetError as exc:
        raise DatasetError(f"--dataset {dataset}: {exc}") from None
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    spec = manifest.model.input
    reference = ReferenceAccuracy(directory, loaded, manifest.model.attention, inputs, labels)

    ready = [e for e in manifest.engines if e.ready]
    skipped = [(e.id, f"{e.status}: not built yet") for e in manifest.engines if not e.ready]
    verify_engines(directory, ready)          # no accuracy is ever recorded for bytes that were not built
    device, _ = this_machine(manifest.device.target)   # int8 kernels, and so accuracy, differ by CPU
    for ident, why in skipped:
        reporter.warn(f"{ident}: skipped ({why})")
    evaluated = []
    reporter.stage("eval", len(ready))
    for entry in ready:
        ref_top1, ref_top5 = reference(entry.point.to_json())
        with open_engine(directory, entry) as session:
            logits = run_engine(session, spec.name, inputs, spec.shape[0])
        top1, top5 = scores(logits, labels)
        entry.accuracy = AccuracyRecord(dataset=dataset, samples=int(len(labels)), top1=top1, top5=top5,
                                        reference_top1=ref_top1, reference_top5=ref_top5, evaluated=utc_now(),
                                        device=device)
        entry.accuracies = {**entry.accuracies, device: entry.accuracy}
        evaluated.append(entry.id)
        reporter.advance(entry.id, f"top-1 {top1:.4f} (PyTorch {ref_top1:.4f})")
    reporter.end_stage()
    write_manifest(directory, update_pareto(manifest))
    return EvalResult(manifest=manifest, evaluated=evaluated, skipped=skipped, samples=int(len(labels)))
