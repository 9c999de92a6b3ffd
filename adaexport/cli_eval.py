"""adaexport eval / check / report: accuracy per configuration, the CI gate, the Pareto report (issue 7)."""

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


@app.command()
@user_errors
def report(
    directory: Path = typer.Argument(..., help="A build directory (evaluated with `adaexport eval`)."),
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
) -> None:
    """Accuracy against latency (FLOPs where not profiled) with the Pareto front: a PNG plot,
    an HTML page with the plot and the full table, and the table here."""
    from .errors import UsageError
    from .manifest import read_manifest
    from .report import choose_axis, html_page, matplotlib_available, plot_png, rows, table_cells, table_columns

    if out is not None and (png is not None or html_path is not None):
        raise UsageError("pass either --out PREFIX or --png/--html, not both")
    if not (100 <= width <= 10000 and 100 <= height <= 10000):
        raise UsageError(f"--width/--height must be 100..10000 pixels, got {width}x{height}")
    manifest = read_manifest(directory)
    axis = choose_axis(manifest, device, mode, flops)
    table = rows(manifest, axis)
    prefix = out if out is not None else directory / "report"
    if png is None and html_path is None:
        png, html_path = prefix.with_name(prefix.name + ".png"), prefix.with_name(prefix.name + ".html")
    for path, option in ((png, "--png"), (html_path, "--html")):
        if path is not None:
            check_output_file(path, option)

    rich_table = Table(title=f"{manifest['model']['name']}: {len(table)} engine(s); x axis: {axis.label}")
    for col in table_columns(axis):
        rich_table.add_column(col, justify="left" if col in ("engine", "point", "kind") else "right")
    for r in table:
        rich_table.add_row(*table_cells(r, axis), style="bold" if r.on_front else None)
    console.print(rich_table)
    if not any(r.top1 is not None for r in table):
        err_console.print(tagged("warning:", "yellow", "no engine has an accuracy yet (run `adaexport eval`): "
                                 "the plot is empty and there is no front"), highlight=False)

    image, note = None, None
    if matplotlib_available():
        image = plot_png(table, axis, f"{manifest['model']['name']}: accuracy against "
                         f"{'latency' if axis.profiled else 'FLOPs'}", width, height)
    else:
        note = "matplotlib is not installed (pip install 'adaexport[report]'): no plot, the table only"
        err_console.print(tagged("note:", "yellow", note), highlight=False)
    if image is not None and png is not None:
        write_output_file(png, image, "--png")
        console.print(f"wrote {png}", highlight=False)
    if html_path is not None:
        write_output_file(html_path, html_page(manifest, table, axis, image, note), "--html")
        console.print(f"wrote {html_path}", highlight=False)
    console.print(f"Pareto front ({axis.front_name}): "
                  + (", ".join(r.id for r in sorted((r for r in table if r.on_front), key=lambda r: r.cost))
                     or "none"), highlight=False, soft_wrap=True)
