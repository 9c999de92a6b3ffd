"""Which power modes a profile run covers, and how it gets into each (stdlib only)."""

from __future__ import annotations

from ..manifest_records import DEFAULT_MODE
from ..hardware.power_modes import current_power_mode, mode_ids


def plan_modes(target, asked: str | None, root=None) -> tuple[list[str], bool]:
    """(mode names to profile, whether nvpmodel must switch modes) for --power-mode
    `asked` (None: the current mode; "all": every mode of this module).

    The device's nvpmodel.conf is the truth where there is one: "all" is every mode it
    lists (in its order, including modes the target does not name, e.g. a Nano 4GB's
    7W_AI), and a name is checked against it. Without one, the target's modes for the
    module and Jetson Linux release. Unknown names raise a one-line UsageError."""
    if target.kind != "jetson":
        if asked not in (None, "all"):
            target.power_mode(asked)          # "default" passes; anything else is unknown
        return [DEFAULT_MODE], False
    current = current_power_mode(target, root)
    if asked is None:
        return [current or DEFAULT_MODE], False
    on_device = mode_ids(root)
    if asked == "all":
        if on_device:
            return list(on_device), True
        from ..targets import l4t_release, read_jetson

        module = read_jetson(root or "/")
        modes = target.power_modes_for(module.sku if module else None, l4t_release(root or "/"))
        return [m.name for m in modes], True
    if on_device and asked not in on_device:
        from ..errors import UsageError

        raise UsageError(f"this device has no power mode {asked!r} (nvpmodel.conf lists: {', '.join(on_device)})")
    if not on_device:
        target.power_mode(asked)
    return [asked], asked != current
