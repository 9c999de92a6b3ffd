"""Jetson power modes by name through nvpmodel (stdlib only: the embedded runtime
imports this module).

* ``current_power_mode(target=None)``: the current nvpmodel mode's NAME ("MAXN",
  "15W", ...), from ``nvpmodel -q`` ("NV Power Mode: 15W"), or, without the command,
  from ``/var/lib/nvpmodel/status`` ("pmode:0002 ...") and ``/etc/nvpmodel.conf``
  ("< POWER_MODEL ID=2 NAME=15W >"); None where there is no nvpmodel.
* ``set_power_mode(name)``: ``nvpmodel -m <id>`` (the id read from the conf file, never
  assumed: ids differ between modules and releases), then checks that the mode took
  (a mode that needs a reboot does not, and nvpmodel's reboot prompt is answered "no").
* ``walk_power_modes(names, run)``: needs root; switches to each mode, calls ``run(name)``,
  and restores the original mode in ``finally`` (errors and Ctrl-C included).

The command is ``$ADAEXPORT_NVPMODEL`` when set (tests stand in a script), else
``nvpmodel`` on PATH; files are read under ``root`` (default ``$ADAEXPORT_SYSFS_ROOT``
or "/").
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterable

from .errors import ProfilingError

NVPMODEL_ENV = "ADAEXPORT_NVPMODEL"
ROOT_ENV = "ADAEXPORT_SYSFS_ROOT"
CONF = "etc/nvpmodel.conf"
STATUS = "var/lib/nvpmodel/status"
TIMEOUT_S = 60
_MODEL_LINE = re.compile(r"<\s*POWER_MODEL\b([^>]*)>", re.I)
_QUERY = re.compile(r"NV Power Mode\s*:\s*(\S+)", re.I)


class PowerModeError(ProfilingError):
    """A power mode cannot be read, set or restored; one line for the user."""


NOT_ROOT = ("switching power modes (nvpmodel -m) needs root: run it with sudo, "
            "or leave out --power-mode to profile the current mode")


def _root(root) -> Path:
    return Path(root if root is not None else os.environ.get(ROOT_ENV, "/"))


def nvpmodel_command() -> list[str] | None:
    """The nvpmodel command line to use, or None when there is none."""
    override = os.environ.get(NVPMODEL_ENV)
    if override:
        return shlex.split(override)
    found = shutil.which("nvpmodel")
    return [found] if found else None


def parse_conf(text: str) -> dict[str, int]:
    """NAME -> ID of every POWER_MODEL in an nvpmodel.conf text, in file order."""
    modes: dict[str, int] = {}
    for match in _MODEL_LINE.finditer(text):
        fields = dict(re.findall(r"(\w+)\s*=\s*(\S+)", match.group(1)))
        if "ID" in fields and "NAME" in fields:
            modes[fields["NAME"]] = int(fields["ID"])
    return modes


def mode_ids(root=None) -> dict[str, int]:
    """NAME -> ID from the device's nvpmodel.conf ({} where there is none)."""
    try:
        return parse_conf((_root(root) / CONF).read_text())
    except (OSError, UnicodeDecodeError):
        return {}


def _run(args: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PowerModeError(f"{' '.join(args)}: {exc}") from None


def _target_has_nvpmodel(target) -> bool | None:
    """False for a target known to have no nvpmodel (not a Jetson), else None (unknown)."""
    if target is None:
        return None
    if isinstance(target, str):
        try:
            from ..targets import load_target

            target = load_target(target)
        except Exception:  # noqa: BLE001 - an unknown name: do not decide from it
            return None
    return None if getattr(target, "kind", "jetson") == "jetson" else False


def current_power_mode(target=None, root=None) -> str | None:
    """The current nvpmodel mode's name, or None where there is no nvpmodel (or `target`,
    a Target or its name, is not a Jetson)."""
    if _target_has_nvpmodel(target) is False:
        return None
    command = nvpmodel_command()
    if command:
        done = _run([*command, "-q"])
        match = _QUERY.search(done.stdout or "")
        if done.returncode == 0 and match:
            return match.group(1)
    try:
        status = (_root(root) / STATUS).read_text()
    except (OSError, UnicodeDecodeError):
        return None
    match = re.search(r"pmode\s*:\s*(\d+)", status)
    if not match:
        return None
    wanted = int(match.group(1))
    return next((name for name, ident in mode_ids(root).items() if ident == wanted), None)


def is_root(euid: int | None = None) -> bool:
    return (os.geteuid() if euid is None and hasattr(os, "geteuid") else euid) == 0


def set_power_mode(name: str, root=None) -> None:
    """Switch nvpmodel to the mode called `name` and check that it took."""
    command = nvpmodel_command()
    if not command:
        raise PowerModeError("nvpmodel is not installed here (not a Jetson?): cannot switch power modes")
    ids = mode_ids(root)
    if name not in ids:
        raise PowerModeError(f"power mode {name!r} is not in {'/' + CONF} "
                             f"(this device has: {', '.join(ids) or 'none listed'})")
    done = _run([*command, "-m", str(ids[name])])
    if done.returncode != 0:
        detail = (done.stderr or done.stdout or "").strip().splitlines()
        raise PowerModeError(f"nvpmodel -m {ids[name]} ({name}) failed"
                             + (f": {detail[-1]}" if detail else f" with exit status {done.returncode}"))
    now = current_power_mode(root=root)
    if now != name:
        raise PowerModeError(f"nvpmodel did not switch to {name} (still {now}); the mode may need a reboot")


def walk_power_modes(names: Iterable[str], run: Callable[[str], None], *, root=None, euid: int | None = None,
                     on_switch: Callable[[str], None] | None = None) -> str | None:
    """Switch to each mode in turn and call run(name); always switch back to the mode
    that was current before (on an error or Ctrl-C too). Returns that original mode."""
    names = list(names)
    if not is_root(euid):
        raise PowerModeError(NOT_ROOT)
    original = current_power_mode(root=root)
    if original is None:
        raise PowerModeError("cannot read the current power mode (nvpmodel -q), so it could not be restored; "
                             "not switching")
    try:
        for name in names:
            if current_power_mode(root=root) != name:
                set_power_mode(name, root)
                if on_switch:
                    on_switch(name)
            run(name)
    finally:
        if current_power_mode(root=root) != original:
            set_power_mode(original, root)
    return original
