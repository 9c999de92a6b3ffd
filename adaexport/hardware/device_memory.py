"""Device memory this process holds where its resident set (VmRSS) does not show it, each
reading tagged with its source (stdlib only; pynvml imported when asked for).

* Jetson (Orin: the nvgpu stack): ``cudaMalloc`` and TensorRT allocations are nvmap
  buffers, not in VmRSS. ``/sys/kernel/debug/nvmap/iovmm/maps`` lists them per process
  (``<user> <process> <PID> <size>K`` lines and a ``total`` line; debugfs, root only),
  which is where jetson-stats reads per-process GPU memory (jtop/core/processes.py).
* Discrete NVIDIA GPUs: NVML's per-process used memory
  (``nvmlDeviceGetComputeRunningProcesses``: pid, usedGpuMemory in bytes), summed over
  the GPUs.

``device_memory_reader(target)`` gives a `DeviceMemory` (``read()`` -> bytes or None)
and ``source``; where nothing can be read, ``read`` is None and ``source`` says why.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable

from . import system_root

NVMAP_MAPS = "sys/kernel/debug/nvmap/iovmm/maps"
_LINE = re.compile(r"^\s*(?P<user>\S+)\s+(?P<process>\S+)\s+(?P<pid>\d+)\s+(?P<size>\d+)(?P<unit>[KMG]?)B?\s*$", re.I)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


@dataclasses.dataclass
class DeviceMemory:
    source: str
    reader: Callable[[], int | None] | None = None

    def read(self) -> int | None:
        return self.reader() if self.reader else None

    def __bool__(self) -> bool:
        return self.reader is not None


_root = system_root


def parse_nvmap_maps(text: str) -> dict[int, int]:
    """PID -> bytes of nvmap memory from the iovmm maps table (the total line is skipped)."""
    used: dict[int, int] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match and match.group("user").lower() != "total":
            pid = int(match.group("pid"))
            used[pid] = used.get(pid, 0) + int(match.group("size")) * _UNITS[match.group("unit").upper()]
    return used


def nvmap_bytes(pid: int | None = None, root=None) -> int:
    """Bytes of nvmap (GPU) memory process `pid` (default: this one) holds; raises OSError
    where the table cannot be read."""
    return parse_nvmap_maps((_root(root) / NVMAP_MAPS).read_text()).get(pid or os.getpid(), 0)


def nvml_process_bytes(pid: int | None = None) -> int:
    """Bytes of GPU memory NVML counts for process `pid` (default: this one) on every GPU."""
    import pynvml

    pynvml.nvmlInit()
    pid, total = pid or os.getpid(), 0
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if process.pid == pid and isinstance(process.usedGpuMemory, int):
                total += process.usedGpuMemory
    return total


def device_memory_reader(target, root=None) -> DeviceMemory:
    """How this process's device memory is read on `target` (a Target or its kind; jetson:
    nvmap, gpu: NVML)."""
    kind = target if isinstance(target, str) else getattr(target, "kind", None)
    if kind == "jetson":
        try:
            nvmap_bytes(root=root)
        except OSError as exc:
            return DeviceMemory(f"nvmap not readable (/{NVMAP_MAPS}: {exc.strerror or exc}; debugfs, root only)")
        return DeviceMemory(f"nvmap (/{NVMAP_MAPS})", lambda: nvmap_bytes(root=root))
    if kind == "gpu":
        try:
            nvml_process_bytes()
        except ImportError:
            return DeviceMemory("NVML per-process memory needs pynvml (pip install nvidia-ml-py)")
        except Exception as exc:  # noqa: BLE001 - NVMLError subclasses, by status
            return DeviceMemory(f"NVML per-process memory unavailable ({exc})")
        return DeviceMemory("NVML nvmlDeviceGetComputeRunningProcesses (usedGpuMemory)", nvml_process_bytes)
    return DeviceMemory("no device memory on a CPU target")
