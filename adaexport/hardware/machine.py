"""The machine's CPU and GPU as the kernels a backend picks see them (standard library
only; pynvml when installed): the CPU model with its kernel-selecting ISA features, and
the first NVIDIA GPU with its compute capability."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from . import system_root

KERNEL_FLAGS = (
    # x86 (/proc/cpuinfo "flags")
    "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
    "amx_bf16",
    # Arm (/proc/cpuinfo "Features")
    "asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve", "sve2",
)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def cpu_facts(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """The CPU model and its kernel-selecting ISA features, from /proc/cpuinfo ("isa" is None
    where cpuinfo cannot be read)."""
    import platform

    text = _read(system_root(root) / "proc" / "cpuinfo")
    if text is None:
        return {"cpu": platform.processor() or platform.machine(), "isa": None}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    model = fields.get("model name") or fields.get("Hardware") or ""
    if not model and fields.get("CPU implementer"):
        model = f"arm implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')}"
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {"cpu": model or platform.processor() or platform.machine(),
            "isa": sorted(f for f in KERNEL_FLAGS if f in flags)}


def available_memory(root: str | os.PathLike | None = None) -> int | None:
    """Bytes of memory the kernel says can be allocated without swapping (/proc/meminfo
    MemAvailable; on a Jetson it covers the GPU's too, the memory being shared); None where
    it cannot be read."""
    text = _read(system_root(root) / "proc" / "meminfo")
    for line in (text or "").splitlines():
        key, _, value = line.partition(":")
        fields = value.split()
        if key == "MemAvailable" and fields and fields[0].isdigit():
            return int(fields[0]) * 1024     # reported in kB (KiB)
    return None


def gpu_facts(root: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The first NVIDIA GPU's name and compute capability, or None without one."""
    root = system_root(root)
    gpus = root / "proc" / "driver" / "nvidia" / "gpus"
    name = None
    try:
        for entry in sorted(gpus.iterdir()) if gpus.is_dir() else []:
            match = re.search(r"^Model:\s*(.+)$", _read(entry / "information") or "", re.M)
            if match:
                name = match.group(1).strip()
                break
    except OSError:
        pass
    if name is None:
        return None
    capability = None
    if Path(root).resolve() == Path("/"):
        try:
            import pynvml

            pynvml.nvmlInit()
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(pynvml.nvmlDeviceGetHandleByIndex(0))
            capability = f"{major}.{minor}"
        except Exception:  # noqa: BLE001 - NVML missing or failing: the name alone
            capability = None
    return {"name": name, "compute_capability": capability}
