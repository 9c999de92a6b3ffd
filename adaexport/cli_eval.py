"""adaexport eval / check / report / search: accuracy per configuration, the CI gate, the Pareto
report (issue 7), and the accuracy of every trained configuration before building (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from .cli import (app, check_output_file, console, err_console, fail, tagged, user_errors,  # noqa: F401
                  write_output_file)  # the commands register on app

DATASET_HELP = "demo, fashion-mnist:DIR, npz:FILE (arrays x, y) or imagefolder:DIR (one folder per class)."


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


@app.command("eval")
@user_errors
def eval_command(
    directory: Path = typer.Argument(..., help="A build directory (with manifest.json)."),
    dataset: str = typer.Option("demo", "--dataset", help=DATASET_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate on the first N samples only."),
    model: Optional[Path] = typer.Option(None, "--model", help="The checkpoint the build was made from "
                                         "(default: the bundled demo model)."),
    json_out: bool = typer.Option(False, "--json", help="Print the accuracies as JSON and no progress."),
) -> None:
    """Top-1 (and top-5) of every ready engine next to PyTorch's at the same point; stored
    in the manifest, with the Pareto fronts."""
    from .evaluate import evaluate
    from .progress import make_reporter

    reporter = make_reporter(json_out, err_console)
    try:
        result = evaluate(directory, dataset, limit, reporter, model)
    finally:
        reporter.close()
    engines = [e for e in result.manifest["engines"] if e["id"] in set(result.evaluated)]
    if json_out:
        print(json.dumps({"dataset": dataset, "samples": result.samples,
                          "engines": {e["id"]: e["accuracy"] for e in engines},
                          "skipped": dict(result.skipped), "pareto": result.manifest.get("pareto", {})}, indent=2))
        return
    table = Table(title=f"accuracy on {dataset} ({result.samples} samples), %")
    for col in ("engine", "top-1", "PyTorch top-1", "change", "top-5", "PyTorch top-5"):
        table.add_column(col, justify="left" if col == "engine" else "right")
    for e in engines:
        a = e["accuracy"]
        table.add_row(e["id"], _pct(a["top1"]), _pct(a["reference_top1"]),
                      f"{100 * (a['top1'] - a['reference_top1']):+.2f}", _pct(a["top5"]), _pct(a["reference_top5"]))
    console.print(table)
    for ident, why in result.skipped:
        console.print(f"skipped {ident}: {why}", highlight=False)
    flops_front = result.manifest.get("pareto", {}).get("flops", [])
    console.print(f"Pareto front (accuracy vs FLOPs): {', '.join(flops_front) or 'none'}", highlight=False,
                  soft_wrap=True)


@app.command()
@user_errors
def check(
    directory: Path = typer.Argument(..., help="The build directory to judge (evaluated with `adaexport eval`)."),
    baseline: Path = typer.Option(..., "--baseline", help="The baseline: a build directory or its manifest.json."),
    max_drop: float = typer.Option(0.5, "--max-drop", help="Largest allowed top-1 drop per configuration, in "
                                   "percentage points."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Also write JUnit XML here (one test case per "
                                         "configuration)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """The CI gate: exit 1 if any configuration lost more than --max-drop points of top-1
    against the baseline, or is missing or not evaluated."""
    from .errors import UsageError
    from .gate import check as run_check, junit_xml, max_drop_points

    try:
        max_drop = max_drop_points(max_drop)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if junit is not None:
        check_output_file(junit, "--junit")
    verdicts = run_check(directory, baseline, max_drop)
    failed = [v for v in verdicts if v.failed]
    if junit is not None:
        write_output_file(junit, junit_xml(verdicts), "--junit")
    if json_out:
        print(json.dumps({"passed": not failed, "max_drop": max_drop, "build": str(directory),
                          "baseline": str(baseline), "failures": len(failed),
                          "configurations": [v.to_json() for v in verdicts]}, indent=2))
    else:
        table = Table(title=f"{directory} against {baseline} (top-1 %, tolerance {max_drop:g} points)")
        for col in ("configuration", "baseline", "now", "change", "verdict"):
            table.add_column(col, justify="left" if col in ("configuration", "verdict") else "right")
        for v in verdicts:
            change = "-" if v.change_points is None else f"{v.change_points:+.2f}"
            style = "red" if v.failed else ("green" if v.verdict == "pass" else "")
            table.add_row(v.id, _pct(v.baseline), _pct(v.now), change,
                          Text(v.verdict, style=style))
        console.print(table)
        if failed:
            console.print(tagged("FAILED:", "bold red", f"{len(failed)} of {len(verdicts)} configuration(s): "
                                 + ", ".join(f"{v.id} ({v.verdict})" for v in failed[:10])
                                 + (" ..." if len(failed) > 10 else "")), highlight=False)
        else:
            console.print(tagged("passed:", "bold green", f"{len(verdicts)} configuration(s)"), highlight=False)
    if failed:
        raise typer.Exit(1)


SEARCH_TABLE_ALL = 60  # the search table lists every configuration up to this many, else the front


def _search_table(doc: dict, table, everything: bool) -> Table:
    from .report import search_cells, search_columns

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
@user_errors
def search(
    model: Optional[Path] = typer.Argument(None, help="Checkpoint directory or file; none for the bundled demo."),
    dataset: str = typer.Option(..., "--dataset", help=DATASET_HELP),
    attention: Optional[str] = typer.Option(None, "--attention", help="block (one pass per width scores every token "
                                            "count and depth) or full (one pass per token count and width); "
                                            "default: the checkpoint's own."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Score on the first N samples only."),
    out: Path = typer.Option(Path("search.json"), "--out", help="Where to write the result (JSON; "
                             "`adaexport build --grid front:K --search FILE` builds from it)."),
    everything: bool = typer.Option(False, "--all", help=f"List every configuration (by default, every one up to "
                                    f"{SEARCH_TABLE_ALL}, else the front)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON and no progress."),
) -> None:
    """Top-1 (and top-5) of every trained configuration on a dataset in a few forward passes
    per image, with FLOPs, parameters and the accuracy/FLOPs front."""
    from .progress import make_reporter
    from .report import search_intro, search_rows
    from .search import search as run, search_json, write_search

    if not out.parent.is_dir():
        fail(f"--out {out}: no such directory {out.parent}")
    reporter = make_reporter(json_out, err_console)
    try:
        result = run(model, dataset, attention, limit, reporter)
    finally:
        reporter.close()
    write_search(out, result.doc)
    if json_out:
        print(search_json(result.doc).decode(), end="")
        return
    console.print(_search_table(result.doc, search_rows(result.doc), everything))
    console.print(search_intro(result.doc), highlight=False, soft_wrap=True)
    console.print(f"front (cheapest first): {', '.join(result.doc['front'])}", highlight=False, soft_wrap=True)
    console.print(f"wrote {out}", highlight=False)


def _search_report(path: Path, from_build: bool, out: Optional[Path], png: Optional[Path],
                   html_path: Optional[Path], width: int, height: int) -> None:
    """`adaexport report FILE.json` or `report DIR --search`: every configuration of a search,
    its front, and (from a build) the configurations built."""
    from .errors import UsageError
    from .manifest import read_manifest
    from .report import plot_search_png, search_html, search_intro, search_rows
    from .search import SEARCH_FILE, read_search

    built = None
    if from_build:
        manifest = read_manifest(path)
        if not (path / SEARCH_FILE).is_file():
            raise UsageError(f"{path}: no {SEARCH_FILE}: the build was not chosen from a search (--grid front[:K])")
        built = {f"t{e['point']['tokens']}_w{e['point']['width']}_d{e['point']['depth']}" for e in manifest["engines"]}
        path = path / SEARCH_FILE
    doc = read_search(path)
    table = search_rows(doc, built)
    png, html_path = _output_paths(out if out is not None else path.with_suffix(""), png, html_path)
    console.print(_search_table(doc, table, everything=False))
    console.print(search_intro(doc), highlight=False, soft_wrap=True)
    _write_outputs(png, html_path, lambda: plot_search_png(
        table, f"{doc['model']['name']}: top-1 on {doc['dataset']['spec']} against FLOPs", width, height),
        lambda image, note: search_html(doc, table, image, note))


def _output_paths(prefix: Path, png: Optional[Path], html_path: Optional[Path]):
    """PREFIX.png and PREFIX.html unless --png/--html name them; refused before any work
    when they could not be written."""
    if png is None and html_path is None:
        png, html_path = prefix.with_name(prefix.name + ".png"), prefix.with_name(prefix.name + ".html")
    for path, option in ((png, "--png"), (html_path, "--html")):
        if path is not None:
            check_output_file(path, option)
    return png, html_path


def _write_outputs(png: Optional[Path], html_path: Optional[Path], plot, page) -> None:
    """The PNG (`plot()`: its bytes; skipped, saying so, without matplotlib) and the HTML page
    (`page(png bytes or None, note)`), each written atomically."""
    from .report import matplotlib_available

    image, note = None, None
    if matplotlib_available():
        image = plot()
    else:
        note = "matplotlib is not installed (pip install 'adaexport[report]'): no plot, the table only"
        err_console.print(tagged("note:", "yellow", note), highlight=False)
    if image is not None and png is not None:
        write_output_file(png, image, "--png")
        console.print(f"wrote {png}", highlight=False)
    if html_path is not None:
        write_output_file(html_path, page(image, note), "--html")
        console.print(f"wrote {html_path}", highlight=False)


@app.command()
@user_errors
def report(
    directory: Path = typer.Argument(..., help="A build directory (evaluated with `adaexport eval`), or a search "
                                     "result (`adaexport search --out FILE`)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output prefix: writes PREFIX.png and PREFIX.html "
                                       "(default: DIR/report)."),
    png: Optional[Path] = typer.Option(None, "--png", help="Where to write the PNG plot."),
    html_path: Optional[Path] = typer.Option(None, "--html", help="Where to write the HTML page."),
    device: Optional[str] = typer.Option(None, "--device", help="Profiled device for the latency axis "
                                         "(default: the build's own target)."),
    mode: Optional[str] = typer.Option(None, "--mode", help="Power mode (default: `default`)."),
    flops: bool = typer.Option(False, "--flops", help="Plot against FLOPs (the device-independent front) "
                               "even when the build is profiled."),
    width: int = typer.Option(1200, "--width", help="PNG width in pixels."),
    height: int = typer.Option(800, "--height", help="PNG height in pixels."),
    search_plot: bool = typer.Option(False, "--search", help="Plot the search the build was chosen from "
                                     "(DIR/search.json: every configuration, the front, the ones built)."),
) -> None:
    """Accuracy against latency (FLOPs where not profiled) with the Pareto front: a PNG plot,
    an HTML page with the plot and the full table, and the table here. Given a search result
    (or --search), every trained configuration against FLOPs instead."""
    from .errors import UsageError
    from .manifest import read_manifest
    from .report import choose_axis, html_page, plot_png, rows, table_cells, table_columns

    if out is not None and (png is not None or html_path is not None):
        raise UsageError("pass either --out PREFIX or --png/--html, not both")
    if not (100 <= width <= 10000 and 100 <= height <= 10000):
        raise UsageError(f"--width/--height must be 100..10000 pixels, got {width}x{height}")
    if directory.is_file() or search_plot:
        if device is not None or mode is not None or flops:
            raise UsageError("a search result is plotted against FLOPs: leave out --device/--mode/--flops")
        return _search_report(directory, search_plot and not directory.is_file(), out, png, html_path, width, height)
    manifest = read_manifest(directory)
    axis = choose_axis(manifest, device, mode, flops)
    table = rows(manifest, axis)
    png, html_path = _output_paths(out if out is not None else directory / "report", png, html_path)

    rich_table = Table(title=f"{manifest['model']['name']}: {len(table)} engine(s); x axis: {axis.label}")
    for col in table_columns(axis):
        rich_table.add_column(col, justify="left" if col in ("engine", "point", "kind") else "right")
    for r in table:
        rich_table.add_row(*table_cells(r, axis), style="bold" if r.on_front else None)
    console.print(rich_table)
    if not any(r.top1 is not None for r in table):
        err_console.print(tagged("warning:", "yellow", "no engine has an accuracy yet (run `adaexport eval`): "
                                 "the plot is empty and there is no front"), highlight=False)

    _write_outputs(png, html_path, lambda: plot_png(table, axis, f"{manifest['model']['name']}: accuracy against "
                                                    f"{'latency' if axis.profiled else 'FLOPs'}", width, height),
                   lambda image, note: html_page(manifest, table, axis, image, note))
    console.print(f"Pareto front ({axis.front_name}): "
                  + (", ".join(r.id for r in sorted((r for r in table if r.on_front), key=lambda r: r.cost))
                     or "none"), highlight=False, soft_wrap=True)
