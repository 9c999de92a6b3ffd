"""adaexport search: the accuracy of every trained configuration in a few forward passes
per image, the accuracy/FLOPs front, and the `front` / `front:K` build grids chosen from it.

The passes are `adaexport.model.shared_pass`'s: under the block-causal mask one pass per
width scores every (token count, depth); with `full` attention one pass per (token count,
width) scores every depth. Images run in chunks through `adaexport.reference` (eval's
PyTorch reference, the same passes) and are scored with eval's own functions, so a configuration's top-1 is the one `adaexport
eval` computes for PyTorch at that point on the same data, image by image.

A search result is a JSON document (`adaexport.search/1`); `adaexport build --grid front:K
--search FILE` builds from it, and the build keeps a copy as DIR/search.json.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np

from . import __version__
from .atomic import write_bytes_atomic
from .datasets import DatasetError, model_inputs
from .errors import UsageError
from .evaluate import check_demo_fits, topk_hits
from .manifest import utc_now
from .pareto import front
from .space import ConfigPoint, build_grid, front_count

SEARCH_SCHEMA = "adaexport.search/1"
SEARCH_FILE = "search.json"
SPREAD_RULE = ("the cheapest and the most accurate front configurations, then, one at a time, the front "
               "configuration farthest from those chosen in (log FLOPs, top-1), each normalised to 0..1 over the front")
PROGRESS_STEPS = 50  # at most this many progress lines per search


@dataclasses.dataclass
class SearchResult:
    doc: dict                                   # the JSON document (see `search_document`)
    predictions: dict[ConfigPoint, np.ndarray]  # per configuration, the predicted class of every image


def search_attention(cfg, attention: str | None) -> str:
    """The attention mode to search in (default: the checkpoint's own); a one-line error for
    `block` where token counts cannot share latents."""
    from .model import ATTENTION_MODES

    attention = attention or cfg.default_attention
    if attention not in ATTENTION_MODES:
        raise UsageError(f"--attention: one of {', '.join(ATTENTION_MODES)}, got {attention!r}")
    if attention == "block" and (cfg.attn_layer == "full" or cfg.block_mask != "block"):
        raise UsageError(f"--attention block: this checkpoint (attn_layer {cfg.attn_layer}, block_mask "
                         f"{cfg.block_mask}) was not trained under the block-causal mask, so its token counts do "
                         "not share latents; search it with --attention full (one pass per token count and width)")
    return attention


def data_digest(inputs: np.ndarray, labels: np.ndarray) -> str:
    return hashlib.sha256(inputs.tobytes() + labels.tobytes()).hexdigest()


def run_search(loaded, inputs: np.ndarray, labels: np.ndarray, dataset: str, attention: str,
               reporter) -> SearchResult:
    """Score every trained configuration of `loaded` on prepared inputs (see the module docstring)."""
    from .model.shared_pass import plan_passes
    from .reference import CHUNK, point_outputs

    cfg = loaded.config
    attention = search_attention(cfg, attention)
    points, _ = build_grid(cfg, "trained")
    started = time.perf_counter()
    plan = plan_passes(cfg, {p.tokens for p in points}, {p.width for p in points},
                       {p.depth for p in points}, attention)
    top5 = cfg.num_classes > 5
    hits1 = {p: 0 for p in points}
    hits5 = {p: 0 for p in points}
    predictions: dict[ConfigPoint, list[np.ndarray]] = {p: [] for p in points}
    chunks = math.ceil(len(inputs) / CHUNK)
    per_step = math.ceil(chunks / PROGRESS_STEPS)
    reporter.stage("search", math.ceil(chunks / per_step))
    for i, (start, outputs) in enumerate(point_outputs(loaded.model, points, attention, inputs, plan=plan)):
        chunk_labels = labels[start:start + CHUNK]
        for point, (logits, *_) in outputs.items():
            hits1[point] += int(topk_hits(logits, chunk_labels, 1).sum())
            hits5[point] += int(topk_hits(logits, chunk_labels, 5).sum()) if top5 else 0
            predictions[point].append(logits.argmax(axis=1).astype(np.int32))
        if (i + 1) % per_step == 0 or i + 1 == chunks:
            done = min(start + CHUNK, len(inputs))
            reporter.advance(f"{done}/{len(inputs)} images", f"{plan.passes} pass(es) per image")
    seconds = time.perf_counter() - started
    reporter.end_stage()
    samples = len(labels)
    accuracy = {p: (hits1[p] / samples, hits5[p] / samples if top5 else None) for p in points}
    doc = search_document(loaded, dataset, data_digest(inputs, labels), samples, plan, accuracy, seconds)
    return SearchResult(doc, {p: np.concatenate(v) for p, v in predictions.items()})


def search(model_path: Path | None, dataset: str, attention: str | None, limit: int | None,
           reporter) -> SearchResult:
    """`adaexport search`: load the checkpoint (the demo without one) and the dataset, then search."""
    from .demo import DEMO_MODEL
    from .model import load_checkpoint

    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be >= 1, got {limit}")
    loaded = load_checkpoint(model_path if model_path is not None else DEMO_MODEL)
    attention = search_attention(loaded.config, attention)
    inputs, labels = _dataset(loaded, dataset, limit)
    return run_search(loaded, inputs, labels, dataset, attention, reporter)


def _dataset(loaded, dataset: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    check_demo_fits(dataset, loaded.config)
    try:
        inputs, labels = model_inputs(dataset, loaded.config, limit)
    except DatasetError as exc:
        raise DatasetError(f"--dataset {dataset}: {exc}") from None
    return np.ascontiguousarray(inputs, dtype=np.float32), labels


def search_document(loaded, dataset: str, digest: str, samples: int, plan, accuracy: dict,
                    seconds: float) -> dict:
    """The search result as JSON: every configuration's accuracy, FLOPs and parameters, the
    front, and what the search cost (passes, FLOPs and seconds per image)."""
    import torch

    from .model.flops import count_flops, count_params, count_search_flops

    cfg = loaded.config
    configurations = [{"id": p.id, "point": p.as_dict(), "flops": count_flops(cfg, p, attention=plan.attention),
                       "params": count_params(cfg, p), "top1": top1, "top5": top5}
                      for p, (top1, top5) in sorted(accuracy.items())]
    full_flops = count_flops(cfg, ConfigPoint.full(cfg), attention=plan.attention)
    search_flops = count_search_flops(cfg, plan.runs, list(plan.widths), list(plan.depths))
    return {
        "schema": SEARCH_SCHEMA,
        "tool": {"name": "adaexport", "version": __version__},
        "created": utc_now(),
        "model": {"name": loaded.name, "sha256": loaded.sha256},
        "dataset": {"spec": dataset, "samples": samples, "sha256": digest},
        "attention": plan.attention,
        "passes": {"per_image": plan.passes, "runs": {str(n): list(gs) for n, gs in plan.runs.items()},
                   "widths": list(plan.widths), "depths": list(plan.depths)},
        "cost": {"seconds": seconds, "seconds_per_image": seconds / samples, "threads": torch.get_num_threads(),
                 "flops_per_image": search_flops, "full_configuration_flops": full_flops,
                 "full_forward_passes": search_flops / full_flops},
        "configurations": configurations,
        "front": front_of(configurations),
    }


def front_of(configurations: list[dict]) -> list[str]:
    """The accuracy/FLOPs front (adaexport.pareto's rule), cheapest first."""
    return front((c["id"], float(c["flops"]), c["top1"]) for c in configurations)


def search_json(doc: dict) -> bytes:
    return (json.dumps(doc, indent=1) + "\n").encode()


def write_search(path: Path, doc: dict) -> None:
    if not Path(path).parent.is_dir():
        raise UsageError(f"--out {path}: no such directory {Path(path).parent}")
    write_bytes_atomic(Path(path), search_json(doc))


def read_search(path: Path) -> dict:
    """A search result written by `adaexport search`, checked enough to build from."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SEARCH_SCHEMA:
        raise UsageError(f"{path}: not an adaexport search result (schema {SEARCH_SCHEMA})")
    try:
        configurations = doc["configurations"]
        ok = (isinstance(doc["model"]["sha256"], str) and isinstance(doc["attention"], str)
              and isinstance(doc["dataset"]["spec"], str) and isinstance(configurations, list) and configurations
              and all(ConfigPoint(**c["point"]).id == c["id"] and float(c["flops"]) > 0 and 0 <= float(c["top1"]) <= 1
                      for c in configurations))
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{path}: malformed search result ({type(exc).__name__}: {exc})") from None
    if not ok:
        raise UsageError(f"{path}: malformed search result (no configurations, or one with a wrong "
                         "id, FLOPs or top-1)")
    return doc


# --- the `front` and `front:K` grids ---------------------------------------------------------------


def spread(items: list[tuple[str, float, float]], count: int | None) -> list[str]:
    """`count` of the front's (id, flops, top1) items, cheapest first (see SPREAD_RULE); all
    of them when `count` is None or not smaller than the front."""
    if count is None or count >= len(items):
        return [i for i, _, _ in items]

    def normalised(values):
        low, high = min(values), max(values)
        return [(v - low) / (high - low) if high > low else 0.0 for v in values]

    xs = normalised([math.log(f) for _, f, _ in items])
    ys = normalised([a for _, _, a in items])
    chosen = [0, len(items) - 1]  # a front, cheapest first, grows in accuracy: the last is the most accurate
    while len(chosen) < count:
        gap = lambda i: min(math.hypot(xs[i] - xs[j], ys[i] - ys[j]) for j in chosen)  # noqa: E731
        chosen.append(max((i for i in range(len(items)) if i not in chosen), key=lambda i: (gap(i), -i)))
    return [items[i][0] for i in sorted(chosen)]


def front_grid(loaded, attention: str, preset: str, search_path: Path | None, dataset: str, out: Path,
               cache, reporter) -> tuple[list[ConfigPoint], dict]:
    """The points of `--grid front[:K]` and the record of how they were chosen (the
    manifest's build.selection). From `search_path`, else a search of the build's dataset
    (cached in the build's cache); the search result is kept as DIR/search.json."""
    count = front_count(preset)
    if search_path is not None:
        try:
            doc = read_search(Path(search_path))
        except UsageError as exc:
            raise UsageError(f"--search {exc}") from None
        raw = Path(search_path).read_bytes()
        _check_fits(doc, loaded, attention, search_path)
        source = str(search_path)
    else:
        inputs, labels = _dataset(loaded, dataset)
        key = hashlib.sha256(json.dumps({"tool": __version__, "model": loaded.sha256, "attention": attention,
                                         "data": data_digest(inputs, labels)}).encode()).hexdigest()
        doc = cache.get("search", key)
        if doc is None:
            doc = run_search(loaded, inputs, labels, dataset, attention, reporter).doc
            cache.put("search", key, doc)
        raw, source = search_json(doc), f"adaexport search on --dataset {dataset}"
    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out / SEARCH_FILE, raw)
    by_id = {c["id"]: c for c in doc["configurations"]}
    on_front = front_of(doc["configurations"])
    chosen = spread([(i, float(by_id[i]["flops"]), by_id[i]["top1"]) for i in on_front], count)
    if count is not None and count > len(on_front):
        reporter.warn(f"--grid {preset}: the front has only {len(on_front)} configuration(s); building all of them")
    selection = {"grid": preset, "search": {"source": source, "file": SEARCH_FILE,
                                            "sha256": hashlib.sha256(raw).hexdigest(),
                                            "dataset": doc["dataset"], "attention": doc["attention"]},
                 "rule": "every configuration on the front" if count is None else SPREAD_RULE,
                 "front": on_front, "chosen": chosen}
    return [ConfigPoint(**by_id[i]["point"]) for i in chosen], selection


def _check_fits(doc: dict, loaded, attention: str, path: Path) -> None:
    if doc["model"]["sha256"] != loaded.sha256:
        raise UsageError(f"--search {path}: a search of model {doc['model'].get('name')} (sha256 "
                         f"{doc['model']['sha256'][:12]}…), not of {loaded.name} (sha256 {loaded.sha256[:12]}…)")
    if doc["attention"] != attention:
        raise UsageError(f"--search {path}: searched with {doc['attention']} attention, the build uses {attention} "
                         f"(pass --attention {doc['attention']} or search again)")
