"""adaexport profile DIR: measure every engine on this device (issue 5)."""

from __future__ import annotations

from .cli import app, console, err_console, fail, user_errors  # noqa: F401  (commands register on app)
