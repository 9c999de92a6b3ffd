"""adaexport's Python API: one function per command, each returning a typed result.

    from adaexport import api
    result = api.build(out="family", tokens="8", widths="32", depths="1,2")
    result.failures, result.manifest.engines

The command line (`adaexport.cli`) is a thin layer over these functions: it parses
options, calls one of them and renders its result (a table, or the JSON envelope whose
`result` is `result.to_json()`). Nothing here imports typer or rich, and this module
imports each command's implementation only when it is called, so `import adaexport.api`
loads neither torch nor numpy (no submodule is named like a function: importing a
submodule sets it as an attribute of this package, which would hide the function).
Errors meant for a user are `adaexport.errors.AdaexportError` subclasses; their
`exit_code` is what the CLI exits with.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "build": "family", "export": "family", "compile": "family", "BuildResult": "family", "CompileResult": "family",
    "profile": "measure", "ProfileResult": "measure",
    "eval": "accuracy", "check": "accuracy", "search": "accuracy", "report": "pareto_report",
    "EvalResult": "accuracy", "CheckResult": "accuracy", "SearchResult": "accuracy", "ReportResult": "pareto_report",
    "select": "serving", "run": "serving", "SelectResult": "serving", "RunResult": "serving",
    "inspect": "info", "targets": "info", "doctor": "info",
    "InspectResult": "info", "TargetsResult": "info", "DoctorResult": "info",
    "farm_join": "farm", "farm_ls": "farm", "profile_on_farm": "farm",
    "FarmJoinResult": "farm", "FarmDevicesResult": "farm", "FarmProfileResult": "farm",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'adaexport.api' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
