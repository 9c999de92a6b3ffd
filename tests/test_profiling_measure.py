"""The measurement loop on real ONNX Runtime engines (tiny settings; no timing thresholds)."""

import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from adaexport.backends.onnxruntime_backend import OrtSession
from adaexport.profiling.measure import Candidate, measure_engines
from adaexport.profiling.settings import ProfilingSettings


def tiny_model(path, layers):
    """x (1, 32) -> `layers` x (MatMul, Relu): a real, cheap engine."""
    rng = np.random.default_rng(layers)
    nodes, inits, name = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), f"w{i}"))
        nodes += [helper.make_node("MatMul", [name, f"w{i}"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]
        name = f"r{i}"
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 32])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


class Logged:
    """A real ORT session that notes every run in a shared log (and may add a stall)."""

    def __init__(self, name, path, log, stall_every=0, hold_mib=0):
        self.name, self.log, self.stall_every = name, log, stall_every
        self.session = OrtSession(path, {"intra_op_num_threads": 1})
        self.held = np.ones(hold_mib << 20, np.uint8)   # memory the engine holds while loaded (pages touched)
        self.runs = 0

    def run(self, feeds):
        self.runs += 1
        self.log.append(self.name)
        if self.stall_every and self.runs % self.stall_every == 0:
            time.sleep(0.003)
        return self.session.run(feeds)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    return [tiny_model(folder / f"m{n}.onnx", n) for n in (1, 3, 6)]


FEEDS = {"x": np.ones((1, 32), np.float32)}


def candidates(models, log, **kw):
    return [Candidate(id=f"e{i}", open=lambda i=i, p=p: Logged(f"e{i}", p, log, **kw), feeds=FEEDS, threads=1)
            for i, p in enumerate(models)]


def test_meets_both_minimums_in_interleaved_rounds(models):
    settings = ProfilingSettings(warmup_s=0.01, min_iterations=40, min_duration_s=0.06, rounds=3, remeasure=0)
    log = []
    results = measure_engines(candidates(models, log), settings)
    assert list(results) == ["e0", "e1", "e2"]
    for entry in results.values():
        assert entry["iterations"] >= 40 and entry["duration_s"] >= 0.06 - 1e-9
        lat = entry["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert entry["throughput_ips"] == pytest.approx(entry["iterations"] / entry["duration_s"])
        assert entry["rounds"] == 3 and entry["threads"] == 1 and entry["load_ms"] > 0
        assert entry["memory"]["rss_bytes"] >= 0 and "VmRSS" in entry["memory"]["rss_source"]
        assert entry["energy"]["per_inference_mj"] is None and entry["energy"]["reason"] == "no power sensor"
    # the log: 3 loads (first inference), 3 warm-ups, then 3 rounds of one block per engine, rotated
    blocks = [log[0]]
    for name in log[1:]:
        if name != blocks[-1]:
            blocks.append(name)
    measured = blocks[6:]
    assert measured == ["e0", "e1", "e2", "e1", "e2", "e0", "e2", "e0", "e1"]
    runs = {name: log.count(name) for name in ("e0", "e1", "e2")}
    for name, entry in results.items():   # every measured run is a sample; plus the load run and the warm-up
        assert entry["iterations"] < runs[name] - 1


def test_engines_are_loaded_together_only_while_memory_holds_another(models):
    """Groups are settings.group engines where memory allows; where the memory available is
    under twice what an engine took, each engine is measured in a group of its own, and its
    profile says why."""
    settings = ProfilingSettings(warmup_s=0.0, min_iterations=4, min_duration_s=0.0, rounds=2, remeasure=0)
    log = []
    roomy = measure_engines(candidates(models, log, hold_mib=200), settings, available_memory=lambda: 64 << 30)
    assert all(entry["memory"]["rss_bytes"] >= 150 << 20 for entry in roomy.values())
    assert not any("group of" in w for entry in roomy.values() for w in entry["warnings"])
    assert log[:3] == ["e0", "e1", "e2"]     # all three loaded (first inference) before any was measured

    log.clear()
    tight = measure_engines(candidates(models, log, hold_mib=200), settings, available_memory=lambda: 250 << 20)
    assert list(tight) == ["e0", "e1", "e2"]
    for ident in ("e0", "e1"):   # e2, the last, was alone anyway
        assert any("group of 1 engine(s), not 10: 250 MiB of memory available" in w for w in tight[ident]["warnings"]), \
            (ident, tight[ident]["memory"], tight[ident]["warnings"])
    assert log == sorted(log)                # each engine loaded, warmed and measured before the next


def test_available_memory_is_read_from_meminfo(tmp_path):
    from adaexport.hardware.machine import available_memory

    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text("MemTotal:       24576000 kB\nMemFree:         1000000 kB\n"
                                               "MemAvailable:   12288000 kB\nBuffers:          100 kB\n")
    assert available_memory(tmp_path) == 12288000 * 1024
    assert available_memory(tmp_path / "nowhere") is None


def test_a_noisy_engine_is_measured_again_and_warned_about(models):
    settings = ProfilingSettings(warmup_s=0.0, min_iterations=30, min_duration_s=0.0, rounds=2, max_cv=5.0,
                                 remeasure=2)
    log = []
    noisy = candidates(models[:1], log, stall_every=4)
    results = measure_engines(noisy, settings)
    entry = results["e0"]
    assert entry["cv"] > 5.0
    assert any("measured 3 times" in w for w in entry["warnings"])
    assert any("is above 5%" in w for w in entry["warnings"])
    assert entry["iterations"] >= 30


def test_energy_is_the_window_above_idle_per_run_with_its_source(models):
    from adaexport.hardware.sensors import CounterMeter

    # a counter (in microjoules, like RAPL's) that a 5 W load would advance; no such sensor here
    meter = CounterMeter(lambda: time.perf_counter() * 5e6, 1e-6, None, "test counter (5 W)")
    settings = ProfilingSettings(warmup_s=0.0, min_iterations=20, min_duration_s=0.02, rounds=2, remeasure=0)
    entry = measure_engines(candidates(models[:1], []), settings, meter=meter, idle_w=2.0)["e0"]
    energy = entry["energy"]
    assert energy["source"] == "test counter (5 W)" and energy["reason"] is None
    assert energy["active_power_w"] == pytest.approx(5.0, rel=1e-3) and energy["idle_power_w"] == 2.0
    assert energy["per_inference_mj"] == pytest.approx(
        (energy["active_power_w"] - 2.0) * energy["window_s"] / entry["iterations"] * 1e3, rel=1e-9)
    no_idle = measure_engines(candidates(models[:1], []), settings, meter=meter, idle_w=None)["e0"]["energy"]
    assert no_idle["per_inference_mj"] is None and "no idle baseline" in no_idle["reason"]
