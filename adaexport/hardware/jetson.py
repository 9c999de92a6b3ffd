"""What a Jetson's own files say about it (standard library only): the device tree's model
and module, the Jetson Linux (L4T) release, and whether an NVIDIA GPU driver is present.

Which module belongs to which target is the target TOMLs' ``modules`` lists (the one place
modules are listed); ``adaexport.targets.read_jetson`` adds it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

# Jetson Linux (L4T) release -> JetPack release, for the releases this table knows.
JETPACK_OF_L4T = {
    "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3",
    "35.6.0": "5.1.4", "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2",
    "36.4.4": "6.2.1",
}
# A board part number in a compatible string: "p3767-0005" (module) or "p3768-0000" (carrier).
_PART = re.compile(r"^p\d{4}-\d{4}$")


@dataclasses.dataclass(frozen=True)
class DeviceTree:
    """What the device tree says about a Tegra board."""
    model: str                 # /proc/device-tree/model, e.g. "NVIDIA Jetson Orin Nano Developer Kit"
    compatible: tuple[str, ...]
    parts: tuple[str, ...]     # board part numbers, the module's last: ("p3768-0000", "p3767-0005")

    @property
    def sku(self) -> str | None:
        """The module's part number (the last part of a carrier+module entry), if any."""
        return self.parts[-1] if self.parts else None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return None


def read_device_tree(root: str | os.PathLike = "/") -> DeviceTree | None:
    """The device tree of the machine whose filesystem is at ``root``, or None when it is
    not an NVIDIA Tegra device."""
    tree = Path(root) / "proc" / "device-tree"
    model = (_read_text(tree / "model") or "").strip("\0 \n")
    compatible = tuple(c for c in (_read_text(tree / "compatible") or "").replace("\n", "\0").split("\0") if c)
    if not (any(c.startswith("nvidia,") for c in compatible) or "jetson" in model.lower()):
        return None
    parts: list[str] = []
    for entry in compatible:
        # "nvidia,p3767-0005", the carrier+module form "nvidia,p3768-0000+p3767-0005", or JetPack
        # 6.2's "nvidia,p3768-0000+p3767-0005-super"
        found = [p.removesuffix("-super") for p in entry.split(",", 1)[-1].split("+")]
        found = [p for p in found if _PART.match(p)]
        if found:
            parts = found
            break
    return DeviceTree(model=model, compatible=compatible, parts=tuple(parts))


def l4t_release(root: str | os.PathLike = "/") -> str | None:
    """The Jetson Linux release from /etc/nv_tegra_release ("# R36 (release), REVISION: 4.3, ..."
    -> "36.4.3"), or None when the file is missing or unreadable."""
    text = _read_text(Path(root) / "etc" / "nv_tegra_release")
    if not text:
        return None
    match = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?", text)
    if not match:
        return None
    major, minor, patch = match.group(1), match.group(2), match.group(3) or "0"
    return f"{int(major)}.{int(minor)}.{int(patch)}"


def jetpack_release(l4t: str | None) -> str | None:
    """The JetPack release of a Jetson Linux release, when the table knows it."""
    return JETPACK_OF_L4T.get(l4t) if l4t else None


def has_nvidia_gpu(root: str | os.PathLike = "/") -> bool:
    """An NVIDIA driver with a GPU (/proc/driver/nvidia/gpus/*), or nvidia-smi on PATH
    (only looked for on the real root)."""
    gpus = Path(root) / "proc" / "driver" / "nvidia" / "gpus"
    try:
        if gpus.is_dir() and any(gpus.iterdir()):
            return True
    except OSError:
        pass
    return Path(root).resolve() == Path("/") and shutil.which("nvidia-smi") is not None
