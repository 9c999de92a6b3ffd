"""adaexport eval / check / search / report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from ..manifest_records import FLOPS_FRONT
from ._app import app, command, console, emit, reporter, tagged, warn
from .options import DATASET_HELP, DIR_ARG, JSON_OPT, MODEL_ARG


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _render_eval(result) -> None:
    table = Table(title=f"accuracy on {result.dataset} ({result.samples} samples), %")
    for col in ("engine", "top-1", "PyTorch top-1", "change", "top-5", "PyTorch top-5"):
        table.add_column(col, justify="left" if col == "engine" else "right")
    for e in result.engines:
        a = e.accuracy
        table.add_row(e.id, _pct(a.top1), _pct(a.reference_top1), f"{100 * (a.top1 - a.reference_top1):+.2f}",
                      _pct(a.top5), _pct(a.reference_top5))
    console.print(table)
    for ident, why in result.skipped:
        console.print(f"skipped {ident}: {why}", highlight=False)
    front = result.manifest.pareto.get(FLOPS_FRONT, [])
    console.print(f"Pareto front (accuracy vs FLOPs): {', '.join(front) or 'none'}", highlight=False, soft_wrap=True)


@app.command("eval")
@command
def eval_command(
    directory: Path = DIR_ARG,
    dataset: str = typer.Option("demo", "--dataset", help=DATASET_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate on the first N samples only."),
    model: Optional[Path] = typer.Option(None, "--model", help="The checkpoint the build was made from (default: the "
                                         "bundled demo model)."),
    json_out: bool = JSON_OPT,
) -> None:
    """Top-1 (and top-5) of every ready engine next to PyTorch's at the same point; stored in the manifest, with the
    Pareto fronts.

    \b
    Example: adaexport eval family --limit 200
    """
    from .. import api

    emit(api.eval(directory, dataset, limit, model, reporter(json_out)), json_out, _render_eval)


def _render_check(result) -> None:
    table = Table(title=f"{result.build} against {result.baseline} (top-1 %, tolerance {result.max_drop:g} points)")
    for col in ("configuration", "baseline", "now", "change", "verdict"):
        table.add_column(col, justify="left" if col in ("configuration", "verdict") else "right")
    for v in result.verdicts:
        change = "-" if v.change_points is None else f"{v.change_points:+.2f}"
        style = "red" if v.failed else ("green" if v.verdict == "pass" else "")
        table.add_row(v.id, _pct(v.baseline), _pct(v.now), change, Text(v.verdict, style=style))
    console.print(table)
    failed = result.failed
    if failed:
        console.print(tagged("FAILED:", "bold red", f"{len(failed)} of {len(result.verdicts)} configuration(s): "
                             + ", ".join(f"{v.id} ({v.verdict})" for v in failed[:10])
                             + (" ..." if len(failed) > 10 else "")), highlight=False)
    else:
        console.print(tagged("passed:", "bold green", f"{len(result.verdicts)} configuration(s)"), highlight=False)


@app.command()
@command
def check(
    directory: Path = typer.Argument(..., metavar="DIR", show_default=False,
                                     help="The build directory to judge (evaluated with `adaexport eval`)."),
    baseline: Path = typer.Option(..., "--baseline", help="The baseline: a build directory or its manifest.json.",
                                  show_default=False),
    max_drop: float = typer.Option(0.5, "--max-drop", help="Largest allowed top-1 drop per configuration, in "
                                   "percentage points."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Also write JUnit XML here (one test case per "
                                         "configuration)."),
    json_out: bool = JSON_OPT,
) -> None:
    """The CI gate: exit 1 if any configuration lost more than --max-drop points of top-1 against the baseline, or is
    missing or not evaluated.

    \b
    Example: adaexport check family --baseline family/manifest.json
    """
    from .. import api

    emit(api.check(directory, baseline, max_drop, junit), json_out, _render_check)


def _search_table(result, everything: bool) -> Table:
    from ..api.pareto_report import SEARCH_TABLE_ALL
    from ..report import search_cells, search_columns, search_rows

    doc = result.doc
    table = search_rows(doc)
    shown = table if everything or len(table) <= SEARCH_TABLE_ALL else [r for r in table if r.on_front or r.built]
    rich_table = Table(title=f"{doc['model']['name']} on {doc['dataset']['spec']} ({doc['dataset']['samples']} images, "
                       f"{doc['attention']} attention): " + ("every configuration" if shown is table else
                                                            f"the front of {len(table)} configurations"))
    for col in search_columns(table):
        rich_table.add_column(col, justify="left" if col == "configuration" else "right")
    for r in shown:
        rich_table.add_row(*search_cells(r), style="bold" if r.on_front else None)
    return rich_table


@app.command()
@command
def search(
    model: Optional[Path] = MODEL_ARG,
    dataset: str = typer.Option(..., "--dataset", help=DATASET_HELP, show_default=False),
    attention: Optional[str] = typer.Option(None, "--attention", help="block (one pass per width scores every token "
                                            "count and depth) or full (one pass per token count and width); default: "
                                            "the checkpoint's own."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Score on the first N samples only."),
    out: Path = typer.Option(Path("search.json"), "--out", help="Where to write the result (JSON; `adaexport build "
                             "--grid front:K --search FILE` builds from it)."),
    everything: bool = typer.Option(False, "--all", help="List every configuration (by default, every one up to 60, "
                                    "else the front)."),
    json_out: bool = JSON_OPT,
) -> None:
    """Top-1 (and top-5) of every trained configuration on a dataset in a few forward passes per image, with FLOPs,
    parameters and the accuracy/FLOPs front.

    \b
    Example: adaexport search --dataset demo --limit 300 --out search.json
    """
    from .. import api
    from ..report import search_intro

    result = api.search(model, dataset=dataset, attention=attention, limit=limit, out=out, reporter=reporter(json_out))

    def render(r) -> None:
        console.print(_search_table(r, everything))
        console.print(search_intro(r.doc), highlight=False, soft_wrap=True)
        console.print(f"front (cheapest first): {', '.join(r.doc['front'])}", highlight=False, soft_wrap=True)
        console.print(f"wrote {r.out}", highlight=False)

    emit(result, json_out, render)


def _render_report(result) -> None:
    table = Table(title=result.title)
    for col in result.columns:
        table.add_column(col, justify="left" if col in ("engine", "point", "kind", "configuration") else "right")
    for cells, bold in zip(result.rows, result.bold):
        table.add_row(*cells, style="bold" if bold else None)
    console.print(table)
    if result.intro:
        console.print(result.intro, highlight=False, soft_wrap=True)
    for note in result.notes:
        warn(note, "note:" if "matplotlib" in note else "warning:")
    for path in result.written:
        console.print(f"wrote {path}", highlight=False)
    if result.kind == "build":
        console.print(f"Pareto front ({result.front_name}): {', '.join(result.front) or 'none'}", highlight=False,
                      soft_wrap=True)


@app.command()
@command
def report(
    directory: Path = typer.Argument(..., metavar="DIR|SEARCH.json", show_default=False,
                                     help="A build directory (evaluated with `adaexport eval`), or a search result "
                                     "(`adaexport search --out FILE`)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output prefix: writes PREFIX.png and PREFIX.html "
                                       "(default: DIR/report)."),
    png: Optional[Path] = typer.Option(None, "--png", help="Where to write the PNG plot."),
    html_path: Optional[Path] = typer.Option(None, "--html", help="Where to write the HTML page."),
    device: Optional[str] = typer.Option(None, "--device", help="Profiled device for the latency axis (default: the "
                                         "build's own target)."),
    mode: Optional[str] = typer.Option(None, "--mode", help="Power mode (default: `default`)."),
    flops: bool = typer.Option(False, "--flops", help="Plot against FLOPs (the device-independent front) even when "
                               "the build is profiled."),
    image_width: int = typer.Option(1200, "--image-width", help="PNG width in pixels."),
    image_height: int = typer.Option(800, "--image-height", help="PNG height in pixels."),
    old_width: Optional[int] = typer.Option(None, "--width", hidden=True, help="Deprecated: --image-width."),
    old_height: Optional[int] = typer.Option(None, "--height", hidden=True, help="Deprecated: --image-height."),
    search_plot: bool = typer.Option(False, "--search", help="Plot the search the build was chosen from "
                                     "(DIR/search.json: every configuration, the front, the ones built)."),
    json_out: bool = JSON_OPT,
) -> None:
    """Accuracy against latency (FLOPs where not profiled) with the Pareto front: a PNG plot, an HTML page and the
    table here. Given a search result (or --search), every trained configuration against FLOPs.

    \b
    Example: adaexport report family --out family/report
    """
    from .. import api

    for old, new in ((old_width, "--image-width"), (old_height, "--image-height")):
        if old is not None:
            warn(f"--{new[7:]} is deprecated (in build, --width is the FFN width): use {new}")
    result = api.report(directory, out=out, png=png, html=html_path, device=device, mode=mode, flops=flops,
                        image_width=old_width or image_width, image_height=old_height or image_height,
                        search=search_plot)
    emit(result, json_out, _render_report)
