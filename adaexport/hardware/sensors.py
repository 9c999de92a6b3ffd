"""Energy and power readers, each tagged with its source; none is ever estimated.

* Jetson: the INA3221 rail monitors through hwmon sysfs (Orin, JetPack 5 and 6:
  ``/sys/bus/i2c/drivers/ina3221/<i2c>/hwmon/hwmon*/in<N>_label``, bus voltage
  ``in<N>_input`` in mV, current ``curr<N>_input`` in mA; unconnected channels
  ("NC", no label, ``in<N>_enable`` 0) and the "Sum of ..." channels are skipped) or
  the older iio layout (JetPack 4 and earlier: ``ina3221x/<i2c>/iio:device*/rail_name_<k>``,
  ``in_power<k>_input`` in mW). Power is sampled in a background thread and
  integrated over the window. The module total is the target's ``total = true`` rail
  (VDD_IN, the module input, on Orin Nano/NX); AGX Orin has no module-input rail, so its
  total is the sum of every rail of every monitor the target names (1-0040:
  VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0, 1-0041: VDDQ_VDD2_1V8AO), which is what
  jetson-stats reports as the total (jtop/core/power.py). Those rails are measured at
  the regulator outputs, so the sum reads below a meter at the module's input; the
  meter's ``rails`` and ``source`` say what was summed.
* Intel (and AMD) CPUs: the RAPL powercap counter ``energy_uj``, which wraps at
  ``max_energy_range_uj``; since Linux 5.10 it is readable only by root.
* NVIDIA GPUs: NVML's total-energy counter (millijoules, Volta and later) via pynvml.
  Its power sensor updates coarsely (on A100/H100 it samples a fraction of the time;
  arXiv 2312.02741), so an NVML window is at least ``NVML_MIN_WINDOW_S`` (the meter's
  ``min_window_s``, which the measurement loop honours).

``open_meter(target)`` returns (meter, None) or (None, the reason there is none).
Every reader takes the filesystem root (tests use fixture trees) and an ``opener``
(tests stand in a permission error even when they run as root). Stdlib only.
"""

from __future__ import annotations

import abc
import glob
import os
import re
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from . import system_root

RAPL_DEFAULT = "/sys/class/powercap/intel-rapl:0/energy_uj"
SAMPLE_INTERVAL_S = 0.005
NVML_MIN_WINDOW_S = 1.0

Opener = Callable[..., object]


sysfs_root = system_root    # where /sys (and /etc/nvpmodel.conf) are read: $ADAEXPORT_SYSFS_ROOT, "/" by default


def _under(root: Path, absolute: str) -> Path:
    return root / absolute.lstrip("/")


def _read_number(path: Path, opener: Opener = open) -> float:
    with opener(path) as f:
        return float(f.read().strip())


def _read_label(path: Path, opener: Opener = open) -> str | None:
    try:
        with opener(path) as f:
            return f.read().strip()
    except OSError:
        return None


class SensorUnavailable(Exception):
    """Why a reader cannot measure here (the message becomes the manifest's reason)."""


# --------------------------------------------------------------------------- meters


class Meter(abc.ABC):
    """Energy over windows: ``begin()``, run the work, ``end()`` -> joules in the window."""

    source: str = ""
    window_s: float = 0.0     # the span the last end() covered, by the meter's own clock
    min_window_s: float = 0.0  # shorter windows are not trustworthy for this sensor
    rails: tuple[str, ...] = ()  # the rails (or counters) a total is made of

    @abc.abstractmethod
    def begin(self) -> None:
        ...

    @abc.abstractmethod
    def end(self) -> float:
        ...

    def close(self) -> None:
        pass

    def idle_power(self, seconds: float) -> float:
        """Average power in watts while this process sleeps for `seconds` (at least min_window_s)."""
        self.begin()
        start = time.perf_counter()
        time.sleep(max(seconds, self.min_window_s))
        joules = self.end()
        return joules / max(self.window_s or time.perf_counter() - start, 1e-9)


class CounterMeter(Meter):
    """A monotonically increasing energy counter that wraps at `wrap` (in its own unit)."""

    def __init__(self, read: Callable[[], float], scale_j: float, wrap: float | None, source: str):
        self.read, self.scale_j, self.wrap, self.source = read, scale_j, wrap, source
        self._start: float | None = None

    def delta(self, before: float, after: float) -> float:
        """Counter units between two readings, across at most one wrap-around."""
        if after >= before:
            return after - before
        if not self.wrap:
            raise SensorUnavailable(f"{self.source}: the counter went backwards and its range is unknown")
        return after + self.wrap - before

    def begin(self) -> None:
        self._t0 = time.perf_counter()       # stamped right before each reading
        self._start = self.read()

    def end(self) -> float:
        if self._start is None:
            raise RuntimeError("end() without begin()")
        t1 = time.perf_counter()
        joules = self.delta(self._start, self.read()) * self.scale_j
        self.window_s = t1 - self._t0
        self._start = None
        return joules


class SampledMeter(Meter):
    """Instantaneous power sampled in a thread every `interval` seconds, integrated
    (trapezoids) over the window."""

    def __init__(self, read_w: Callable[[], float], source: str, interval: float = SAMPLE_INTERVAL_S):
        self.read_w, self.source, self.interval = read_w, source, interval
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._joules = 0.0

    def _sample(self) -> None:
        now, watts = time.perf_counter(), self.read_w()
        last_t, last_w = self._last
        self._joules += (watts + last_w) / 2.0 * (now - last_t)
        self._last = (now, watts)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def begin(self) -> None:
        """The first sample is taken here and the last in end(), so the integral covers
        the whole window however late the sampling thread starts."""
        self._stop.clear()
        self._joules = 0.0
        self._last = (time.perf_counter(), self.read_w())
        self._t0 = self._last[0]
        self._thread = threading.Thread(target=self._loop, name="adaexport-power-sampler", daemon=True)
        self._thread.start()

    def end(self) -> float:
        if self._thread is None:
            raise RuntimeError("end() without begin()")
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._sample()
        self.window_s = self._last[0] - self._t0
        return self._joules


# --------------------------------------------------------------------------- RAPL


def _rapl_counter(path: str, root, opener: Opener) -> CounterMeter:
    """One RAPL powercap counter at `path` (energy_uj; max_energy_range_uj beside it)."""
    energy = _under(sysfs_root(root), path)
    domain = energy.parent
    if not energy.exists():
        raise SensorUnavailable(f"no Intel RAPL counter ({path} does not exist: not an Intel/AMD CPU with "
                                "powercap, or a virtual machine that hides it)")
    name = _read_label(domain / "name", opener) or domain.name
    try:
        _read_number(energy, opener)
    except PermissionError:
        raise SensorUnavailable(f"{path} is readable only by root (Linux >= 5.10 restricts RAPL): run as root, "
                                f"or `sudo chmod o+r {path}`") from None
    except (OSError, ValueError) as exc:
        raise SensorUnavailable(f"{path}: cannot read ({exc})") from None
    try:
        wrap = _read_number(domain / "max_energy_range_uj", opener)
    except (OSError, ValueError):
        wrap = None
    meter = CounterMeter(lambda: _read_number(energy, opener), 1e-6, wrap, f"rapl:{name} ({path})")
    meter.rails = (name,)
    return meter


class SumMeter(Meter):
    """Several counters read as one (every CPU package of a multi-socket machine)."""

    def __init__(self, meters: list[Meter]):
        self.meters = meters
        self.source = " + ".join(m.source for m in meters)
        self.rails = tuple(r for m in meters for r in m.rails)
        self.min_window_s = max(m.min_window_s for m in meters)

    def begin(self) -> None:
        for meter in self.meters:
            meter.begin()

    def end(self) -> float:
        joules = sum(meter.end() for meter in self.meters)
        self.window_s = max(meter.window_s for meter in self.meters)
        return joules


_PACKAGE_ZONE = re.compile(r"^intel-rapl:\d+$")


def rapl_meter(path: str = RAPL_DEFAULT, root: str | os.PathLike | None = None, opener: Opener = open) -> Meter:
    """Intel RAPL powercap energy. The default path (package 0) stands for the whole CPU: on a
    machine with several sockets every package zone (``intel-rapl:<N>``) is summed; another
    path is read alone."""
    counter = _rapl_counter(path, root, opener)
    if path != RAPL_DEFAULT:
        return counter
    zones = Path(RAPL_DEFAULT).parent.parent
    found = sorted((p.name for p in _under(sysfs_root(root), str(zones)).iterdir() if _PACKAGE_ZONE.match(p.name)),
                   key=lambda n: int(n.rsplit(":", 1)[1]))
    others = [_rapl_counter(str(zones / name / "energy_uj"), root, opener) for name in found if name != "intel-rapl:0"]
    return SumMeter([counter, *others]) if others else counter


# --------------------------------------------------------------------------- INA3221


def _skipped(label: str | None) -> bool:
    return not label or label.upper() in ("NC", "N/C") or label.lower().startswith("sum of")


def ina3221_rails(i2c: str, root: str | os.PathLike | None = None, opener: Opener = open) \
        -> dict[str, Callable[[], float]]:
    """label -> reader of the rail's power in watts, for the connected channels of the
    INA3221 at i2c address `i2c` (e.g. "1-0040"), hwmon layout first, then iio."""
    base = sysfs_root(root)
    rails: dict[str, Callable[[], float]] = {}
    for hwmon in sorted(glob.glob(str(_under(base, f"/sys/bus/i2c/drivers/ina3221/{i2c}/hwmon/hwmon*")))):
        folder = Path(hwmon)
        for label_file in sorted(folder.glob("in*_label")):
            match = re.fullmatch(r"in(\d+)_label", label_file.name)
            if not match:
                continue
            n = match.group(1)
            label = _read_label(label_file, opener)
            volts, amps = folder / f"in{n}_input", folder / f"curr{n}_input"
            if _skipped(label) or not (volts.exists() and amps.exists()):
                continue
            if _read_label(folder / f"in{n}_enable", opener) == "0":
                continue
            rails[label] = (lambda v=volts, a=amps: _read_number(v, opener) * _read_number(a, opener) / 1e6)
    if rails:
        return rails
    for device in sorted(glob.glob(str(_under(base, f"/sys/bus/i2c/drivers/ina3221x/{i2c}/iio:device*")))):
        folder = Path(device)
        for name_file in sorted(folder.glob("rail_name_*")):
            k = name_file.name.rsplit("_", 1)[1]
            label = _read_label(name_file, opener)
            power = folder / f"in_power{k}_input"
            if not _skipped(label) and power.exists():
                rails[label] = (lambda p=power: _read_number(p, opener) / 1e3)
    return rails


def ina3221_meter(sensors: Iterable, root: str | os.PathLike | None = None, opener: Opener = open,
                  interval: float = SAMPLE_INTERVAL_S) -> SampledMeter:
    """The module's total power from a target's ina3221 sensors: the `total` one (the module
    input), else the sum of every rail of every monitor the target names (each named rail
    must be there), as jetson-stats totals a module without an input rail."""
    sensors = [s for s in sensors if s.driver == "ina3221"]
    if not sensors:
        raise SensorUnavailable("the target names no INA3221 rail")
    total = next((s for s in sensors if s.total), None)
    monitors = [total.i2c] if total else list(dict.fromkeys(s.i2c for s in sensors))
    found = {i2c: ina3221_rails(i2c, root, opener) for i2c in monitors}
    for sensor in [total] if total else sensors:
        if sensor.name not in found[sensor.i2c]:
            raise SensorUnavailable(f"no INA3221 rail {sensor.name} at {sensor.i2c} (found: "
                                    f"{', '.join(found[sensor.i2c]) or 'no ina3221 hwmon/iio device'})")
    chosen = [(total.i2c, total.name)] if total else [(i2c, label) for i2c in monitors for label in found[i2c]]
    readers = [found[i2c][label] for i2c, label in chosen]
    try:
        for read in readers:
            read()
    except PermissionError:
        raise SensorUnavailable(f"the INA3221 files at {', '.join(monitors)} are not readable by this user") from None
    except (OSError, ValueError) as exc:
        raise SensorUnavailable(f"INA3221 at {', '.join(monitors)}: cannot read ({exc})") from None
    groups = " + ".join(f"{'+'.join(label for i, label in chosen if i == i2c)} ({i2c})" for i2c in monitors)
    source = f"ina3221:{groups}" + ("" if total else ": sum of all rails, as jetson-stats totals them "
                                                     "(regulator outputs, not the module input)")
    meter = SampledMeter(lambda: sum(read() for read in readers), source, interval)
    meter.rails = tuple(f"{label} ({i2c})" for i2c, label in chosen)
    return meter


# --------------------------------------------------------------------------- NVML


def nvml_meter(index: int = 0) -> CounterMeter:
    """NVML's total energy counter of GPU `index` (mJ since the driver loaded)."""
    try:
        import pynvml
    except ImportError:
        raise SensorUnavailable("NVML energy needs pynvml (pip install nvidia-ml-py), which is not installed") from None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        name = pynvml.nvmlDeviceGetName(handle)
    except Exception as exc:  # noqa: BLE001 - NVMLError subclasses, by status
        raise SensorUnavailable(f"NVML energy counter of GPU {index} unavailable ({exc})") from None
    name = name.decode() if isinstance(name, bytes) else str(name)
    meter = CounterMeter(lambda: float(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)), 1e-3, None,
                         f"nvml:GPU {index} ({name}) total energy")
    meter.min_window_s = NVML_MIN_WINDOW_S
    meter.rails = (f"GPU {index} total energy counter",)
    return meter


# --------------------------------------------------------------------------- choice


def open_meter(target, root: str | os.PathLike | None = None, opener: Opener = open) -> tuple[Meter | None, str | None]:
    """The target's energy meter here, or (None, why there is none)."""
    sensors = list(getattr(target, "power_sensors", ()) or ())
    reasons: list[str] = []
    for driver in ("ina3221", "rapl", "nvml"):
        chosen = [s for s in sensors if s.driver == driver]
        if not chosen:
            continue
        try:
            if driver == "ina3221":
                return ina3221_meter(chosen, root, opener), None
            if driver == "rapl":
                return rapl_meter(chosen[0].path or RAPL_DEFAULT, root, opener), None
            return nvml_meter(), None
        except SensorUnavailable as exc:
            reasons.append(str(exc))
    if not sensors:
        return None, f"target {getattr(target, 'name', '?')} names no power sensor"
    return None, "; ".join(reasons)
