"""Build profiles: TOML files naming the grid, the parity tolerances and the profiling
settings (``[profiling]``, see adaexport.profiling.settings).

`load_profile("default")` reads adaexport/profiles/default.toml (shipped in the
package); a path to a .toml file works too.
"""

from __future__ import annotations

import dataclasses
import sys
from importlib import resources
from pathlib import Path

from ..checks import checked_number, optional_number, read_utf8
from ..hardware.errors import ProfilingError
from ..profiling.settings import ProfilingSettings
from ..errors import ProfileError  # noqa: F401 - defined with the other user errors

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


RANDOM_SAMPLES = 16  # default [parity] random_samples: sized for a published-size build (see docs/DESIGN.md)


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How close an engine must stay to PyTorch. `max_abs` (largest absolute output
    difference) is for fp32; reduced precisions are judged by top-1 agreement and the
    accuracy change on the labelled samples (`max_accuracy_drop`, percentage points)."""

    max_abs: float | None
    min_top1_agreement: float
    max_accuracy_drop: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        out = {"max_abs": self.max_abs, "min_top1_agreement": self.min_top1_agreement}
        if self.max_accuracy_drop is not None:
            out["max_accuracy_drop"] = self.max_accuracy_drop
        return out


@dataclasses.dataclass(frozen=True)
class BuildProfile:
    name: str
    description: str
    grid_preset: str | None
    parity_samples: int
    tolerances: dict[str, Tolerance]
    source: str  # the TOML text, hashed into cache keys
    engines: tuple[str, ...] | None = None  # "backend:precision" pairs to build (None: all the target names)
    profiling: ProfilingSettings = ProfilingSettings()  # how the build's profile stage measures
    random_samples: int = RANDOM_SAMPLES  # parity inputs without a dataset (seeded random inputs)

    def wants(self, backend: str, precision: str) -> bool:
        return self.engines is None or f"{backend}:{precision}" in self.engines

    def tolerance(self, precision: str) -> Tolerance:
        if precision not in self.tolerances:
            raise ProfileError(f"profile {self.name!r} has no [parity.{precision}] tolerance")
        return self.tolerances[precision]


def available_profiles() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".toml"))


def _table(raw: dict, key: str, name: str) -> dict:
    """A top-level table of the profile ({} when absent)."""
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ProfileError(f"profile {name}: {key} must be a table ([{key}]), got {value!r}")
    return value


def _tolerance(precision: str, table: object, name: str) -> Tolerance:
    where = f"profile {name}: parity.{precision}"
    if not isinstance(table, dict):
        raise ProfileError(f"{where} must be a table ([parity.{precision}]), got {table!r}")
    unknown = sorted(set(table) - {"max_abs", "min_top1_agreement", "max_accuracy_drop"})
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {', '.join(unknown)}")
    if "min_top1_agreement" not in table:
        raise ProfileError(f"{where} lacks min_top1_agreement")

    def number(key: str, **bounds):
        return optional_number(table.get(key), f"{where}.{key}", ProfileError, **bounds)

    return Tolerance(number("max_abs", minimum=0), number("min_top1_agreement", minimum=0, maximum=1),
                     number("max_accuracy_drop", minimum=0))


def load_profile(name_or_path: str = "default") -> BuildProfile:
    path = Path(name_or_path)
    if name_or_path.endswith(".toml"):
        if not path.is_file():
            raise ProfileError(f"{path}: no such profile file")
        text, name = read_utf8(path, ProfileError), path.stem
    else:
        resource = resources.files(__name__) / f"{name_or_path}.toml"
        if not resource.is_file():
            raise ProfileError(f"unknown build profile {name_or_path!r} (known: {', '.join(available_profiles())})")
        text, name = resource.read_text(encoding="utf-8"), name_or_path
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"profile {name}: invalid TOML ({exc})") from None
    parity = _table(raw, "parity", name)
    tolerances = {precision: _tolerance(precision, v, name) for precision, v in parity.items()
                  if precision not in ("samples", "random_samples")}
    samples = checked_number(parity.get("samples", 256), f"profile {name}: parity.samples", ProfileError,
                             integer=True, minimum=1)
    random_samples = checked_number(parity.get("random_samples", RANDOM_SAMPLES),
                                    f"profile {name}: parity.random_samples", ProfileError, integer=True, minimum=1)
    engines = _table(raw, "build", name).get("engines")
    if engines is not None and (not isinstance(engines, list) or not all(
            isinstance(e, str) and e.count(":") == 1 for e in engines)):
        raise ProfileError(f"profile {name}: build.engines must be a list of \"backend:precision\" strings")
    preset = _table(raw, "grid", name).get("preset")
    if preset is not None and not isinstance(preset, str):
        raise ProfileError(f"profile {name}: grid.preset must be a string, got {preset!r}")
    try:
        profiling = ProfilingSettings.from_table(_table(raw, "profiling", name), f"profile {name}: [profiling]")
    except ProfilingError as exc:
        raise ProfileError(str(exc)) from None
    return BuildProfile(name=name, description=str(raw.get("description", "")), grid_preset=preset,
                        parity_samples=samples, tolerances=tolerances, source=text,
                        engines=tuple(engines) if engines else None, profiling=profiling,
                        random_samples=random_samples)
