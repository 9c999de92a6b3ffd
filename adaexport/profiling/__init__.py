"""Profiling engines on the device: latency statistics, load time, memory, energy, power modes.

Kept light on purpose: importing ``adaexport.profiling`` (or its stdlib-only
``power_modes`` and ``stats`` modules, which the embedded runtime may use) imports
neither numpy nor a backend. The modules:

* ``settings``: the measurement settings (a build profile's ``[profiling]`` table);
* ``stats``: percentiles, coefficient of variation, rank correlation (pure Python);
* ``sensors``: energy/power readers (INA3221 hwmon, Intel RAPL, NVML), null with a reason;
* ``power_modes``: the Jetson's nvpmodel mode by name, switching and restoring it;
* ``measure``: the measurement loop (warm-up by time, interleaved rounds, re-measurement);
* ``family``: profiling a build directory's engines into its manifest.
"""
