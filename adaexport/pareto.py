"""The accuracy/cost Pareto front of a family (stdlib only: the runtime imports this).

An engine is on the front when no other engine is at least as accurate and at least as
cheap, and strictly better in one of the two. Cost is the p50 latency on a device in a
power mode, or FLOPs for the device-independent front. Engines without a measured
accuracy (``adaexport eval``) or without the cost are left out, never guessed.
"""

from __future__ import annotations

from typing import Iterable

from .manifest_reader import as_manifest
from .manifest_records import FLOPS_FRONT, Manifest, front_key


def front(items: Iterable[tuple[str, float, float]]) -> list[str]:
    """Ids of the non-dominated (id, cost, accuracy) items, cheapest first."""
    ordered = sorted(items, key=lambda item: (item[1], -item[2], item[0]))
    kept: list[str] = []
    best = float("-inf")
    for ident, _cost, accuracy in ordered:
        if accuracy > best:
            kept.append(ident)
            best = accuracy
    return kept


def compute_pareto(manifest: Manifest | dict) -> dict[str, list[str]]:
    """Every front the manifest's measurements allow: ``flops`` and one per profiled
    ``device/mode``. Empty when no engine has a measured accuracy."""
    manifest = as_manifest(manifest)
    ready = [e for e in manifest.engines if e.ready and e.accuracy_on() is not None]
    fronts: dict[str, list[str]] = {}
    if not ready:
        return fronts
    fronts[FLOPS_FRONT] = front((e.id, float(e.flops), e.accuracy_on()) for e in ready)
    for device in manifest.profiled_devices():
        for mode in manifest.profiled_modes(device):
            items = [(e.id, e.latency_ms(device, mode), e.accuracy_on()) for e in ready]
            items = [item for item in items if item[1] is not None]
            if items:
                fronts[front_key(device, mode)] = front(items)
    return fronts


def update_pareto(manifest: Manifest | dict) -> Manifest | dict:
    """Recompute the manifest's fronts in place (no ``pareto`` at all when there is nothing
    to rank); returns the manifest. Call it after any stage that changes accuracy or
    profiles. A manifest's JSON is updated in place too (its keys keep their order)."""
    record = as_manifest(manifest)
    record.set_pareto(compute_pareto(record))
    if isinstance(manifest, dict):
        updated = record.to_json()
        manifest.clear()
        manifest.update(updated)
    return manifest
