"""Which power modes a profile run covers, and how it gets into each (stdlib only)."""

from __future__ import annotations

from ..measurements import DEFAULT_MODE
from .power_modes import current_power_mode, mode_ids


def plan_modes(target, asked: str | None, root=None) -> tuple[list[str], bool]:
    """(mode names to profile, whether nvpmodel must switch modes) for --power-mode
    `asked` (None: the current mode; "all": every mode of the target on this module).
    Unknown names raise the target's one-line UsageError."""
    if target.kind != "jetson":
        if asked not in (None, "all"):
            target.power_mode(asked)          # "default" passes; anything else is unknown
        return [DEFAULT_MODE], False
    current = current_power_mode(target, root)
    if asked is None:
        return [current or DEFAULT_MODE], False
    if asked == "all":
        from ..targets import l4t_release, read_jetson

        module = read_jetson(root or "/")
        names = [m.name for m in target.power_modes_for(module.sku if module else None, l4t_release(root or "/"))]
        on_device = mode_ids(root)
        if on_device:
            names = [n for n in names if n in on_device]
        return names, True
    target.power_mode(asked)
    return [asked], asked != current
