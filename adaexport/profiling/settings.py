"""Measurement settings: a build profile's ``[profiling]`` table (stdlib only)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..checks import checked_number
from .errors import ProfilingError


@dataclasses.dataclass(frozen=True)
class ProfilingSettings:
    """How every engine is measured (see docs/DESIGN.md, "Profiling").

    Each engine is warmed up for ``warmup_s`` seconds, then measured in ``rounds``
    interleaved rounds until it has at least ``min_iterations`` runs AND
    ``min_duration_s`` seconds of runs; ``group`` engines are loaded and interleaved
    at a time. An engine whose coefficient of variation exceeds ``max_cv`` percent is
    measured again, up to ``remeasure`` times. ``idle_s`` seconds of idle power are
    measured once per run where there is a power sensor."""

    warmup_s: float = 0.1
    min_iterations: int = 50
    min_duration_s: float = 0.3
    rounds: int = 2
    max_cv: float = 5.0
    remeasure: int = 1
    idle_s: float = 1.0
    group: int = 10
    enabled: bool = True

    FIELDS = ("warmup_s", "min_iterations", "min_duration_s", "rounds", "max_cv", "remeasure", "idle_s", "group",
              "enabled")
    COUNTS = ("min_iterations", "rounds", "remeasure", "group")

    def __post_init__(self):
        for name in self.FIELDS[:-1]:  # every number, finite (inf would measure forever)
            checked_number(getattr(self, name), f"profiling setting {name}", ProfilingError,
                           integer=name in self.COUNTS)
        checks = [("warmup_s", self.warmup_s >= 0), ("min_iterations", self.min_iterations >= 1),
                  ("min_duration_s", self.min_duration_s >= 0), ("rounds", self.rounds >= 1),
                  ("max_cv", self.max_cv > 0), ("remeasure", self.remeasure >= 0), ("idle_s", self.idle_s >= 0),
                  ("group", self.group >= 1)]
        for name, ok in checks:
            if not ok:
                raise ProfilingError(f"profiling setting {name} = {getattr(self, name)!r} is out of range")

    @classmethod
    def from_table(cls, table: dict[str, Any] | None, where: str = "[profiling]") -> "ProfilingSettings":
        """Settings from a TOML table; missing keys keep their defaults."""
        table = dict(table or {})
        unknown = sorted(set(table) - set(cls.FIELDS))
        if unknown:
            raise ProfilingError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(cls.FIELDS)})")
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name not in table:
                continue
            raw = table[field.name]
            kind = {"int": int, "float": float, "bool": bool}[field.type] if isinstance(field.type, str) else field.type
            if kind is bool and not isinstance(raw, bool) or kind is not bool and isinstance(raw, bool) \
                    or not isinstance(raw, (int, float, bool)):
                raise ProfilingError(f"{where}: {field.name} must be a {kind.__name__}, got {raw!r}")
            if kind is not bool:
                raw = checked_number(raw, f"{where}: {field.name}", ProfilingError, integer=kind is int)
            values[field.name] = kind(raw)
        try:
            return cls(**values)
        except ProfilingError as exc:  # a value out of range: say where it came from
            raise ProfilingError(f"{where}: {exc}") from None

    def replace(self, **changes: Any) -> "ProfilingSettings":
        """A copy with the given (non-None) settings changed."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        """What the manifest records (``enabled`` is a build switch, not a measurement setting)."""
        return {f: getattr(self, f) for f in self.FIELDS if f != "enabled"}
