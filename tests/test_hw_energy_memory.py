"""Energy and memory as the devices report them (issue 14, audit 2.4, 2.6, 1.8): the AGX Orin
total over every rail, NVML windows of at least a second, and device memory that the resident
set cannot see (nvmap on Jetson, NVML per process, TensorRT's device_memory_size_v2).
Sysfs and debugfs are fixture trees; pynvml is tests/stand_ins/pynvml.py (no GPU here)."""

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from adaexport.hardware.device_memory import device_memory_reader, parse_nvmap_maps
from adaexport.manifest_records import Manifest
from adaexport.profiling.family import Energy, device_section
from adaexport.profiling.measure import Candidate, backend_memory, measure_engines
from adaexport.hardware.sensors import ina3221_meter, nvml_meter
from adaexport.profiling.settings import ProfilingSettings
from adaexport.targets import load_target

from .test_pareto import manifest_of
from .test_profiling_measure import Logged, tiny_model
from .test_profiling_sensors import agx_orin_tree

STAND_INS = str(Path(__file__).parent / "stand_ins")
FEEDS = {"x": np.ones((1, 32), np.float32)}
TINY = ProfilingSettings(warmup_s=0.0, min_iterations=5, min_duration_s=0.02, rounds=2, remeasure=0, idle_s=0.01)


@pytest.fixture
def model(tmp_path):
    return tiny_model(tmp_path / "m.onnx", 2)


def one(model, open_hook=None):
    def open_engine():
        if open_hook:
            open_hook()
        return Logged("e0", model, [])

    return [Candidate(id="e0", open=open_engine, feeds=FEEDS, threads=1)]


@pytest.fixture
def nvml(monkeypatch):
    """The stand-in pynvml, imported for this test only."""
    monkeypatch.syspath_prepend(STAND_INS)
    sys.modules.pop("pynvml", None)
    import pynvml

    assert pynvml.__file__.startswith(STAND_INS)
    yield pynvml
    sys.modules.pop("pynvml", None)


# --------------------------------------------------------------------------- energy


def test_nvml_windows_are_at_least_a_second_and_recorded(nvml, model):
    meter = nvml_meter()
    assert meter.min_window_s == 1.0
    energy = measure_engines(one(model), TINY, meter=meter, idle_w=0.0)["e0"]["energy"]
    assert energy["min_window_s"] == 1.0 and energy["windows"] == 2
    assert energy["window_s"] >= 2.0                     # two rounds, each a window of >= 1 s (not 0.01 s)
    assert energy["active_power_w"] == pytest.approx(100.0, rel=0.02)
    assert Energy.measure(load_target("nvidia-gpu"), TINY).meter.window_s >= 1.0     # idle too: idle_s is 0.01


def test_agx_orin_energy_says_which_rails_it_summed(tmp_path, model):
    agx_orin_tree(tmp_path)
    agx = load_target("jetson-agx-orin")
    energy = Energy.measure(agx, TINY, root=tmp_path)
    assert energy.idle_w == pytest.approx(11.0)          # 10 W on 1-0040 + 1 W of DRAM on 1-0041
    record = measure_engines(one(model), TINY, meter=energy.meter, idle_w=energy.idle_w)["e0"]["energy"]
    assert record["rails"] == ["VDD_GPU_SOC (1-0040)", "VDD_CPU_CV (1-0040)", "VIN_SYS_5V0 (1-0040)",
                               "VDDQ_VDD2_1V8AO (1-0041)"]
    section = device_section(Manifest.from_json(manifest_of([])), "jetson-agx-orin", agx, TINY, "MODE_30W", energy, [])
    assert section.modes["MODE_30W"].power_rails == record["rails"]
    assert "sum of all rails" in section.modes["MODE_30W"].power_source


# --------------------------------------------------------------------------- memory

MAPS_HEADER = "CLIENT                        PROCESS      PID        SIZE\n"


def write_maps(root, rows):
    path = root / "sys/kernel/debug/nvmap/iovmm/maps"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{user:<30}{name:<13}{pid:<11}{size}K\n" for user, name, pid, size in rows)
    path.write_text(MAPS_HEADER + body + f"{'total':<54}{sum(r[3] for r in rows)}K\n")
    return path


def test_nvmap_table_as_jetson_stats_reads_it(tmp_path):
    write_maps(tmp_path, [("user", "gnome-shell", 1234, 51200), ("root", "python3", 42, 1024),
                          ("root", "python3", 42, 2048)])
    assert parse_nvmap_maps((tmp_path / "sys/kernel/debug/nvmap/iovmm/maps").read_text()) == \
        {1234: 51200 * 1024, 42: 3072 * 1024}


def test_jetson_engine_memory_counts_nvmap_growth(tmp_path, model):
    pid = os.getpid()
    write_maps(tmp_path, [("root", "python3", pid, 4096)])
    reader = device_memory_reader(load_target("jetson-orin-nx"), root=tmp_path)
    assert reader and reader.source.startswith("nvmap (/sys/kernel/debug/nvmap/iovmm/maps")
    grow = lambda: write_maps(tmp_path, [("root", "python3", pid, 4096 + 30720)])   # noqa: E731 - a 30 MiB engine
    memory = measure_engines(one(model, grow), TINY, device_memory=reader)["e0"]["memory"]
    assert memory["device_bytes"] == 30720 * 1024 and "growth of nvmap" in memory["device_source"]
    assert memory["rss_bytes"] is not None                  # the resident set is still recorded beside it


def test_unreadable_nvmap_says_why(tmp_path, model):
    reader = device_memory_reader(load_target("jetson-orin-nano"), root=tmp_path)
    assert not reader and "nvmap not readable" in reader.source and "root only" in reader.source
    memory = measure_engines(one(model), TINY, device_memory=reader)["e0"]["memory"]
    assert memory["device_bytes"] is None and memory["device_source"] == reader.source
    cpu = device_memory_reader(load_target("x86-cpu"))
    assert not cpu and "CPU target" in cpu.source


def test_gpu_engine_memory_from_nvml_per_process(nvml, monkeypatch, model):
    pid = os.getpid()
    monkeypatch.setenv("FAKE_NVML_PROCESSES", f"{pid}:1000000,999999:5")
    reader = device_memory_reader(load_target("nvidia-gpu"))
    assert reader.source.startswith("NVML") and reader.read() == 1_000_000
    grow = lambda: monkeypatch.setenv("FAKE_NVML_PROCESSES", f"{pid}:41000000")   # noqa: E731
    memory = measure_engines(one(model, grow), TINY, device_memory=reader)["e0"]["memory"]
    assert memory["device_bytes"] == 40_000_000 and "NVML" in memory["device_source"]


class TensorRT10Engine:
    """ICudaEngine's memory properties as the 10.x binding has them: device_memory_size warns."""

    device_memory_size_v2 = 7 << 20

    @property
    def device_memory_size(self):
        warnings.warn("Use device_memory_size_v2 instead.", DeprecationWarning)
        return 7 << 20


class TensorRT86Engine:
    device_memory_size = 5 << 20


def test_tensorrt_device_memory_uses_v2_where_it_exists():
    session = type("TrtSession", (), {})()
    session._engine = TensorRT10Engine()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backend_memory(session) == (7 << 20, "tensorrt ICudaEngine.device_memory_size_v2 (device memory "
                                                    "for activations)")
    session._engine = TensorRT86Engine()
    assert backend_memory(session)[0] == 5 << 20 and "device_memory_size " in backend_memory(session)[1]
