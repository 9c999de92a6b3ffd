"""What the engines a runtime keeps loaded hold in memory, shared weights counted once.

An engine's profile measures a plain session: the growth of the resident set over its
creation and first inference, its weights included. Engines whose sessions map their
weights from one file (the family's ONNX Runtime engines opened from the prepacked cache,
``backends.ort_prepacked``) hold those pages once between them however many are loaded,
so summing their profiles would count the pages once per engine. Each engine's
``Footprint`` is therefore its own memory (the profile less the pages it maps) and the
spans of the group's file it maps (recorded per engine when the cache is made); what a
set of loaded engines holds is every engine's own memory plus, per sharing group, the
union of the spans its engines map, each page once. An engine that holds its own weights
(OpenVINO, TensorRT, a plain session) counts its profile in full. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable


@dataclasses.dataclass(frozen=True)
class Footprint:
    """One engine's memory: ``own`` bytes (None: not measured) and, for an engine that maps
    a sharing group's weights, the group and the (offset, length) spans of its file."""
    own: int | None
    group: str | None = None
    spans: frozenset = frozenset()

    @classmethod
    def of(cls, measured: int | None, group: str | None = None, spans: Iterable = ()) -> "Footprint":
        """From a profile's memory (a plain session's, its weights included) and what the
        engine's session maps of ``group`` (None: nothing, it holds its own weights)."""
        if not group:
            return cls(measured)
        spans = frozenset(spans)
        return cls(None if measured is None else max(int(measured) - span_bytes(spans), 0), group, spans)


def span_bytes(spans: Iterable) -> int:
    """The bytes of distinct (offset, length) spans (the cache's spans never overlap)."""
    return sum(length for _, length in set(spans))


@dataclasses.dataclass(frozen=True)
class HeldMemory:
    """What a set of loaded engines holds (``Status.memory``): per sharing group the engines
    mapping its pages and those pages' bytes (once), each engine's own bytes, and the total
    (None when an engine's memory was not measured)."""
    groups: dict[str, tuple[str, ...]]
    shared_bytes: dict[str, int]
    own_bytes: dict[str, int | None]
    total: int | None

    @property
    def alone(self) -> tuple[str, ...]:
        """The engines that share no memory with another (``Status.sharing`` says why)."""
        grouped = {eid for ids in self.groups.values() for eid in ids}
        return tuple(eid for eid in self.own_bytes if eid not in grouped)


def held(footprints: dict[str, Footprint]) -> HeldMemory:
    """What the engines of ``footprints`` (engine id -> Footprint) hold together."""
    groups: dict[str, list[str]] = {}
    spans: dict[str, set] = {}
    for eid, footprint in footprints.items():
        if footprint.group:
            groups.setdefault(footprint.group, []).append(eid)
            spans.setdefault(footprint.group, set()).update(footprint.spans)
    shared = {group: span_bytes(s) for group, s in spans.items()}
    own = {eid: footprint.own for eid, footprint in footprints.items()}
    total = None if None in own.values() else sum(own.values()) + sum(shared.values())
    return HeldMemory({g: tuple(ids) for g, ids in groups.items()}, shared, own, total)
