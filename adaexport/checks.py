"""Checks of what users give: numbers (command-line options, TOML, JSON), refused when
NaN, infinite, a boolean, text or out of range; and their text files (configs, profiles,
targets), refused when unreadable or not UTF-8. One line each.

Standard library only: the runtime and the profiler use it on devices without torch.
Each caller passes its own error type (a UserError of errors.py, so the CLI prints one
line and exits 2).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Union

Number = Union[int, float]
Error = Callable[[str], Exception]  # an exception type, or a function making one


def checked_number(value: object, what: str, error: Error = ValueError, *, integer: bool = False,
                   minimum: Number | None = None, above: Number | None = None,
                   maximum: Number | None = None) -> Number:
    """``value`` as a finite int (``integer``) or float within the bounds, else ``error``
    naming ``what``. ``minimum``/``maximum`` are inclusive, ``above`` is exclusive. A
    whole float (3.0) counts as an integer; True/False and strings count as nothing."""
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"{what} must be {kind}, got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise error(f"{what} must be a finite number, got {value!r}")
        if integer:
            if not value.is_integer():
                raise error(f"{what} must be {kind}, got {value!r}")
            value = int(value)
    if minimum is not None and value < minimum:
        raise error(f"{what} must be >= {minimum}, got {value!r}")
    if above is not None and value <= above:
        raise error(f"{what} must be > {above}, got {value!r}")
    if maximum is not None and value > maximum:
        raise error(f"{what} must be <= {maximum}, got {value!r}")
    return value


def optional_number(value: object, what: str, error: Error = ValueError, **bounds) -> Number | None:
    """``checked_number`` for a value that may be None (None: no value, returned as is)."""
    return None if value is None else checked_number(value, what, error, **bounds)


def read_utf8(path: str | os.PathLike, error: Error = ValueError) -> str:
    """A user's text file as a string; ``error`` naming the file when it cannot be read or
    is not UTF-8 (an editor elsewhere may have saved it as Latin-1)."""
    try:
        return Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})") from None
