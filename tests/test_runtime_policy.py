"""The runtime's choice and closed loop: pure logic, table-driven, synthetic latency traces."""

from __future__ import annotations

import pytest

from adaexport.runtime.loop import Controller, LoopSettings, run_trace
from adaexport.runtime.policy import Candidate, Limits, cascade_stages, choose


def cand(eid, flops, p90=None, acc=None, energy=None, idle=1.0, rss=None):
    lat = None if p90 is None else {"p50": 0.8 * p90, "p90": p90, "p99": 1.3 * p90, "mean": 0.85 * p90}
    return Candidate(id=eid, flops=flops, accuracy=acc, latency_ms=lat, energy_mj=energy,
                     idle_power_w=idle if energy is not None else None, memory_bytes=rss)


# a family: bigger is slower and (mostly) more accurate; "odd" is slow but less accurate
FAMILY = [
    cand("small", 4e6, p90=1.0, acc=0.870, energy=2.0, rss=30 << 20),
    cand("mid", 8e6, p90=2.0, acc=0.880, energy=4.0, rss=40 << 20),
    cand("big", 15e6, p90=4.0, acc=0.885, energy=8.0, rss=60 << 20),
    cand("odd", 12e6, p90=3.0, acc=0.875, energy=6.0, rss=50 << 20),
]


def expected_best(cands, fits):
    """The reference answer, derived independently: the most accurate of those that fit."""
    ok = [c for c in cands if fits(c)]
    return max(ok, key=lambda c: c.accuracy).id if ok else min(cands, key=lambda c: c.latency_ms["p90"]).id


@pytest.mark.parametrize("limits, fits", [
    (Limits(), lambda c: True),
    (Limits(latency_ms=4.0), lambda c: c.latency_ms["p90"] <= 4.0),
    (Limits(latency_ms=3.5), lambda c: c.latency_ms["p90"] <= 3.5),
    (Limits(latency_ms=1.5), lambda c: c.latency_ms["p90"] <= 1.5),
    (Limits(latency_ms=0.5), lambda c: False),
    (Limits(latency_ms=3.0, percentile="p50"), lambda c: 0.8 * c.latency_ms["p90"] <= 3.0),
    (Limits(latency_ms=3.0, percentile="p99"), lambda c: 1.3 * c.latency_ms["p90"] <= 3.0),
    # power = energy mJ x rate / 1000 + idle
    (Limits(power_w=1.5, rate_hz=200), lambda c: c.energy_mj * 0.2 + 1.0 <= 1.5),
    (Limits(power_w=2.0, rate_hz=200), lambda c: c.energy_mj * 0.2 + 1.0 <= 2.0),
    # back to back when no rate is known: rate = 1000 / p90
    (Limits(power_w=3.0), lambda c: c.energy_mj * (1.0 / c.latency_ms["p90"]) + 1.0 <= 3.0),
    (Limits(memory_bytes=45 << 20), lambda c: c.memory_bytes <= 45 << 20),
    (Limits(latency_ms=3.5, memory_bytes=45 << 20), lambda c: c.latency_ms["p90"] <= 3.5 and c.memory_bytes <= 45 << 20),
])
def test_choice_is_the_most_accurate_engine_that_fits(limits, fits):
    decision = choose(FAMILY, limits)
    assert decision.engine == expected_best(FAMILY, fits)
    assert decision.fits == any(fits(c) for c in FAMILY)
    # every other engine has a reason, and a rejected one is named for the limit it breaks
    assert set(decision.rejected) == {c.id for c in FAMILY} - {decision.engine}
    for c in FAMILY:
        if c.id != decision.engine and not fits(c):
            assert "fits" not in decision.rejected[c.id]


def test_no_engine_fits_serves_the_fastest_and_says_so():
    decision = choose(FAMILY, Limits(latency_ms=0.1))
    assert (decision.engine, decision.fits) == ("small", False)
    assert "no engine fits" in decision.reason


def test_flops_order_when_accuracy_is_missing():
    cands = [cand("a", 4e6, p90=1.0), cand("b", 9e6, p90=2.0, acc=0.9), cand("c", 7e6, p90=1.5)]
    assert choose(cands, Limits()).engine == "b"            # most FLOPs
    assert choose(cands, Limits(latency_ms=1.6)).engine == "c"
    assert "FLOPs" in choose(cands, Limits()).reason


def test_unprofiled_engines_cannot_prove_a_latency_limit():
    cands = [cand("profiled", 4e6, p90=1.0, acc=0.8), cand("unknown", 9e6, acc=0.9)]
    decision = choose(cands, Limits(latency_ms=5.0))
    assert decision.engine == "profiled"
    assert "no p90 latency" in decision.rejected["unknown"]
    assert choose(cands, Limits()).engine == "unknown"      # no limit: accuracy decides
    # an energy limit without an energy number
    assert "no energy" in choose([cand("x", 1e6, p90=1.0, acc=0.5)], Limits(power_w=5)).reason


@pytest.mark.parametrize("kwargs", [{"latency_ms": 0}, {"latency_ms": -1}, {"power_w": 0}, {"percentile": "p42"}])
def test_bad_limits_are_refused(kwargs):
    with pytest.raises(ValueError):
        Limits(**kwargs)


def test_cascade_stages_are_the_cheaper_front_engines_that_fit_then_the_choice():
    front = ["small", "mid", "big"]
    assert cascade_stages(FAMILY, front, Limits(), "big", chain="front") == ["small", "mid", "big"]
    assert cascade_stages(FAMILY, front, Limits(latency_ms=3.0), "mid", chain="front") == ["small", "mid"]
    assert cascade_stages(FAMILY, front, Limits(), "small", chain="front") == ["small"]


def test_the_latency_limit_holds_for_the_sum_of_the_cascade_stages():
    """An uncertain input runs every stage: p90s 1 (small) + 2 (mid) + 4 (big)."""
    front = ["small", "mid", "big"]
    assert cascade_stages(FAMILY, front, Limits(latency_ms=7.0), "big", chain="front") == ["small", "mid", "big"]
    assert cascade_stages(FAMILY, front, Limits(latency_ms=6.5), "big", chain="front") == ["small", "big"]
    assert cascade_stages(FAMILY, front, Limits(latency_ms=4.5), "big", chain="front") == ["big"]
    assert cascade_stages(FAMILY, front, Limits(latency_ms=2.5), "mid") == ["mid"]
    assert cascade_stages(FAMILY, front, Limits(latency_ms=6.0, percentile="p50"), "big") == ["small", "big"]
    assert cascade_stages(FAMILY, front, Limits(latency_ms=1.0), "big") == ["big"]    # nothing fits: no extra stage


def test_two_stage_cascade_is_the_cheapest_fitting_front_engine_then_the_choice():
    front = ["small", "mid", "big"]
    assert cascade_stages(FAMILY, front, Limits(), "big") == ["small", "big"]
    assert cascade_stages(FAMILY, front, Limits(latency_ms=3.0), "mid") == ["small", "mid"]
    assert cascade_stages(FAMILY, front, Limits(), "small") == ["small"]
    with pytest.raises(ValueError):
        cascade_stages(FAMILY, front, Limits(), "big", chain="all")


# --------------------------------------------------------------------------- closed loop

LADDER = [cand("e1", 1e6, p90=1.0, acc=0.80), cand("e2", 2e6, p90=2.0, acc=0.85),
          cand("e3", 3e6, p90=3.0, acc=0.90)]
SETTINGS = LoopSettings(alpha=0.3, sustain=4, hold_s=1.0, headroom=0.95)


def trace(*segments):
    """[(seconds, slowdown factor)] at 100 inferences per second from (duration s, factor) segments."""
    out, t = [], 0.0
    for duration, factor in segments:
        for _ in range(int(round(duration * 100))):
            out.append((t, factor))
            t += 0.01
    return out


def runs(served):
    """The sequence of distinct engines served (one entry per switch)."""
    out = []
    for engine in served:
        if not out or out[-1] != engine:
            out.append(engine)
    return out


@pytest.mark.parametrize("name, segments, expected_runs", [
    # steady: the best engine that fits (p90 3.0 <= 3.2) serves throughout
    ("steady", [(3, 1.0)], ["e3"]),
    # one slow inference in a steady run: no switch (needs `sustain` in a row)
    ("one spike", [(1, 1.0), (0.01, 5.0), (2, 1.0)], ["e3"]),
    # throttling x1.5: e3 expected at 4.5 > 3.2 -> down to e2 (3.0 fits); recovery -> back to e3 after the hold
    ("throttle and recover", [(1, 1.0), (3, 1.5), (4, 1.0)], ["e3", "e2", "e3"]),
    # heavy throttling x3: down to e1 (expected 3.0), nothing faster, stays
    ("heavy throttle", [(1, 1.0), (4, 3.0)], ["e3", "e1"]),
    # a slowdown in the hysteresis band (e3 at 3.0 x 1.05 = 3.15 <= 3.2): no change at all
    ("inside the band", [(1, 1.0), (3, 1.05), (2, 1.0)], ["e3"]),
])
def test_closed_loop_traces(name, segments, expected_runs):
    controller = Controller(LADDER, Limits(latency_ms=3.2), SETTINGS, now=0.0)
    served = run_trace(controller, trace(*segments))
    assert runs(served) == expected_runs, name


def test_closed_loop_does_not_oscillate_at_the_edge():
    """A slowdown that puts e3 just over the limit and e2 inside it: one step down, and it
    stays down (e3's prediction keeps it out; e2's headroom is real), for a long time."""
    controller = Controller(LADDER, Limits(latency_ms=3.2), SETTINGS, now=0.0)
    served = run_trace(controller, trace((1, 1.0), (20, 1.12)))
    assert runs(served) == ["e3", "e2"]
    assert controller.switches == 1


def test_closed_loop_noisy_latency_near_the_limit_switches_rarely():
    """Alternating fast/slow observations around the limit: the EWMA and the sustain count
    absorb it; at most one step down over 10 s."""
    controller = Controller(LADDER, Limits(latency_ms=3.2), SETTINGS, now=0.0)
    factors = [(i * 0.01, 1.25 if i % 2 else 0.85) for i in range(1000)]
    served = run_trace(controller, factors)
    assert len(runs(served)) <= 2


def test_step_up_waits_for_the_hold_time_doubled_by_the_step_down():
    hold = 5.0
    controller = Controller(LADDER, Limits(latency_ms=3.2), LoopSettings(alpha=0.5, sustain=2, hold_s=hold),
                            now=0.0)
    steps = trace((1, 1.0), (1, 1.5), (13, 1.0))                         # recovered at t=2 s
    served = run_trace(controller, steps)
    down = served.index("e2")
    back = down + served[down:].index("e3")
    switched_down_at, back_at = steps[down - 1][0], steps[back - 1][0]
    assert back_at - switched_down_at >= 2 * hold                        # e3 was left once: hold doubled
    assert back_at - switched_down_at < 2 * hold + LoopSettings().recheck_s + 0.02   # and not later
    assert runs(served) == ["e3", "e2", "e3"]


def test_new_limit_applies_at_once():
    controller = Controller(LADDER, Limits(latency_ms=3.2), SETTINGS, now=0.0)
    assert controller.decision.engine == "e3"
    controller.reset(Limits(latency_ms=1.5), now=0.01)
    assert controller.decision.engine == "e1"
    controller.reset(Limits(latency_ms=10), now=0.02)                      # no hold for a new limit
    assert controller.decision.engine == "e3"


def test_engine_dependent_slowdown_switches_ever_more_rarely():
    """Contention that slows only e3 (x1.15, over the limit) while e2 runs at its profile:
    the prediction from e2 keeps inviting e3 back; the doubling hold makes the returns
    sparse (no oscillation at a fixed period)."""
    controller = Controller(LADDER, Limits(latency_ms=3.2), SETTINGS, now=0.0)
    mean = {c.id: c.latency_ms["mean"] for c in LADDER}
    steps = [(i * 0.01, 1.0) for i in range(20000)]                        # 200 s
    served = run_trace(controller, steps, lambda e, t: mean[e] * (1.15 if e == "e3" else 1.0))
    returns = [steps[i][0] for i in range(1, len(served)) if served[i] == "e3" and served[i - 1] != "e3"]
    gaps = [b - a for a, b in zip(returns, returns[1:])]
    assert gaps == sorted(gaps) or max(gaps) >= SETTINGS.max_hold_s        # non-decreasing until the cap
    assert controller.switches <= 2 * (len(returns) + 1)
    assert len(returns) < 200 / (2 * SETTINGS.hold_s) / 4                  # far fewer than a fixed-period loop


# power limit with the request rate observed (the app gave none): energy mJ x rate / 1000 + idle 1 W
POWER_LADDER = [cand("p1", 1e6, p90=1.0, acc=0.80, energy=2.0), cand("p2", 2e6, p90=2.0, acc=0.85, energy=4.0),
                cand("p3", 3e6, p90=3.0, acc=0.90, energy=8.0)]


def rate_trace(*segments):
    """[(time s)] of requests from (duration s, rate Hz) segments."""
    out, t = [], 0.0
    for duration, rate in segments:
        for _ in range(int(round(duration * rate))):
            out.append(t)
            t += 1.0 / rate
    return out


@pytest.mark.parametrize("name, segments, expected_runs", [
    # 20 Hz: p3 draws 8 x 0.02 + 1 = 1.16 W <= 1.5: stays on p3
    ("slow stream", [(5, 20)], ["p3"]),
    # the app speeds up to 100 Hz: p3 1.8 W > 1.5 -> p2 (1.4 W fits); back to 20 Hz -> p3 after the hold
    ("burst and calm", [(3, 20), (3, 100), (6, 20)], ["p3", "p2", "p3"]),
    # 150 Hz: p2 1.6 W too -> p1 (1.3 W); it stays there, never oscillating
    ("sustained fast", [(2, 20), (6, 150)], ["p3", "p1"]),
    # 60 Hz: p3 at 1.48 W fits by 1%, inside the headroom band: no change
    ("inside the band", [(3, 20), (4, 60)], ["p3"]),
])
def test_power_limit_follows_the_observed_request_rate(name, segments, expected_runs):
    """Nothing is known of the rate at first (back-to-back: only p1 fits 1.5 W). Once the
    observed rate is known the loop steps up, and it steps down again when a faster stream
    makes the serving engine draw more than the limit."""
    controller = Controller(POWER_LADDER, Limits(power_w=1.5), SETTINGS)
    served = []
    for now in rate_trace(*segments):
        engine = controller.decision.engine
        served.append(engine)
        controller.observe(engine, 0.85 * controller._by_id[engine].latency_ms["p90"], now)
    distinct = runs(served)
    assert distinct[0] == "p1"            # back-to-back rate before any observation
    assert distinct[1:] == expected_runs, distinct


@pytest.mark.parametrize("kwargs", [{"latency_ms": float("inf")}, {"latency_ms": float("nan")},
                                    {"power_w": float("inf")}, {"memory_bytes": float("inf")},
                                    {"rate_hz": float("nan")}, {"rate_hz": float("inf")}])
def test_limits_must_be_finite(kwargs):
    """An infinite limit is no limit: pass None (issue 16)."""
    with pytest.raises(ValueError, match="must be a finite number"):
        Limits(**kwargs)
