"""Device targets: one TOML file per device (``targets/*.toml`` at the top of the repository,
installed with the package, and any on ``ADAEXPORT_TARGETS_PATH``: see adaexport.data_paths).

A target names the backends and precisions to build, in order of preference, the
device's power modes *by name* (as ``nvpmodel`` names them on a Jetson; never by
numeric id, which differs between modules and JetPack releases), its power sensors
and its default thread count.

    load_target("jetson-orin-nano")   -> Target
    list_targets()                    -> ["arm64-cpu", "jetson-agx-orin", ...]
    detect_target(root="/")           -> "x86-cpu" / "nvidia-gpu" / "jetson-orin-nx" / ...
    resolve_target(name | None)       -> the canonical name (detected when None; aliases resolved;
                                         a .toml path stays the path)
    get_target(name | None)           -> Target (the same resolution, loaded)

The alias ``jetson-orin`` picks the module's target from the device tree of the
machine it runs on (/proc/device-tree/compatible, e.g. "nvidia,p3767-0005").
Detection reads files under a root directory, so tests run it on fixture trees.

This module uses the standard library only: the embedded runtime may read targets
on a device without torch. Bad names raise ``adaexport.errors.UsageError`` (imported
when raised, since adaexport.errors pulls in the toolchain).
"""

from __future__ import annotations

import dataclasses
import os
import platform as _platform
import re
import sys
from pathlib import Path
from typing import Any

from ..checks import checked_number, optional_number, read_utf8
from ..data_paths import toml_files
from ..hardware.jetson import has_nvidia_gpu, jetpack_release, l4t_release, read_device_tree  # noqa: F401

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ALIASES_FROM_DEVICE_TREE = ("jetson-orin",)
KINDS = ("jetson", "gpu", "cpu")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")

# The device-tree model string, when the compatible string names no known module.
_MODEL_PATTERNS = (
    (re.compile(r"\bAGX\s+Orin\b", re.I), "jetson-agx-orin"),
    (re.compile(r"\bOrin\s+NX\b", re.I), "jetson-orin-nx"),
    (re.compile(r"\bOrin\s+Nano\b", re.I), "jetson-orin-nano"),
)
HOST_TARGETS = {"x86_64": "x86-cpu", "amd64": "x86-cpu", "aarch64": "arm64-cpu", "arm64": "arm64-cpu"}


def _usage_error(message: str) -> Exception:
    from ..errors import UsageError  # the toolchain's error type; imported only when raised

    return UsageError(message)


class TargetFileError(ValueError):
    """A target TOML file that does not have the expected shape (a packaging bug)."""


# --------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class EngineChoice:
    backend: str
    precisions: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class PowerMode:
    name: str
    budget_w: float | None = None       # None: uncapped (MAXN) or not a power budget
    description: str = ""
    modules: tuple[str, ...] = ()       # compatible strings it applies to; () = every module
    min_l4t: str | None = None          # first Jetson Linux release that has it
    before_l4t: str | None = None       # first release that no longer has it

    def applies(self, module: str | None = None, l4t: str | None = None) -> bool:
        """Whether this mode exists on `module` (a compatible string) under Jetson Linux `l4t`
        (unknown values do not exclude a mode)."""
        if module and self.modules and module not in self.modules:
            return False
        if l4t:
            if self.min_l4t and _version_key(l4t) < _version_key(self.min_l4t):
                return False
            if self.before_l4t and _version_key(l4t) >= _version_key(self.before_l4t):
                return False
        return True


@dataclasses.dataclass(frozen=True)
class PowerSensor:
    name: str                 # the rail's label (INA3221 in<N>_label), or a sensor name
    driver: str               # ina3221 | nvml | rapl
    description: str = ""
    i2c: str | None = None    # ina3221: the i2c device, e.g. "1-0040"
    channel: int | None = None
    path: str | None = None   # rapl: the energy counter file
    total: bool = False       # this sensor measures the whole module/board

    def hwmon_glob(self) -> str | None:
        """Where the rail's hwmon files are (ina3221 only), as a glob pattern."""
        if self.driver != "ina3221" or not self.i2c:
            return None
        return f"/sys/bus/i2c/drivers/ina3221/{self.i2c}/hwmon/hwmon*"


@dataclasses.dataclass(frozen=True)
class JetsonModuleInfo:
    compatible: str
    name: str
    dla_cores: int = 0


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    description: str
    kind: str                               # jetson | gpu | cpu
    arch: str | None                        # x86_64 | aarch64 | None (either)
    threads: int                            # default thread count; 0 = the backend's default
    engines: tuple[EngineChoice, ...]       # in order of preference
    power_modes: tuple[PowerMode, ...]
    power_sensors: tuple[PowerSensor, ...]
    backend_options: dict[str, dict[str, Any]]
    modules: tuple[JetsonModuleInfo, ...] = ()
    compute_capability: str | None = None   # known per module (Orin: 8.7); None: read from the GPU
    source: str = ""                        # the TOML text (hash it into cache keys)

    @property
    def backends(self) -> list[str]:
        return [e.backend for e in self.engines]

    def precisions(self, backend: str) -> tuple[str, ...]:
        for e in self.engines:
            if e.backend == backend:
                return e.precisions
        return ()

    def options(self, backend: str) -> dict[str, Any]:
        """The target's [backends.<name>] table (empty when it has none)."""
        return dict(self.backend_options.get(backend, {}))

    def power_mode(self, name: str) -> PowerMode:
        for mode in self.power_modes:
            if mode.name == name:
                return mode
        raise _usage_error(f"target {self.name} has no power mode {name!r} "
                           f"(known: {', '.join(m.name for m in self.power_modes)})")

    def power_modes_for(self, module: str | None = None, l4t: str | None = None) -> list[PowerMode]:
        """The power modes that exist on this module under this Jetson Linux release."""
        return [m for m in self.power_modes if m.applies(module, l4t)]

    def module(self, compatible: str) -> JetsonModuleInfo | None:
        return next((m for m in self.modules if m.compatible == compatible), None)

    def dla_cores(self, module: str | None = None) -> int:
        found = self.module(module) if module else None
        if found is not None:
            return found.dla_cores
        return int(self.options("tensorrt").get("dla_cores", 0))

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (for `adaexport targets` and the manifest)."""
        return {
            "name": self.name, "description": self.description, "kind": self.kind, "arch": self.arch,
            "threads": self.threads,
            "engines": [{"backend": e.backend, "precisions": list(e.precisions)} for e in self.engines],
            "power_modes": [m.name for m in self.power_modes],
            **({"power_modes_by_module": {m.compatible: [p.name for p in self.power_modes_for(m.compatible)]
                                          for m in self.modules}} if self.modules else {}),
            "power_sensors": [s.name for s in self.power_sensors],
            **({"modules": [m.compatible for m in self.modules]} if self.modules else {}),
        }


# --------------------------------------------------------------------------- loading


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def _files() -> dict[str, Any]:
    return toml_files("targets")


def list_targets() -> list[str]:
    """The names of the targets, packaged and on ADAEXPORT_TARGETS_PATH (aliases such as
    jetson-orin not included)."""
    return sorted(_files())


def _need(raw: dict, key: str, kind: type, where: str):
    if key not in raw:
        raise TargetFileError(f"{where}: missing {key!r}")
    value = raw[key]
    if not isinstance(value, kind):
        raise TargetFileError(f"{where}: {key!r} must be {kind.__name__}, got {value!r}")
    return value


def parse_target(text: str, where: str = "target") -> Target:
    """Parse one target's TOML text (raises TargetFileError on a malformed file)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TargetFileError(f"{where}: invalid TOML ({exc})") from None
    name = _need(raw, "name", str, where)
    kind = _need(raw, "kind", str, where)
    if kind not in KINDS:
        raise TargetFileError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    threads = checked_number(raw.get("threads", 0), f"{where}: threads", TargetFileError, integer=True, minimum=0)
    engines = []
    for i, e in enumerate(_need(raw, "engines", list, where)):
        backend = _need(e, "backend", str, f"{where} engines[{i}]")
        precisions = tuple(_need(e, "precisions", list, f"{where} engines[{i}]"))
        bad = [p for p in precisions if p not in PRECISIONS]
        if bad or not precisions:
            raise TargetFileError(f"{where} engines[{i}]: precisions must be a non-empty list of "
                                  f"{', '.join(PRECISIONS)}, got {list(precisions)}")
        engines.append(EngineChoice(backend, precisions))
    if not engines:
        raise TargetFileError(f"{where}: no engines")
    modes = []
    for i, m in enumerate(raw.get("power_modes", [])):
        mode_name = _need(m, "name", str, f"{where} power_modes[{i}]").strip()
        if not mode_name or mode_name.isdigit():
            raise TargetFileError(f"{where} power_modes[{i}]: a power mode needs a name, not an id ({mode_name!r})")
        budget = optional_number(m.get("budget_w"), f"{where} power_modes[{i}]: budget_w", TargetFileError, above=0)
        modes.append(PowerMode(name=mode_name, budget_w=float(budget) if budget is not None else None,
                               description=str(m.get("description", "")), modules=tuple(m.get("modules", ())),
                               min_l4t=m.get("min_l4t"), before_l4t=m.get("before_l4t")))
    if len({m.name for m in modes}) != len(modes):
        raise TargetFileError(f"{where}: power mode names are not unique")
    sensors = []
    for i, s in enumerate(raw.get("power_sensors", [])):
        sensors.append(PowerSensor(name=_need(s, "name", str, f"{where} power_sensors[{i}]"),
                                   driver=_need(s, "driver", str, f"{where} power_sensors[{i}]"),
                                   description=str(s.get("description", "")), i2c=s.get("i2c"),
                                   channel=s.get("channel"), path=s.get("path"), total=bool(s.get("total", False))))
    jetson = raw.get("jetson", {})
    modules = tuple(JetsonModuleInfo(compatible=_need(m, "compatible", str, f"{where} jetson.modules"),
                                     name=str(m.get("name", m["compatible"])),
                                     dla_cores=checked_number(m.get("dla_cores", 0), f"{where} jetson.modules: "
                                                              "dla_cores", TargetFileError, integer=True, minimum=0))
                    for m in jetson.get("modules", []))
    if kind == "jetson" and not modules:
        raise TargetFileError(f"{where}: a jetson target lists its modules")
    for mode in modes:
        unknown = [c for c in mode.modules if c not in {m.compatible for m in modules}]
        if unknown:
            raise TargetFileError(f"{where}: power mode {mode.name} names unknown modules {unknown}")
    return Target(name=name, description=str(raw.get("description", "")), kind=kind, arch=raw.get("arch"),
                  threads=threads, engines=tuple(engines), power_modes=tuple(modes), power_sensors=tuple(sensors),
                  backend_options={k: dict(v) for k, v in raw.get("backends", {}).items()}, modules=modules,
                  compute_capability=jetson.get("compute_capability"), source=text)


def load_target(name: str, *, root: str | os.PathLike = "/") -> Target:
    """The target called `name` (a packaged target, an alias, or a path to a .toml file).

    `root` is where the jetson-orin alias looks for the device tree."""
    if name.endswith(".toml"):
        path = Path(name)
        if not path.is_file():
            raise _usage_error(f"{path}: no such target file")
        text = read_utf8(path, _usage_error)
        try:  # the user's file: its problems are bad input, not a packaging bug
            return parse_target(text, str(path))
        except TargetFileError as exc:  # names the file
            raise _usage_error(str(exc)) from None
        except (AttributeError, TypeError) as exc:  # a table where a list was expected, ...
            raise _usage_error(f"{path}: not a usable target file ({exc})") from None
    canonical = _canonical(name, root)
    return parse_target(_files()[canonical].read_text(encoding="utf-8"), f"{canonical}.toml")


def _canonical(name: str, root: str | os.PathLike) -> str:
    if name in ALIASES_FROM_DEVICE_TREE:
        module = read_jetson(root)
        if module is None or module.target is None:
            found = f"this machine is {module.model!r}" if module else "this machine has no Jetson device tree"
            raise _usage_error(f"device {name!r} picks the Orin module from the device tree, but {found}; "
                               f"name one of jetson-orin-nano, jetson-orin-nx, jetson-agx-orin")
        return module.target
    files = _files()
    if name not in files:
        known = ", ".join(sorted(files) + list(ALIASES_FROM_DEVICE_TREE))
        raise _usage_error(f"unknown device target {name!r} (known: {known})")
    return name


def resolve_target(name: str | None = None, *, root: str | os.PathLike = "/") -> str:
    """What `load_target` takes for `name`: the canonical name, detected from this machine
    when None, the module's target for the jetson-orin alias; a target file stays its path
    (checked here), since its name alone would not find it again. Unknown names raise
    UsageError."""
    if name is None:
        return detect_target(root)
    if name.endswith(".toml"):
        load_target(name)
        return name
    return _canonical(name, root)


def get_target(name: str | None = None, *, root: str | os.PathLike = "/") -> Target:
    """`resolve_target` then `load_target`: the Target object for a --device value (or None)."""
    if name is not None and name.endswith(".toml"):
        return load_target(name)
    return load_target(resolve_target(name, root=root), root=root)


# --------------------------------------------------------------------------- detection


@dataclasses.dataclass(frozen=True)
class JetsonModule:
    """What the device tree says about a Jetson."""
    model: str                 # /proc/device-tree/model, e.g. "NVIDIA Jetson Orin Nano Developer Kit"
    compatible: tuple[str, ...]
    sku: str | None            # the module's compatible string, e.g. "p3767-0005"
    target: str | None         # its target, None for a module no target covers


def module_targets() -> dict[str, str]:
    """Each Jetson module's part number (its device-tree compatible string) -> its target,
    from the targets' ``modules`` lists (the one place modules are listed)."""
    return {m.compatible: name for name in list_targets() for m in load_target(name).modules}


def read_jetson(root: str | os.PathLike = "/") -> JetsonModule | None:
    """The Jetson module of the machine whose filesystem is at `root`, or None when it is
    not an NVIDIA Tegra device."""
    tree = read_device_tree(root)
    if tree is None:
        return None
    known = module_targets()
    sku = next((p for p in reversed(tree.parts) if p in known), tree.sku)
    target = known.get(sku) if sku else None
    if target is None:
        target = next((t for pattern, t in _MODEL_PATTERNS if pattern.search(tree.model)), None)
    return JetsonModule(model=tree.model, compatible=tree.compatible, sku=sku, target=target)


def detect_target(root: str | os.PathLike = "/", machine: str | None = None) -> str:
    """The default target of the machine whose filesystem is at `root`: the Jetson module's
    target from the device tree, nvidia-gpu when an NVIDIA GPU is present, otherwise the
    CPU target of the architecture (`machine`, default platform.machine())."""
    module = read_jetson(root)
    if module is not None and module.target is not None:
        return module.target
    if module is None and has_nvidia_gpu(root):
        return "nvidia-gpu"
    machine = (machine or _platform.machine()).lower()
    if machine not in HOST_TARGETS:
        raise _usage_error(f"cannot detect a target for machine {machine!r}; pass --device "
                           f"(one of {', '.join(list_targets())})")
    return HOST_TARGETS[machine]
