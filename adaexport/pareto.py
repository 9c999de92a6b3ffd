"""The accuracy/cost Pareto front of a family (stdlib only: the runtime imports this).

An engine is on the front when no other engine is at least as accurate and at least as
cheap, and strictly better in one of the two. Cost is the p50 latency on a device in a
power mode, or FLOPs for the device-independent front. Engines without a measured
accuracy (``adaexport eval``) or without the cost are left out, never guessed.
"""

from __future__ import annotations

from typing import Iterable

from .measurements import FLOPS_FRONT, accuracy_of, front_key, latency_ms, profiled_devices, profiled_modes


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


def compute_pareto(manifest: dict) -> dict[str, list[str]]:
    """Every front the manifest's measurements allow: ``flops`` and one per profiled
    ``device/mode``. Empty when no engine has a measured accuracy."""
    ready = [e for e in manifest.get("engines", []) if e.get("status", "ready") == "ready"
             and accuracy_of(e) is not None]
    fronts: dict[str, list[str]] = {}
    if not ready:
        return fronts
    fronts[FLOPS_FRONT] = front((e["id"], float(e["flops"]), accuracy_of(e)) for e in ready)
    for device in profiled_devices(manifest):
        for mode in profiled_modes(manifest, device):
            items = [(e["id"], latency_ms(e, device, mode), accuracy_of(e)) for e in ready]
            items = [item for item in items if item[1] is not None]
            if items:
                fronts[front_key(device, mode)] = front(items)
    return fronts


def update_pareto(manifest: dict) -> dict:
    """Recompute ``manifest["pareto"]`` in place (removed when there is nothing to rank);
    returns the manifest. Call it after any stage that changes accuracy or profiles."""
    fronts = compute_pareto(manifest)
    if fronts:
        manifest["pareto"] = fronts
    else:
        manifest.pop("pareto", None)
    return manifest
