"""On a machine with an NVIDIA GPU: what adaexport reads from the real CUDA runtime and NVML.

Everywhere else these paths run against stand-ins (tests/stand_ins/pynvml.py) or not at
all; these tests check the real libraries behave as the code assumes: the ctypes CUDA
runtime binding the TensorRT sessions use, NVML's total-energy counter the profiler
reads, NVML's per-process memory, and `adaexport doctor` on such a machine. They skip,
with the reason, where there is no GPU (this project's CI). On a GPU machine:
`python -m pytest --noconftest tests/test_gpu_hardware.py` (PyTorch with CUDA is used to
load the GPU, where it is installed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _runtime():
    """The CUDA runtime binding with a device behind it, or the reason there is none."""
    from adaexport.backends.base import BackendError, BackendUnavailable
    from adaexport.backends.cuda_runtime import CudaRuntime

    try:
        cuda = CudaRuntime.get()
        cuda.compute_capability()
    except (BackendUnavailable, BackendError) as exc:
        return None, str(exc)
    return cuda, None


def _real_pynvml():
    try:
        import pynvml
    except ImportError:
        return None, "pynvml (nvidia-ml-py) is not installed"
    if "stand_ins" in str(getattr(pynvml, "__file__", "")):
        return None, "pynvml here is the tests' stand-in"
    try:
        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() < 1:
            return None, "NVML sees no GPU"
    except Exception as exc:  # noqa: BLE001 - NVMLError subclasses, by status
        return None, f"NVML unavailable ({exc})"
    return pynvml, None


CUDA, NO_CUDA = _runtime()
NVML, NO_NVML = _real_pynvml()
needs_cuda = pytest.mark.skipif(CUDA is None, reason=f"no CUDA GPU here: {NO_CUDA}")
needs_nvml = pytest.mark.skipif(NVML is None, reason=f"no NVIDIA GPU here: {NO_NVML}")


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _busy_gpu(seconds: float) -> None:
    """Keep the GPU computing for about `seconds` (PyTorch matrix products; else copies
    through the CUDA runtime)."""
    torch = _torch_cuda()
    end = time.perf_counter() + seconds
    if torch is not None:
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        while time.perf_counter() < end:
            for _ in range(20):
                a = (a @ a).clamp_(-1, 1)
            torch.cuda.synchronize()
        return
    data = np.ones(64 << 20, np.uint8)
    ptr, stream = CUDA.malloc(data.nbytes), CUDA.stream()
    try:
        while time.perf_counter() < end:
            CUDA.to_device(ptr, data, stream)
            CUDA.sync(stream)
    finally:
        CUDA.free(ptr)
        CUDA.destroy_stream(stream)


@needs_cuda
def test_the_cuda_runtime_binding_copies_bytes_to_the_gpu_and_back():
    data = np.random.default_rng(0).integers(0, 255, 48 << 20, dtype=np.uint8)
    back = np.zeros_like(data)
    ptr, stream = CUDA.malloc(data.nbytes), CUDA.stream()
    try:
        CUDA.to_device(ptr, data, stream)
        CUDA.to_host(back, ptr, stream)
        CUDA.sync(stream)
    finally:
        CUDA.free(ptr)
        CUDA.destroy_stream(stream)
    assert np.array_equal(back, data)
    major, minor = (int(x) for x in CUDA.compute_capability().split("."))
    assert major >= 3 and minor >= 0
    torch = _torch_cuda()
    if torch is not None:
        assert (major, minor) == torch.cuda.get_device_capability()
    assert CUDA.runtime_version().count(".") == 1


@needs_cuda
def test_a_failed_cuda_call_is_a_backend_error_naming_it():
    from adaexport.backends.base import BackendError

    with pytest.raises(BackendError, match="cudaMalloc failed"):
        CUDA.malloc(1 << 60)
    # the failure is not left behind as the runtime's last error for other libraries to find
    assert CUDA.lib.cudaPeekAtLastError() == 0
    torch = _torch_cuda()
    if torch is not None:
        assert float((torch.ones(1024, device="cuda") * 2).sum()) == 2048.0


@needs_nvml
def test_the_nvml_energy_meter_measures_a_gpu_workload():
    from adaexport.hardware import sensors

    meter = sensors.nvml_meter()
    assert meter.source.startswith("nvml:GPU 0")
    meter.begin()
    time.sleep(1.0)
    idle_w = meter.end() / meter.window_s
    meter.begin()
    _busy_gpu(3.0)
    busy_w = meter.end() / meter.window_s
    print(f"NVML energy: idle {idle_w:.1f} W, busy {busy_w:.1f} W over {meter.window_s:.2f} s")
    assert 1.0 < idle_w < 2000.0
    assert busy_w > idle_w and busy_w < 2000.0


@needs_nvml
def test_nvml_counts_this_processes_gpu_memory():
    from adaexport.hardware.device_memory import device_memory_reader

    torch = _torch_cuda()
    if torch is None:
        pytest.skip("PyTorch with CUDA is not installed to hold GPU memory")
    reader = device_memory_reader("gpu")
    assert reader, reader.source
    held = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    seen = reader.read()
    print(f"NVML per-process memory with 1 GiB held by PyTorch: {seen} bytes ({reader.source})")
    assert seen >= held.numel()


@needs_nvml
def test_doctor_on_a_gpu_machine_reads_nvml():
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-m", "adaexport", "doctor", "--device", "nvidia-gpu", "--json"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)["result"]
    print(json.dumps({k: report.get(k) for k in ("energy", "device_memory", "tensorrt", "differences")}, indent=1))
    assert report["energy"]["nvml"]["readable"], report["energy"]["nvml"]
    assert report["energy"]["target"]["readable"] and report["energy"]["target"]["source"].startswith("nvml:")
