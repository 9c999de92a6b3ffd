"""inspect, targets, doctor: what a model, a build, the targets and this device are."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..manifest_records import Manifest
from .results import Result


@dataclasses.dataclass
class InspectResult(Result):
    kind: str                           # "model" (a checkpoint) or "build" (a build directory)
    name: str
    fields: dict[str, str]              # model: architecture, trained grid, FLOPs range; build: a summary
    points: list[dict]                  # the grid asked for: id, tokens, width, depth, flops, params
    warnings: list[str]
    manifest: Manifest | None = None    # a build's manifest

    def to_json(self) -> dict[str, Any]:
        out = {"kind": self.kind, "name": self.name, "fields": self.fields, "points": self.points}
        if self.manifest is not None:
            out["engines"] = [e.to_json() for e in self.manifest.engines]
        return out


def si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def _model_fields(loaded) -> dict[str, str]:
    from ..model.flops import count_flops
    from ..space import ConfigPoint, build_grid

    cfg = loaded.config
    trained, _ = build_grid(cfg, "trained")
    flops = [count_flops(cfg, p) for p in trained]
    cheapest = min(trained, key=lambda p: count_flops(cfg, p))
    return {
        "path": str(loaded.path), "sha256": loaded.sha256[:16] + "…",
        "variant": "distilled (logits + patch features)" if cfg.distilled else "classification",
        "input": f"{cfg.in_channels}x{cfg.img_size}x{cfg.img_size}, patch {cfg.patch_size} ({cfg.num_patches} patches)",
        "embed_dim / heads": f"{cfg.embed_dim} / {cfg.num_heads} (head_dim {cfg.head_dim})",
        "blocks": str(cfg.depth), "FFN hidden": f"{cfg.hidden_dim} (ffn_ratio {cfg.ffn_ratio})",
        "classes": str(cfg.num_classes) + (f", features {cfg.output_feat_dim}" if cfg.distilled else ""),
        "attention": f"{cfg.default_attention} (attn_layer {cfg.attn_layer}, block_mask {cfg.block_mask})",
        "parameters": f"{sum(p.numel() for p in loaded.model.parameters()):,}",
        "trained tokens": ", ".join(map(str, cfg.mask_token_grans)) + f" (max_latent_tokens {cfg.max_latent_tokens})",
        "trained widths": ", ".join(map(str, cfg.mat_dims)), "trained depths": f"1..{cfg.depth}",
        "trained grid": f"{len(trained)} points",
        "FLOPs range": f"{si(min(flops))} ({cheapest.id}) .. {si(max(flops))} ({ConfigPoint.full(cfg).id})",
    }


def inspect(model: str | Path | None = None, *, grid: str | None = None, tokens=None, widths=None,
            depths=None) -> InspectResult:
    """A model's architecture, parameters, trained grid and FLOPs range (and the points of
    a grid, when one is asked for), or a build directory's manifest (`adaexport inspect`)."""
    from ..manifest import MANIFEST_NAME, read_records

    if model is not None and (Path(model) / MANIFEST_NAME).is_file():
        data = read_records(Path(model))
        fields = {"directory": str(model), "model": data.model.name, "task": data.model.task,
                  "attention": data.model.attention, "target": data.device.target,
                  "built by": f"adaexport {data.tool_version()}", "created": data.created}
        return InspectResult("build", data.model.name, fields, [], [], manifest=data)
    from ..demo import DEMO_MODEL
    from ..model import load_checkpoint
    from ..model.flops import count_flops, count_params
    from ..space import build_grid
    from .family import parse_knobs

    loaded = load_checkpoint(Path(model) if model is not None else DEMO_MODEL)
    points, warnings = [], []
    if any(v is not None for v in (grid, tokens, widths, depths)):
        chosen, warnings = build_grid(loaded.config, preset=grid, **parse_knobs(tokens, widths, depths))
        points = [{"id": p.id, "tokens": p.tokens, "width": p.width, "depth": p.depth,
                   "flops": count_flops(loaded.config, p), "params": count_params(loaded.config, p)} for p in chosen]
    return InspectResult("model", loaded.name, _model_fields(loaded), points, list(warnings))


@dataclasses.dataclass
class TargetsResult(Result):
    this_machine: str | None
    targets: list[dict]                 # each target's description, with `available_here` per backend

    def to_json(self) -> dict[str, Any]:
        return {"this_machine": self.this_machine, "targets": self.targets}


def targets() -> TargetsResult:
    """The known device targets (packaged and on ADAEXPORT_TARGETS_PATH), their engines,
    power modes and sensors, and which backends this machine has (`adaexport targets`)."""
    from ..backends import available_backends
    from ..errors import AdaexportError
    from ..targets import detect_target, get_target, list_targets

    try:
        here = detect_target()
    except AdaexportError:
        here = None
    available = available_backends()
    described = []
    for name in list_targets():
        target = get_target(name)
        described.append({**target.describe(),
                          "available_here": {b: bool(available.get(b)) for b in target.backends}})
    return TargetsResult(this_machine=here, targets=described)


@dataclasses.dataclass
class DoctorResult(Result):
    report: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return self.report


def doctor(device: str | None = None, out: str | Path | None = None) -> DoctorResult:
    """On the device: what it really has next to what its target assumes (`adaexport
    doctor`); `out`: also write the JSON report there."""
    import json

    from ..doctor import run_checks
    from .files import write_output_file

    report = run_checks(device)
    if out is not None:
        write_output_file(Path(out), (json.dumps(report, indent=1) + "\n").encode(), "--out")
    return DoctorResult(report)
