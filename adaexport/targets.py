"""Device targets. Issue 4 adds the TOML target files; until then the targets that the
ONNX Runtime CPU path serves are known here, and the host's is detected."""

from __future__ import annotations

import platform

from .errors import UsageError

HOST_TARGETS = {"x86_64": "x86-cpu", "amd64": "x86-cpu", "aarch64": "arm64-cpu", "arm64": "arm64-cpu"}
KNOWN_TARGETS = ("x86-cpu", "arm64-cpu")


def detect_target() -> str:
    machine = platform.machine().lower()
    if machine not in HOST_TARGETS:
        raise UsageError(f"cannot detect a target for machine {machine!r}; pass --device (one of {', '.join(KNOWN_TARGETS)})")
    return HOST_TARGETS[machine]


def resolve_target(name: str | None) -> str:
    if name is None:
        return detect_target()
    if name not in KNOWN_TARGETS:
        raise UsageError(f"unknown device target {name!r} (known: {', '.join(KNOWN_TARGETS)})")
    return name
