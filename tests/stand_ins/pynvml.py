"""A stand-in for pynvml (nvidia-ml-py) with the calls adaexport makes, for machines without an
NVIDIA GPU: one GPU whose total-energy counter (mJ) advances at $FAKE_NVML_WATTS (100 W) and whose
compute processes are $FAKE_NVML_PROCESSES ("pid:bytes,..."). Tests put this folder on sys.path."""

import os
import time
from types import SimpleNamespace

_T0 = time.perf_counter()


class NVMLError(Exception):
    pass


def nvmlInit():
    pass


def nvmlShutdown():
    pass


def nvmlSystemGetDriverVersion():
    return "550.00 (stand-in)"


def nvmlDeviceGetCount():
    return 1


def nvmlDeviceGetHandleByIndex(index):
    if index != 0:
        raise NVMLError("Invalid Argument")
    return "gpu0"


def nvmlDeviceGetName(handle):
    return b"NVIDIA stand-in GPU"


def nvmlDeviceGetTotalEnergyConsumption(handle):
    return int((time.perf_counter() - _T0) * float(os.environ.get("FAKE_NVML_WATTS", 100)) * 1000)


def nvmlDeviceGetComputeRunningProcesses(handle):
    entries = [e.split(":") for e in os.environ.get("FAKE_NVML_PROCESSES", "").split(",") if e]
    return [SimpleNamespace(pid=int(pid), usedGpuMemory=int(used)) for pid, used in entries]
