"""adaexport report: accuracy against cost for every engine, the Pareto front marked.

Cost is the p50 latency on a profiled device and power mode, or FLOPs where the build was
not profiled (the axis label says which). Three outputs: a PNG plot (matplotlib, an
optional dependency: the ``report`` extra), an HTML page with the plot embedded and the
full table, and the rows for the terminal table.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io

from .errors import UsageError
from .manifest_reader import as_manifest
from .manifest_records import DEFAULT_MODE, AccuracyRecord, EngineRecord, Manifest, front_key
from .pareto import front

PRECISION_MARKERS = {"fp32": "o", "fp16": "D", "int8": "s"}   # one marker per precision, one colour per backend
COLOURS = ("#1f77b4", "#2ca02c", "#8c564b", "#ff7f0e", "#9467bd", "#d62728", "#e377c2", "#7f7f7f")


def kind_styles(kinds) -> dict[str, tuple[str, str]]:
    """"<backend> <precision>" -> (marker, colour): the marker says the precision, the
    colour the backend (in name order), whatever backends the build has."""
    backends = sorted({kind.split()[0] for kind in kinds})
    return {kind: (PRECISION_MARKERS.get(kind.split()[-1], "^"), COLOURS[backends.index(kind.split()[0]) % len(COLOURS)])
            for kind in kinds}


@dataclasses.dataclass
class Axis:
    """What the x axis measures: p50 latency on (device, mode), or FLOPs."""

    device: str | None
    mode: str | None
    asked_flops: bool = False   # FLOPs by request (--flops), not for want of a profile

    @property
    def profiled(self) -> bool:
        return self.device is not None

    @property
    def label(self) -> str:
        if self.profiled:
            return f"p50 latency (ms) on {self.device}, power mode {self.mode}"
        if self.asked_flops:
            return "MFLOPs per image"
        return "MFLOPs per image (not profiled: FLOPs stand in for latency)"

    @property
    def front_name(self) -> str:
        return front_key(self.device, self.mode) if self.profiled else "flops"

    def cost(self, engine: EngineRecord) -> float | None:
        if self.profiled:
            return engine.latency_ms(self.device, self.mode)
        return float(engine.flops)


def choose_axis(manifest: Manifest | dict, device: str | None = None, mode: str | None = None,
                flops: bool = False) -> Axis:
    """The device and mode to plot: as asked, else the manifest's default device (in the
    `default` mode, or its first profiled one); FLOPs when asked or nothing was profiled."""
    if flops:
        if device is not None or mode is not None:
            raise UsageError("--flops plots FLOPs, not a device's latency: leave out --device/--mode")
        return Axis(None, None, asked_flops=True)
    manifest = as_manifest(manifest)
    devices = manifest.profiled_devices()
    if device is None:
        if mode is not None and not devices:
            raise UsageError(f"--mode {mode}: the build was not profiled on any device")
        device = manifest.default_device() or (devices[0] if devices else None)
        if device is None:
            return Axis(None, None)
    elif manifest.resolve_device(device) is not None:
        device = manifest.resolve_device(device)
    else:
        raise UsageError(f"--device {device}: not profiled in this build"
                         + (f" (profiled: {', '.join(devices)})" if devices else " (nothing is profiled; "
                            "run `adaexport profile`)"))
    modes = manifest.profiled_modes(device)
    if mode is None:
        mode = DEFAULT_MODE if DEFAULT_MODE in modes else (modes[0] if modes else DEFAULT_MODE)
    elif mode not in modes:
        raise UsageError(f"--mode {mode}: {device} was not profiled in that mode (profiled: {', '.join(modes)})")
    return Axis(device, mode)


@dataclasses.dataclass
class Row:
    id: str
    point: str
    kind: str
    flops: int
    cost: float | None
    top1: float | None
    top5: float | None
    reference_top1: float | None
    on_front: bool
    status: str


def rows(manifest: Manifest | dict, axis: Axis) -> list[Row]:
    """Every engine, with the front computed for the chosen axis (the same rule as the
    manifest's stored fronts, recomputed so a report never shows a stale front)."""
    engines = as_manifest(manifest).engines
    items = [(e.id, axis.cost(e), e.accuracy_on()) for e in engines if e.ready]
    on = set(front((i, c, a) for i, c, a in items if c is not None and a is not None))
    out = []
    for e in engines:
        p, acc = e.point, e.accuracy or AccuracyRecord()
        out.append(Row(e.id, p.id, f"{e.backend} {e.precision}", int(e.flops),
                       axis.cost(e), acc.top1, acc.top5, acc.reference_top1, e.id in on, e.status or "ready"))
    return out


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


DPI = 100


def _axes(width: int, height: int):
    """A figure of exactly width x height pixels (figure size x dpi) and its axes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    return fig, fig.add_subplot()


def _finish_png(fig, ax, xlabel: str, title: str, costs: list[float]) -> bytes:
    """Log x axis over a wide cost range, labels, grid; the PNG bytes."""
    if costs and max(costs) / max(min(costs), 1e-12) > 20:
        ax.set_xscale("log")
    ax.margins(x=0.12, y=0.08)  # room for the labels of the outermost points
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _draw_front(ax, costs: list[float], top1: list[float]) -> None:
    """The front joined by a line, its points ringed (top-1 as fractions)."""
    ax.plot(costs, [100 * a for a in top1], color="black", lw=1.2, zorder=3, label="Pareto front")
    ax.scatter(costs, [100 * a for a in top1], s=110, facecolors="none", edgecolors="black", linewidths=1.4,
               zorder=4)


def plot_png(table: list[Row], axis: Axis, title: str, width: int = 1200, height: int = 800) -> bytes:
    """The accuracy/cost scatter as PNG bytes of exactly width x height pixels: one marker
    per engine kind, every engine labelled, the front joined by a line and ringed."""
    fig, ax = _axes(width, height)
    shown = [r for r in table if r.cost is not None and r.top1 is not None]
    scale = 1.0 if axis.profiled else 1e-6  # FLOPs are plotted in millions
    shown = [dataclasses.replace(r, cost=r.cost * scale) for r in shown]
    styles = kind_styles({r.kind for r in shown})
    for kind in sorted(styles):
        group = [r for r in shown if r.kind == kind]
        marker, colour = styles[kind]
        ax.scatter([r.cost for r in group], [100 * r.top1 for r in group], marker=marker, color=colour, s=22,
                   alpha=0.75, label=kind, zorder=2)
    best = sorted((r for r in shown if r.on_front), key=lambda r: r.cost)
    if best:
        _draw_front(ax, [r.cost for r in best], [r.top1 for r in best])
    small = len(shown) > 40
    for r in shown:
        text = f"{r.point} {r.kind}"
        ax.annotate(text, (r.cost, 100 * r.top1), xytext=(3, 3), textcoords="offset points",
                    fontsize=(6.5 if r.on_front else 4) if small else 7.5,
                    fontweight="bold" if r.on_front else "normal",
                    color="black" if r.on_front else "#555555", zorder=5)
    if shown:
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no engine has both an accuracy and a cost", ha="center", transform=ax.transAxes)
    return _finish_png(fig, ax, axis.label, title, [r.cost for r in shown])


def _fmt_cost(axis: Axis, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if axis.profiled else f"{value / 1e6:.2f}M"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def table_columns(axis: Axis) -> list[str]:
    cost = f"p50 ms ({axis.device}/{axis.mode})" if axis.profiled else "FLOPs"
    return ["engine", "point", "kind", cost, "top-1 %", "top-5 %", "PyTorch top-1 %", "front"]


def table_cells(row: Row, axis: Axis) -> list[str]:
    return [row.id, row.point, row.kind, _fmt_cost(axis, row.cost), _pct(row.top1), _pct(row.top5),
            _pct(row.reference_top1), "yes" if row.on_front else ("pending" if row.status != "ready" else "")]


def html_page(manifest: Manifest | dict, table: list[Row], axis: Axis, png: bytes | None, note: str | None = None
              ) -> bytes:
    """A self-contained page: the plot embedded as base64 (when there is one) and the full table."""
    manifest = as_manifest(manifest)
    title = f"{manifest.model.name}: accuracy against {'latency' if axis.profiled else 'FLOPs'}"
    front_ids = ", ".join(r.id for r in sorted((r for r in table if r.on_front), key=lambda r: r.cost)) or "none"
    intro = (f"{len(table)} engine(s), target {manifest.device.target}, built {manifest.created}; "
             f"x axis: {axis.label}. Pareto front ({axis.front_name}): {front_ids}.")
    return _html_document(title, intro, png, note, table_columns(axis),
                          [(table_cells(r, axis), "front" if r.on_front else "") for r in table])


def _html_document(title: str, intro: str, png: bytes | None, note: str | None, columns: list[str],
                   body: list[tuple[list[str], str]]) -> bytes:
    """The page: title, an intro paragraph, the plot (base64), a note, and a table whose rows
    are (cells, css class); class `front` is bold."""
    esc = html.escape
    parts = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">", f"<title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
             "tr.front{font-weight:bold;background:#eef6ee}</style></head><body>", f"<h1>{esc(title)}</h1>",
             f"<p>{esc(intro)}</p>"]
    if png is not None:
        parts.append(f"<img alt=\"{esc(title)}\" src=\"data:image/png;base64,{base64.b64encode(png).decode()}\">")
    if note:
        parts.append(f"<p><em>{esc(note)}</em></p>")
    parts.append("<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>")
    for cells, css in body:
        parts.append(f"<tr class=\"{css}\">" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts).encode("utf-8")


# --- a search result (adaexport search): every trained configuration, its front, the ones built ---


@dataclasses.dataclass
class SearchRow:
    id: str
    tokens: int
    width: int
    depth: int
    flops: int
    params: int
    top1: float
    top5: float | None
    on_front: bool
    built: bool | None  # None: not plotted against a build


def search_rows(doc: dict, built: set[str] | None = None) -> list[SearchRow]:
    """Every configuration of a search, cheapest first, its front recomputed (pareto's rule)."""
    from .search import front_of

    on = set(front_of(doc["configurations"]))
    rows_ = [SearchRow(c["id"], c["point"]["tokens"], c["point"]["width"], c["point"]["depth"], int(c["flops"]),
                       int(c["params"]), c["top1"], c.get("top5"), c["id"] in on,
                       None if built is None else c["id"] in built)
             for c in doc["configurations"]]
    return sorted(rows_, key=lambda r: (r.flops, -r.top1, r.id))


def search_columns(table: list[SearchRow]) -> list[str]:
    built = [] if table and table[0].built is None else ["built"]
    return ["configuration", "tokens", "width", "depth", "FLOPs", "params", "top-1 %", "top-5 %", "front", *built]


def search_cells(row: SearchRow) -> list[str]:
    built = [] if row.built is None else ["yes" if row.built else ""]
    return [row.id, str(row.tokens), str(row.width), str(row.depth), f"{row.flops / 1e6:.2f}M", f"{row.params:,}",
            _pct(row.top1), _pct(row.top5), "yes" if row.on_front else "", *built]


def search_intro(doc: dict) -> str:
    cost, data = doc["cost"], doc["dataset"]
    return (f"{len(doc['configurations'])} configurations of {doc['model']['name']} on {data['spec']} "
            f"({data['samples']} images), {doc['attention']} attention: {doc['passes']['per_image']} pass(es) per "
            f"image, {cost['full_forward_passes']:.2f}x the FLOPs of one full-configuration forward, "
            f"{cost['seconds']:.1f} s ({1000 * cost['seconds_per_image']:.2f} ms per image, "
            f"{cost['threads']} thread(s)).")


def plot_search_png(table: list[SearchRow], title: str, width: int = 1200, height: int = 800) -> bytes:
    """Top-1 against FLOPs of every configuration (colour: token count, marker: width), the
    front joined and ringed, the built configurations starred; front and built labelled."""
    fig, ax = _axes(width, height)
    markers = dict(zip(sorted({r.width for r in table}), "o^sDvP*X"))
    colours = dict(zip(sorted({r.tokens for r in table}),
                       ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")))
    for tokens, width_ in sorted({(r.tokens, r.width) for r in table}):
        group = [r for r in table if (r.tokens, r.width) == (tokens, width_)]
        ax.scatter([r.flops / 1e6 for r in group], [100 * r.top1 for r in group], marker=markers.get(width_, "o"),
                   color=colours.get(tokens, "#17becf"), s=18, alpha=0.6, zorder=2,
                   label=f"tokens {tokens}, width {width_}")
    best = [r for r in table if r.on_front]
    if best:
        _draw_front(ax, [r.flops / 1e6 for r in best], [r.top1 for r in best])
    built = [r for r in table if r.built]
    if built:
        ax.scatter([r.flops / 1e6 for r in built], [100 * r.top1 for r in built], marker="*", s=220, color="#d62728",
                   edgecolors="black", linewidths=0.6, zorder=5, label="built")
    for r in table:
        if r.on_front or r.built:
            ax.annotate(r.id, (r.flops / 1e6, 100 * r.top1), xytext=(4, -10), textcoords="offset points", fontsize=7,
                        fontweight="bold" if r.built else "normal", zorder=6)
    ax.legend(loc="lower right", fontsize=6, ncol=2 if len(markers) * len(colours) > 12 else 1)
    return _finish_png(fig, ax, "MFLOPs per image", title, [r.flops / 1e6 for r in table])


def search_html(doc: dict, table: list[SearchRow], png: bytes | None, note: str | None = None) -> bytes:
    title = f"{doc['model']['name']}: every trained configuration, accuracy against FLOPs"
    return _html_document(title, search_intro(doc), png, note, search_columns(table),
                          [(search_cells(r), "front" if r.on_front else "") for r in table])
