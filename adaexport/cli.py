"""The adaexport command line: parse, call a stage, render. Kept thin on purpose."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from . import __version__
from .errors import USER_ERRORS


def _one_line(message: object) -> str:
    """A message on one line (an exception's text may hold several)."""
    return " ".join(line.strip() for line in str(message).strip().splitlines() if line.strip())


def tagged(tag: str, style: str, message: object) -> Text:
    """'error: <message>' with the tag styled and the message printed literally: paths, model
    names and engine ids are user text, never rich markup."""
    return Text.assemble((tag, style), " ", _one_line(message))


def _console(stderr: bool = False) -> Console:
    # Off a terminal (pipes, CI logs) rich would assume 80 columns and squeeze the tables.
    # markup=False: every string printed (table cells and titles too) is shown as written;
    # styled output is built from Text objects (see tagged()).
    tty = (sys.stderr if stderr else sys.stdout).isatty()
    return Console(stderr=stderr, markup=False, width=None if tty else int(os.environ.get("COLUMNS", 160)))


console = _console()
err_console = _console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit (no traceback)."""
    err_console.print(tagged("error:", "bold red", message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _usage_errors_as_one_line():
    try:  # recent typer carries its own copy of click
        from typer._click.exceptions import ClickException, NoArgsIsHelpError
    except ImportError:  # pragma: no cover - older typer on click
        from click.exceptions import ClickException, NoArgsIsHelpError
    try:
        yield
    except NoArgsIsHelpError:  # `adaexport` alone: the help, as asked by no_args_is_help
        raise
    except ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        fail(exc.format_message() + (f" (see `{ctx.command_path} --help`)" if ctx is not None else ""), exc.exit_code)


class _OneLineUsageErrors(TyperGroup):
    """Command-line usage errors (an unknown option, a value that is not a number, a missing
    argument) as one line and exit 2, like every other bad input; typer would print a
    usage block and a boxed message."""

    def make_context(self, *args, **kwargs):
        with _usage_errors_as_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _usage_errors_as_one_line():
            return super().invoke(ctx)


app = typer.Typer(add_completion=False, no_args_is_help=True, cls=_OneLineUsageErrors,
                  help="Export an adaptive AdaPerceiver into a family of static edge engines.")


def user_errors(fn: Callable) -> Callable:
    """Turn bad-input exceptions into one line and exit 2; anything else into one line and
    exit 1, with the traceback only when ADAEXPORT_DEBUG is set."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            fail(str(exc))
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug: still one line unless debugging
            if os.environ.get("ADAEXPORT_DEBUG"):
                raise
            fail(f"internal error: {type(exc).__name__}: {_one_line(exc)} "
                 "(set ADAEXPORT_DEBUG=1 for the traceback)", 1)

    return wrapper


def check_output_file(path: Path, option: str) -> None:
    """Refuse, before any work, a file the command could not write (a directory, a missing
    folder, a file in place of a folder)."""
    from .errors import UsageError

    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory, not a file")
    if not path.parent.is_dir():
        raise UsageError(f"{option} {path}: no such directory {path.parent}")


def write_output_file(path: Path, data: bytes, option: str) -> None:
    """Write a result file atomically; what the system refuses (permissions, an immutable
    or read-only folder, a full disk) is one line and exit 2."""
    from .atomic import write_bytes_atomic
    from .errors import UsageError

    try:
        write_bytes_atomic(path, data)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write ({exc.strerror or exc})") from None


def resolve_model(model: Optional[Path]):
    from .demo import DEMO_MODEL
    from .model import load_checkpoint

    return load_checkpoint(model if model is not None else DEMO_MODEL)


def grid_from_options(cfg, grid: Optional[str], tokens: Optional[str], width: Optional[str], depth: Optional[str]):
    from .space import build_grid, knob_lists

    return build_grid(cfg, preset=grid, **knob_lists(tokens, width, depth))


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


@app.command()
@user_errors
def inspect(
    model: Optional[Path] = typer.Argument(None, help="Checkpoint directory or file; none for the bundled demo."),
    grid: Optional[str] = typer.Option(None, "--grid", help="Show FLOPs/params for a preset grid (trained, full, corners)."),
    tokens: Optional[str] = typer.Option(None, "--tokens", help="Token counts, e.g. 32,64."),
    width: Optional[str] = typer.Option(None, "--width", help="FFN widths (mat_dim), e.g. 416,832."),
    depth: Optional[str] = typer.Option(None, "--depth", help="Depths, e.g. 12,21."),
) -> None:
    """Print a model's architecture, parameters, trained grid and FLOPs range, or a build
    directory's manifest as a table."""
    from .manifest import MANIFEST_NAME, read_manifest
    from .render import engines_table
    from .model.flops import count_flops, count_params
    from .space import ConfigPoint, build_grid

    if model is not None and (model / MANIFEST_NAME).is_file():
        data = read_manifest(model)
        console.print(f"{model}: {data['model']['name']} ({data['model']['task']}, attention "
                      f"{data['model']['attention']}), target {data['device']['target']}, "
                      f"built by adaexport {data['tool']['version']} at {data['created']}", highlight=False)
        console.print(engines_table(data))
        return
    loaded = resolve_model(model)
    cfg = loaded.config
    table = Table(title=f"{loaded.name}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    variant = "distilled (logits + patch features)" if cfg.distilled else "classification"
    total_params = sum(p.numel() for p in loaded.model.parameters())
    trained, _ = build_grid(cfg, "trained")
    flops = [count_flops(cfg, p) for p in trained]
    rows = [
        ("path", str(loaded.path)), ("sha256", loaded.sha256[:16] + "…"), ("variant", variant),
        ("input", f"{cfg.in_channels}x{cfg.img_size}x{cfg.img_size}, patch {cfg.patch_size} ({cfg.num_patches} patches)"),
        ("embed_dim / heads", f"{cfg.embed_dim} / {cfg.num_heads} (head_dim {cfg.head_dim})"),
        ("blocks", str(cfg.depth)), ("FFN hidden", f"{cfg.hidden_dim} (ffn_ratio {cfg.ffn_ratio})"),
        ("classes", str(cfg.num_classes) + (f", features {cfg.output_feat_dim}" if cfg.distilled else "")),
        ("attention", f"{cfg.default_attention} (attn_layer {cfg.attn_layer}, block_mask {cfg.block_mask})"),
        ("parameters", f"{total_params:,}"),
        ("trained tokens", ", ".join(map(str, cfg.mask_token_grans)) + f" (max_latent_tokens {cfg.max_latent_tokens})"),
        ("trained widths", ", ".join(map(str, cfg.mat_dims))),
        ("trained depths", f"1..{cfg.depth}"),
        ("trained grid", f"{len(trained)} points"),
        ("FLOPs range", f"{_si(min(flops))} ({min(trained, key=lambda p: count_flops(cfg, p)).id}) .. "
                        f"{_si(max(flops))} ({ConfigPoint.full(cfg).id})"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if any(v is not None for v in (grid, tokens, width, depth)):
        points, warnings = grid_from_options(cfg, grid, tokens, width, depth)
        for w in warnings:
            err_console.print(tagged("warning:", "yellow", w), highlight=False)
        pt = Table(title="points")
        for col in ("point", "tokens", "width", "depth", "FLOPs", "params"):
            pt.add_column(col, justify="right" if col != "point" else "left")
        for p in points:
            pt.add_row(p.id, str(p.tokens), str(p.width), str(p.depth),
                       _si(count_flops(cfg, p)), f"{count_params(cfg, p):,}")
        console.print(pt)


MODEL_ARG = typer.Argument(None, help="Checkpoint directory or file; none for the bundled demo.")
OUT_OPT = typer.Option(..., "--out", "-o", help="Build directory (created; re-runs reuse its cache).")
GRID_OPT = typer.Option(None, "--grid", help="Grid preset: trained, full, corners, or front / front:K (the "
                        "accuracy/FLOPs front of a search, or K points spread along it; default: the profile's).")
SEARCH_OPT = typer.Option(None, "--search", help="With --grid front[:K]: the `adaexport search` result to choose from "
                          "(default: search the build's --dataset).")
TOKENS_OPT = typer.Option(None, "--tokens", help="Token counts, e.g. 32,64 (cartesian product with the others).")
WIDTH_OPT = typer.Option(None, "--width", help="FFN widths (mat_dim), e.g. 416,832.")
DEPTH_OPT = typer.Option(None, "--depth", help="Depths, e.g. 12,21.")
ATTENTION_OPT = typer.Option(None, "--attention", help="full or block (default: the checkpoint's own).")
BATCH_OPT = typer.Option(1, "--batch", help="Fixed batch size of every engine.")
PROFILE_OPT = typer.Option("default", "--profile", help="Build profile name (adaexport/profiles) or a .toml path.")
JSON_OPT = typer.Option(False, "--json", help="Print one JSON document (the manifest summary) and no progress.")


def _summary_table(manifest: dict) -> Table:
    table = Table(title=f"{manifest['model']['name']}: {len(manifest['engines'])} engine(s)")
    for col in ("point", "engine", "FLOPs", "params", "parity (max_abs / top-1 agreement / accuracy)", "size"):
        table.add_column(col, justify="left" if col in ("point", "engine") else "right")
    for e in manifest["engines"]:
        p = e["parity"]
        parity = ("pending" if e.get("status") == "pending" else "not checked") if p is None else (
            f"{'pass' if p['passed'] else 'FAIL'} {p['max_abs']:.0e} / {p['top1_agreement']:.3f}"
            + (f" / {-p['accuracy_drop']:+.2f}pt" if p.get("accuracy_drop") is not None and e["precision"] != "fp32" else ""))
        point = e["point"]
        size = f"{e['size'] / 1024:.1f} KiB" if "size" in e else "-"
        table.add_row(f"t{point['tokens']}_w{point['width']}_d{point['depth']}", f"{e['backend']} {e['precision']}",
                      _si(e["flops"]), f"{e['params']:,}", parity, size)
    weights = manifest.get("weights")
    if weights:
        table.caption = f"shared weights: {weights['file']} ({weights['size'] / 1024:.1f} KiB)"
    return table


def _run_build(parity: bool, model, out, device, grid, tokens, width, depth, attention, batch, profile,
               dataset, json_out, measure: bool = True, search: Optional[Path] = None) -> None:
    import json as json_module

    from .build import BuildRequest, run_build
    from .progress import make_reporter
    from .space import knob_lists
    from .targets import resolve_target

    request = BuildRequest(
        out=out, model=model, target=resolve_target(device), profile=profile, grid=grid,
        **knob_lists(tokens, width, depth),
        attention=attention, batch=batch, dataset=dataset, parity=parity, measure=measure, search=search)
    reporter = make_reporter(json_out, err_console)
    try:
        result = run_build(request, reporter)
    finally:
        reporter.close()
    manifest = result.manifest
    if json_out:
        print(json_module.dumps({"manifest": str(result.directory / "manifest.json"), "exported": result.exported,
                                 "parity_runs": result.parity_runs, "failures": result.failures,
                                 "engines": manifest["engines"]}, indent=1))
    else:
        console.print(_summary_table(manifest))
        pending = [e for e in manifest["engines"] if e.get("status") == "pending"]
        _print_profile_line(manifest)
        console.print(f"manifest: {result.directory / 'manifest.json'} ({len(manifest['engines'])} engine(s); this run "
                      f"exported {result.exported} point(s) and ran {result.parity_runs} parity check(s), "
                      "the rest came from the cache)", highlight=False)
        if pending:
            finish = pending[0].get("extra", {}).get("facts", {}).get("finish", "adaexport compile DIR")
            finish = finish.replace(" DIR ", f" {result.directory} ")
            console.print(f"{len(pending)} TensorRT engine(s) pending: TensorRT is not installed here. "
                          f"Finish them on the device with: {finish}", highlight=False, soft_wrap=True)
    if result.failures:
        for message in result.failures:
            err_console.print(tagged("error:", "bold red", message), highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _print_profile_line(manifest: dict) -> None:
    """One line on the build's profile stage: how many engines, the p50 range."""
    from .measurements import latency_ms

    device = manifest["device"]["target"]
    modes = (((manifest.get("profiling") or {}).get(device) or {}).get("modes") or {})
    for mode in modes:
        p50 = [v for v in (latency_ms(e, device, mode) for e in manifest["engines"]) if v is not None]
        if p50:
            console.print(f"profile ({device}, {mode}): {len(p50)} engine(s), p50 {min(p50):.3f} .. {max(p50):.3f} ms "
                          f"(every statistic in the manifest; `adaexport profile DIR` measures again)", highlight=False)


@app.command()
@user_errors
def export(
    model: Optional[Path] = MODEL_ARG, out: Path = OUT_OPT, grid: Optional[str] = GRID_OPT,
    tokens: Optional[str] = TOKENS_OPT, width: Optional[str] = WIDTH_OPT, depth: Optional[str] = DEPTH_OPT,
    attention: Optional[str] = ATTENTION_OPT, batch: int = BATCH_OPT, profile: str = PROFILE_OPT,
    json_out: bool = JSON_OPT, search: Optional[Path] = SEARCH_OPT,
) -> None:
    """Export one static ONNX model per grid point (sharing one weights file) and the manifest."""
    _run_build(False, model, out, None, grid, tokens, width, depth, attention, batch, profile, "demo", json_out,
               search=search)


@app.command()
@user_errors
def build(
    model: Optional[Path] = MODEL_ARG, out: Path = OUT_OPT,
    device: Optional[str] = typer.Option(None, "--device", help="Target device (default: this machine)."),
    grid: Optional[str] = GRID_OPT, tokens: Optional[str] = TOKENS_OPT, width: Optional[str] = WIDTH_OPT,
    depth: Optional[str] = DEPTH_OPT, attention: Optional[str] = ATTENTION_OPT, batch: int = BATCH_OPT,
    profile: str = PROFILE_OPT,
    dataset: Optional[str] = typer.Option(
        None, "--dataset", help="Parity inputs (and what --grid front searches without --search): demo, "
        "fashion-mnist:DIR, npz:FILE, imagefolder:DIR, or none (fp32 engines checked on seeded random inputs, "
        "reduced precisions not built). Default: demo where its data fits the model, else none."),
    no_profile: bool = typer.Option(False, "--no-profile", help="Skip the profile stage (latency, load time, memory, "
                                                               "energy of every engine on this machine)."),
    json_out: bool = JSON_OPT, search: Optional[Path] = SEARCH_OPT,
) -> None:
    """Export, compile and check a family of engines against PyTorch, profile them on this
    machine when it is the target; write the manifest."""
    _run_build(True, model, out, device, grid, tokens, width, depth, attention, batch, profile, dataset, json_out,
               measure=not no_profile, search=search)


@app.command()
@user_errors
def compile(
    directory: Path = typer.Argument(..., help="A build directory whose manifest has pending engines."),
    device: Optional[str] = typer.Option(None, "--device", help="Target device (default: the manifest's)."),
) -> None:
    """On the device: build the engines a cross-build left pending (TensorRT) and check them."""
    from .device_compile import finish_pending_engines
    from .progress import make_reporter

    reporter = make_reporter(False, err_console)
    try:
        finished = finish_pending_engines(directory, device, reporter)
    finally:
        reporter.close()
    if finished:
        console.print(f"finished {len(finished)} engine(s): {', '.join(finished)}", highlight=False)


@app.command()
@user_errors
def targets(json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """List the known device targets, their engines, power modes and sensors."""
    from .backends import available_backends
    from .targets import detect_target, get_target, list_targets

    try:
        here = detect_target()
    except USER_ERRORS:
        here = None
    available = available_backends()
    if json_out:
        import json

        print(json.dumps({"this_machine": here, "targets": [
            {**get_target(n).describe(), "available_here": {b: bool(available.get(b)) for b in get_target(n).backends}}
            for n in list_targets()]}, indent=1))
        return
    table = Table(title="device targets" + (f" (this machine: {here})" if here else ""))
    for col in ("target", "engines (in order of preference)", "power modes", "power sensors", "threads"):
        table.add_column(col)
    for name in list_targets():
        target = get_target(name)
        engines = ", ".join(f"{e.backend} {'/'.join(e.precisions)}" + ("" if available[e.backend] else " (not here)")
                            for e in target.engines)
        table.add_row(name + (" *" if name == here else ""), engines,
                      ", ".join(m.name for m in target.power_modes), ", ".join(s.name for s in target.power_sensors),
                      str(target.threads or "default"))
    console.print(table)


@app.command()
@user_errors
def doctor(
    json_out: bool = typer.Option(False, "--json", help="Print the report as one JSON document."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the JSON report to this file (attach it to a "
                                                           "bug report)."),
    device: Optional[str] = typer.Option(None, "--device", help="Compare with this target (default: detected)."),
) -> None:
    """On the device: what it really has (TensorRT and its DLA, nvpmodel modes and which need a
    reboot, power rails, energy counters, device memory) next to what its target assumes."""
    import json

    from .doctor import format_report, run_checks

    report = run_checks(device)
    if out is not None:
        out.write_text(json.dumps(report, indent=1) + "\n")
    if json_out:
        print(json.dumps(report, indent=1))
    else:
        console.print(format_report(report), highlight=False, markup=False, soft_wrap=True)


@app.command()
def version() -> None:
    """Print the adaexport version."""
    console.print(f"adaexport {__version__}")


# The measurement, runtime and evaluation commands live in their own modules; importing
# them registers their commands on `app`.
from . import cli_eval, cli_farm, cli_profile, cli_runtime  # noqa: E402,F401


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
