"""Scale out on Ray (optional: ``pip install 'adaexport[farm]'``).

* ``cluster``: a device joins a Ray cluster advertising its device identity as custom
  resources (``adaexport farm join``); the driver lists them (``adaexport farm ls``);
* ``profiling``: ``adaexport profile DIR --ray ADDRESS`` ships each device the engines it
  can run, profiles them there with the device's own ``adaexport profile`` and merges every
  device's section into the one manifest, which only the driver writes;
* ``compiling``: ``adaexport compile DIR --ray ADDRESS`` (and the first step of ``profile
  --ray``) builds a cross-build's pending engines on devices of the build's target with the
  device's own ``adaexport compile``, the driver writing what comes back;
* ``shipping``: what those two share: files put into the object store once, unpacked on the
  device, the device's ``adaexport`` command run on them, what changed brought back;
* ``executor``: ``adaexport build|export --ray ADDRESS``, the build's per-point work on
  Ray workers, the driver alone writing the build directory;
* ``local``: a loopback cluster for the tests, the benchmark and trying the farm out.

Ray is imported only here and only when a ``--ray`` option is used; nothing else in the
package needs it.
"""

from __future__ import annotations

from ..errors import EnvironmentProblem, UsageError

INSTALL_HINT = "pip install 'adaexport[farm]' (Ray)"


class FarmUnavailable(EnvironmentProblem, RuntimeError):
    """Ray is not installed, or the cluster cannot be reached: the environment cannot do it
    (exit 3)."""


class FarmError(UsageError):
    """A farm request that cannot be served as asked (a bad address or --devices selector,
    no device joined): exit 2. A device that fails while working is reported per device."""


def import_ray():
    """The ray module, or FarmUnavailable saying how to install it."""
    try:
        import ray
    except ImportError:
        raise FarmUnavailable(f"--ray needs Ray, which is not installed here: {INSTALL_HINT}") from None
    return ray
