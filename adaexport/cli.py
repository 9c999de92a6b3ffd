"""The adaexport command line: parse, call a stage, render. Kept thin on purpose."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import USER_ERRORS

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Export an adaptive AdaPerceiver into a family of static edge engines.")
console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit (no traceback)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


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
            fail(f"internal error: {type(exc).__name__}: {exc} (set ADAEXPORT_DEBUG=1 for the traceback)", 1)

    return wrapper


def resolve_model(model: Optional[Path]):
    from .demo import DEMO_MODEL
    from .model import load_checkpoint

    return load_checkpoint(model if model is not None else DEMO_MODEL)


def grid_from_options(cfg, grid: Optional[str], tokens: Optional[str], width: Optional[str], depth: Optional[str]):
    from .space import build_grid, parse_int_list

    return build_grid(
        cfg, preset=grid,
        tokens=parse_int_list(tokens, "tokens") if tokens else None,
        widths=parse_int_list(width, "width") if width else None,
        depths=parse_int_list(depth, "depth") if depth else None,
    )


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
    """Print a model's architecture, parameters, trained grid and FLOPs range."""
    from .model.flops import count_flops, count_params
    from .space import ConfigPoint, build_grid

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
    if grid or tokens or width or depth:
        points, warnings = grid_from_options(cfg, grid, tokens, width, depth)
        for w in warnings:
            err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
        pt = Table(title="points")
        for col in ("point", "tokens", "width", "depth", "FLOPs", "params"):
            pt.add_column(col, justify="right" if col != "point" else "left")
        for p in points:
            pt.add_row(p.id, str(p.tokens), str(p.width), str(p.depth),
                       _si(count_flops(cfg, p)), f"{count_params(cfg, p):,}")
        console.print(pt)


@app.command()
def version() -> None:
    """Print the adaexport version."""
    console.print(f"adaexport {__version__}")


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
