"""adaexport eval / check / report: accuracy per configuration, the CI gate, the Pareto report (issue 7)."""

from __future__ import annotations

from .cli import app, console, err_console, fail, user_errors  # noqa: F401  (commands register on app)
