"""adaexport export / build / compile."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..errors import UsageError
from ..manifest_records import Manifest
from ..render import near_ties_text
from ._app import app, command, console, emit, err_console, reporter, tagged, warn
from .options import DEPTH_OPT, DEVICE_OPT, JSON_OPT, MODEL_ARG, TOKENS_OPT, WIDTH_OPT

OUT_OPT = typer.Option(..., "--out", "-o", metavar="DIR", show_default=False,
                       help="Build directory (created; a rebuild reuses its cache).")
GRID_OPT = typer.Option(None, "--grid", metavar="NAME",
                        help="Grid preset: trained, full, corners, or front / front:K (the accuracy/FLOPs front of a "
                        "search, or K points spread along it). Default: the build profile's.")
SEARCH_OPT = typer.Option(None, "--search", metavar="FILE",
                          help="With --grid front[:K]: the `adaexport search` result to choose from (default: search "
                          "the build's --dataset).")
ATTENTION_OPT = typer.Option(None, "--attention", metavar="MODE", help="full or block (default: the checkpoint's own).")
BATCH_OPT = typer.Option(1, "--batch", metavar="N", help="Fixed batch size of every engine.")
PROFILE_OPT = typer.Option("default", "--build-profile", metavar="NAME|FILE",
                           help="Build profile: a name (`default`, `quick`, or one on ADAEXPORT_PROFILES_PATH) or a "
                           ".toml file.")
OLD_PROFILE_OPT = typer.Option(None, "--profile", hidden=True, help="Deprecated: use --build-profile.")
PROFILE_FILE_OPT = typer.Option(None, "--profile-file", metavar="FILE",
                                help="A build profile .toml file (same as --build-profile FILE).")
JOBS_OPT = typer.Option(1, "--jobs", "-j", metavar="N", help="Points exported, engines compiled and checked at once: "
                        "worker processes here, or Ray workers with --ray.")
RAY_OPT = typer.Option(None, "--ray", metavar="HOST:PORT", help="Run that work on this Ray cluster (see adaexport "
                       "farm); the build directory is written here alone, with the bytes a local build gives.")


def _profile(build_profile: str, old: Optional[str], profile_file: Optional[Path]) -> str:
    if old is not None:
        warn("--profile is deprecated (it is easily confused with --no-profile): use --build-profile")
        build_profile = old
    return str(profile_file) if profile_file is not None else build_profile


def _summary_table(manifest: Manifest) -> Table:
    from ..api.info import si

    table = Table(title=f"{manifest.model.name}: {len(manifest.engines)} engine(s)")
    for col in ("point", "engine", "FLOPs", "params", "parity (max_abs / top-1 agreement / accuracy)", "size"):
        table.add_column(col, justify="left" if col in ("point", "engine") else "right")
    for e in manifest.engines:
        p = e.parity
        parity = ("pending" if e.pending else "not checked") if p is None else (
            f"{'pass' if p.passed else 'FAIL'} {p.max_abs:.0e} / {p.top1_agreement:.3f}{near_ties_text(p)}"
            + (f" / {-p.accuracy_drop:+.2f}pt" if p.accuracy_drop is not None and e.precision != "fp32" else ""))
        size = f"{e.size / 1024:.1f} KiB" if e.size is not None else "-"
        table.add_row(e.point.id, f"{e.backend} {e.precision}", si(e.flops), f"{e.params:,}", parity, size)
    weights = manifest.weights
    if weights:
        table.caption = f"shared weights: {weights.file} ({weights.size / 1024:.1f} KiB)"
    return table


def _profile_lines(manifest: Manifest) -> None:
    """One line per power mode on the build's profile stage: how many engines, the p50 range."""
    device = manifest.device.target
    for mode in manifest.modes_of(device):
        p50 = [v for v in (e.latency_ms(device, mode) for e in manifest.engines) if v is not None]
        if p50:
            console.print(f"profile ({device}, {mode}): {len(p50)} engine(s), p50 {min(p50):.3f} .. {max(p50):.3f} ms "
                          f"(every statistic in the manifest; `adaexport profile DIR` measures again)", highlight=False)


def render_build(result) -> None:
    manifest = result.manifest
    console.print(_summary_table(manifest))
    _profile_lines(manifest)
    console.print(f"manifest: {result.manifest_path} ({len(manifest.engines)} engine(s); this run exported "
                  f"{result.exported} point(s) and ran {result.parity_runs} parity check(s), the rest came from the "
                  "cache)", highlight=False)
    if result.pending:
        finish = result.pending[0].facts().get("finish", "adaexport compile DIR")
        console.print(f"{len(result.pending)} TensorRT engine(s) pending: TensorRT is not installed here. Finish them "
                      f"on the device with: {finish.replace(' DIR ', f' {result.directory} ')}", highlight=False,
                      soft_wrap=True)
    for message in result.failures:
        err_console.print(tagged("error:", "bold red", message), highlight=False, soft_wrap=True)


@app.command()
@command
def export(
    model: Optional[Path] = MODEL_ARG, out: Path = OUT_OPT, grid: Optional[str] = GRID_OPT,
    tokens: Optional[str] = TOKENS_OPT, width: Optional[str] = WIDTH_OPT, depth: Optional[str] = DEPTH_OPT,
    attention: Optional[str] = ATTENTION_OPT, batch: int = BATCH_OPT, build_profile: str = PROFILE_OPT,
    profile: Optional[str] = OLD_PROFILE_OPT, profile_file: Optional[Path] = PROFILE_FILE_OPT,
    search: Optional[Path] = SEARCH_OPT, jobs: int = JOBS_OPT, ray: Optional[str] = RAY_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Export one static ONNX model per grid point (all sharing one weights file) and the manifest, without compiling
    or checking.

    \b
    Example: adaexport export --out family --tokens 8,16 --width 32 --depth 1,2
    """
    from .. import api

    result = api.export(out, model, grid=grid, tokens=tokens, widths=width, depths=depth, attention=attention,
                        batch=batch, profile=_profile(build_profile, profile, profile_file), search=search,
                        jobs=jobs, ray=ray, reporter=reporter(json_out))
    emit(result, json_out, render_build)


@app.command()
@command
def build(
    model: Optional[Path] = MODEL_ARG, out: Path = OUT_OPT, device: Optional[str] = DEVICE_OPT,
    target_file: Optional[Path] = typer.Option(None, "--target-file", metavar="FILE", help="A device target .toml "
                                               "file (same as --device FILE)."),
    grid: Optional[str] = GRID_OPT, tokens: Optional[str] = TOKENS_OPT, width: Optional[str] = WIDTH_OPT,
    depth: Optional[str] = DEPTH_OPT, attention: Optional[str] = ATTENTION_OPT, batch: int = BATCH_OPT,
    build_profile: str = PROFILE_OPT, profile: Optional[str] = OLD_PROFILE_OPT,
    profile_file: Optional[Path] = PROFILE_FILE_OPT,
    engines: Optional[str] = typer.Option(None, "--engines", metavar="BACKEND:PRECISION,...",
                                          help="Only these engines, e.g. onnxruntime:fp32,openvino:int8 (default: "
                                          "the build profile's)."),
    atol: Optional[float] = typer.Option(None, "--atol", metavar="X", help="fp32 parity: largest absolute difference "
                                         "from PyTorch (default: the build profile's)."),
    min_agreement: Optional[float] = typer.Option(None, "--min-agreement", metavar="X",
                                                  help="Smallest top-1 agreement with PyTorch, 0..1, for every "
                                                  "precision (default: the profile's)."),
    max_drop: Optional[float] = typer.Option(None, "--max-drop", metavar="POINTS",
                                             help="fp16/int8: largest top-1 accuracy drop, in percentage points "
                                             "(default: the profile's)."),
    tie_margin: Optional[float] = typer.Option(None, "--tie-margin", metavar="STD",
                                               help="fp16/bf16/int8: a changed top-1 that PyTorch scored within this "
                                               "many standard deviations of its logits of its own is a near-tie, "
                                               "recorded and not judged; 0 judges every change (default: the "
                                               "profile's)."),
    dataset: Optional[str] = typer.Option(
        None, "--dataset", metavar="SPEC", help="Parity inputs (and what --grid front searches without --search): "
        "demo, fashion-mnist:DIR, npz:FILE, imagefolder:DIR, or none (fp32 engines checked on seeded random inputs, "
        "reduced precisions not built). Default: demo where its data fits the model, else none."),
    no_profile: bool = typer.Option(False, "--no-profile", help="Skip measuring the engines (latency, load time, "
                                    "memory, energy) on this machine."),
    search: Optional[Path] = SEARCH_OPT, jobs: int = JOBS_OPT, ray: Optional[str] = RAY_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Export, compile and check a family of engines against PyTorch; profile them when this machine is the target;
    write the manifest.

    \b
    Example: adaexport build --out family --tokens 8,16 --width 32 --depth 1,2 --engines onnxruntime:fp32
    """
    from .. import api

    if target_file is not None:
        if device is not None:
            raise UsageError("give either --device or --target-file, not both")
        device = str(target_file)
    result = api.build(out, model, device=device, grid=grid, tokens=tokens, widths=width, depths=depth,
                       attention=attention, batch=batch, profile=_profile(build_profile, profile, profile_file),
                       engines=None if engines is None else [e.strip() for e in engines.split(",") if e.strip()],
                       atol=atol, min_agreement=min_agreement, max_drop=max_drop, tie_margin=tie_margin,
                       dataset=dataset, measure=not no_profile, search=search, jobs=jobs, ray=ray,
                       reporter=reporter(json_out))
    emit(result, json_out, render_build)


@app.command()
@command
def compile(
    directory: Path = typer.Argument(..., metavar="DIR", help="A build directory whose manifest has pending engines.",
                                     show_default=False),
    device: Optional[str] = typer.Option(None, "--device", metavar="TARGET", help="Target device (default: the "
                                         "manifest's)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", metavar="SPEC", help="Where the build's parity data "
                                          "lies on this machine (with --ray: on the device), when not where the "
                                          "manifest says (the demo is bundled)."),
    engines: Optional[str] = typer.Option(None, "--engines", help="Only these pending engine ids, comma-separated."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="HOST:PORT", help="Build them on the devices of this Ray "
                                      "cluster whose target and backends match instead of here; see adaexport farm."),
    json_out: bool = JSON_OPT,
) -> None:
    """On the device: build the engines a cross-build left pending (TensorRT) and check them; needs no torch.

    \b
    Example: adaexport compile family --ray 10.0.0.2:6379
    """
    from .. import api

    wanted = [e.strip() for e in engines.split(",") if e.strip()] if engines is not None else None
    result = api.compile(directory, device, reporter(json_out), dataset, wanted, ray)
    emit(result, json_out, _render_compile)


def _render_compile(result) -> None:
    for job in result.devices or [{"device": None, "finished": result.finished}]:
        if job["finished"]:
            where = f" on {job['device']}" if job["device"] else ""
            console.print(f"finished {len(job['finished'])} engine(s){where}: {', '.join(job['finished'])}",
                          highlight=False)
