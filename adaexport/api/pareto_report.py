"""report: accuracy against latency (FLOPs where not profiled) with the Pareto front, as a
PNG plot, an HTML page and a table; or, for a search, every configuration against FLOPs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .files import check_output_file, write_output_file
from .results import Result

NO_MATPLOTLIB = "matplotlib is not installed (pip install 'adaexport[report]'): no plot, the table only"


@dataclasses.dataclass
class ReportResult(Result):
    kind: str                           # "build" or "search"
    title: str
    columns: list[str]
    rows: list[list[str]]               # the table's cells, row by row
    bold: list[bool]                    # per row: on the front
    front: list[str]                    # the front's ids, cheapest first
    front_name: str
    intro: str                          # a search's summary line ("" for a build)
    written: list[Path]
    notes: list[str]                    # what could not be done (no matplotlib) and other warnings

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "title": self.title, "front": self.front, "front_name": self.front_name,
                "written": [str(p) for p in self.written], "notes": self.notes,
                "rows": [dict(zip(self.columns, cells)) for cells in self.rows]}


def _output_paths(prefix: Path, png: Path | None, html: Path | None) -> tuple[Path | None, Path | None]:
    """PREFIX.png and PREFIX.html unless png/html name them; refused before any work when
    they could not be written."""
    if png is None and html is None:
        png, html = prefix.with_name(prefix.name + ".png"), prefix.with_name(prefix.name + ".html")
    for path, option in ((png, "--png"), (html, "--html")):
        if path is not None:
            check_output_file(path, option)
    return png, html


def _write(png: Path | None, html: Path | None, plot, page, notes: list[str]) -> list[Path]:
    """The PNG (`plot()`: its bytes; skipped, saying so, without matplotlib) and the HTML
    page (`page(png bytes or None, note)`), each written atomically."""
    from ..report import matplotlib_available

    image, note, written = None, None, []
    if matplotlib_available():
        image = plot()
    else:
        note = NO_MATPLOTLIB
        notes.append(note)
    if image is not None and png is not None:
        write_output_file(png, image, "--png")
        written.append(png)
    if html is not None:
        write_output_file(html, page(image, note), "--html")
        written.append(html)
    return written


def _search_report(path: Path, from_build: bool, out, png, html, size) -> ReportResult:
    from ..manifest import read_records
    from ..report import plot_search_png, search_cells, search_columns, search_html, search_intro, search_rows
    from ..search import SEARCH_FILE, read_search

    built = None
    if from_build:
        manifest = read_records(path)
        if not (path / SEARCH_FILE).is_file():
            raise UsageError(f"{path}: no {SEARCH_FILE}: the build was not chosen from a search (--grid front[:K])")
        built = {e.point.id for e in manifest.engines}
        path = path / SEARCH_FILE
    doc = read_search(path)
    table = search_rows(doc, built)
    png, html = _output_paths(out if out is not None else path.with_suffix(""), png, html)
    shown = table if len(table) <= SEARCH_TABLE_ALL else [r for r in table if r.on_front or r.built]
    title = (f"{doc['model']['name']} on {doc['dataset']['spec']} ({doc['dataset']['samples']} images, "
             f"{doc['attention']} attention): " + ("every configuration" if shown is table else
                                                  f"the front of {len(table)} configurations"))
    notes: list[str] = []
    written = _write(png, html, lambda: plot_search_png(
        table, f"{doc['model']['name']}: top-1 on {doc['dataset']['spec']} against FLOPs", *size),
        lambda image, note: search_html(doc, table, image, note), notes)
    return ReportResult("search", title, search_columns(table), [search_cells(r) for r in shown],
                        [r.on_front for r in shown], list(doc["front"]), "accuracy vs FLOPs", search_intro(doc),
                        written, notes)


SEARCH_TABLE_ALL = 60  # a search table lists every configuration up to this many, else the front


def report(directory: str | Path, *, out: str | Path | None = None, png: str | Path | None = None,
           html: str | Path | None = None, device: str | None = None, mode: str | None = None, flops: bool = False,
           image_width: int = 1200, image_height: int = 800, search: bool = False) -> ReportResult:
    """The Pareto report of a build (accuracy against p50 latency, FLOPs where not
    profiled) or of a search result / a build's search (`search=True`), written as
    PREFIX.png and PREFIX.html (`out`, default DIR/report) or to `png`/`html`."""
    from ..manifest import read_records
    from ..report import choose_axis, html_page, plot_png, rows, table_cells, table_columns

    directory = Path(directory)
    out, png, html = (None if p is None else Path(p) for p in (out, png, html))
    if out is not None and (png is not None or html is not None):
        raise UsageError("pass either --out PREFIX or --png/--html, not both")
    if not (100 <= image_width <= 10000 and 100 <= image_height <= 10000):
        raise UsageError(f"--image-width/--image-height must be 100..10000 pixels, got {image_width}x{image_height}")
    size = (image_width, image_height)
    if directory.is_file() or search:
        if device is not None or mode is not None or flops:
            raise UsageError("a search result is plotted against FLOPs: leave out --device/--mode/--flops")
        return _search_report(directory, search and not directory.is_file(), out, png, html, size)
    manifest = read_records(directory)
    axis = choose_axis(manifest, device, mode, flops)
    table = rows(manifest, axis)
    png, html = _output_paths(out if out is not None else directory / "report", png, html)
    notes = [] if any(r.top1 is not None for r in table) else [
        "no engine has an accuracy yet (run `adaexport eval`): the plot is empty and there is no front"]
    name = manifest.model.name
    written = _write(png, html, lambda: plot_png(
        table, axis, f"{name}: accuracy against {'latency' if axis.profiled else 'FLOPs'}", *size),
        lambda image, note: html_page(manifest, table, axis, image, note), notes)
    front = [r.id for r in sorted((r for r in table if r.on_front), key=lambda r: r.cost)]
    return ReportResult("build", f"{name}: {len(table)} engine(s); x axis: {axis.label}", table_columns(axis),
                        [table_cells(r, axis) for r in table], [r.on_front for r in table], front, axis.front_name,
                        "", written, notes)
