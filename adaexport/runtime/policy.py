"""Which engine serves: pure functions over the manifest's numbers, no I/O, no clock.

An engine *fits* when every limit the app set holds for it at the current power mode:

* latency: the profile's latency at the chosen percentile (p90 by default), scaled by
  the slowdown the closed loop currently observes (1.0 when it has seen nothing), is at
  most ``latency_ms``;
* power: energy per inference (mJ) x request rate (Hz) / 1000 + idle power (W) is at
  most ``power_w``. The rate is the app's (``rate_hz``), else the observed one, else
  back to back (1000 / latency);
* memory: the profile's resident memory is at most ``memory_bytes``.

A limit the manifest has no number for cannot be shown to hold, so the engine is
rejected with that reason (an unprofiled family still serves: see ``choose``).
Among the engines that fit, the most accurate wins (measured top-1 from the manifest;
when any candidate lacks it, FLOPs order, more FLOPs meaning more accurate in an
AdaPerceiver family); ties go to the faster. When none fits, the fastest serves and
the decision says it does not fit.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

from ..checks import optional_number

PERCENTILES = ("p50", "p90", "p95", "p99", "mean", "max")


@dataclasses.dataclass(frozen=True)
class Limits:
    """What the app allows. None means: no limit on that quantity."""
    latency_ms: float | None = None
    power_w: float | None = None
    memory_bytes: int | None = None
    rate_hz: float | None = None          # the request rate the power limit assumes (None: observed)
    percentile: str = "p90"               # which profile statistic the latency limit is checked against

    def __post_init__(self):
        if self.percentile not in PERCENTILES:
            raise ValueError(f"percentile must be one of {', '.join(PERCENTILES)}, got {self.percentile!r}")
        for name in ("latency_ms", "power_w", "memory_bytes", "rate_hz"):  # NaN and infinities too
            optional_number(getattr(self, name), name, ValueError, above=0)

    def scaled_latency(self, factor: float) -> "Limits":
        """The same limits with the latency limit multiplied by ``factor``."""
        if self.latency_ms is None:
            return self
        return dataclasses.replace(self, latency_ms=self.latency_ms * factor)

    def scaled(self, factor: float) -> "Limits":
        """The latency and power limits multiplied by ``factor`` (the headroom test of a step up)."""
        power = None if self.power_w is None else self.power_w * factor
        return dataclasses.replace(self.scaled_latency(factor), power_w=power)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One engine's numbers at the current device and power mode (None: not measured)."""
    id: str
    flops: float
    accuracy: float | None = None
    latency_ms: dict[str, float] | None = None     # percentile -> ms, from the profile
    energy_mj: float | None = None
    idle_power_w: float | None = None
    memory_bytes: int | None = None
    observed_ms: float | None = None               # the closed loop's estimate, when it has one

    def latency(self, percentile: str, slowdown: float = 1.0) -> float | None:
        """Expected latency at ``percentile``: the profile's scaled by the observed slowdown,
        or what was observed on this engine when it was never profiled."""
        if self.latency_ms and self.latency_ms.get(percentile) is not None:
            return float(self.latency_ms[percentile]) * slowdown
        return self.observed_ms

    def power_w(self, rate_hz: float | None, percentile: str, slowdown: float = 1.0) -> float | None:
        if self.energy_mj is None:
            return None
        if rate_hz is None:
            latency = self.latency(percentile, slowdown)
            if not latency:
                return None
            rate_hz = 1000.0 / latency
        return self.energy_mj * rate_hz / 1000.0 + (self.idle_power_w or 0.0)


@dataclasses.dataclass(frozen=True)
class Decision:
    engine: str | None                   # None only when there is no candidate at all
    fits: bool
    reason: str                          # one line: why this engine
    rejected: dict[str, str]             # engine id -> why it does not fit (or why another won)

    def explain(self) -> list[tuple[str, str]]:
        return [(self.engine or "-", self.reason)] + list(self.rejected.items())


def rank_key(candidates: Sequence[Candidate]):
    """Sort key, best first: accuracy when every candidate has one, else FLOPs."""
    by_accuracy = bool(candidates) and all(c.accuracy is not None for c in candidates)

    def key(c: Candidate):
        primary = c.accuracy if by_accuracy else c.flops
        return (-primary, c.flops, c.id)

    return key


CASCADE_CHAINS = ("two-stage", "front")


def misfit(c: Candidate, limits: Limits, slowdown: float = 1.0, rate_hz: float | None = None) -> str | None:
    """Why ``c`` does not fit ``limits`` (one phrase), or None when it fits."""
    rate = limits.rate_hz if limits.rate_hz is not None else rate_hz
    if limits.latency_ms is not None:
        latency = c.latency(limits.percentile, slowdown)
        if latency is None:
            return f"no {limits.percentile} latency measured at this device and power mode"
        if latency > limits.latency_ms:
            scaled = f" (x{slowdown:.2f} observed slowdown)" if abs(slowdown - 1.0) > 1e-9 else ""
            return f"{limits.percentile} latency {latency:.3g} ms{scaled} > {limits.latency_ms:g} ms"
    if limits.power_w is not None:
        power = c.power_w(rate, limits.percentile, slowdown)
        if power is None:
            return "no energy measurement at this device and power mode"
        if power > limits.power_w:
            return f"power {power:.3g} W > {limits.power_w:g} W"
    if limits.memory_bytes is not None:
        if c.memory_bytes is None:
            return "no memory measurement at this device and power mode"
        if c.memory_bytes > limits.memory_bytes:
            return f"memory {c.memory_bytes / 2**20:.1f} MiB > {limits.memory_bytes / 2**20:.1f} MiB"
    return None


def fastest(candidates: Iterable[Candidate], percentile: str, slowdown: float = 1.0) -> Candidate | None:
    """The engine expected to be quickest: by profiled latency when every candidate has one,
    else by FLOPs (an observed latency on one engine says nothing about the others)."""
    candidates = list(candidates)
    profiled = all(c.latency_ms and c.latency_ms.get(percentile) is not None for c in candidates)

    def key(c: Candidate):
        return (c.latency(percentile, slowdown) if profiled else c.flops, c.flops, c.id)

    ordered = sorted(candidates, key=key)
    return ordered[0] if ordered else None


def choose(candidates: Sequence[Candidate], limits: Limits, slowdown: float = 1.0,
           rate_hz: float | None = None) -> Decision:
    """The most accurate candidate that fits every limit; the fastest when none does."""
    if not candidates:
        return Decision(None, False, "no engine could be loaded", {})
    ordered = sorted(candidates, key=rank_key(candidates))
    rejected: dict[str, str] = {}
    for c in ordered:
        why = misfit(c, limits, slowdown, rate_hz)
        if why is None:
            basis = "accuracy" if ordered and all(x.accuracy is not None for x in ordered) else "FLOPs"
            for other in ordered:
                if other.id != c.id and other.id not in rejected:
                    rejected[other.id] = misfit(other, limits, slowdown, rate_hz) \
                        or f"fits, but {c.id} ranks higher by {basis}"
            acc = f"top-1 {100 * c.accuracy:.2f}%" if basis == "accuracy" else f"{c.flops / 1e6:.1f}M FLOPs"
            return Decision(c.id, True, f"most accurate engine within the limits ({acc})", rejected)
        rejected[c.id] = why
    quick = fastest(ordered, limits.percentile, slowdown)
    rejected.pop(quick.id, None)
    why = misfit(quick, limits, slowdown, rate_hz)
    return Decision(quick.id, False, f"no engine fits the limits; serving the fastest ({why})", rejected)


def cascade_stages(candidates: Sequence[Candidate], front: Sequence[str], limits: Limits, final: str,
                   slowdown: float = 1.0, rate_hz: float | None = None, chain: str = "two-stage") -> list[str]:
    """The engines an input-adaptive cascade tries, cheapest first, ending with ``final`` (the
    engine ``choose`` picked). ``two-stage``: the cheapest front engine that fits the limits
    and ranks below ``final``, then ``final``; ``front``: every such front engine in turn.
    An uncertain input runs every stage, so the latency limit holds for the sum of the
    stages' latencies: a stage that would take the sum over the limit is left out.
    Measured on the demo (benchmarks/bench_runtime.py), two stages keep the accuracy with
    the fewest FLOPs: every extra stage an uncertain image passes through is paid for."""
    if chain not in CASCADE_CHAINS:
        raise ValueError(f"chain must be one of {', '.join(CASCADE_CHAINS)}, got {chain!r}")
    by_id = {c.id: c for c in candidates}
    if final not in by_id:
        return [final] if final is not None else []
    key = rank_key(candidates)
    total = by_id[final].latency(limits.percentile, slowdown) or 0.0
    stages = []
    for eid in front:
        if eid not in by_id or eid == final or misfit(by_id[eid], limits, slowdown, rate_hz) is not None \
                or not key(by_id[eid]) > key(by_id[final]):
            continue
        if limits.latency_ms is not None:
            latency = by_id[eid].latency(limits.percentile, slowdown)
            if latency is None or total + latency > limits.latency_ms:
                continue
            total += latency
        stages.append(eid)
        if chain == "two-stage":
            break
    return stages + [final]
