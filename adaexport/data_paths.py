"""Where device targets and build profiles are found (standard library only: the runtime
reads targets on a device).

Both are TOML files at the top of the repository (`targets/`, `profiles/`). A wheel
installs them as the data packages `adaexport._targets` and `adaexport._profiles`
(setup.py maps the directories); a checkout or an editable install reads them in place.
Before those, each directory on `ADAEXPORT_TARGETS_PATH` / `ADAEXPORT_PROFILES_PATH`
(separated like PATH) is searched, so a user adds or overrides a target or profile
without editing the installed package.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

ENV = {"targets": "ADAEXPORT_TARGETS_PATH", "profiles": "ADAEXPORT_PROFILES_PATH"}


def packaged_dir(kind: str):
    """The directory (or importlib Traversable) of the package's own targets or profiles."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / kind).is_dir():
        return checkout / kind
    return resources.files(f"adaexport._{kind}")


def search_dirs(kind: str) -> list:
    """The user's directories (from the environment variable, in order), then the package's."""
    user = [Path(p) for p in os.environ.get(ENV[kind], "").split(os.pathsep) if p.strip()]
    return [d for d in user if d.is_dir()] + [packaged_dir(kind)]


def toml_files(kind: str) -> dict[str, object]:
    """name -> file of every target or profile on the search path (the first of a name wins)."""
    found: dict[str, object] = {}
    for directory in search_dirs(kind):
        for entry in sorted(directory.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".toml") and entry.is_file():
                found.setdefault(entry.name[:-5], entry)
    return found
