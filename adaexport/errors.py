"""The error types that mean 'bad input': the CLI turns them into one line and exit 2."""

from .backends.base import BackendError
from .datasets import DatasetError
from .manifest_fields import ManifestError
from .model.config import CheckpointError
from .profiles import ProfileError
from .profiling.errors import ProfilingError
from .space import SpaceError


class UsageError(ValueError):
    """A bad command-line argument combination."""


USER_ERRORS = (CheckpointError, SpaceError, DatasetError, ManifestError, ProfileError, UsageError, BackendError,
               ProfilingError)
