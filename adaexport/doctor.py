"""`adaexport doctor`: what this device really has, next to what adaexport assumes about it.

Run on the device (no torch, no onnx; TensorRT and pynvml only when installed). It reads,
and never changes, the machine: the Jetson module and release, TensorRT's version and
capabilities and the DLA cores it sees, the nvpmodel modes with their GPU TPC
power-gating masks (which ones a switch reaches only through a reboot), the INA3221
rails (and their conversion settings), whether RAPL and NVML energy and nvmap / NVML
per-process memory are readable, and where the target's TOML differs from all that.
These settle on a device what the hardware audit (shared/docs/hardware-audit.md) could
not check without one. The report is one JSON document (`run_checks`), printed as text
or JSON; `not_found` says what this machine lacks.

Everything is read under ``$ADAEXPORT_SYSFS_ROOT`` (default "/"), the same root the
profiler's readers use, so tests run it on fixture trees.
"""

from __future__ import annotations

import glob
import platform
import time
from pathlib import Path
from typing import Any

from . import __version__
from .device_identity import system_root
from .hardware import power_modes, sensors
from .hardware.device_memory import device_memory_reader
from .targets import detect_target, get_target, jetpack_release, l4t_release, read_jetson

INA3221_SETTINGS = ("update_interval", "samples")      # hwmon: conversion period (ms), averaged samples


def _root() -> str:
    return str(system_root())


def _jetson(root: str) -> dict[str, Any] | None:
    module = read_jetson(root)
    if module is None:
        return None
    l4t = l4t_release(root)
    return {"model": module.model, "compatible": list(module.compatible), "module": module.sku,
            "target": module.target, "l4t": l4t, "jetpack": jetpack_release(l4t)}


def _tensorrt() -> dict[str, Any]:
    try:
        import tensorrt as trt
    except ImportError as exc:
        return {"found": False, "reason": f"the tensorrt Python package cannot be imported ({exc})"}
    from .backends.cuda_runtime import CudaRuntime
    from .backends.trt_settings import caps_of
    from .errors import BackendError

    caps = caps_of(trt)
    facts: dict[str, Any] = {"found": True, "version": caps.version, "capabilities": {
        "fp16_flag": caps.fp16_flag, "int8_flag": caps.int8_flag, "strongly_typed": caps.strongly_typed,
        "explicit_batch_flag": caps.explicit_batch_flag, "builder_optimization_level": caps.optimization_level,
        "dla": caps.dla, "device_memory_size_v2": hasattr(trt.ICudaEngine, "device_memory_size_v2"),
        "engine_inspector": hasattr(trt.ICudaEngine, "create_engine_inspector")}}
    try:
        facts["dla_cores"] = int(trt.Builder(trt.Logger(trt.Logger.ERROR)).num_DLA_cores)
    except Exception as exc:  # noqa: BLE001 - no GPU, no driver: say so
        facts["dla_cores"], facts["dla_reason"] = None, f"{type(exc).__name__}: {exc}"
    try:
        cuda = CudaRuntime.get()
        facts["cuda_runtime"], facts["compute_capability"] = cuda.runtime_version(), cuda.compute_capability()
    except BackendError as exc:
        facts["cuda_runtime"] = facts["compute_capability"] = None
        facts["cuda_reason"] = str(exc)
    return facts


def _nvpmodel(root: str) -> dict[str, Any]:
    conf = power_modes.read_conf(root)
    command = power_modes.nvpmodel_command()
    facts: dict[str, Any] = {"command": " ".join(command) if command else None,
                             "conf": f"/{power_modes.CONF}" if conf else None}
    if conf is None:
        return facts
    current = power_modes.current_power_mode(root=root)
    mask, where = power_modes.gpu_mask_in_force(conf, root)
    reboot = power_modes.reboot_reasons(root, current)
    facts.update(current=current, default=next((m.name for m in conf.modes if m.id == conf.default), None),
                 gpu_tpc_pg_mask=mask, gpu_tpc_pg_mask_file=where,
                 modes=[{"id": m.id, "name": m.name, "tpc_pg_mask": m.tpc_pg_mask, "needs_reboot": m.name in reboot,
                         "reason": reboot.get(m.name)} for m in conf.modes])
    return facts


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _rails(root: str) -> dict[str, Any]:
    """Every INA3221 monitor found (hwmon, else the JetPack 4 iio driver): its rails with a
    reading in watts (None: unreadable) and, for hwmon, its conversion settings."""
    base = Path(root)
    monitors: dict[str, Any] = {}
    found = sorted(glob.glob(str(base / "sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"))) + \
        sorted(glob.glob(str(base / "sys/bus/i2c/drivers/ina3221x/*/iio:device*")))
    for folder in map(Path, found):
        i2c = folder.parent.parent.name if folder.name.startswith("hwmon") else folder.parent.name
        if i2c in monitors:
            continue
        rails = {}
        for label, read in sensors.ina3221_rails(i2c, root).items():
            try:
                rails[label] = round(read(), 3)
            except (OSError, ValueError):
                rails[label] = None
        monitors[i2c] = {"rails": rails, **{k: _read(folder / k) for k in INA3221_SETTINGS}}
    return monitors


def _energy(target, root: str) -> dict[str, Any]:
    out = {}
    for name, open_meter in (("rapl", lambda: sensors.rapl_meter(root=root)), ("nvml", sensors.nvml_meter)):
        try:
            meter = open_meter()
            out[name] = {"readable": True, "source": meter.source}
        except sensors.SensorUnavailable as exc:
            out[name] = {"readable": False, "reason": str(exc)}
    meter, reason = sensors.open_meter(target, root)
    out["target"] = {"readable": meter is not None, "source": meter.source if meter else None, "reason": reason,
                     "rails": list(meter.rails) if meter else [],
                     "min_window_s": meter.min_window_s if meter else None}
    return out


def _device_memory(root: str) -> dict[str, Any]:
    out = {}
    for name, kind in (("nvmap", "jetson"), ("nvml", "gpu")):
        reader = device_memory_reader(kind, root)
        out[name] = {"readable": bool(reader), "source": reader.source}
    return out


def _differences(report: dict[str, Any], target) -> list[str]:
    """Where the target's TOML disagrees with what this machine shows."""
    diffs = []
    jetson, nvp, trt = report["jetson"], report["nvpmodel"], report["tensorrt"]
    module = jetson["module"] if jetson else None
    if jetson and module is None:
        diffs.append(f"device tree {jetson['compatible']} names no module a target knows")
    if jetson and jetson["l4t"] and not jetson["jetpack"]:
        diffs.append(f"Jetson Linux {jetson['l4t']} is not in adaexport's JetPack table")
    if target.kind == "jetson" and nvp.get("modes"):
        names = [m.name for m in target.power_modes_for(module, jetson["l4t"] if jetson else None)]
        conf = [m["name"] for m in nvp["modes"]]
        extra, missing = [n for n in conf if n not in names], [n for n in names if n not in conf]
        if extra:
            diffs.append(f"nvpmodel.conf has modes {target.name} does not name for {module or 'this module'}: "
                         f"{', '.join(extra)} (--power-mode all walks them; they have no budget in the target)")
        if missing:
            diffs.append(f"{target.name} names modes this nvpmodel.conf lacks: {', '.join(missing)}")
    rails = {label for monitor in report["power_rails"].values() for label in monitor["rails"]}
    wanted = [s.name for s in target.power_sensors if s.driver == "ina3221"]
    if wanted and report["power_rails"] and not set(wanted) <= rails:
        diffs.append(f"{target.name} reads INA3221 rails {', '.join(sorted(set(wanted) - rails))}, "
                     f"which this device does not have (it has: {', '.join(sorted(rails))})")
    for i2c, monitor in report["power_rails"].items():
        interval = monitor.get("update_interval")
        if interval and interval.isdigit() and int(interval) > 4 * sensors.SAMPLE_INTERVAL_S * 1000:
            diffs.append(f"INA3221 {i2c} converts every {interval} ms: the {sensors.SAMPLE_INTERVAL_S * 1000:g} ms "
                         "sampler sees few distinct readings in short windows")
    if trt["found"]:
        cores = target.dla_cores(module)
        if trt.get("dla_cores") is not None and trt["dla_cores"] != cores:
            diffs.append(f"{target.name} assumes {cores} DLA core(s), TensorRT sees {trt['dla_cores']}")
        if cores and not trt["capabilities"]["dla"]:
            diffs.append(f"TensorRT {trt['version']} builds nothing for the DLA; DLA engines need TensorRT 8.x/10.x")
        if target.compute_capability and trt.get("compute_capability") not in (None, target.compute_capability):
            diffs.append(f"{target.name} assumes compute capability {target.compute_capability}, "
                         f"the GPU has {trt['compute_capability']}")
    return diffs


def _not_found(report: dict[str, Any]) -> list[str]:
    missing = []
    if report["jetson"] is None:
        missing.append("no Jetson device tree (/proc/device-tree): not a Jetson")
    if not report["tensorrt"]["found"]:
        missing.append(report["tensorrt"]["reason"])
    elif report["tensorrt"].get("cuda_reason"):
        missing.append(report["tensorrt"]["cuda_reason"])
    if not report["nvpmodel"]["conf"]:
        missing.append(f"no nvpmodel configuration (/{power_modes.CONF}): no power modes to switch")
    if not report["power_rails"]:
        missing.append("no INA3221 power monitor under /sys/bus/i2c/drivers/ina3221{,x}")
    for name, facts in report["energy"].items():
        if not facts["readable"] and name != "target":
            missing.append(f"{name} energy: {facts['reason']}")
    for name, facts in report["device_memory"].items():
        if not facts["readable"]:
            missing.append(f"{name} memory: {facts['source']}")
    return missing


def run_checks(device: str | None = None) -> dict[str, Any]:
    """Every check, as one JSON-able report; `device` is the target to compare with (default:
    the one detected here)."""
    root = _root()
    target = get_target(device) if device else get_target(detect_target(root), root=root)
    report: dict[str, Any] = {
        "adaexport": __version__, "checked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"machine": platform.machine(), "system": platform.system(), "release": platform.release(),
                 "python": platform.python_version()},
        "target": {"name": target.name, "chosen": "--device" if device else "detected"},
        "jetson": _jetson(root), "tensorrt": _tensorrt(), "nvpmodel": _nvpmodel(root),
        "power_rails": _rails(root), "energy": _energy(target, root), "device_memory": _device_memory(root)}
    report["differences"] = _differences(report, target)
    report["not_found"] = _not_found(report)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as text for a terminal."""
    lines = [f"adaexport {report['adaexport']} doctor, {report['checked']} ({report['host']['machine']}, "
             f"Python {report['host']['python']}); target {report['target']['name']} ({report['target']['chosen']})"]
    jetson = report["jetson"]
    lines.append(f"jetson: {jetson['model']} module {jetson['module']}, L4T {jetson['l4t']} "
                 f"(JetPack {jetson['jetpack']})" if jetson else "jetson: none")
    trt = report["tensorrt"]
    if trt["found"]:
        caps = ", ".join(k for k, v in trt["capabilities"].items() if v)
        lines.append(f"tensorrt: {trt['version']} ({caps}); DLA cores {trt.get('dla_cores')}; "
                     f"CUDA {trt.get('cuda_runtime')}, compute capability {trt.get('compute_capability')}")
    else:
        lines.append("tensorrt: not found")
    nvp = report["nvpmodel"]
    if nvp.get("modes"):
        lines.append(f"nvpmodel: current {nvp['current']} (default {nvp['default']}), GPU TPC mask in force "
                     f"{nvp['gpu_tpc_pg_mask']} ({nvp['gpu_tpc_pg_mask_file'] or 'not readable'})")
        lines += [f"  {m['id']} {m['name']}: TPC mask {m['tpc_pg_mask']}"
                  + (" - needs a reboot" if m["needs_reboot"] else " - switches at run time") for m in nvp["modes"]]
    else:
        lines.append("nvpmodel: none")
    for i2c, monitor in report["power_rails"].items():
        rails = ", ".join(f"{k} {v} W" for k, v in monitor["rails"].items())
        lines.append(f"ina3221 {i2c}: {rails or 'no rails'} (update_interval {monitor.get('update_interval')} ms, "
                     f"samples {monitor.get('samples')})")
    lines += [f"energy {name}: {facts['source']}" for name, facts in report["energy"].items() if facts["readable"]]
    lines += [f"device memory {name}: {facts['source']}" for name, facts in report["device_memory"].items()
              if facts["readable"]]
    lines += [f"differs from {report['target']['name']}: {d}" for d in report["differences"]] or \
        [f"differs from {report['target']['name']}: nothing found"]
    lines += [f"not found: {m}" for m in report["not_found"]]
    return "\n".join(lines)
