"""Jetson power modes through nvpmodel, with nvpmodel stood in by a script that behaves
like it: reads /etc/nvpmodel.conf, keeps the mode in /var/lib/nvpmodel/status."""

import sys

import pytest

from adaexport.hardware.power_modes import (
    NOT_ROOT,
    PowerModeError,
    current_power_mode,
    parse_conf,
    set_power_mode,
    walk_power_modes,
)
from adaexport.targets import load_target

from .jetson_fixtures import NVPMODEL

CONF = """\
# nvpmodel.conf (Orin NX 16GB, trimmed)
< PARAM TYPE=FILE NAME=CPU_ONLINE >
CORE_0 /sys/devices/system/cpu/cpu0/online
< POWER_MODEL ID=0 NAME=MAXN >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=1 NAME=10W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=2 NAME=15W >
< POWER_MODEL ID=3 NAME=25W >
< PM_CONFIG DEFAULT=2 >
"""

SCRIPT = NVPMODEL     # the stand-in nvpmodel (tests/jetson_fixtures.py)


@pytest.fixture
def jetson(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/nvpmodel.conf").write_text(CONF)
    (root / "var/lib/nvpmodel").mkdir(parents=True)
    (root / "var/lib/nvpmodel/status").write_text("pmode:0002 fmode:quiet\n")
    script = tmp_path / "nvpmodel.py"
    script.write_text(SCRIPT)
    monkeypatch.setenv("ADAEXPORT_SYSFS_ROOT", str(root))
    monkeypatch.setenv("ADAEXPORT_NVPMODEL", f"{sys.executable} {script}")
    return root


def calls(root):
    return (root / "calls.log").read_text().split("\n")[:-1] if (root / "calls.log").exists() else []


def test_conf_names_and_ids():
    assert parse_conf(CONF) == {"MAXN": 0, "10W": 1, "15W": 2, "25W": 3}


def test_current_mode_by_name_from_nvpmodel(jetson):
    assert current_power_mode() == "15W"
    assert calls(jetson) == ["-q"]


def test_current_mode_from_the_status_file_without_the_command(jetson, monkeypatch, tmp_path):
    monkeypatch.delenv("ADAEXPORT_NVPMODEL")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    (jetson / "var/lib/nvpmodel/status").write_text("pmode:0003 fmode:cool\n")
    assert current_power_mode() == "25W"


def test_no_nvpmodel_means_none(tmp_path, monkeypatch):
    monkeypatch.delenv("ADAEXPORT_NVPMODEL", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert current_power_mode(root=tmp_path) is None
    assert current_power_mode(load_target("x86-cpu")) is None


def test_set_by_name_uses_the_conf_id(jetson):
    set_power_mode("MAXN")
    assert current_power_mode() == "MAXN" and "-m 0" in calls(jetson)
    with pytest.raises(PowerModeError, match="'7W' is not in /etc/nvpmodel.conf"):
        set_power_mode("7W")


def test_a_mode_that_needs_a_reboot_is_reported(jetson, monkeypatch):
    monkeypatch.setenv("FAKE_NEEDS_REBOOT", "0")
    with pytest.raises(PowerModeError, match="did not switch to MAXN .still 15W.; the mode may need a reboot"):
        set_power_mode("MAXN")


def test_walk_visits_every_mode_and_restores_the_original(jetson):
    seen = []
    original = walk_power_modes(["MAXN", "10W", "25W"], lambda name: seen.append((name, current_power_mode())),
                                euid=0)
    assert original == "15W"
    assert seen == [("MAXN", "MAXN"), ("10W", "10W"), ("25W", "25W")]
    assert current_power_mode() == "15W"


@pytest.mark.parametrize("error", [RuntimeError("engine failed"), KeyboardInterrupt()])
def test_walk_restores_the_original_on_error_and_ctrl_c(jetson, error):
    def run(name):
        if name == "10W":
            raise error

    with pytest.raises(type(error)):
        walk_power_modes(["MAXN", "10W", "25W"], run, euid=0)
    assert current_power_mode() == "15W"
    assert [c for c in calls(jetson) if c.startswith("-m")] == ["-m 0", "-m 1", "-m 2"]


def test_walk_needs_root_and_says_so(jetson):
    with pytest.raises(PowerModeError) as info:
        walk_power_modes(["MAXN"], lambda name: None, euid=1000)
    assert str(info.value) == NOT_ROOT and "\n" not in NOT_ROOT and "root" in NOT_ROOT
    assert [c for c in calls(jetson) if c.startswith("-m")] == []      # nothing was switched
