"""The command-line application: the typer app, the global options, and the conventions
every command shares (exit codes, one-line errors, the --json envelope, logging)."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from .. import __version__
from ..errors import EXIT_INTERNAL, EXIT_USAGE, exit_code_of

# Loggers that -vv opens: adaexport's own and the backends' Python loggers (the root logger
# is never touched: an application embedding adaexport keeps its own logging).
BACKEND_LOGGERS = ("nncf", "openvino", "onnxruntime", "onnx", "onnxscript", "tensorrt")
EPILOG = ("Exit codes: 0 success; 1 a check failed (parity, the gate); 2 bad usage or input; 3 this machine cannot "
          "do it (a missing backend, device, permission or optional dependency); 70 an internal error (rerun with "
          "--debug for the traceback).")


def _one_line(message: object) -> str:
    """A message on one line (an exception's text may hold several)."""
    return " ".join(line.strip() for line in str(message).strip().splitlines() if line.strip())


def tagged(tag: str, style: str, message: object) -> Text:
    """'error: <message>' with the tag styled and the message printed literally: paths, model
    names and engine ids are user text, never rich markup."""
    return Text.assemble((tag, style), " ", _one_line(message))


def _console(stderr: bool = False) -> Console:
    # Off a terminal (pipes, CI logs) rich would assume 80 columns and squeeze the tables.
    # markup=False: every string printed is shown as written; styled output is built from Text.
    tty = (sys.stderr if stderr else sys.stdout).isatty()
    return Console(stderr=stderr, markup=False, width=None if tty else int(os.environ.get("COLUMNS", 160)))


console = _console()
err_console = _console(stderr=True)
_state = {"debug": bool(os.environ.get("ADAEXPORT_DEBUG")), "quiet": False, "argv": []}


def warn(message: str, tag: str = "warning:") -> None:
    if not _state["quiet"]:
        err_console.print(tagged(tag, "yellow", message), highlight=False, soft_wrap=True)


def envelope(command: str, ok: bool, result: Any = None, errors: list[str] | None = None) -> str:
    """The one JSON document every command prints with --json, success or not."""
    return json.dumps({"command": command, "ok": ok, "result": result, "errors": errors or []}, indent=1)


def fail(message: str, code: int = EXIT_USAGE, command: str | None = None, json_out: bool = False) -> None:
    """Print a one-line error (and with --json the envelope, ok=false) and exit with `code`."""
    err_console.print(tagged("error:", "bold red", message), highlight=False, soft_wrap=True)
    if json_out:
        print(envelope(command or "adaexport", False, None, [_one_line(message)]))
    raise typer.Exit(code)


def emit(result, json_out: bool, render: Callable[[Any], None]) -> None:
    """Print a command's result: the envelope with --json, else `render(result)`; then exit
    with the result's code (1 when a check failed: parity, the gate)."""
    failed = result.failed_checks()
    if json_out:
        print(envelope(_state["command"], not failed, result.to_json(), failed))
    else:
        render(result)
    if result.exit_code():
        raise typer.Exit(result.exit_code())


def _json_wanted() -> bool:
    return "--json" in _state["argv"]


@contextlib.contextmanager
def _usage_errors_as_one_line():
    try:  # recent typer carries its own copy of click
        from typer._click.exceptions import ClickException, NoArgsIsHelpError
    except ImportError:  # pragma: no cover - older typer on click
        from click.exceptions import ClickException, NoArgsIsHelpError
    try:
        yield
    except NoArgsIsHelpError:  # `adaexport` alone: the help, as asked by no_args_is_help
        raise
    except ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        fail(exc.format_message() + (f" (see `{ctx.command_path} --help`)" if ctx is not None else ""),
             exc.exit_code, command=_command_name(ctx), json_out=_json_wanted())


def _command_name(ctx) -> str | None:
    """"farm join" for `adaexport farm join ...`: the context's names below the root."""
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(reversed(names)) or None


class _OneLineUsageErrors(TyperGroup):
    """Command-line usage errors (an unknown option, a value that is not a number, a missing
    argument) as one line and exit 2, like every other bad input."""

    def make_context(self, info_name, args, *rest, **kwargs):
        _state["argv"] = list(args)
        with _usage_errors_as_one_line():
            return super().make_context(info_name, args, *rest, **kwargs)

    def invoke(self, ctx):
        with _usage_errors_as_one_line():
            return super().invoke(ctx)

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None:
            _plain_metavars(command)
        return command


_METAVAR_BY_TYPE = {"int": "N", "integer": "N", "float": "NUMBER"}


def _type_metavar(param) -> str | None:
    """PATH, N or NUMBER for a path, int or float option; None for any other. Typer 0.29
    describes a parameter's type in `type_descriptor`/`bare_type()`; before it (0.12-0.28,
    which pyproject's floor now excludes, but an environment may hold one: the CUDA image
    this project's GPU checks ran on had one) only click's ParamType in `param.type` does,
    and help must not fail either way."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None and hasattr(param, "bare_type"):
        return "PATH" if descriptor.is_path else _METAVAR_BY_TYPE.get(param.bare_type())
    kind = getattr(param, "type", None)
    if type(kind).__name__ == "Path":
        return "PATH"
    return _METAVAR_BY_TYPE.get(getattr(kind, "name", None))


def _plain_metavars(command) -> None:
    """Help rows in the terminal's convention (`--limit N`, `DIR`) rather than Typer's
    `<int>`/`<path>` type tags: an option without a metavar gets N, NUMBER, PATH or its
    long name in capitals; an argument shows its metavar alone. Subcommands (`farm ...`) too."""
    for param in command.params:
        if param.param_type_name == "argument":
            param.display_type_rich = lambda ctx: None
        elif param.metavar is None and not (param.is_flag or param.count):
            long = max(param.opts, key=len).lstrip("-").replace("-", "_").upper()
            param.metavar = _type_metavar(param) or long
    for sub in getattr(command, "commands", {}).values():
        _plain_metavars(sub)


app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, cls=_OneLineUsageErrors,
                  rich_markup_mode=None, epilog=EPILOG,
                  context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
                  help="Export an adaptive AdaPerceiver into a family of static edge engines, check them against "
                       "PyTorch, profile them, and choose one at run time. Start with `adaexport inspect` (the "
                       "bundled demo model) and `adaexport build --out family --grid corners`.")


def command(fn: Callable) -> Callable:
    """A command's body: errors meant for a user become one line and their exit code (with
    --json also the envelope); anything else is a bug: one line and exit 70, the traceback
    with --debug (or ADAEXPORT_DEBUG=1)."""

    name = fn.__name__.removesuffix("_command").replace("_", " ")  # eval_command: `eval`; farm_ls: `farm ls`

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        json_out = bool(kwargs.get("json_out"))
        _state["command"] = name
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            code = exit_code_of(exc)
            if code is not None:
                fail(str(exc), code, name, json_out)
            logging.getLogger("adaexport").debug("internal error", exc_info=True)
            if _state["debug"]:
                traceback.print_exc()
            fail(f"internal error: {type(exc).__name__}: {_one_line(exc)}"
                 + ("" if _state["debug"] else " (rerun with --debug for the traceback)"),
                 EXIT_INTERNAL, name, json_out)

    return wrapper


def _setup_logging(verbose: int, quiet: bool, log_file: Optional[Path]) -> None:
    """-v: adaexport's info lines; -vv: its debug lines and the backends' own loggers; -q:
    errors only; --log-file: everything adaexport logs at debug level, to FILE."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO)[verbose] if verbose < 2 else logging.DEBUG
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    stream = logging.StreamHandler(sys.stderr)
    stream.setLevel(level)
    stream.setFormatter(formatter)
    stream.addFilter(lambda record: not record.name.startswith("adaexport.progress"))  # printed by the reporter
    names = ("adaexport",) + (BACKEND_LOGGERS if verbose >= 2 else ())
    handlers: list[logging.Handler] = [stream]
    if log_file is not None:
        try:
            file_handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            fail(f"--log-file {log_file}: cannot write ({exc.strerror or exc})")
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(file_handler)
    for logger, handler in _state.pop("handlers", []):  # a previous invocation in this process (tests)
        logger.removeHandler(handler)
        handler.close()
    _state["handlers"] = []
    for name in names:
        logger = logging.getLogger(name)
        logger.setLevel(min(h.level for h in handlers))
        for handler in handlers:
            logger.addHandler(handler)
            _state["handlers"].append((logger, handler))
        logger.propagate = False


def _print_version(value: bool) -> None:
    if value:
        print(f"adaexport {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, show_default=False,
                                help="More detail on stderr: -v adaexport's info log lines, -vv also its debug lines "
                                "and the backends' own logs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Errors only: no progress, no warnings."),
    log_file: Optional[Path] = typer.Option(None, "--log-file", metavar="FILE",
                                            help="Also write adaexport's log, at debug level, to FILE."),
    debug: bool = typer.Option(False, "--debug", help="On an internal error, print the traceback."),
) -> None:
    _state["debug"] = debug or _state["debug"]
    _state["quiet"] = quiet
    _setup_logging(verbose, quiet, log_file)


def reporter(json_out: bool):
    """The progress reporter for a command: silent with --json or -q, else bars or lines."""
    from ..progress import make_reporter

    return make_reporter(json_out, err_console, quiet=_state["quiet"])
