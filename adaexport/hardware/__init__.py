"""Platform facts read from the machine (standard library only; pynvml when asked for):
the Jetson's nvpmodel power modes (``power_modes``), energy and power sensors
(``sensors``: INA3221, RAPL, NVML) and device memory (``device_memory``: nvmap, NVML).

A leaf of the package: the profiler, the targets and the embedded runtime use it, and it
imports nothing of adaexport but ``errors``. Every file is read under ``system_root()``
($ADAEXPORT_SYSFS_ROOT, else /), so tests stand in fixture trees.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "ADAEXPORT_SYSFS_ROOT"     # where /proc, /sys and /etc are read (fixture trees in tests); "/" by default


def system_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else $ADAEXPORT_SYSFS_ROOT, else "/"."""
    return Path(root if root is not None else os.environ.get(ROOT_ENV, "/"))
