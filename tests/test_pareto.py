"""The Pareto fronts and the manifest readers, on a hand-built family whose fronts follow
from the definition (non-dominated in accuracy and cost)."""

import itertools

from adaexport.manifest_records import DEFAULT_MODE, FLOPS_FRONT, EngineRecord, Manifest, front_key
from adaexport.pareto import compute_pareto, front, update_pareto

from .test_manifest import minimal_manifest


def engine(ident, flops, top1=None, profile=None, status="ready"):
    e = {"id": ident, "point": {"tokens": 8, "width": 32, "depth": 1}, "flops": flops, "params": 1,
         "backend": "onnxruntime", "precision": "fp32", "status": status, "file": f"onnx/{ident}.onnx",
         "parity": None}
    if status == "ready":
        e.update(sha256="0" * 64, size=1)
    if top1 is not None:
        e["accuracy"] = {"dataset": "demo", "samples": 100, "top1": top1, "top5": None, "reference_top1": top1,
                         "reference_top5": None, "evaluated": "2026-01-01T00:00:00Z"}
    if profile is not None:
        e["profile"] = {dev: {mode: {"latency_ms": {"p50": ms}} for mode, ms in modes.items()}
                        for dev, modes in profile.items()}
    return e


def brute_force(items):
    """The definition itself: no other item at least as good in both and better in one."""
    kept = []
    for i, c, a in items:
        dominated = any((c2 <= c and a2 >= a) and (c2 < c or a2 > a) for _, c2, a2 in items)
        if not dominated:
            kept.append((c, i))
    # among exact ties (same cost and accuracy) `front` keeps one: the first id
    seen, out = set(), []
    for c, i in sorted(kept):
        key = next((c2, a2) for i2, c2, a2 in items if i2 == i)
        if key not in seen:
            seen.add(key)
            out.append(i)
    return out


def test_front_matches_the_definition_on_every_small_family():
    costs, accs = [1.0, 2.0, 3.0], [0.5, 0.7, 0.9]
    for combo in itertools.combinations(list(itertools.product(costs, accs)), 4):
        items = [(f"e{k}", c, a) for k, (c, a) in enumerate(combo)]
        assert front(items) == brute_force(items), combo


def test_front_is_cheapest_first_and_drops_dominated_and_equal_accuracy():
    items = [("big", 10.0, 0.90), ("mid", 5.0, 0.85), ("waste", 6.0, 0.80), ("same", 7.0, 0.85), ("tiny", 1.0, 0.5)]
    assert front(items) == ["tiny", "mid", "big"]
    assert front([]) == []


def manifest_of(engines: list[dict], target: str = "x86-cpu") -> dict:
    """A valid manifest (test_manifest's minimal one) of these engines, built for `target`."""
    m = minimal_manifest("cd" * 32, "ef" * 32)
    m["device"]["target"] = target
    m["engines"] = engines
    return m


def family():
    return manifest_of([
        engine("a", 100, 0.80, {"x86-cpu": {"default": 1.0}, "jetson-orin-nx": {"MAXN": 5.0, "15W": 9.0}}),
        engine("b", 200, 0.85, {"x86-cpu": {"default": 3.0}, "jetson-orin-nx": {"MAXN": 4.0, "15W": 12.0}}),
        engine("c", 300, 0.84, {"x86-cpu": {"default": 2.0}}),
        engine("d", 150, None, {"x86-cpu": {"default": 0.5}}),  # not evaluated: on no front
        {**engine("e", 50, 0.99), "status": "pending"},  # pending: on no front
    ])


def test_compute_pareto_per_device_and_mode_and_flops():
    m = family()
    fronts = compute_pareto(m)
    assert fronts[FLOPS_FRONT] == ["a", "b"]  # c costs more FLOPs than b and is less accurate
    assert fronts[front_key("x86-cpu", "default")] == ["a", "c", "b"]  # c is faster than b here
    assert fronts[front_key("jetson-orin-nx", "MAXN")] == ["b"]  # b is faster and more accurate than a
    assert fronts[front_key("jetson-orin-nx", "15W")] == ["a", "b"]
    assert set(fronts) == {"flops", "x86-cpu/default", "jetson-orin-nx/MAXN", "jetson-orin-nx/15W"}


def test_update_pareto_stores_and_removes():
    m = family()
    m_full = update_pareto(m)
    assert m_full is m and m["pareto"] == compute_pareto(m)
    for e in m["engines"]:
        e.pop("accuracy", None)
    update_pareto(m)
    assert "pareto" not in m


def test_readers():
    m = family()
    a, d = (EngineRecord.from_json(m["engines"][i]) for i in (0, 3))
    assert a.latency_ms("x86-cpu") == 1.0 and a.latency_ms("jetson-orin-nx", "15W") == 9.0
    assert a.latency_ms("x86-cpu", statistic="p99") is None and a.latency_ms("nowhere") is None
    assert a.profile_at("jetson-orin-nx", "MAXN").to_json() == {"latency_ms": {"p50": 5.0}}
    assert a.accuracy_on() == 0.80 and d.accuracy_on() is None
    records = Manifest.from_json(m)
    assert records.profiled_devices() == ["x86-cpu", "jetson-orin-nx"]
    assert records.profiled_modes("jetson-orin-nx") == ["MAXN", "15W"]
    assert records.profiled_modes("x86-cpu") == [DEFAULT_MODE]
    assert records.default_device() == "x86-cpu"  # the manifest's own target
    m["device"]["target"] = "elsewhere"
    assert Manifest.from_json(m).default_device() is None  # two devices, neither the build's own
    for e in m["engines"]:
        (e.get("profile") or {}).pop("x86-cpu", None)
    assert Manifest.from_json(m).default_device() == "jetson-orin-nx"  # the only one
