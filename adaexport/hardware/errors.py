"""The profiler's bad-input error (stdlib only): the CLI turns it into one line and exit 2.

Raised by the platform facts (power modes, sensors) as by the profiler."""

from ..errors import ProfilingError  # noqa: F401 - defined with the other user errors


