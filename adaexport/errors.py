"""The errors a user sees, and the exit code each means (a leaf module: imports nothing).

Every error a command reports as one line derives from `AdaexportError`; its class says
the exit code, so the CLI recognises them without importing the modules that raise them
(`adaexport --help` then loads neither torch nor numpy):

    0   success
    1   a check failed (parity, the CI gate)            CheckFailed
    2   bad usage or input                               UsageError and most others
    3   the environment cannot do it (a missing backend,
        device, permission or optional dependency)      EnvironmentProblem
    70  an internal error (a bug): one line, `--debug` for the traceback
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERNAL = 70  # EX_SOFTWARE in BSD's sysexits.h


class AdaexportError(Exception):
    """An error meant for a user: its message is one line, `exit_code` says what kind."""

    exit_code = EXIT_USAGE


class UsageError(AdaexportError, ValueError):
    """A bad command-line argument combination or input."""


class EnvironmentProblem(AdaexportError):
    """This machine cannot do what was asked (a missing backend, device, permission or
    optional dependency); the same command may work elsewhere."""

    exit_code = EXIT_ENVIRONMENT


class MissingDependency(EnvironmentProblem, ImportError):
    """An optional package this command needs is not installed; the message says which
    and how to install it."""


class CheckFailed(AdaexportError):
    """The command ran and a check it makes failed (parity, the gate)."""

    exit_code = EXIT_CHECK_FAILED


def exit_code_of(exc: BaseException) -> int | None:
    """The exit code of a user-facing error, None for anything else (a bug)."""
    return exc.exit_code if isinstance(exc, AdaexportError) else None


class CheckpointError(AdaexportError, ValueError):
    """A checkpoint that cannot be loaded; the message is one line meant for a user."""


class SpaceError(AdaexportError, ValueError):
    """An impossible point or grid; the message is one line meant for a user."""


class DatasetError(AdaexportError, ValueError):
    """A dataset that cannot be read; the message is one line meant for a user."""


class ManifestError(AdaexportError, ValueError):
    """A manifest that cannot be read, written or trusted; the message is one line meant for a user."""


class ProfileError(AdaexportError, ValueError):
    """A profile that cannot be used; one line for the user."""


class ProfilingError(AdaexportError, ValueError):
    """Profiling cannot go ahead as asked; the message is one line for the user."""


class BackendError(AdaexportError, RuntimeError):
    """A backend failed to compile or open an engine; the message is one line for a user."""


class JobsFailed(EnvironmentProblem, RuntimeError):
    """Work that a build worker could not finish (it raised, or its process or node died);
    names each task. Exit 3: nothing was recorded of it, and a rerun where the workers
    survive redoes exactly that work."""

    def __init__(self, failed: list[str], reason: str):
        super().__init__(f"{len(failed)} piece(s) of work failed ({', '.join(failed)}): {reason}; "
                         "nothing of them was recorded, a rerun redoes them")
        self.failed = failed
