"""Stages `manifest` (assemble it, carrying over what earlier runs measured), `profile`
(measure the engines on this machine when it is the device built for) and `write` (the
manifest, atomically, and the removal of artefacts no longer in the family)."""

from __future__ import annotations

import json
from pathlib import Path

from .. import __version__
from ..manifest import MANIFEST_NAME, manifest_build, manifest_device, manifest_model, new_manifest, write_manifest
from ..manifest_records import FileRecord, Manifest
from .context import EXPORTER, BuildContext
from .engines import beside
from .export import ENGINES_DIR, ONNX_DIR, WEIGHTS_NAME


def manifest_stage(ctx: BuildContext) -> None:
    """The manifest of this build, with the profiles and accuracy an earlier manifest in the
    directory recorded for engines that did not change (`carry_measurements`)."""
    request = ctx.request
    ctx.manifest = new_manifest(
        model=manifest_model(name=ctx.loaded.name, sha256=ctx.loaded.sha256, attention=ctx.attention,
                            batch=request.batch, cfg=ctx.cfg),
        device=manifest_device(target=ctx.target.name, backends=_backend_versions(ctx.choices),
                              toolchain={name: ctx.versions[name] for name in ("torch", "onnx")},
                              target_facts=ctx.target.describe()),
        build=manifest_build(profile=ctx.profile, dataset=ctx.dataset if request.parity else None,
                            batch=request.batch, exporter=EXPORTER, skipped=ctx.skipped, parity_samples=ctx.samples,
                            selection=ctx.selection),
        weights=FileRecord.pick(ctx.weights_record), engines=ctx.engines, version=__version__)
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
        manifest.created = _keep_created(previous, manifest)
    write_manifest(out, manifest)
    onnx_dir = out / ONNX_DIR
    # the points' ONNX, the weights, and what engines read there (fp16/bf16: the float16 twins)
    read = {out / f.file for e in manifest.engines for f in e.file_records()}
    _prune(onnx_dir, {out / FileRecord.pick(r).file for r in ctx.export_records.values()} | {onnx_dir / WEIGHTS_NAME}
           | read, suffixes=(".onnx", ".bin"))
    if (out / ENGINES_DIR).is_dir():
        keep = {out / f for e in manifest.engines for f in e.sidecar_files()}
        kept = {p for e in manifest.engines for p in beside(out / ENGINES_DIR, e.facts(), "support_files",
                                                              "shared_files")}
        _prune(out / ENGINES_DIR, keep | kept | {p.with_name(p.name + ".json") for p in keep}, every_file=True)


def carry_measurements(previous: Path, manifest: Manifest) -> None:
    """Keep what the previous manifest measured (profiles from this and other devices and
    power modes, `adaexport eval` accuracy) for engines whose file, model and shared weights
    are unchanged (`Manifest.carry_measurements`): a rebuild never drops them; the profile
    stage then replaces this device's current mode. An unreadable one is left behind."""
    from ..pareto import update_pareto

    try:
        old = Manifest.from_json(json.loads(previous.read_text()))
    except (OSError, ValueError):      # ManifestError is a ValueError too
        return
    manifest.carry_measurements(old)
    update_pareto(manifest)


def _backend_versions(choices) -> dict[str, str]:
    from ..backends import backend_versions

    names = sorted({backend for backend, _ in choices})
    return {name: str(facts.get(name, "unknown")) for name, facts in backend_versions(names).items()}


def _keep_created(path: Path, manifest: Manifest) -> str:
    """A rebuild that changes nothing keeps the manifest byte-identical (same `created`)."""
    try:
        old = Manifest.from_json(json.loads(path.read_text()))
    except (OSError, ValueError):
        return manifest.created
    return old.created if old.same_but_created(manifest) else manifest.created


def _prune(directory: Path, keep: set[Path], every_file: bool = False, suffixes: tuple[str, ...] = ()) -> None:
    """Remove artefacts of points or engines no longer in the family (in the ONNX folder its
    .onnx and .bin files not kept, in the engines folder every file not kept; backend caches
    are folders), and temp files of killed runs."""
    for path in directory.iterdir():
        if path.is_file() and path not in keep and (every_file or path.suffix in suffixes or path.name.endswith(".tmp")):
            path.unlink()
