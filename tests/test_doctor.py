"""`adaexport doctor` (issue 14): run where torch and onnx cannot be imported, on this machine
(nothing to find: exit 0, saying so) and on a fixture AGX Orin (nvpmodel conf in NVIDIA's layout,
the stand-in nvpmodel, INA3221 hwmon and nvmap trees); `targets --json`."""

import json
import os
import subprocess
import sys

from .conftest import json_result
from .jetson_fixtures import conf_text, jetson_root, switches
from .test_cli_device import BLOCK
from .test_hw_energy_memory import write_maps
from .test_profiling_sensors import agx_orin_tree, write


def run_without_torch(*args, env=None):
    return subprocess.run([sys.executable, "-c", BLOCK, *args], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", **(env or {})})


def test_doctor_here_exits_0_and_says_what_it_could_not_find(tmp_path):
    text = run_without_torch("doctor", env={"ADAEXPORT_SYSFS_ROOT": str(tmp_path)})
    assert text.returncode == 0, text.stderr
    assert "not found: no Jetson device tree" in text.stdout and "tensorrt" in text.stdout
    result = run_without_torch("doctor", "--json", "--out", str(tmp_path / "report.json"),
                               env={"ADAEXPORT_SYSFS_ROOT": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    report = json_result(result)
    assert json.loads((tmp_path / "report.json").read_text())["not_found"] == report["not_found"]
    assert report["jetson"] is None and report["nvpmodel"]["conf"] is None and report["power_rails"] == {}
    assert report["target"]["name"] in ("x86-cpu", "arm64-cpu", "nvidia-gpu")
    assert not report["energy"]["nvml"]["readable"] and report["energy"]["nvml"]["reason"]
    assert not report["device_memory"]["nvmap"]["readable"]
    found = "\n".join(report["not_found"])
    for words in ("not a Jetson", "no nvpmodel configuration", "no INA3221 power monitor", "nvml energy"):
        assert words in found
    if not report["tensorrt"]["found"]:
        assert "tensorrt" in found


def test_doctor_on_an_agx_orin(tmp_path, monkeypatch):
    # an AGX Orin 32GB module whose conf is the 64GB one (MODE_50W, not MODE_40W: seen on some 32GB units)
    root = jetson_root(tmp_path, monkeypatch, "p3701_0000", "MODE_30W")
    (root / "proc/device-tree/compatible").write_bytes(b"nvidia,p3737-0000+p3701-0004\0nvidia,p3701-0004\0")
    (root / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 5.0, GCID: 1, BOARD: generic\n")
    agx_orin_tree(root)
    hwmon = root / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    write(hwmon / "update_interval", 140)
    write(hwmon / "samples", 16)
    write_maps(root, [("root", "python3", 42, 1024)])
    env = {k: os.environ[k] for k in ("ADAEXPORT_SYSFS_ROOT", "ADAEXPORT_NVPMODEL")}
    result = run_without_torch("doctor", "--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json_result(result)
    assert report["target"] == {"name": "jetson-agx-orin", "chosen": "detected"}
    assert report["jetson"]["module"] == "p3701-0004" and report["jetson"]["l4t"] == "36.5.0"
    nvp = report["nvpmodel"]
    assert nvp["current"] == "MODE_30W" and nvp["default"] == "MODE_30W" and nvp["gpu_tpc_pg_mask"] == 240
    assert {m["name"]: m["needs_reboot"] for m in nvp["modes"]} == \
        {"MAXN": True, "MODE_15W": True, "MODE_30W": False, "MODE_50W": True}
    assert switches(root) == []                                                  # doctor never switches
    assert report["power_rails"]["1-0040"]["rails"] == {"VDD_GPU_SOC": 5.0, "VDD_CPU_CV": 2.0, "VIN_SYS_5V0": 3.0}
    assert report["power_rails"]["1-0040"]["update_interval"] == "140"
    assert report["power_rails"]["1-0041"]["rails"] == {"VDDQ_VDD2_1V8AO": 1.0}
    assert report["energy"]["target"]["readable"] and len(report["energy"]["target"]["rails"]) == 4
    assert report["device_memory"]["nvmap"]["readable"]
    diffs = "\n".join(report["differences"])
    assert "nvpmodel.conf has modes jetson-agx-orin does not name for p3701-0004: MODE_50W" in diffs
    assert "names modes this nvpmodel.conf lacks: MODE_40W" in diffs
    assert "Jetson Linux 36.5.0 is not in adaexport's JetPack table" in diffs
    assert "INA3221 1-0040 converts every 140 ms" in diffs
    text = run_without_torch("doctor", env=env)
    assert text.returncode == 0 and "2 MODE_30W: TPC mask 240 - switches at run time" in text.stdout
    assert "1 MODE_15W: TPC mask 248 - needs a reboot" in text.stdout
    assert conf_text("p3701_0000") == (root / "etc/nvpmodel.conf").read_text()


def test_targets_json_shows_the_nvpmodel_names_without_torch():
    result = run_without_torch("targets", "--json")
    assert result.returncode == 0, result.stderr
    targets = {t["name"]: t for t in json_result(result)["targets"]}
    agx = targets["jetson-agx-orin"]
    assert agx["power_modes"] == ["MAXN", "MODE_15W", "MODE_30W", "MODE_40W", "MODE_50W", "MODE_75W"]
    assert agx["power_modes_by_module"]["p3701-0000"] == ["MAXN", "MODE_15W", "MODE_30W", "MODE_50W"]
    assert agx["power_modes_by_module"]["p3701-0004"] == ["MAXN", "MODE_15W", "MODE_30W", "MODE_40W"]
    assert targets["jetson-orin-nano"]["power_modes_by_module"]["p3767-0004"] == \
        ["10W", "7W_AI", "7W_CPU", "25W", "MAXN_SUPER"]
    assert "MAXN" in targets["jetson-orin-nx"]["power_modes"]
