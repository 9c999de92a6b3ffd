"""Energy readers on directory trees shaped like the real sysfs (INA3221 hwmon and iio,
Intel RAPL powercap), including wrap-around and a counter only root may read."""

import os
import time

import pytest

from adaexport.hardware.sensors import (
    CounterMeter,
    SensorUnavailable,
    ina3221_meter,
    ina3221_rails,
    open_meter,
    rapl_meter,
)
from adaexport.targets import load_target

RAPL = "sys/class/powercap/intel-rapl:0"


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{text}\n")


def ina3221_hwmon(root, i2c, channels, hwmon="hwmon3"):
    """The JetPack 6 layout: /sys/bus/i2c/drivers/ina3221/<i2c>/hwmon/hwmonN/; channels maps
    N -> (label, millivolts, milliamps, enabled). Adds the driver's sum channel (in7)."""
    folder = root / f"sys/bus/i2c/drivers/ina3221/{i2c}/hwmon/{hwmon}"
    write(folder / "name", "ina3221")
    for n, (label, mv, ma, enabled) in channels.items():
        write(folder / f"in{n}_label", label)
        write(folder / f"in{n}_input", mv)
        write(folder / f"curr{n}_input", ma)
        write(folder / f"in{n}_enable", int(enabled))
        write(folder / f"in{n + 3}_input", 40)            # shunt voltage (uV), not a rail
    write(folder / "in7_label", "Sum of shunt voltages")
    write(folder / "in7_input", 120)
    write(folder / "curr4_input", 999)                  # the sum of currents
    write(folder / "curr4_label", "Sum of currents")
    return folder


def orin_nx_tree(root):
    return ina3221_hwmon(root, "1-0040", {1: ("VDD_IN", 5000, 1200, True), 2: ("VDD_CPU_GPU_CV", 4960, 400, True),
                                          3: ("VDD_SOC", 4960, 300, True)})


def rapl_tree(root, energy_uj, max_uj=262143328850):
    write(root / RAPL / "name", "package-0")
    write(root / RAPL / "energy_uj", energy_uj)
    write(root / RAPL / "max_energy_range_uj", max_uj)


def test_hwmon_rails_skip_sum_and_unconnected_channels(tmp_path):
    orin_nx_tree(tmp_path)
    agx = ina3221_hwmon(tmp_path, "1-0041", {1: ("NC", 0, 0, False), 2: ("VDDQ_VDD2_1V8AO", 5000, 100, True),
                                             3: ("VDD_X", 5000, 100, False)})
    (agx / "in1_label").unlink()   # an unconnected channel may have no label at all
    rails = ina3221_rails("1-0040", root=tmp_path)
    assert sorted(rails) == ["VDD_CPU_GPU_CV", "VDD_IN", "VDD_SOC"]
    assert rails["VDD_IN"]() == pytest.approx(5000 * 1200 / 1e6)   # mV x mA -> W
    assert sorted(ina3221_rails("1-0041", root=tmp_path)) == ["VDDQ_VDD2_1V8AO"]   # NC and disabled skipped


def test_jetpack5_iio_layout(tmp_path):
    folder = tmp_path / "sys/bus/i2c/drivers/ina3221x/1-0040/iio:device0"
    for k, (name, mw) in enumerate([("VDD_IN", 7300), ("VDD_CPU_GPU_CV", 2100), ("VDD_SOC", 1500)]):
        write(folder / f"rail_name_{k}", name)
        write(folder / f"in_power{k}_input", mw)
    rails = ina3221_rails("1-0040", root=tmp_path)
    assert rails["VDD_IN"]() == pytest.approx(7.3)


def test_orin_nx_meter_uses_vdd_in_and_integrates_over_the_window(tmp_path):
    orin_nx_tree(tmp_path)
    meter, reason = open_meter(load_target("jetson-orin-nx"), root=tmp_path)
    assert reason is None and meter.source.startswith("ina3221:VDD_IN ")
    start = time.perf_counter()
    meter.begin()
    time.sleep(0.05)
    joules = meter.end()
    elapsed = time.perf_counter() - start
    # constant 6 W on VDD_IN: the integral is 6 W x the window from the first sample (taken in
    # begin()) to the last (taken in end()), which lies within what the caller saw
    assert 0.05 <= meter.window_s <= elapsed
    assert joules == pytest.approx(6.0 * meter.window_s, rel=1e-9)


def agx_orin_tree(root):
    """AGX Orin's two monitors as the mainline device tree (tegra234-p3701) lays them out."""
    ina3221_hwmon(root, "1-0040", {1: ("VDD_GPU_SOC", 5000, 1000, True), 2: ("VDD_CPU_CV", 5000, 400, True),
                                   3: ("VIN_SYS_5V0", 5000, 600, True)})
    ina3221_hwmon(root, "1-0041", {1: ("NC", 0, 0, False), 2: ("VDDQ_VDD2_1V8AO", 5000, 200, True),
                                   3: ("NC", 0, 0, False)}, hwmon="hwmon4")


def test_agx_orin_total_is_every_rail_of_both_monitors_as_jetson_stats_reports(tmp_path):
    agx_orin_tree(tmp_path)
    meter = ina3221_meter(load_target("jetson-agx-orin").power_sensors, root=tmp_path)
    assert meter.rails == ("VDD_GPU_SOC (1-0040)", "VDD_CPU_CV (1-0040)", "VIN_SYS_5V0 (1-0040)",
                           "VDDQ_VDD2_1V8AO (1-0041)")
    assert meter.source.startswith("ina3221:VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0 (1-0040) + VDDQ_VDD2_1V8AO (1-0041): "
                                   "sum of all rails")
    assert "not the module input" in meter.source
    assert meter.read_w() == pytest.approx(5.0 + 2.0 + 3.0 + 1.0)   # jtop's total_power: the sum of all rails
    nx_tree = tmp_path / "nx"
    orin_nx_tree(nx_tree)
    assert ina3221_meter(load_target("jetson-orin-nx").power_sensors, root=nx_tree).rails == ("VDD_IN (1-0040)",)


def test_missing_rail_names_what_is_there(tmp_path):
    ina3221_hwmon(tmp_path, "1-0040", {1: ("VDD_OTHER", 5000, 1, True)})
    with pytest.raises(SensorUnavailable, match="no INA3221 rail VDD_IN at 1-0040 .found: VDD_OTHER"):
        ina3221_meter(load_target("jetson-orin-nano").power_sensors, root=tmp_path)


def test_rapl_counts_across_the_wrap_around(tmp_path):
    max_uj = 1_000_000
    rapl_tree(tmp_path, 900_000, max_uj)
    meter = rapl_meter(root=tmp_path)
    assert meter.source.startswith("rapl:package-0")
    meter.begin()
    write(tmp_path / RAPL / "energy_uj", 400_000)          # wrapped: 100_000 to the top, then 400_000
    assert meter.end() == pytest.approx((max_uj - 900_000 + 400_000) / 1e6)
    meter.begin()
    write(tmp_path / RAPL / "energy_uj", 650_000)          # no wrap
    assert meter.end() == pytest.approx(0.25)


def test_rapl_sums_every_cpu_package_of_a_multi_socket_machine(tmp_path):
    rapl_tree(tmp_path, 1_000_000)
    second = RAPL.replace("intel-rapl:0", "intel-rapl:1")
    write(tmp_path / second / "name", "package-1")
    write(tmp_path / second / "energy_uj", 5_000_000)
    write(tmp_path / second / "max_energy_range_uj", 262143328850)
    write(tmp_path / RAPL.replace("intel-rapl:0", "intel-rapl:0:0") / "energy_uj", 7)   # a subzone: not a package
    meter = rapl_meter(root=tmp_path)
    assert meter.rails == ("package-0", "package-1")
    meter.begin()
    write(tmp_path / RAPL / "energy_uj", 1_500_000)
    write(tmp_path / second / "energy_uj", 5_250_000)
    assert meter.end() == pytest.approx(0.75)                    # 0.5 J + 0.25 J
    alone = rapl_meter("/" + second + "/energy_uj", root=tmp_path)            # a path of its own: that zone alone
    assert alone.rails == ("package-1",)


def test_counter_without_a_known_range_refuses_to_guess():
    values = iter([10.0, 5.0])
    meter = CounterMeter(lambda: next(values), 1.0, None, "test counter")
    meter.begin()
    with pytest.raises(SensorUnavailable, match="went backwards"):
        meter.end()


def test_rapl_readable_only_by_root_says_so(tmp_path):
    rapl_tree(tmp_path, 123)
    energy = tmp_path / RAPL / "energy_uj"

    def opener(path, *args, **kwargs):   # what open() does for a non-root user on a 0400 root-owned file
        if str(path) == str(energy):
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    meter, reason = open_meter(load_target("x86-cpu"), root=tmp_path, opener=opener)
    assert meter is None
    assert "readable only by root" in reason and "intel-rapl:0/energy_uj" in reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file anyway")
def test_rapl_unreadable_file_for_real(tmp_path):
    rapl_tree(tmp_path, 123)
    (tmp_path / RAPL / "energy_uj").chmod(0)
    meter, reason = open_meter(load_target("x86-cpu"), root=tmp_path)
    assert meter is None and "readable only by root" in reason


def test_no_sensor_gives_null_with_the_reason(tmp_path):
    meter, reason = open_meter(load_target("x86-cpu"), root=tmp_path)
    assert meter is None and "no Intel RAPL counter" in reason
    meter, reason = open_meter(load_target("jetson-orin-nx"), root=tmp_path)
    assert meter is None and "no INA3221 rail VDD_IN" in reason


def test_idle_power_from_a_counter(tmp_path):
    rapl_tree(tmp_path, 0)
    meter = rapl_meter(root=tmp_path)
    assert meter.idle_power(0.01) == 0.0     # the fixture's counter does not move: 0 W, not an estimate
