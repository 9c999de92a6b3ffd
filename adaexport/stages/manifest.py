"""Stages `manifest` (assemble it, carrying over what earlier runs measured), `profile`
(measure the engines on this machine when it is the device built for) and `write` (the
manifest, atomically, and the removal of artefacts no longer in the family)."""

from __future__ import annotations

import json
from pathlib import Path

from .. import __version__
from ..manifest import MANIFEST_NAME, SCHEMA_ID, host_info, utc_now, write_manifest
from .context import EXPORTER, BuildContext
from .engines import beside
from .export import ENGINES_DIR, ONNX_DIR, WEIGHTS_NAME


def manifest_stage(ctx: BuildContext) -> None:
    """The manifest of this build, with the profiles and accuracy an earlier manifest in the
    directory recorded for engines that did not change (`carry_measurements`)."""
    cfg, request = ctx.cfg, ctx.request
    batch = request.batch
    ctx.manifest = {
        "schema": SCHEMA_ID,
        "tool": {"name": "adaexport", "version": __version__},
        "created": utc_now(),
        "model": {
            "name": ctx.loaded.name, "sha256": ctx.loaded.sha256,
            "task": "classification+features" if cfg.distilled else "classification",
            "attention": ctx.attention,
            "input": {"name": "image", "shape": [batch, cfg.in_channels, cfg.img_size, cfg.img_size],
                      "dtype": "float32", "layout": "NCHW", "preprocessing": cfg.preprocessing_spec()},
            "outputs": [{"name": "logits", "shape": [batch, cfg.num_classes], "dtype": "float32"}]
            + ([{"name": "features", "shape": [batch, cfg.num_patches, cfg.output_feat_dim],
                 "dtype": "float32"}] if cfg.distilled else []),
            "trained_grid": {"tokens": list(cfg.mask_token_grans), "widths": list(cfg.mat_dims),
                             "depths": list(range(1, cfg.depth + 1))},
            **({"class_names": list(cfg.class_names)} if cfg.class_names else {}),
        },
        "device": {"target": ctx.target.name, "host": host_info(), "backends": _backend_versions(ctx.choices),
                   "toolchain": {"torch": ctx.versions["torch"], "onnx": ctx.versions["onnx"]},
                   "target_facts": ctx.target.describe()},
        "build": {"profile": ctx.profile.name, **ctx.profile.manifest_record(), "dataset": ctx.dataset if request.parity else None,
                  "batch": batch, "exporter": EXPORTER, **({"skipped": ctx.skipped} if ctx.skipped else {}),
                  **({"parity_samples": ctx.samples} if ctx.samples is not None else {}),
                  **({"selection": ctx.selection} if ctx.selection else {})},
        "weights": {k: ctx.weights_record[k] for k in ("file", "sha256", "size")},
        "engines": ctx.engines,
    }
    carry_measurements(ctx.out / MANIFEST_NAME, ctx.manifest)


def profile_stage(ctx: BuildContext) -> None:
    """Profile every ready engine on this machine, when it is the device built for (a
    cross-build leaves it to `adaexport profile DIR` on the device); cached per engine."""
    from ..profiling.family import profile_build_stage
    from ..targets import detect_target

    request = ctx.request
    if not (request.parity and request.measure and ctx.profile.profiling.enabled and not ctx.failures):
        return
    try:
        here = detect_target()
    except Exception:  # noqa: BLE001 - an undetectable machine is not the target
        here = None
    if here != ctx.target.name:
        ctx.reporter.info(f"not profiling: this machine is {here or 'unknown'}, not {ctx.target.name}; "
                          f"run `adaexport profile {ctx.out}` on the device")
        return
    profile_build_stage(ctx.out, ctx.manifest, ctx.target, ctx.profile.profiling, ctx.cache, reporter=ctx.reporter)


def write_stage(ctx: BuildContext) -> None:
    """Write the manifest (keeping its `created` when nothing else changed) and remove the
    artefacts of points and engines no longer in the family."""
    out, manifest = ctx.out, ctx.manifest
    previous = out / MANIFEST_NAME
    if previous.is_file():
        manifest["created"] = _keep_created(previous, manifest)
    write_manifest(out, manifest)
    onnx_dir = out / ONNX_DIR
    _prune(onnx_dir, {out / r["file"] for r in ctx.export_records.values()} | {onnx_dir / WEIGHTS_NAME})
    if (out / ENGINES_DIR).is_dir():
        keep = {out / f for e in ctx.engines for f in e.get("extra", {}).get("files", [])}
        kept = {p for e in ctx.engines for p in beside(out / ENGINES_DIR, e, "support_files", "shared_files")}
        _prune(out / ENGINES_DIR, keep | kept | {p.with_name(p.name + ".json") for p in keep}, every_file=True)


def carry_measurements(previous: Path, manifest: dict) -> None:
    """Keep what the previous manifest measured (profiles from this and other devices and
    power modes, `adaexport eval` accuracy) for engines whose file, model and shared weights
    are unchanged: a rebuild never drops them; the profile stage then replaces this
    device's current mode."""
    from ..pareto import update_pareto

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


def _backend_versions(choices) -> dict[str, str]:
    from ..backends import backend_versions

    names = sorted({backend for backend, _ in choices})
    return {name: str(facts.get(name, "unknown")) for name, facts in backend_versions(names).items()}


def _keep_created(path: Path, manifest: dict) -> str:
    """A rebuild that changes nothing keeps the manifest byte-identical (same `created`)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return manifest["created"]
    strip = lambda m: {k: v for k, v in m.items() if k != "created"}  # noqa: E731
    return old.get("created", manifest["created"]) if strip(old) == json.loads(json.dumps(strip(manifest))) \
        else manifest["created"]


def _prune(directory: Path, keep: set[Path], every_file: bool = False) -> None:
    """Remove artefacts of points or engines no longer in the family, and temp files of
    killed runs (in the engines folder, every file not kept; backend caches are folders)."""
    for path in directory.iterdir():
        if path.is_file() and path not in keep and (every_file or path.suffix == ".onnx" or path.name.endswith(".tmp")):
            path.unlink()
