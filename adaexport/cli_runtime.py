"""adaexport select / run: the embedded runtime's choice, from the command line (issue 6)."""

from __future__ import annotations

from .cli import app, console, err_console, fail, user_errors  # noqa: F401  (commands register on app)
