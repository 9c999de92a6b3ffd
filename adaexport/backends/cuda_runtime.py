"""A minimal ctypes binding of the CUDA runtime (libcudart: cudaMalloc, cudaMemcpyAsync,
streams, device attributes), so TensorRT sessions need neither cuda-python nor pycuda."""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
import os

import numpy as np

from .base import BackendError, BackendUnavailable


_CUDA_MEMCPY_HOST_TO_DEVICE = 1
_CUDA_MEMCPY_DEVICE_TO_HOST = 2
_ATTR_CC_MAJOR = 75          # cudaDevAttrComputeCapabilityMajor
_ATTR_CC_MINOR = 76          # cudaDevAttrComputeCapabilityMinor


def _cudart_candidates() -> list[str]:
    names = ["libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"]
    found = ctypes.util.find_library("cudart")
    if found:
        names.insert(0, found)
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        names += sorted(glob.glob(os.path.join(root, "cuda_runtime", "lib", "libcudart.so*")))
    for root in ("/usr/local/cuda/lib64", "/usr/local/cuda/targets/aarch64-linux/lib", "/usr/lib/aarch64-linux-gnu"):
        names += sorted(glob.glob(os.path.join(root, "libcudart.so*")))
    return names


class CudaRuntime:
    """The few CUDA runtime calls a session needs, through ctypes."""

    _instance: "CudaRuntime | None" = None

    def __init__(self):
        errors = []
        self.lib = None
        for name in _cudart_candidates():
            try:
                self.lib = ctypes.CDLL(name)
                break
            except OSError as exc:
                errors.append(str(exc))
        if self.lib is None:
            raise BackendUnavailable("the CUDA runtime library (libcudart) was not found"
                                     + (f" ({errors[-1]})" if errors else ""))
        lib, vp, sz, ci = self.lib, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        lib.cudaGetErrorString.argtypes = [ci]
        lib.cudaMalloc.argtypes = [ctypes.POINTER(vp), sz]
        lib.cudaFree.argtypes = [vp]
        lib.cudaMemcpyAsync.argtypes = [vp, vp, sz, ci, vp]
        lib.cudaStreamCreate.argtypes = [ctypes.POINTER(vp)]
        lib.cudaStreamSynchronize.argtypes = [vp]
        lib.cudaStreamDestroy.argtypes = [vp]
        lib.cudaGetDevice.argtypes = [ctypes.POINTER(ci)]
        lib.cudaDeviceGetAttribute.argtypes = [ctypes.POINTER(ci), ci, ci]
        lib.cudaRuntimeGetVersion.argtypes = [ctypes.POINTER(ci)]
        lib.cudaGetLastError.argtypes = []
        lib.cudaPeekAtLastError.argtypes = []
        for fn in ("cudaMalloc", "cudaFree", "cudaMemcpyAsync", "cudaStreamCreate", "cudaStreamSynchronize",
                   "cudaStreamDestroy", "cudaGetDevice", "cudaDeviceGetAttribute", "cudaRuntimeGetVersion",
                   "cudaGetLastError", "cudaPeekAtLastError"):
            getattr(lib, fn).restype = ci

    @classmethod
    def get(cls) -> "CudaRuntime":
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def check(self, code: int, what: str) -> None:
        """Raise BackendError for a failed call, after clearing the runtime's last error: it
        is per thread and shared by every library in the process, so left set (by a refused
        cudaMalloc, say) the next library that asks (PyTorch after a kernel launch, seen on
        an H200) would report this failure as its own."""
        if code != 0:
            self.lib.cudaGetLastError()
            message = self.lib.cudaGetErrorString(code)
            raise BackendError(f"CUDA {what} failed: {message.decode() if message else code}")

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self.check(self.lib.cudaMalloc(ctypes.byref(ptr), max(1, nbytes)), "cudaMalloc")
        return int(ptr.value)

    def free(self, ptr: int) -> None:
        self.lib.cudaFree(ctypes.c_void_p(ptr))

    def stream(self) -> int:
        handle = ctypes.c_void_p()
        self.check(self.lib.cudaStreamCreate(ctypes.byref(handle)), "cudaStreamCreate")
        return int(handle.value or 0)

    def destroy_stream(self, stream: int) -> None:
        self.lib.cudaStreamDestroy(ctypes.c_void_p(stream))

    def to_device(self, dst: int, array: np.ndarray, stream: int) -> None:
        self.check(self.lib.cudaMemcpyAsync(ctypes.c_void_p(dst), ctypes.c_void_p(array.ctypes.data), array.nbytes,
                                            _CUDA_MEMCPY_HOST_TO_DEVICE, ctypes.c_void_p(stream)), "cudaMemcpyAsync")

    def to_host(self, array: np.ndarray, src: int, stream: int) -> None:
        self.check(self.lib.cudaMemcpyAsync(ctypes.c_void_p(array.ctypes.data), ctypes.c_void_p(src), array.nbytes,
                                            _CUDA_MEMCPY_DEVICE_TO_HOST, ctypes.c_void_p(stream)), "cudaMemcpyAsync")

    def sync(self, stream: int) -> None:
        self.check(self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")

    def compute_capability(self) -> str:
        device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        self.check(self.lib.cudaGetDevice(ctypes.byref(device)), "cudaGetDevice")
        self.check(self.lib.cudaDeviceGetAttribute(ctypes.byref(major), _ATTR_CC_MAJOR, device), "attribute")
        self.check(self.lib.cudaDeviceGetAttribute(ctypes.byref(minor), _ATTR_CC_MINOR, device), "attribute")
        return f"{major.value}.{minor.value}"

    def runtime_version(self) -> str:
        version = ctypes.c_int()
        self.check(self.lib.cudaRuntimeGetVersion(ctypes.byref(version)), "cudaRuntimeGetVersion")
        return f"{version.value // 1000}.{(version.value % 1000) // 10}"
