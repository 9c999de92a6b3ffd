"""What every API result shares: `to_json()`, the JSON-able form the CLI's `--json`
envelope carries as its `result`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..errors import EXIT_CHECK_FAILED, EXIT_OK


def plain(value: Any) -> Any:
    """`value` with paths as strings, tuples as lists and dataclasses as dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


class Result:
    """A command's typed result. `failed_checks()` lists the checks it made that failed
    (parity, the gate): the CLI then exits 1 and its envelope says ok=false."""

    def failed_checks(self) -> list[str]:
        return []

    def exit_code(self) -> int:
        """What the CLI exits with after printing the result: 1 when a check failed."""
        return EXIT_CHECK_FAILED if self.failed_checks() else EXIT_OK

    def to_json(self) -> Any:
        return plain(self)
