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
from .measurements import DEFAULT_MODE, accuracy_of, default_device, front_key, latency_ms, profiled_devices, \
    resolve_device, \
    profiled_modes
from .pareto import front

KIND_STYLE = {  # (backend, precision) -> (marker, colour)
    ("onnxruntime", "fp32"): ("o", "#1f77b4"), ("onnxruntime", "int8"): ("s", "#ff7f0e"),
    ("openvino", "fp32"): ("^", "#2ca02c"), ("openvino", "fp16"): ("D", "#d62728"),
    ("openvino", "int8"): ("v", "#9467bd"), ("tensorrt", "fp32"): ("P", "#8c564b"),
    ("tensorrt", "fp16"): ("X", "#e377c2"), ("tensorrt", "int8"): ("*", "#7f7f7f"),
}


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

    def cost(self, engine: dict) -> float | None:
        if self.profiled:
            return latency_ms(engine, self.device, self.mode)
        return float(engine["flops"])


def choose_axis(manifest: dict, device: str | None = None, mode: str | None = None, flops: bool = False) -> Axis:
    """The device and mode to plot: as asked, else the manifest's default device (in the
    `default` mode, or its first profiled one); FLOPs when asked or nothing was profiled."""
    if flops:
        if device is not None or mode is not None:
            raise UsageError("--flops plots FLOPs, not a device's latency: leave out --device/--mode")
        return Axis(None, None, asked_flops=True)
    devices = profiled_devices(manifest)
    if device is None:
        if mode is not None and not devices:
            raise UsageError(f"--mode {mode}: the build was not profiled on any device")
        device = default_device(manifest) or (devices[0] if devices else None)
        if device is None:
            return Axis(None, None)
    elif resolve_device(manifest, device) is not None:
        device = resolve_device(manifest, device)
    else:
        raise UsageError(f"--device {device}: not profiled in this build"
                         + (f" (profiled: {', '.join(devices)})" if devices else " (nothing is profiled; "
                            "run `adaexport profile`)"))
    modes = profiled_modes(manifest, device)
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


def rows(manifest: dict, axis: Axis) -> list[Row]:
    """Every engine, with the front computed for the chosen axis (the same rule as
    ``manifest["pareto"]``, recomputed so a report never shows a stale front)."""
    engines = manifest["engines"]
    items = [(e["id"], axis.cost(e), accuracy_of(e)) for e in engines if e.get("status", "ready") == "ready"]
    on = set(front((i, c, a) for i, c, a in items if c is not None and a is not None))
    out = []
    for e in engines:
        p, acc = e["point"], e.get("accuracy") or {}
        out.append(Row(e["id"], f"t{p['tokens']}_w{p['width']}_d{p['depth']}", f"{e['backend']} {e['precision']}",
                       int(e["flops"]), axis.cost(e), acc.get("top1"), acc.get("top5"), acc.get("reference_top1"),
                       e["id"] in on, e.get("status", "ready")))
    return out


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_png(table: list[Row], axis: Axis, title: str, width: int = 1200, height: int = 800) -> bytes:
    """The accuracy/cost scatter as PNG bytes of exactly width x height pixels: one marker
    per engine kind, every engine labelled, the front joined by a line and ringed."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_subplot()
    shown = [r for r in table if r.cost is not None and r.top1 is not None]
    scale = 1.0 if axis.profiled else 1e-6  # FLOPs are plotted in millions
    shown = [dataclasses.replace(r, cost=r.cost * scale) for r in shown]
    for kind in sorted({r.kind for r in shown}):
        group = [r for r in shown if r.kind == kind]
        marker, colour = KIND_STYLE.get(tuple(kind.split()), ("o", "#17becf"))
        ax.scatter([r.cost for r in group], [100 * r.top1 for r in group], marker=marker, color=colour, s=22,
                   alpha=0.75, label=kind, zorder=2)
    best = sorted((r for r in shown if r.on_front), key=lambda r: r.cost)
    if best:
        ax.plot([r.cost for r in best], [100 * r.top1 for r in best], color="black", lw=1.2, zorder=3,
                label="Pareto front")
        ax.scatter([r.cost for r in best], [100 * r.top1 for r in best], s=110, facecolors="none",
                   edgecolors="black", linewidths=1.4, zorder=4)
    small = len(shown) > 40
    for r in shown:
        text = f"{r.point} {r.kind}"
        ax.annotate(text, (r.cost, 100 * r.top1), xytext=(3, 3), textcoords="offset points",
                    fontsize=(6.5 if r.on_front else 4) if small else 7.5,
                    fontweight="bold" if r.on_front else "normal",
                    color="black" if r.on_front else "#555555", zorder=5)
    if shown and max(r.cost for r in shown) / max(min(r.cost for r in shown), 1e-12) > 20:
        ax.set_xscale("log")
    ax.margins(x=0.12, y=0.08)  # room for the labels of the outermost engines
    ax.set_xlabel(axis.label)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if shown:
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no engine has both an accuracy and a cost", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


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


def html_page(manifest: dict, table: list[Row], axis: Axis, png: bytes | None, note: str | None = None) -> bytes:
    """A self-contained page: the plot embedded as base64 (when there is one) and the full table."""
    esc = html.escape
    title = f"{manifest['model']['name']}: accuracy against {'latency' if axis.profiled else 'FLOPs'}"
    parts = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">", f"<title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
             "tr.front{font-weight:bold;background:#eef6ee}</style></head><body>", f"<h1>{esc(title)}</h1>",
             f"<p>{len(table)} engine(s), target {esc(manifest['device']['target'])}, built {esc(manifest['created'])}; "
             f"x axis: {esc(axis.label)}. Pareto front ({esc(axis.front_name)}): "
             f"{esc(', '.join(r.id for r in sorted((r for r in table if r.on_front), key=lambda r: r.cost)) or 'none')}"
             ".</p>"]
    if png is not None:
        parts.append(f"<img alt=\"{esc(title)}\" src=\"data:image/png;base64,{base64.b64encode(png).decode()}\">")
    if note:
        parts.append(f"<p><em>{esc(note)}</em></p>")
    parts.append("<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in table_columns(axis)) + "</tr>")
    for r in table:
        cells = "".join(f"<td>{esc(c)}</td>" for c in table_cells(r, axis))
        parts.append(f"<tr class=\"{'front' if r.on_front else ''}\">{cells}</tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts).encode("utf-8")
