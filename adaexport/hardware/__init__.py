"""Platform facts read from the machine (standard library only; pynvml when asked for):
the Jetson's nvpmodel power modes (``power_modes``), energy and power sensors
(``sensors``: INA3221, RAPL, NVML) and device memory (``device_memory``: nvmap, NVML).

A leaf of the package: the profiler and the embedded runtime both use it, and it imports
nothing of adaexport but ``device_identity.system_root``.
"""
