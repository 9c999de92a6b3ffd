"""Power modes as the modules really have them (issue 14, audit 2.1-2.3): nvpmodel.conf files in
NVIDIA's layout (tests/jetson_fixtures.py), a stand-in nvpmodel that asks for a reboot when a
mode changes the GPU's TPC power-gating mask, and the targets' mode names checked against them."""

import sys

import pytest

from adaexport.errors import UsageError
from adaexport.profiling.modes_plan import plan_modes
from adaexport.hardware.power_modes import (
    PowerModeError,
    current_power_mode,
    parse_nvpmodel_conf,
    reboot_reasons,
    set_power_mode,
    walk_power_modes,
)
from adaexport.targets import load_target

from .jetson_fixtures import CONF_MODULES, REAL_CONFS, TARGET_OF, conf_text, jetson_root, switches


def target_of(module: str):
    return load_target(TARGET_OF.get(module, TARGET_OF.get(module.split("-")[0])))


def test_the_conf_layout_is_read_with_masks_default_and_mask_files():
    conf = parse_nvpmodel_conf(conf_text("p3701_0000"))
    assert [(m.id, m.name, m.tpc_pg_mask) for m in conf.modes] == REAL_CONFS["p3701_0000"][1]
    assert conf.default == 2 and conf.ids()["MODE_30W"] == 2
    assert conf.mask_files == ("/sys/devices/gpu.0/tpc_pg_mask", "/sys/devices/platform/gpu.0/tpc_pg_mask")


@pytest.mark.parametrize("conf", sorted(REAL_CONFS))
def test_each_target_names_the_modes_its_modules_really_have(conf):
    module, release = CONF_MODULES[conf]
    names = [m.name for m in target_of(module).power_modes_for(module, release)]
    real = [name for _, name, _ in REAL_CONFS[conf][1]]
    assert set(real) <= set(names), f"{conf}: the conf has {real}, the target {names}"


def test_agx_orin_all_walks_every_mode_of_the_conf(tmp_path, monkeypatch):
    jetson_root(tmp_path, monkeypatch, "p3701_0000", "MODE_30W")
    agx = load_target("jetson-agx-orin")
    assert current_power_mode(agx) == "MODE_30W"
    assert plan_modes(agx, "all") == (["MAXN", "MODE_15W", "MODE_30W", "MODE_50W"], True)
    assert plan_modes(agx, "MODE_30W") == (["MODE_30W"], False)
    assert plan_modes(agx, "MODE_50W") == (["MODE_50W"], True)
    with pytest.raises(UsageError, match="no power mode '30W' .nvpmodel.conf lists: MAXN, MODE_15W"):
        plan_modes(agx, "30W")


def test_modes_the_target_does_not_name_are_walked_and_accepted(tmp_path, monkeypatch):
    jetson_root(tmp_path, monkeypatch, "p3767_0004", "10W")                     # Orin Nano 4GB, r35
    nano = load_target("jetson-orin-nano")
    assert plan_modes(nano, "all") == (["10W", "7W_AI", "7W_CPU"], True)
    assert plan_modes(nano, "7W_AI") == (["7W_AI"], True)


def test_orin_nx_on_jetpack_6_2_with_the_regular_conf_keeps_maxn(tmp_path, monkeypatch):
    root = jetson_root(tmp_path, monkeypatch, "p3767_0000", "15W")
    (root / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic\n")
    nx = load_target("jetson-orin-nx")
    assert plan_modes(nx, "all")[0] == ["MAXN", "10W", "15W", "25W"]
    assert "MAXN" in [m.name for m in nx.power_modes_for("p3767-0000", "36.4.3")]


def test_modes_with_another_gpu_mask_need_a_reboot(tmp_path, monkeypatch):
    jetson_root(tmp_path, monkeypatch, "p3701_0000", "MODE_30W")                # mask 240 in force
    reasons = reboot_reasons()
    assert sorted(reasons) == ["MAXN", "MODE_15W", "MODE_50W"]
    assert "mask is 248, the one in force is 240 (/sys/devices/gpu.0/tpc_pg_mask)" in reasons["MODE_15W"]
    root = jetson_root(tmp_path / "nx", monkeypatch, "p3767_0000", "15W")      # 252: 10W switches at run time
    assert sorted(reboot_reasons()) == ["25W", "MAXN"]
    (root / "sys/devices/gpu.0/tpc_pg_mask").unlink()                          # no sysfs: the current mode's mask
    assert sorted(reboot_reasons()) == ["25W", "MAXN"]


def test_walk_skips_reboot_modes_and_never_records_them(tmp_path, monkeypatch):
    root = jetson_root(tmp_path, monkeypatch, "p3767_0003", "15W")               # Orin Nano 8GB: 7W needs a reboot
    seen, skipped = [], {}
    original = walk_power_modes(["15W", "7W"], lambda name: seen.append((name, current_power_mode())), euid=0,
                                on_skip=skipped.__setitem__)
    assert original == "15W" and seen == [("15W", "15W")]
    assert list(skipped) == ["7W"] and "needs a reboot" in skipped["7W"]
    assert switches(root) == []                                                  # nvpmodel -m never ran


def test_a_switch_whose_mask_did_not_take_is_refused(tmp_path, monkeypatch):
    root = jetson_root(tmp_path, monkeypatch, "p3767_0003", "15W")
    # nvpmodel relabels the mode but the GPU keeps its mask (reboot declined): read back, refused
    monkeypatch.setenv("FAKE_ON_DECLINE", "relabel")
    with pytest.raises(PowerModeError, match="reports 7W, but the GPU TPC mask in force is 240 .* not the mode's 252"):
        set_power_mode("7W")
    assert switches(root) == ["-m 1"]
    monkeypatch.setenv("FAKE_ON_DECLINE", "keep")
    (root / "var/lib/nvpmodel/status").write_text("pmode:0000 fmode:quiet\n")
    with pytest.raises(PowerModeError, match="did not switch to 7W .still 15W."):
        set_power_mode("7W")


def test_a_switch_at_run_time_is_read_back(tmp_path, monkeypatch):
    jetson_root(tmp_path, monkeypatch, "p3767_0000", "15W")
    assert set_power_mode("10W") == "10W" and current_power_mode() == "10W"
    seen = []
    walk_power_modes(["MAXN", "15W", "10W"], seen.append, euid=0, on_skip=lambda name, why: seen.append(f"-{name}"))
    assert seen == ["-MAXN", "15W", "10W"] and current_power_mode() == "10W"    # restored


def test_nvpm_error_on_stdout_fails_the_switch_even_with_exit_status_0(tmp_path, monkeypatch):
    jetson_root(tmp_path, monkeypatch, "p3767_0000", "15W")
    script = tmp_path / "erring.py"
    script.write_text("print('NVPM ERROR: failed to set power mode')\n")
    monkeypatch.setenv("ADAEXPORT_NVPMODEL", f"{sys.executable} {script}")
    with pytest.raises(PowerModeError, match="nvpmodel -m 1 .10W. failed: NVPM ERROR: failed to set power mode"):
        set_power_mode("10W")
