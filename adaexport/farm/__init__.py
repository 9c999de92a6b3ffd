"""Scale out on Ray (optional: ``pip install 'adaexport[farm]'``).

* ``cluster``: a device joins a Ray cluster advertising its device identity as custom
  resources (``adaexport farm join``); the driver lists them (``adaexport farm ls``);
* ``profiling``: ``adaexport profile DIR --ray ADDRESS`` ships each device the engines it
  can run, profiles them there with the device's own ``adaexport profile`` and merges every
  device's section into the one manifest, which only the driver writes.

Ray is imported only here and only when a ``--ray`` option is used; nothing else in the
package needs it.
"""

from __future__ import annotations

from ..errors import UsageError

INSTALL_HINT = "pip install 'adaexport[farm]' (Ray)"


class FarmUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached: the environment cannot do it."""


class FarmError(UsageError):
    """A farm request that cannot be served as asked (no device matches, a device failed)."""


def import_ray():
    """The ray module, or FarmUnavailable saying how to install it."""
    try:
        import ray
    except ImportError:
        raise FarmUnavailable(f"--ray needs Ray, which is not installed here: {INSTALL_HINT}") from None
    return ray
