"""The manifest's measured sections as records (standard library only): an engine's
profile on one device in one power mode, its accuracy, and how each device was profiled.

Part of the manifest's records (``manifest_records`` re-exports them); where the numbers
live is described in docs/DESIGN.md ("Measurements in the manifest"). ``profiling.family``
and ``evaluate`` write them; ``pareto``, ``report``, the runtime and the CLI read them.
"""

from __future__ import annotations

import dataclasses

from .manifest_fields import Record, dict_of, field, integer, list_of, nonempty, number, optional, record, text

_fraction = number(0, 1)
dataclass = dataclasses.dataclass(kw_only=True)


@dataclass
class AccuracyRecord(Record):
    """top-1/top-5 (0..1) of ``adaexport eval`` next to PyTorch's at the same point."""
    dataset: str | None = field(optional(text))
    samples: int | None = field(optional(integer(0)))
    top1: float | None = field(optional(_fraction))
    top5: float | None = field(optional(_fraction))
    reference_top1: float | None = field(optional(_fraction))
    reference_top5: float | None = field(optional(_fraction))
    evaluated: str | None = field(optional(text))
    device: str | None = field(optional(text))


def _number_or_none(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass
class ProfileRecord(Record):
    """One engine measured on one device in one power mode (``adaexport profile``)."""
    latency_ms: dict = field(dict_of(lambda v, p: v), factory=dict)
    session: dict = field(dict_of(lambda v, p: v), factory=dict)
    memory: dict = field(dict_of(lambda v, p: v), factory=dict)
    energy: dict = field(dict_of(lambda v, p: v), factory=dict)
    load_ms: float | None = field(optional(number(0)))
    cv: float | None = field(optional(number(0)))                 # coefficient of variation, percent
    iterations: int | None = field(optional(integer(1)))
    warnings: list = field(list_of(text), factory=list)

    def latency(self, statistic: str = "p50") -> float | None:
        value = _number_or_none(self.latency_ms.get(statistic))
        return None if value is None else float(value)

    def latencies(self) -> dict[str, float]:
        """Every latency statistic that is a number (p50, p90, ..., mean), in ms."""
        return {k: float(v) for k, v in self.latency_ms.items() if _number_or_none(v) is not None}

    def memory_bytes(self) -> int | None:
        """What the engine holds: its resident-set growth, plus the device memory the
        resident set cannot see (Jetson nvmap, a GPU's) where measured; None unmeasured."""
        rss = _number_or_none(self.memory.get("rss_bytes"))
        return None if rss is None else int(rss + (_number_or_none(self.memory.get("device_bytes")) or 0))

    def rss_bytes(self) -> int | None:
        """The resident-set growth alone (None: not measured)."""
        return _number_or_none(self.memory.get("rss_bytes"))

    def energy_mj(self) -> float | None:
        return _number_or_none(self.energy.get("per_inference_mj"))

    def idle_power_w(self) -> float | None:
        return _number_or_none(self.energy.get("idle_power_w"))


@dataclass
class ModeRun(Record):
    """How a device was profiled in one power mode (``profiling[<device>].modes[<mode>]``)."""
    profiled: str = field(text, required=True)
    idle_power_w: float | None = field(optional(number()), required=True)
    power_source: str | None = field(optional(text), required=True)
    energy_reason: str | None = field(optional(text), required=True)
    power_rails: list = field(list_of(text), factory=list)


@dataclass
class DeviceProfiling(Record):
    """How and where one device was profiled (``profiling[<device>]``): its target, identity
    facts (``adaexport.device_identity``), host, backend versions, settings, threads, modes."""
    target: str = field(nonempty, required=True)
    identity: dict | None = field(optional(dict_of(lambda v, p: v)))
    host: dict = field(dict_of(lambda v, p: v), factory=dict)
    backends: dict = field(dict_of(lambda v, p: v), factory=dict)
    settings: dict = field(dict_of(lambda v, p: v), required=True)
    threads: dict = field(dict_of(lambda v, p: v), factory=dict)
    modes: dict = field(dict_of(record(ModeRun)), required=True)
