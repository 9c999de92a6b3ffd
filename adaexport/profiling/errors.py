"""The profiler's bad-input error (defined with the platform facts that raise it)."""

from ..hardware.errors import ProfilingError  # noqa: F401
