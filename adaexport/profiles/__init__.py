"""Build profiles: TOML files naming the grid, the parity tolerances and the profiling
settings (``[profiling]``, see adaexport.profiling.settings).

`load_profile("default")` reads profiles/default.toml (at the top of the repository,
installed with the package; a directory on ADAEXPORT_PROFILES_PATH comes first, see
adaexport.data_paths); a path to a .toml file works too.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from ..checks import checked_number, optional_number, read_utf8
from ..data_paths import toml_files
from ..errors import ProfileError  # noqa: F401 - defined with the other user errors
from ..hardware.errors import ProfilingError
from ..profiling.settings import ProfilingSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


PARITY_SAMPLES = 256  # "auto" [parity] samples at most (stages.context.parity_sample_count; adaexport compile
                     # falls back to it for a manifest that does not record its count)
RANDOM_SAMPLES = 16  # default [parity] random_samples: sized for a published-size build (see docs/DESIGN.md)


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How close an engine must stay to PyTorch. `max_abs` (largest absolute output
    difference) is for fp32; reduced precisions are judged by top-1 agreement and the
    accuracy change on the labelled samples (`max_accuracy_drop`, percentage points).
    `tie_margin` (standard deviations of PyTorch's logits): a changed top-1 where PyTorch
    scored the engine's class within that much of its own is a near-tie, recorded and not
    judged against min_top1_agreement (adaexport.validate)."""

    max_abs: float | None
    min_top1_agreement: float
    max_accuracy_drop: float | None = None
    tie_margin: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        out = {"max_abs": self.max_abs, "min_top1_agreement": self.min_top1_agreement}
        for key in ("max_accuracy_drop", "tie_margin"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclasses.dataclass(frozen=True)
class BuildProfile:
    name: str
    description: str
    grid_preset: str | None
    parity_samples: int | None  # None: "auto", sized by the model's cost (stages.context.parity_sample_count)
    tolerances: dict[str, Tolerance]
    source: str  # the TOML text, hashed into cache keys
    engines: tuple[str, ...] | None = None  # "backend:precision" pairs to build (None: all the target names)
    profiling: ProfilingSettings = ProfilingSettings()  # how the build's profile stage measures
    random_samples: int = RANDOM_SAMPLES  # parity inputs without a dataset (seeded random inputs)

    def wants(self, backend: str, precision: str) -> bool:
        return self.engines is None or f"{backend}:{precision}" in self.engines

    overrides: tuple[tuple[str, object], ...] = ()  # what the command line changed (see with_overrides)

    def with_overrides(self, engines: list[str] | None = None, atol: float | None = None,
                       min_agreement: float | None = None, max_drop: float | None = None,
                       tie_margin: float | None = None) -> "BuildProfile":
        """This profile with the build's command-line options in place of its values:
        `engines` ("backend:precision"), `atol` (fp32 max_abs), `min_agreement` (every
        precision's min_top1_agreement), `max_drop` and `tie_margin` (max_accuracy_drop and
        tie_margin of fp16/bf16/int8; a tie_margin of 0 judges every change).
        The overrides are kept so the manifest can record them beside the TOML text."""
        given = {"engines": engines, "atol": atol, "min_agreement": min_agreement, "max_drop": max_drop,
                 "tie_margin": tie_margin}
        given = {k: v for k, v in given.items() if v is not None}
        if not given:
            return self
        return _overridden(self, given)

    def manifest_record(self) -> dict:
        """What the manifest keeps of the profile (`build.profile_source`, and
        `build.profile_overrides` when the command line changed it), so `adaexport compile`
        and `adaexport profile` on a device need nothing else (see profile_of_manifest)."""
        return {"profile_source": self.source, **({"profile_overrides": dict(self.overrides)} if self.overrides
                                                 else {})}

    def tolerance(self, precision: str) -> Tolerance:
        if precision not in self.tolerances:
            raise ProfileError(f"profile {self.name!r} has no [parity.{precision}] tolerance")
        return self.tolerances[precision]


def _overridden(profile: BuildProfile, given: dict) -> BuildProfile:
    engines = given.get("engines")
    if engines is not None:
        bad = [e for e in engines if not isinstance(e, str) or e.count(":") != 1 or not all(e.split(":"))]
        if bad or not engines:
            raise ProfileError(f"--engines: expected backend:precision pairs such as onnxruntime:fp32,openvino:int8, "
                               f"got {','.join(map(str, engines)) or 'nothing'}")
    atol = optional_number(given.get("atol"), "--atol", ProfileError, minimum=0)
    agreement = optional_number(given.get("min_agreement"), "--min-agreement", ProfileError, minimum=0, maximum=1)
    drop = optional_number(given.get("max_drop"), "--max-drop", ProfileError, minimum=0)
    ties = optional_number(given.get("tie_margin"), "--tie-margin", ProfileError, minimum=0)
    tolerances = {}
    for precision, tol in profile.tolerances.items():
        reduced = precision != "fp32"
        tolerances[precision] = dataclasses.replace(
            tol, max_abs=atol if atol is not None and not reduced else tol.max_abs,
            min_top1_agreement=agreement if agreement is not None else tol.min_top1_agreement,
            max_accuracy_drop=drop if drop is not None and reduced else tol.max_accuracy_drop,
            tie_margin=ties if ties is not None and reduced else tol.tie_margin)
    return dataclasses.replace(profile, tolerances=tolerances,
                               engines=tuple(engines) if engines is not None else profile.engines,
                               overrides=tuple(sorted({**dict(profile.overrides), **given}.items())))


def apply_overrides(profile: BuildProfile, overrides: dict | None) -> BuildProfile:
    """`profile` with a manifest's `build.profile_overrides` (see BuildProfile.with_overrides)."""
    return profile.with_overrides(**(overrides or {}))


def available_profiles() -> list[str]:
    return sorted(toml_files("profiles"))


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
    unknown = sorted(set(table) - {"max_abs", "min_top1_agreement", "max_accuracy_drop", "tie_margin"})
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {', '.join(unknown)}")
    if "min_top1_agreement" not in table:
        raise ProfileError(f"{where} lacks min_top1_agreement")

    def number(key: str, **bounds):
        return optional_number(table.get(key), f"{where}.{key}", ProfileError, **bounds)

    return Tolerance(number("max_abs", minimum=0), number("min_top1_agreement", minimum=0, maximum=1),
                     number("max_accuracy_drop", minimum=0), number("tie_margin", minimum=0))


def load_profile(name_or_path: "str | BuildProfile" = "default") -> BuildProfile:
    """A packaged profile by name, a .toml file, or a BuildProfile already loaded (as the
    API passes one with command-line overrides)."""
    if isinstance(name_or_path, BuildProfile):
        return name_or_path
    path = Path(name_or_path)
    if name_or_path.endswith(".toml"):
        if not path.is_file():
            raise ProfileError(f"{path}: no such profile file")
        text, name = read_utf8(path, ProfileError), path.stem
    else:
        resource = toml_files("profiles").get(name_or_path)
        if resource is None:
            raise ProfileError(f"unknown build profile {name_or_path!r} (known: {', '.join(available_profiles())})")
        text, name = resource.read_text(encoding="utf-8"), name_or_path
    return parse_profile(text, name)


def profile_of_manifest(manifest) -> BuildProfile:
    """The build profile a build was made with (`manifest`: its records or JSON): the full
    text the manifest keeps (`build.profile_source`, written by `manifest_record`), so a
    device needs neither the build host's file nor this package's copy; else (an older
    manifest) the packaged profile of that name."""
    from ..manifest_reader import as_manifest

    build = as_manifest(manifest).build or {}
    name = build.get("profile") or "default"
    if build.get("profile_source"):
        return apply_overrides(parse_profile(build["profile_source"], name), build.get("profile_overrides"))
    return load_profile(name)


def parse_profile(text: str, name: str) -> BuildProfile:
    """A profile from its TOML text (`name` for messages and the manifest)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"profile {name}: invalid TOML ({exc})") from None
    parity = _table(raw, "parity", name)
    tolerances = {precision: _tolerance(precision, v, name) for precision, v in parity.items()
                  if precision not in ("samples", "random_samples")}
    samples = parity.get("samples", "auto")
    if samples != "auto":
        samples = checked_number(samples, f"profile {name}: parity.samples",
                                 ProfileError, integer=True, minimum=1)
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
                        parity_samples=None if samples == "auto" else samples, tolerances=tolerances, source=text,
                        engines=tuple(engines) if engines else None, profiling=profiling,
                        random_samples=random_samples)
