"""Profiling engines on the device: latency statistics, load time, memory, energy, power modes.

Kept light on purpose: importing ``adaexport.profiling`` imports neither numpy nor a
backend. The platform facts it reads (power modes, sensors, device memory) live in the
leaf package ``adaexport.hardware``, which the embedded runtime uses without importing
this one. The modules:

* ``settings``: the measurement settings (a build profile's ``[profiling]`` table);
* ``stats``: percentiles, coefficient of variation, rank correlation (pure Python);
* ``measure``: the measurement loop (warm-up by time, interleaved rounds, re-measurement);
* ``family``: profiling a build directory's engines into its manifest.
"""
