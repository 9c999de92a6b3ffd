"""The closed loop: observed latency steers the choice (pure logic; the caller passes the clock).

The profile says how fast each engine was when it was measured; the device may now be
slower (thermal throttling, another process on the cores). The loop keeps one number
for that, the *slowdown*: an exponentially weighted mean of observed latency divided by
the serving engine's profiled mean (or p50). Every engine's expected latency is its
profiled percentile times the slowdown, so what is learnt on one engine applies to all.

* Step down: when the serving engine's expected latency has exceeded the limit for
  ``sustain`` consecutive observations, choose again (with the slowdown), which picks a
  faster engine. One slow inference does nothing.
  Both the smoothed expectation and each raw observation must be over the limit, so
  one slow inference (whose echo stays in the EWMA for a while) does nothing.
* Step up: only after a hold time on the current engine, and only to an engine expected
  within ``headroom`` of the limit (0.95: at most 95%). An engine we just left for being
  too slow is predicted too slow with the same slowdown, so it is not taken back until
  the slowdown really fell. Where the slowdown differs between engines (contention that
  hurts a bigger engine more), the prediction can be wrong in the hopeful direction; each
  step down from an engine therefore doubles the hold before returning to it (up to
  ``max_hold_s``), so such a loop switches ever more rarely instead of oscillating.
* A new limit or power mode applies at once (``reset``): no hold, no sustain.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from .policy import Candidate, Decision, Limits, choose


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    alpha: float = 0.2          # EWMA weight of the newest observation
    sustain: int = 5            # consecutive overruns before stepping down
    hold_s: float = 2.0         # time on an engine before stepping up (doubled per step down from it)
    max_hold_s: float = 60.0
    headroom: float = 0.95      # step up only to engines expected within this fraction of the limit
    recheck_s: float = 0.1      # look for a step up at most this often (a full choice costs O(engines))
    max_slowdown: float = 100.0

    def __post_init__(self):
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        if self.sustain < 1:
            raise ValueError(f"sustain must be >= 1, got {self.sustain}")
        if not 0 < self.headroom <= 1:
            raise ValueError(f"headroom must be in (0, 1], got {self.headroom}")
        if self.hold_s < 0:
            raise ValueError(f"hold_s must be >= 0, got {self.hold_s}")


class Controller:
    """Holds the current decision and updates it from observations. Not thread-safe on its
    own: the Runtime calls it under its lock."""

    def __init__(self, candidates: Sequence[Candidate], limits: Limits, settings: LoopSettings | None = None,
                 now: float = 0.0):
        self.settings = settings or LoopSettings()
        self.candidates = list(candidates)
        self._by_id = {c.id: c for c in self.candidates}
        self.limits = limits
        self.slowdown = 1.0
        self.observed: dict[str, float] = {}    # engine id -> EWMA of its observed latency (ms)
        self.rate_hz: float | None = None       # EWMA of the observed request rate
        self._last_request: float | None = None
        self._overruns = 0
        self._hold: dict[str, float] = {}        # engine id -> hold before stepping up to it
        self._checked_at = float("-inf")
        self.decision: Decision = choose(self.candidates, limits)
        self.switched_at = now
        self.switches = 0

    # ---------------------------------------------------------------- inputs

    def reset(self, limits: Limits, now: float, candidates: Sequence[Candidate] | None = None) -> Decision:
        """New limits (or new numbers after a power-mode change): choose again at once."""
        if candidates is not None:
            self.candidates = list(candidates)
            self._by_id = {c.id: c for c in self.candidates}
        self.limits = limits
        self._overruns = 0
        self._hold.clear()
        return self._switch(self._choose(limits), now)

    def update(self, candidates: Sequence[Candidate]) -> None:
        """New numbers for the same engines (e.g. another engine was loaded): used from the
        next choice on; the loop's state and the current decision stay."""
        self.candidates = list(candidates)
        self._by_id = {c.id: c for c in self.candidates}

    def observe(self, engine_id: str, latency_ms: float, now: float) -> Decision:
        """One finished inference: update the estimates, maybe step down or up."""
        s = self.settings
        if self._last_request is not None and now > self._last_request:
            rate = 1.0 / (now - self._last_request)
            self.rate_hz = rate if self.rate_hz is None else (1 - s.alpha) * self.rate_hz + s.alpha * rate
        self._last_request = now
        previous = self.observed.get(engine_id)
        self.observed[engine_id] = latency_ms if previous is None else (1 - s.alpha) * previous + s.alpha * latency_ms
        candidate = self._by_id.get(engine_id)
        reference = _reference_latency(candidate)
        raw = None
        if reference:
            ratio = min(max(latency_ms / reference, 1.0 / s.max_slowdown), s.max_slowdown)
            self.slowdown = (1 - s.alpha) * self.slowdown + s.alpha * ratio
            raw = candidate.latency(self.limits.percentile, ratio)
        if engine_id != self.decision.engine:
            return self.decision  # an inference that started before a switch
        return self._steer(now, latency_ms if raw is None else raw)

    # ---------------------------------------------------------------- logic

    def expected_ms(self, engine_id: str) -> float | None:
        c = self._by_id.get(engine_id)
        if c is None:
            return None
        profiled = (c.latency_ms or {}).get(self.limits.percentile)
        return profiled * self.slowdown if profiled is not None else self.observed.get(engine_id)

    def _with_observed(self, c: Candidate) -> Candidate:
        observed = self.observed.get(c.id)
        return c if observed is None else dataclasses.replace(c, observed_ms=observed)

    def _choose(self, limits: Limits) -> Decision:
        return choose([self._with_observed(c) for c in self.candidates], limits, self.slowdown, self.rate_hz)

    def _steer(self, now: float, raw_ms: float) -> Decision:
        s, limit = self.settings, self.limits.latency_ms
        current = self.decision.engine
        if (limit is None and self.limits.power_w is None) or current is None:
            return self.decision
        expected = self.expected_ms(current) if limit is not None else None
        latency_over = expected is not None and expected > limit
        power_over = self._over_power(current)
        if latency_over or power_over:
            # latency: the raw observation must overrun too (one fast run resets the count);
            # power: the observed request rate is already smoothed, so every check counts
            if power_over or raw_ms > limit:
                self._overruns += 1
            else:
                self._overruns = 0
            if self._overruns >= s.sustain:
                self._overruns = 0
                self._hold[current] = min(2 * self._hold.get(current, s.hold_s), s.max_hold_s)
                return self._switch(self._choose(self.limits), now)
            return self.decision
        self._overruns = 0
        if now - self.switched_at < s.hold_s or now - self._checked_at < s.recheck_s:
            return self.decision
        self._checked_at = now
        tighter = self._choose(self.limits.scaled(s.headroom))
        if tighter.fits and tighter.engine != current and self._better(tighter.engine, current):
            if now - self.switched_at >= self._hold.get(tighter.engine, s.hold_s):
                full = self._choose(self.limits)
                return self._switch(Decision(tighter.engine, True, tighter.reason, full.rejected), now)
        elif not self.decision.fits:
            again = self._choose(self.limits)  # serving the fastest: take any engine that now fits
            if again.fits:
                return self._switch(again, now)
        return self.decision

    def _over_power(self, engine_id: str) -> bool:
        """Whether the serving engine's power at the *observed* request rate exceeds the
        power limit (an app-given rate was already checked when the engine was chosen)."""
        limits = self.limits
        if limits.power_w is None or limits.rate_hz is not None or self.rate_hz is None:
            return False
        c = self._by_id.get(engine_id)
        power = c.power_w(self.rate_hz, limits.percentile, self.slowdown) if c else None
        return power is not None and power > limits.power_w

    def _better(self, a: str, b: str) -> bool:
        from .policy import rank_key

        key = rank_key(self.candidates)
        return key(self._by_id[a]) < key(self._by_id[b])

    def _switch(self, decision: Decision, now: float) -> Decision:
        if decision.engine != self.decision.engine:
            self.switched_at = now
            self.switches += 1
        self.decision = decision
        return decision


def _reference_latency(c: Candidate | None) -> float | None:
    """The profiled latency an observation is compared with (mean, else p50)."""
    if c is None or not c.latency_ms:
        return None
    for key in ("mean", "p50"):
        if c.latency_ms.get(key):
            return float(c.latency_ms[key])
    return None


def run_trace(controller: Controller, trace: Sequence[tuple[float, float]],
              latency_of: Callable[[str, float], float] | None = None) -> list[str]:
    """Drive ``controller`` through ``trace`` [(time s, slowdown factor)]: at each step the
    serving engine takes its profiled mean x the factor (or ``latency_of(engine, t)``).
    Returns the engine that served each step (for tests and simulations)."""
    served = []
    for now, factor in trace:
        engine = controller.decision.engine
        served.append(engine)
        if latency_of is not None:
            latency = latency_of(engine, now)
        else:
            latency = _reference_latency(controller._by_id[engine]) * factor
        controller.observe(engine, latency, now)
    return served
