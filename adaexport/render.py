"""Rich tables and human units for the command line (rich is imported only inside the
functions that draw, so importing this module costs nothing)."""

from __future__ import annotations

from typing import Any

from .manifest_records import EngineRecord, Manifest, ParityRecord


def human_count(n: Any) -> str:
    """12300000 -> '12.3M' (SI prefixes, for FLOPs and parameter counts)."""
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return "-"
    value = float(n)
    for unit in ("", "K", "M", "G", "T"):
        if abs(value) < 1000 or unit == "T":
            return f"{int(value)}" if unit == "" else f"{value:.1f}{unit}"
        value /= 1000
    return str(n)  # unreachable


def human_bytes(n: Any) -> str:
    """1536 -> '1.5 KiB'."""
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)  # unreachable


def near_ties_text(parity: ParityRecord) -> str:
    """' (N near-ties)' where changed samples were near-ties, not judged (adaexport.validate)."""
    return f" ({parity.near_ties} near-ties)" if parity.near_ties else ""


def parity_text(parity: ParityRecord | None):
    from rich.text import Text

    if parity is None:
        return Text("-", style="dim")
    label = "pass" if parity.passed else "FAIL"
    details = [f"{parity.max_abs:.1e}", f"{100 * parity.top1_agreement:.1f}%{near_ties_text(parity)}"]
    text = Text(label, style="green" if parity.passed else "bold red")
    text.append(" " + " / ".join(details))
    return text


def engines_table(manifest: Manifest | dict):
    """A rich Table of the manifest's engines."""
    from rich.table import Table
    from rich.text import Text

    if isinstance(manifest, dict):
        manifest = Manifest.from_json(manifest)
    title = " on ".join(str(x) for x in (manifest.model.name, manifest.device.target) if x)
    table = Table(title=title or None)
    for name in ("id", "tokens", "width", "depth", "backend", "precision", "status"):
        table.add_column(name, justify="right" if name in ("tokens", "width", "depth") else "left")
    table.add_column("FLOPs", justify="right")
    table.add_column("params", justify="right")
    table.add_column("parity (max_abs / top-1)")
    table.add_column("size", justify="right")
    engine: EngineRecord
    for engine in manifest.engines:
        status = engine.status or "ready"
        table.add_row(
            Text(engine.id),
            *(Text(str(v)) for v in (engine.point.tokens, engine.point.width, engine.point.depth)),
            Text(engine.backend),
            Text(engine.precision),
            Text(status, style="yellow" if status == "pending" else ""),
            Text(human_count(engine.flops)),
            Text(human_count(engine.params)),
            parity_text(engine.parity),
            Text(human_bytes(engine.size)),
        )
    return table
