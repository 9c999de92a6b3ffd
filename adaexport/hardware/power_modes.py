"""Jetson power modes by name through nvpmodel (stdlib only: the embedded runtime
imports this module).

* ``current_power_mode(target=None)``: the current nvpmodel mode's NAME ("MAXN",
  "MODE_30W", "15W", ...), from ``nvpmodel -q`` ("NV Power Mode: MODE_30W"), or, without
  the command, from ``/var/lib/nvpmodel/status`` ("pmode:0002 ...") and
  ``/etc/nvpmodel.conf`` ("< POWER_MODEL ID=2 NAME=MODE_30W >"); None where there is no
  nvpmodel.
* ``read_conf()``: the device's nvpmodel.conf: every mode's id, name and GPU TPC
  power-gating mask (``TPC_POWER_GATING TPC_PG_MASK 240``), and the sysfs files the mask
  is written to (``< PARAM TYPE=FILE NAME=TPC_POWER_GATING >``).
* ``reboot_reasons()``: the modes a switch cannot reach without a reboot: those whose
  TPC mask differs from the one in force (read from sysfs, else the current mode's mask
  in the conf), as jetson-stats decides (jtop/core/nvpmodel.py); nvpmodel then asks to
  reboot, and the profiler answers no.
* ``set_power_mode(name)``: ``nvpmodel -m <id>`` (the id read from the conf file, never
  assumed: ids differ between modules and releases), then reads back what is in force:
  the mode name (``nvpmodel -q``) and, where sysfs shows it, the TPC mask.
* ``walk_power_modes(names, run)``: needs root; switches to each mode in turn, skips
  (with the reason) a mode that needs a reboot or did not take, calls ``run(name)`` with
  the mode read back, and restores the original mode in ``finally`` (errors and Ctrl-C
  included).

The command is ``$ADAEXPORT_NVPMODEL`` when set (tests stand in a script), else
``nvpmodel`` on PATH; files are read under ``root`` (default ``$ADAEXPORT_SYSFS_ROOT``
or "/").
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
from typing import Callable, Iterable

from ..errors import EXIT_ENVIRONMENT
from . import system_root
from .errors import ProfilingError

NVPMODEL_ENV = "ADAEXPORT_NVPMODEL"
CONF = "etc/nvpmodel.conf"
STATUS = "var/lib/nvpmodel/status"
TIMEOUT_S = 60
_SECTION = re.compile(r"^\s*<\s*(\w+)\b([^>]*)>")
_QUERY = re.compile(r"NV Power Mode\s*:\s*(\S+)", re.I)


class PowerModeError(ProfilingError):
    """A power mode cannot be read, set or restored; one line for the user. The device's
    doing (no nvpmodel, not root, a switch that failed): exit 3."""

    exit_code = EXIT_ENVIRONMENT


NOT_ROOT = ("switching power modes (nvpmodel -m) needs root: run it with sudo, "
            "or leave out --power-mode to profile the current mode")


_root = system_root


def nvpmodel_command() -> list[str] | None:
    """The nvpmodel command line to use, or None when there is none."""
    override = os.environ.get(NVPMODEL_ENV)
    if override:
        return shlex.split(override)
    found = shutil.which("nvpmodel")
    return [found] if found else None


@dataclasses.dataclass(frozen=True)
class ConfMode:
    id: int
    name: str
    tpc_pg_mask: int | None = None      # GPU TPC power-gating mask the mode writes (None: not set)


@dataclasses.dataclass(frozen=True)
class NvpConf:
    """What an nvpmodel.conf says."""
    modes: tuple[ConfMode, ...]
    default: int | None = None
    mask_files: tuple[str, ...] = ()     # where TPC_POWER_GATING writes the mask (absolute paths)

    def ids(self) -> dict[str, int]:
        return {m.name: m.id for m in self.modes}

    def mode(self, name: str) -> ConfMode | None:
        return next((m for m in self.modes if m.name == name), None)


def _fields(text: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)\s*=\s*(\S+)", text))


def parse_nvpmodel_conf(text: str) -> NvpConf:
    """The modes (in file order), the default mode id and the TPC mask files of an nvpmodel.conf."""
    modes: list[dict] = []
    section, default, mask_files = None, None, []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        header = _SECTION.match(line)
        if header:
            kind, fields = header.group(1).upper(), _fields(header.group(2))
            section = (kind, fields.get("NAME"))
            if kind == "POWER_MODEL" and "ID" in fields and "NAME" in fields:
                modes.append({"id": int(fields["ID"]), "name": fields["NAME"], "tpc_pg_mask": None})
            elif kind == "PM_CONFIG" and fields.get("DEFAULT", "").isdigit():
                default = int(fields["DEFAULT"])
            continue
        words = line.split()
        if section == ("PARAM", "TPC_POWER_GATING") and len(words) == 2 and words[1].startswith("/"):
            mask_files.append(words[1])
        elif section and section[0] == "POWER_MODEL" and modes and words[:2] == ["TPC_POWER_GATING", "TPC_PG_MASK"] \
                and len(words) == 3:
            modes[-1]["tpc_pg_mask"] = _int(words[2])
    return NvpConf(tuple(ConfMode(**m) for m in modes), default, tuple(mask_files))


def parse_conf(text: str) -> dict[str, int]:
    """NAME -> ID of every POWER_MODEL in an nvpmodel.conf text, in file order."""
    return parse_nvpmodel_conf(text).ids()


def _int(text: str) -> int | None:
    text = text.strip()
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        return None


def read_conf(root=None) -> NvpConf | None:
    """The device's nvpmodel.conf, or None where there is none."""
    try:
        return parse_nvpmodel_conf((_root(root) / CONF).read_text())
    except (OSError, UnicodeDecodeError):
        return None


def mode_ids(root=None) -> dict[str, int]:
    """NAME -> ID from the device's nvpmodel.conf ({} where there is none)."""
    conf = read_conf(root)
    return conf.ids() if conf else {}


def gpu_mask_in_force(conf: NvpConf | None, root=None) -> tuple[int | None, str | None]:
    """(the TPC power-gating mask the GPU has now, the file it was read from), from the first
    readable mask file the conf names; (None, None) where none is readable."""
    for path in conf.mask_files if conf else ():
        try:
            value = _int((_root(root) / path.lstrip("/")).read_text())
        except (OSError, UnicodeDecodeError):
            continue
        if value is not None:
            return value, path
    return None, None


def reboot_reasons(root=None, current: str | None = None) -> dict[str, str]:
    """Mode name -> why switching to it needs a reboot (its TPC mask differs from the one in
    force), for every such mode of the device's conf ({} without a conf or masks)."""
    conf = read_conf(root)
    if conf is None:
        return {}
    mask, where = gpu_mask_in_force(conf, root)
    if mask is None:
        now = conf.mode(current or current_power_mode(root=root) or "")
        mask, where = (now.tpc_pg_mask, f"mode {now.name} in {'/' + CONF}") if now else (None, None)
    if mask is None:
        return {}
    return {m.name: (f"needs a reboot: its GPU TPC power-gating mask is {m.tpc_pg_mask}, the one in force is "
                     f"{mask} ({where})")
            for m in conf.modes if m.tpc_pg_mask is not None and m.tpc_pg_mask != mask}


def _run(args: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PowerModeError(f"{' '.join(args)}: {exc}") from None


def _target_has_nvpmodel(target) -> bool | None:
    """False for a target known to have no nvpmodel (not a Jetson), else None (unknown)."""
    if target is None:
        return None
    return None if getattr(target, "kind", "jetson") == "jetson" else False


def current_power_mode(target=None, root=None) -> str | None:
    """The current nvpmodel mode's name, or None where there is no nvpmodel (or `target`,
    a Target, is not a Jetson)."""
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


def set_power_mode(name: str, root=None, *, check_mask: bool = True) -> str:
    """Switch nvpmodel to the mode called `name`, read back what is in force, and return its
    name; raises PowerModeError when the mode (or, with check_mask, its GPU TPC mask) did
    not take."""
    command = nvpmodel_command()
    if not command:
        raise PowerModeError("nvpmodel is not installed here (not a Jetson?): cannot switch power modes")
    conf = read_conf(root)
    ids = conf.ids() if conf else {}
    if name not in ids:
        raise PowerModeError(f"power mode {name!r} is not in {'/' + CONF} "
                             f"(this device has: {', '.join(ids) or 'none listed'})")
    done = _run([*command, "-m", str(ids[name])])
    detail = (done.stderr or done.stdout or "").strip().splitlines()
    if done.returncode != 0 or any("NVPM ERROR" in line for line in detail):
        raise PowerModeError(f"nvpmodel -m {ids[name]} ({name}) failed"
                             + (f": {detail[-1]}" if detail else f" with exit status {done.returncode}"))
    now = current_power_mode(root=root)
    if now != name:
        raise PowerModeError(f"nvpmodel did not switch to {name} (still {now}); the mode may need a reboot")
    wanted = conf.mode(name).tpc_pg_mask
    mask, where = gpu_mask_in_force(conf, root)
    if check_mask and wanted is not None and mask is not None and mask != wanted:
        raise PowerModeError(f"nvpmodel reports {name}, but the GPU TPC mask in force is {mask} ({where}), "
                             f"not the mode's {wanted}: it needs a reboot")
    return now


def walk_power_modes(names: Iterable[str], run: Callable[[str], None], *, root=None, euid: int | None = None,
                     on_switch: Callable[[str], None] | None = None,
                     on_skip: Callable[[str, str], None] | None = None) -> str | None:
    """Switch to each mode in turn and call run(name) with the mode read back; a mode that
    needs a reboot, or does not take, is skipped and on_skip(name, reason) told why. Always
    switches back to the mode that was current before (on an error or Ctrl-C too).
    Returns that original mode."""
    names = list(names)
    if not is_root(euid):
        raise PowerModeError(NOT_ROOT)
    original = current_power_mode(root=root)
    if original is None:
        raise PowerModeError("cannot read the current power mode (nvpmodel -q), so it could not be restored; "
                             "not switching")
    needs_reboot = reboot_reasons(root, original)
    try:
        for name in names:
            if current_power_mode(root=root) != name:
                if name in needs_reboot:
                    if on_skip:
                        on_skip(name, needs_reboot[name])
                    continue
                try:
                    name = set_power_mode(name, root)
                except PowerModeError as exc:
                    if on_skip:
                        on_skip(name, str(exc))
                    continue
                if on_switch:
                    on_switch(name)
            run(name)
    finally:
        if current_power_mode(root=root) != original:
            set_power_mode(original, root, check_mask=False)     # the mask in force is the original's
    return original
