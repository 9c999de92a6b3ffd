"""The error types that mean 'bad input': the CLI turns them into one line and exit 2.

A leaf (standard library only, importing nothing of adaexport), so that every module can
raise its error without pulling in the others: each module re-exports its own (e.g.
``adaexport.datasets.DatasetError``)."""


class UsageError(ValueError):
    """A bad command-line argument combination."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message is one line meant for a user."""


class SpaceError(ValueError):
    """An impossible point or grid; the message is one line meant for a user."""


class DatasetError(ValueError):
    """A dataset that cannot be read; the message is one line meant for a user."""


class ManifestError(ValueError):
    """A manifest that cannot be read, written or trusted; the message is one line meant for a user."""


class ProfileError(ValueError):
    """A profile that cannot be used; one line for the user."""


class ProfilingError(ValueError):
    """Profiling cannot go ahead as asked; the message is one line for the user."""


class BackendError(RuntimeError):
    """A backend failed to compile or open an engine; the message is one line for a user."""


USER_ERRORS = (CheckpointError, SpaceError, DatasetError, ManifestError, ProfileError, UsageError, BackendError,
               ProfilingError)
