"""What a TensorRT plan is tied to: the TensorRT version, the GPU's compute capability and,
on Jetson, the Jetson Linux (L4T) release (`SystemKey`); the key of the running system
(`system_key`) and the one-line refusal of a plan built for another (`check_plan_key`)."""

from __future__ import annotations

import dataclasses
import platform
from typing import Any

from .base import BackendError
from .cuda_runtime import CudaRuntime


@dataclasses.dataclass(frozen=True)
class SystemKey:
    """What a plan is tied to."""
    tensorrt: str | None
    compute_capability: str | None
    l4t: str | None                 # Jetson Linux release, None off Jetson
    machine: str | None = None

    def describe(self) -> str:
        parts = [f"TensorRT {self.tensorrt or '?'}", f"compute capability {self.compute_capability or '?'}"]
        if self.l4t:
            parts.append(f"L4T {self.l4t}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "SystemKey":
        return cls(**{f.name: raw.get(f.name) for f in dataclasses.fields(cls)})


def _version_tuple(version: str | None) -> tuple[int, ...]:
    out = []
    for part in (version or "").split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def check_plan_key(built: SystemKey, here: SystemKey, plan_name: str = "engine",
                   finish: str | None = None) -> str | None:
    """None when a plan built on `built` runs on `here`, else one line saying why not.

    TensorRT plans are tied to the TensorRT version (major.minor.patch), the GPU's
    compute capability and, on Jetson, the Jetson Linux release."""
    reasons = []
    if _version_tuple(built.tensorrt)[:3] != _version_tuple(here.tensorrt)[:3]:
        reasons.append(f"TensorRT {built.tensorrt} vs {here.tensorrt or 'none'}")
    if built.compute_capability != here.compute_capability:
        reasons.append(f"compute capability {built.compute_capability} vs {here.compute_capability or 'unknown'}")
    if _version_tuple(built.l4t)[:2] != _version_tuple(here.l4t)[:2]:
        reasons.append(f"L4T {built.l4t or 'none'} vs {here.l4t or 'none'}")
    if not reasons:
        return None
    hint = f"; rebuild it here: {finish}" if finish else "; rebuild it on this device"
    return (f"{plan_name} was built for {built.describe()} and this system has {here.describe()} "
            f"({'; '.join(reasons)}){hint}")


def _orin_compute_capability(root: str = "/") -> str | None:
    from ..targets import read_jetson

    module = read_jetson(root)
    return "8.7" if module is not None and module.target is not None else None


def system_key(tensorrt_version: str | None = None, *, root: str = "/") -> SystemKey:
    """The key of the system this runs on (the installed TensorRT unless one is given)."""
    from ..targets import l4t_release

    if tensorrt_version is None:
        try:
            import tensorrt as trt

            tensorrt_version = str(trt.__version__)
        except ImportError:
            tensorrt_version = None
    try:
        capability = CudaRuntime.get().compute_capability()
    except BackendError:
        capability = _orin_compute_capability(root)   # known per module when CUDA cannot say
    return SystemKey(tensorrt=tensorrt_version, compute_capability=capability, l4t=l4t_release(root),
                     machine=platform.machine())
