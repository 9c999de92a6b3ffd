"""The profiler's bad-input error (stdlib only): the CLI turns it into one line and exit 2."""


from ..errors import AdaexportError


class ProfilingError(AdaexportError, ValueError):
    """Profiling cannot go ahead as asked; the message is one line for the user."""
