"""The adaexport command line: a package of thin commands over `adaexport.api`. Each
command parses its options, calls one API function and renders the result (a table, or
with --json one envelope); `_app` holds what they share: exit codes, one-line errors,
the envelope, logging and the global options."""

from __future__ import annotations

from ._app import app, console, err_console, fail, tagged  # noqa: F401
# Importing registers the commands, in the order `adaexport --help` lists them.
from . import info, build, profile, accuracy, serving, farm  # noqa: E402,F401,I001  # isort: skip


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
