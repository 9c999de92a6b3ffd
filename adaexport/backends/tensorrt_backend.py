"""TensorRT: serialized engines (plans) for NVIDIA GPUs and Jetson modules.

Written against TensorRT's Python API as documented for 8.6 and 10.x:

* ``trt.Builder(logger)``, ``builder.create_network(flags)`` with
  ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` on 8.x (the default, and the flag
  deprecated, in 10.x) and ``STRONGLY_TYPED`` where the FP16/INT8 builder flags are
  gone (TensorRT 11: weak typing removed);
* ``trt.OnnxParser(network, logger).parse_from_file(path)`` (the parser resolves the
  family's external weights file next to the ONNX);
* ``builder.create_builder_config()``: ``set_memory_pool_limit(MemoryPoolType.WORKSPACE,
  bytes)``, ``builder_optimization_level``, ``BuilderFlag.FP16 / INT8`` (when the
  module has them), ``BuilderFlag.TF32`` cleared for fp32 engines (TF32 rounds matmul
  inputs to 10-bit mantissas), a timing cache (`trt_timing_cache`: one file per target
  and TensorRT version, a cache that cannot be loaded is a miss, concurrent builds merge
  into the file under a lock), DLA (``default_device_type = DeviceType.DLA``,
  ``DLA_core``, ``BuilderFlag.GPU_FALLBACK``; none on TensorRT 11, whose DLA support is
  absent in 11.0-11.3) with the layers that run on the DLA after fusion reported from the
  builder log and the engine inspector (`trt_dla.placement_report`);
* ``builder.build_serialized_network(network, config)``;
* weight-stripped plans (TensorRT 10+: ``BuilderFlag.STRIP_PLAN`` with
  ``REFIT_IDENTICAL``, trtexec ``--stripWeights``): the plan keeps no weights, and the
  session refits them at load from the ONNX it was built from (``trt.Refitter``,
  ``trt.OnnxParserRefitter(refitter, logger).refit_from_file(onnx)``,
  ``refitter.refit_cuda_engine()``), so a GPU engine of the family's fp32 ONNX adds
  no weights to the family's ``weights.bin``. TensorRT 8.x cannot (no such flag) and
  DLA engines are not refittable: their plans embed the weights, and the sidecar's
  ``facts.weights`` says which.

Precision:

* fp16: the fp32 ONNX with ``BuilderFlag.FP16`` (weak typing); where that flag is gone,
  a float16 copy of the ONNX (float32 IO) in a strongly typed network.
* int8: explicit quantization. The ONNX is quantized to QDQ form on the toolchain side
  (onnxruntime.quantization, symmetric int8 activations and per-channel int8 weights,
  calibrated on real samples, laid out as TensorRT parses it: zero points of 0, float
  biases, a Q/DQ pair per weight; see onnxruntime_backend.TENSORRT_QDQ_OPTIONS), then
  built with ``BuilderFlag.INT8`` (+ FP16 for the layers left unquantized); strongly
  typed where the flags are gone. A device needs no calibration data.
* int8 on the DLA: TensorRT 8.6/10.x does not place Q/DQ networks on the DLA, so, as
  NVIDIA's qdq-translator does, the exported fp32 ONNX is built with INT8 + FP16 and the
  QDQ model's activation scales as a calibration cache (`trt_dla`; the calibrator only
  reads the cache, it never runs samples).

A plan only runs on the TensorRT version, GPU compute capability and Jetson Linux
(L4T) release it was built with. Those are stored in the plan's JSON sidecar
(``<plan>.json``, key ``facts.system``) and a plan that does not match the running
system is refused with a one-line message (`check_plan_key`).

Cross-building: on a machine without TensorRT, `pending_engine` prepares the ONNX
the device will build (the QDQ model for int8) and records the engine as pending with
the command that finishes it on the device (``adaexport compile DIR --device NAME``,
which calls `finish_pending`).

Memory at run time goes through a minimal ctypes binding of the CUDA runtime
(libcudart: cudaMalloc, cudaMemcpyAsync, streams), so sessions need neither
cuda-python nor pycuda; engines run with the TensorRT 10 tensor API (num_io_tensors,
get_tensor_name, set_tensor_address, execute_async_v3; all present since 8.5).

Everything that does not need TensorRT is plain data and functions here and is
tested without it: capabilities -> build settings, trtexec command lines, system keys
and mismatch messages, the DLA fallback report.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import glob
import importlib.util
import os
import platform
import shlex
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import trt_dla, trt_timing_cache
from .onnx_tensors import family_files
from .base import (
    Artifact,
    Availability,
    Backend,
    BackendError,
    BackendUnavailable,
    CompileOptions,
    PlanMismatch,
    Session,
    Staging,
    _check_feed,
    finalize,
    io_spec,
    sha256_file,
    write_sidecar,
)

PLAN_SUFFIX = ".plan"
DEFAULT_WORKSPACE_MB = 1024
DEFAULT_OPTIMIZATION_LEVEL = 3        # TensorRT's default builder optimisation level
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


# =========================================================================== plain data


@dataclasses.dataclass(frozen=True)
class TrtCaps:
    """What the installed TensorRT module offers (read with `caps_of`)."""
    version: str
    fp16_flag: bool = True                 # BuilderFlag.FP16 exists (weak typing)
    int8_flag: bool = True                 # BuilderFlag.INT8 exists
    strongly_typed: bool = True            # NetworkDefinitionCreationFlag.STRONGLY_TYPED exists
    explicit_batch_flag: bool = False      # EXPLICIT_BATCH must be passed (TensorRT < 10)
    optimization_level: bool = True        # IBuilderConfig.builder_optimization_level exists
    strip_plan: bool = True                # BuilderFlag.STRIP_PLAN exists (weight-stripped plans, 10.0+)

    @property
    def major(self) -> int:
        return _version_tuple(self.version)[0] if self.version else 0

    @property
    def dla(self) -> bool:
        """Builds for the DLA: TensorRT 8.x and 10.x (11.0-11.3 have no DLA support)."""
        return self.major < 11


# Typical capabilities per TensorRT generation, for settings computed before the device's
# TensorRT is known (pending engines) and for tests.
CAPS_8_5 = TrtCaps("8.5.2", fp16_flag=True, int8_flag=True, strongly_typed=False, explicit_batch_flag=True,
                   optimization_level=False, strip_plan=False)
CAPS_8_6 = TrtCaps("8.6.2", fp16_flag=True, int8_flag=True, strongly_typed=False, explicit_batch_flag=True,
                   strip_plan=False)
CAPS_10 = TrtCaps("10.3.0", fp16_flag=True, int8_flag=True, strongly_typed=True, explicit_batch_flag=False)
CAPS_11 = TrtCaps("11.0.0", fp16_flag=False, int8_flag=False, strongly_typed=True, explicit_batch_flag=False)


def caps_of(trt) -> TrtCaps:
    """The capabilities of an imported tensorrt module."""
    flags, nflags = trt.BuilderFlag, trt.NetworkDefinitionCreationFlag
    version = str(trt.__version__)
    return TrtCaps(version=version, fp16_flag=hasattr(flags, "FP16"), int8_flag=hasattr(flags, "INT8"),
                   strongly_typed=hasattr(nflags, "STRONGLY_TYPED"),
                   explicit_batch_flag=_version_tuple(version) < (10,) and hasattr(nflags, "EXPLICIT_BATCH"),
                   optimization_level=hasattr(trt.IBuilderConfig, "builder_optimization_level"),
                   strip_plan=hasattr(flags, "STRIP_PLAN") and hasattr(flags, "REFIT_IDENTICAL"))


@dataclasses.dataclass(frozen=True)
class BuildSettings:
    """Everything a TensorRT build of one engine sets, as plain data."""
    precision: str
    source: str                            # the ONNX the network is parsed from
    source_kind: str                       # fp32 | fp16 (converted) | qdq (quantized)
    network_flags: tuple[str, ...]         # NetworkDefinitionCreationFlag names
    builder_flags: tuple[str, ...]         # BuilderFlag names to set
    cleared_flags: tuple[str, ...]         # BuilderFlag names to clear
    workspace_mb: int
    optimization_level: int
    timing_cache: str | None
    dla_core: int | None
    calibration_cache: str | None = None   # DLA int8: activation scales (trtexec --calib)
    tensorrt: str | None = None            # the TensorRT version these settings are for
    strip_weights: bool = False            # STRIP_PLAN + REFIT_IDENTICAL: refitted from `source` at load

    @property
    def strongly_typed(self) -> bool:
        return "STRONGLY_TYPED" in self.network_flags

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def needed_source(precision: str, caps: TrtCaps, dla: bool = False) -> str:
    """Which ONNX a build at `precision` parses: fp32 (the exported model), fp16 (a float16
    copy, for strongly typed builds), qdq (the quantized model) or calib (the exported
    model with the quantized model's scales as a calibration cache: int8 on the DLA)."""
    if precision == "int8":
        return "calib" if dla else "qdq"
    if precision == "fp16" and not caps.fp16_flag:
        return "fp16"
    return "fp32"


def build_settings(target, precision: str, caps: TrtCaps, source: str | os.PathLike, *,
                   workspace_mb: int | None = None, optimization_level: int | None = None,
                   timing_cache: str | os.PathLike | None = None, dla_core: int | None = None,
                   module: str | None = None, calibration_cache: str | os.PathLike | None = None) -> BuildSettings:
    """The builder settings for `precision` on `target` with TensorRT `caps`, parsing
    `source` (see `needed_source`). Raises BackendError for impossible combinations."""
    if precision not in ("fp32", "fp16", "int8"):
        raise BackendError(f"tensorrt builds fp32, fp16 and int8 engines, not {precision!r}")
    options = target.options("tensorrt")
    kind = needed_source(precision, caps, dla_core is not None)
    if dla_core is not None:
        if not caps.dla:
            raise BackendError(f"TensorRT {caps.version} has no DLA support (none in TensorRT 11.0-11.3); "
                               "build for the GPU, or with TensorRT 10 (JetPack 6)")
        cores = target.dla_cores(module)
        if cores <= 0:
            raise BackendError(f"{target.name}{' ' + module if module else ''} has no DLA; build for the GPU")
        if not 0 <= dla_core < cores:
            raise BackendError(f"DLA core {dla_core} does not exist on {target.name} (it has {cores})")
        if precision == "fp32":
            raise BackendError("the DLA runs fp16 and int8 only; an fp32 engine cannot use it")
        if kind == "calib" and calibration_cache is None:
            raise BackendError("int8 on the DLA is built from a calibration cache (the QDQ model's scales); none given")
    network: list[str] = []
    if caps.explicit_batch_flag:
        network.append("EXPLICIT_BATCH")
    builder: list[str] = []
    cleared: list[str] = []
    weak = caps.fp16_flag and (precision != "int8" or caps.int8_flag)
    if precision == "fp32":
        cleared.append("TF32")             # fp32 means fp32: no TF32 matmuls
        if not caps.fp16_flag and caps.strongly_typed:
            network.append("STRONGLY_TYPED")
    elif weak:
        builder.append("FP16")
        if precision == "int8":
            builder.append("INT8")
    elif caps.strongly_typed:
        network.append("STRONGLY_TYPED")
    else:
        raise BackendError(f"TensorRT {caps.version} has neither the {precision.upper()} builder flag "
                           "nor strongly typed networks")
    if dla_core is not None:
        builder.append("GPU_FALLBACK")
    return BuildSettings(
        precision=precision, source=os.fspath(source), source_kind=kind, network_flags=tuple(network),
        builder_flags=tuple(builder), cleared_flags=tuple(cleared),
        workspace_mb=int(workspace_mb if workspace_mb is not None else options.get("workspace_mb",
                                                                                   DEFAULT_WORKSPACE_MB)),
        optimization_level=int(optimization_level if optimization_level is not None
                               else options.get("builder_optimization_level", DEFAULT_OPTIMIZATION_LEVEL)),
        timing_cache=os.fspath(timing_cache) if timing_cache is not None else None, dla_core=dla_core,
        calibration_cache=os.fspath(calibration_cache) if kind == "calib" else None, tensorrt=caps.version,
        strip_weights=caps.strip_plan and dla_core is None)


def weights_fact(settings: BuildSettings) -> str:
    """Where a plan's weights are, for the sidecar (and so the manifest) to say."""
    if settings.strip_weights:
        return f"stripped (STRIP_PLAN, REFIT_IDENTICAL): refitted at load from {settings.source}"
    if settings.dla_core is not None:
        return "embedded in the plan: DLA engines are not refittable"
    return f"embedded in the plan: TensorRT {settings.tensorrt} has no weight-stripped plans (10.0+ has)"


def trtexec_command(settings: BuildSettings, plan: str | os.PathLike, *, trtexec: str = "trtexec") -> list[str]:
    """The trtexec command line that builds the same engine as `settings`, with the options
    the trtexec of `settings.tensorrt` has (sampleOptions.cpp: 8.5 has neither
    --builderOptimizationLevel nor --skipInference, but --buildOnly; --stronglyTyped
    from 10)."""
    since_8_6 = _version_tuple(settings.tensorrt or "10")[:2] >= (8, 6)
    cmd = [trtexec, f"--onnx={os.fspath(settings.source)}", f"--saveEngine={os.fspath(plan)}"]
    if settings.strongly_typed:
        cmd.append("--stronglyTyped")
    if "FP16" in settings.builder_flags:
        cmd.append("--fp16")
    if "INT8" in settings.builder_flags:
        cmd.append("--int8")
    if settings.calibration_cache:
        cmd.append(f"--calib={settings.calibration_cache}")
    if "TF32" in settings.cleared_flags:
        cmd.append("--noTF32")
    cmd.append(f"--memPoolSize=workspace:{settings.workspace_mb}M")
    if since_8_6:
        cmd.append(f"--builderOptimizationLevel={settings.optimization_level}")
    if settings.timing_cache:
        cmd.append(f"--timingCacheFile={settings.timing_cache}")
    if settings.dla_core is not None:
        cmd.append(f"--useDLACore={settings.dla_core}")
        if "GPU_FALLBACK" in settings.builder_flags:
            cmd.append("--allowGPUFallback")
    if settings.strip_weights:
        cmd.append("--stripWeights")
    cmd.append("--skipInference" if since_8_6 else "--buildOnly")
    return cmd


def trtexec_command_line(settings: BuildSettings, plan: str | os.PathLike, **kw) -> str:
    return shlex.join(trtexec_command(settings, plan, **kw))


def format_dla_fallback(fallback: Sequence[dict[str, Any]], total_layers: int, dla_core: int | None) -> str:
    """One paragraph for the build log: which network layers TensorRT says cannot run on the
    DLA, asked layer by layer *before* fusion (trt_dla.placement_report says where they ran)."""
    if dla_core is None:
        return "GPU engine (no DLA)"
    if not fallback:
        return f"DLA core {dla_core}: all {total_layers} layers run on the DLA"
    shown = ", ".join(f"{f['name']} ({f['type']})" for f in fallback[:10])
    more = f" and {len(fallback) - 10} more" if len(fallback) > 10 else ""
    return (f"DLA core {dla_core}: {total_layers - len(fallback)} of {total_layers} layers on the DLA, "
            f"{len(fallback)} fall back to the GPU: {shown}{more}")


# --------------------------------------------------------------------------- system keys


@dataclasses.dataclass(frozen=True)
class SystemKey:
    """What a plan is tied to."""
    tensorrt: str | None
    compute_capability: str | None
    l4t: str | None                 # Jetson Linux release, None off Jetson
    machine: str | None = None

    def describe(self) -> str:
        parts = [f"TensorRT {self.tensorrt or '?'}", f"compute capability {self.compute_capability or '?'}"]
        if self.l4t:
            parts.append(f"L4T {self.l4t}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "SystemKey":
        return cls(**{f.name: raw.get(f.name) for f in dataclasses.fields(cls)})


def _version_tuple(version: str | None) -> tuple[int, ...]:
    out = []
    for part in (version or "").split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def check_plan_key(built: SystemKey, here: SystemKey, plan_name: str = "engine",
                   finish: str | None = None) -> str | None:
    """None when a plan built on `built` runs on `here`, else one line saying why not.

    TensorRT plans are tied to the TensorRT version (major.minor.patch), the GPU's
    compute capability and, on Jetson, the Jetson Linux release."""
    reasons = []
    if _version_tuple(built.tensorrt)[:3] != _version_tuple(here.tensorrt)[:3]:
        reasons.append(f"TensorRT {built.tensorrt} vs {here.tensorrt or 'none'}")
    if built.compute_capability != here.compute_capability:
        reasons.append(f"compute capability {built.compute_capability} vs {here.compute_capability or 'unknown'}")
    if _version_tuple(built.l4t)[:2] != _version_tuple(here.l4t)[:2]:
        reasons.append(f"L4T {built.l4t or 'none'} vs {here.l4t or 'none'}")
    if not reasons:
        return None
    hint = f"; rebuild it here: {finish}" if finish else "; rebuild it on this device"
    return (f"{plan_name} was built for {built.describe()} and this system has {here.describe()} "
            f"({'; '.join(reasons)}){hint}")


# =========================================================================== CUDA runtime (ctypes)


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
        for fn in ("cudaMalloc", "cudaFree", "cudaMemcpyAsync", "cudaStreamCreate", "cudaStreamSynchronize",
                   "cudaStreamDestroy", "cudaGetDevice", "cudaDeviceGetAttribute", "cudaRuntimeGetVersion"):
            getattr(lib, fn).restype = ci

    @classmethod
    def get(cls) -> "CudaRuntime":
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def check(self, code: int, what: str) -> None:
        if code != 0:
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


def _orin_compute_capability(root: str = "/") -> str | None:
    from ..targets import read_jetson

    module = read_jetson(root)
    return "8.7" if module is not None and module.target is not None else None


def system_key(tensorrt_version: str | None = None, *, root: str = "/") -> SystemKey:
    """The key of the system this runs on (the installed TensorRT unless one is given)."""
    from ..targets import l4t_release

    if tensorrt_version is None:
        try:
            import tensorrt as trt

            tensorrt_version = str(trt.__version__)
        except ImportError:
            tensorrt_version = None
    try:
        capability = CudaRuntime.get().compute_capability()
    except BackendError:
        capability = _orin_compute_capability(root)   # known per module when CUDA cannot say
    return SystemKey(tensorrt=tensorrt_version, compute_capability=capability, l4t=l4t_release(root),
                     machine=platform.machine())


# =========================================================================== the backend


def _has_qdq(onnx_path: Path) -> bool:
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in QDQ_OPS for n in proto.graph.node)


def prepare_source(onnx_path: Path, out_dir: Path, precision: str, calibration: np.ndarray | None,
                   kind: str, stem: str) -> tuple[Path, dict[str, Any]]:
    """The ONNX a TensorRT build parses (toolchain side), written into out_dir next to the
    plan `stem`: the exported model itself (fp32), a float16 copy (`stem`.fp16.onnx), a
    QDQ-quantized copy (`stem`.qdq.onnx), or, for int8 on the DLA (calib), the exported
    model with the QDQ copy's activation scales as `stem`.calib.cache (facts
    "calibration_cache")."""
    onnx_path = Path(onnx_path)
    has_qdq = kind in ("qdq", "calib") and _has_qdq(onnx_path)
    if kind == "fp32" or (kind == "qdq" and has_qdq):
        return onnx_path, {}
    if has_qdq:
        raise BackendError(f"{onnx_path.name} is already quantized (Q/DQ nodes), which the DLA does not take; "
                           "strip it with NVIDIA's qdq-translator, or build int8 for the GPU")
    try:
        from .onnxruntime_backend import convert_fp16, quantize_qdq
        import onnxruntime.quantization  # noqa: F401 - the tool the QDQ / float16 model is made with
    except ImportError as exc:
        raise BackendUnavailable(f"a {kind} ONNX for TensorRT is made with onnxruntime's tools, which cannot be "
                                 f"imported here ({exc}); prepare it on the workstation (pending_engine)") from None
    if kind not in ("fp16", "qdq", "calib"):
        raise BackendError(f"unknown TensorRT source kind {kind!r}")
    name = f"{stem}.{'fp16' if kind == 'fp16' else 'qdq'}.onnx"
    with Staging(out_dir) as stage:
        if kind == "fp16":
            facts = convert_fp16(onnx_path, stage.path(name))
        else:
            facts = quantize_qdq(onnx_path, stage.path(name), calibration, symmetric_activations=True, tensorrt=True)
        stage.commit([name])
    if kind != "calib":
        return Path(out_dir) / name, facts
    cache = f"{stem}.calib.cache"
    scales = trt_dla.activation_scales(Path(out_dir) / name)
    trt_dla.write_cache(Path(out_dir) / cache, scales, CAPS_10.version)   # rewritten for the device's TensorRT
    return onnx_path, {**facts, "calibration_cache": cache, "calibration_tensors": len(scales),
                       "calibration_from": name}


def default_timing_cache(out_dir: Path, target, tensorrt_version: str | None) -> Path:
    """One timing cache per target and TensorRT version, shared by every engine of the family."""
    return Path(out_dir) / trt_timing_cache.cache_name(target.name, tensorrt_version)


def _relative(path: Path, base: Path) -> str:
    return os.path.relpath(Path(path).resolve(), Path(base).resolve()).replace(os.sep, "/")


def _files_beside(settings: BuildSettings, facts: dict[str, Any]) -> dict[str, list[str]]:
    """The files (relative to the engine's folder) a build keeps beside the plan: what it is
    built from (the QDQ/fp16 model, the calibration cache) and the family's timing cache."""
    support = [settings.source, settings.calibration_cache, facts.get("calibration_from")]
    timing = [settings.timing_cache, f"{settings.timing_cache}.lock"] if settings.timing_cache else []
    return {"support_files": [f for f in support if f and "/" not in f], "shared_files": timing}


class TensorRtBackend(Backend):
    name = "tensorrt"
    runtime_modules = ("tensorrt",)
    extension = PLAN_SUFFIX
    precisions = ("fp32", "fp16", "int8")
    defers = True
    distributions = ("tensorrt", "tensorrt-cu12", "tensorrt-cu11")
    recipe = "2: TensorRT QDQ layout, DLA int8 from a calibration cache, versioned timing cache"

    def support_table(self, version: str | None = None):
        from .lint import tensorrt_table

        return tensorrt_table(version)

    def lint_graph(self, proto, *, precision: str | None = None, dla: bool = False) -> list[str]:
        from .lint import tensorrt_graph_problems

        return tensorrt_graph_problems(proto, precision=precision, dla=dla)

    def available(self, precision: str | None = None) -> Availability:
        if precision is not None and precision not in self.precisions:
            return Availability.no(f"tensorrt builds {', '.join(self.precisions)}, not {precision}")
        try:
            import tensorrt  # noqa: F401
        except ImportError as exc:
            return Availability.no(f"the tensorrt Python package cannot be imported ({exc})")
        try:
            CudaRuntime.get()
        except BackendError as exc:
            return Availability.no(str(exc))
        return Availability.yes()

    def versions(self) -> dict[str, Any]:
        from ..targets import jetpack_release

        key = system_key()
        facts: dict[str, Any] = {"tensorrt": key.tensorrt, "compute_capability": key.compute_capability}
        try:
            facts["cuda_runtime"] = CudaRuntime.get().runtime_version()
        except BackendError:
            facts["cuda_runtime"] = None
        if key.l4t:
            facts["l4t"] = key.l4t
            facts["jetpack"] = jetpack_release(key.l4t)
        return facts

    # ---------------------------------------------------------------- toolchain

    def plan_name(self, onnx_path: Path, precision: str, options: CompileOptions) -> str:
        stem = self.artifact_name(onnx_path, precision, options)
        return stem + (f"-dla{options.dla_core}" if options.dla_core is not None and not options.name else "") \
            + PLAN_SUFFIX

    def compile(self, onnx_path: Path, target, precision: str, options: CompileOptions) -> Artifact:
        import tensorrt as trt

        self.check_precision(precision)
        self.require(precision)
        caps = caps_of(trt)
        out_dir = Path(options.out_dir)
        plan = self.plan_name(onnx_path, precision, options)
        kind = needed_source(precision, caps, options.dla_core is not None)
        source, facts = prepare_source(Path(onnx_path), out_dir, precision, options.calibration, kind,
                                       plan[:-len(PLAN_SUFFIX)])
        return self._build(trt, caps, Path(onnx_path), source, facts, target, precision, options, plan)

    def _build(self, trt, caps: TrtCaps, onnx_path: Path, source: Path, facts: dict[str, Any], target,
               precision: str, options: CompileOptions, plan: str) -> Artifact:
        from .lint import lint_onnx

        out_dir = Path(options.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        timing = Path(options.timing_cache) if options.timing_cache else \
            default_timing_cache(out_dir, target, caps.version)
        calibration = out_dir / facts["calibration_cache"] if facts.get("calibration_cache") else None
        settings = build_settings(target, precision, caps, source, workspace_mb=options.workspace_mb,
                                  optimization_level=options.optimization_level, timing_cache=timing,
                                  dla_core=options.dla_core, module=_module_here(), calibration_cache=calibration)
        problems = lint_onnx(source, "tensorrt", caps.version, precision=precision, dla=options.dla_core is not None)
        if problems:
            raise BackendError(f"{source.name} does not fit TensorRT {caps.version}: {'; '.join(problems)}")
        calibration_bytes = None
        if calibration is not None:     # the header names the TensorRT that reads it
            calibration_bytes = trt_dla.write_cache(calibration, trt_dla.read_cache(calibration.read_text()),
                                                    caps.version)
        logger = _Logger(trt)
        with Staging(out_dir) as stage:
            report = _build_plan(trt, logger, settings, stage.path(plan), timing, calibration_bytes)
            stage.commit([plan])
        threads = options.threads if options.threads is not None else target.threads
        refit = family_files(source, out_dir) if settings.strip_weights else []
        recorded = dataclasses.replace(settings, source=_relative(source, out_dir),
                                       timing_cache=_relative(timing, out_dir),
                                       calibration_cache=_relative(calibration, out_dir) if calibration else None)
        artifact = Artifact(
            backend=self.name, precision=precision, files=[plan, *refit], root=out_dir,
            runtime={"dla_core": settings.dla_core, "output_order": _output_names(source),
                     **({"refit_from": refit[0]} if refit else {})},
            facts={**facts, "source": _relative(source, out_dir), "exported_onnx": Path(onnx_path).name,
                   "source_sha256": sha256_file(source), "settings": recorded.as_dict(),
                   "weights": weights_fact(recorded),
                   "trtexec": trtexec_command_line(recorded, plan), "system": system_key(caps.version).as_dict(),
                   "dla": report, "target": target.name, "threads": threads, **_files_beside(recorded, facts),
                   "finish": f"adaexport compile DIR --device {target.name}", "build_log": logger.tail()})
        session = TrtSession(artifact.path, artifact.runtime, SystemKey.from_dict(artifact.facts["system"]))
        return finalize(artifact, session, options.check)

    def pending(self, onnx_path: Path, target, precision: str, options: CompileOptions) -> Artifact:
        """Record an engine to be built on the device (this machine has no TensorRT): prepare
        the ONNX it will parse, write its sidecar with status "pending". The settings and the
        trtexec line are for CAPS_10 (TensorRT 10.3, JetPack 6); the device's own TensorRT
        decides when `adaexport compile` builds it."""
        self.check_precision(precision)
        out_dir = Path(options.out_dir)
        plan = self.plan_name(onnx_path, precision, options)
        kind = needed_source(precision, CAPS_10, options.dla_core is not None)
        source, facts = prepare_source(Path(onnx_path), out_dir, precision, options.calibration, kind,
                                       plan[:-len(PLAN_SUFFIX)])
        timing = Path(options.timing_cache) if options.timing_cache else \
            default_timing_cache(out_dir, target, CAPS_10.version)
        settings = build_settings(target, precision, CAPS_10, _relative(source, out_dir),
                                  workspace_mb=options.workspace_mb, optimization_level=options.optimization_level,
                                  timing_cache=_relative(timing, out_dir), dla_core=options.dla_core,
                                  calibration_cache=facts.get("calibration_cache"))
        finish = f"adaexport compile DIR --device {target.name}"
        artifact = Artifact(
            backend=self.name, precision=precision, files=[plan], root=out_dir, status="pending",
            runtime={"dla_core": settings.dla_core, "output_order": _output_names(source)},
            facts={**facts, "source": _relative(source, out_dir), "exported_onnx": Path(onnx_path).name,
                   "source_sha256": sha256_file(source), "settings": settings.as_dict(),
                   "weights": weights_fact(settings) + " (for TensorRT 10; the device's TensorRT decides)",
                   "trtexec": trtexec_command_line(settings, plan), "target": target.name, "finish": finish,
                   "dla_core": options.dla_core, "pending_reason": self.available().reason,
                   **_files_beside(settings, facts)})
        write_sidecar(artifact)
        return artifact

    def finish_pending(self, artifact: "Artifact | str | os.PathLike", target=None,
                       options: CompileOptions | None = None) -> Artifact:
        """Build a pending engine here (on the device), from the source its sidecar names."""
        import tensorrt as trt

        from ..targets import get_target

        art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
        target = target if target is not None else get_target(art.facts.get("target"))
        self.require(art.precision)
        caps = caps_of(trt)
        source = (art.root / art.facts["source"]).resolve()
        onnx_path = art.root / art.facts.get("exported_onnx", source.name)
        facts = {k: v for k, v in art.facts.items()
                 if k in ("quantization", "conversion", "calibration_cache", "calibration_tensors", "calibration_from")}
        if needed_source(art.precision, caps) == "fp16" and art.facts["settings"]["source_kind"] != "fp16":
            stem = art.files[0][:-len(PLAN_SUFFIX)]
            source, facts = prepare_source(source, art.root, art.precision, None, "fp16", stem)
        opts = options or CompileOptions(out_dir=art.root)
        opts = dataclasses.replace(opts, out_dir=art.root, dla_core=art.facts.get("dla_core", opts.dla_core))
        return self._build(trt, caps, onnx_path, source, facts, target, art.precision, opts, art.files[0])

    # ---------------------------------------------------------------- runtime

    def open(self, artifact, **overrides: Any) -> "TrtSession":
        art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
        if art.status != "ready":
            raise BackendError(f"{art.path.name} is {art.status}: finish it on the device "
                               f"({art.facts.get('finish', 'adaexport compile DIR --device NAME')})")
        key = SystemKey.from_dict(art.facts.get("system", {}))
        return TrtSession(art.path, {**art.runtime, **overrides}, key, finish=art.facts.get("finish"))


def _output_names(onnx_path: Path) -> list[str]:
    import onnx

    return [o.name for o in onnx.load(str(onnx_path), load_external_data=False).graph.output]


def _module_here() -> str | None:
    from ..targets import read_jetson

    module = read_jetson("/")
    return module.sku if module else None


def _Logger(trt):
    """A TensorRT logger (a trt.ILogger subclass) that keeps the last warnings and errors,
    and the builder's layer placement lines ([DlaLayer] / [GpuLayer], logged as INFO)."""

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages: list[str] = []
            self.placement: list[str] = []

        def log(self, severity, msg):
            if int(severity) <= int(trt.ILogger.Severity.WARNING):
                self.messages.append(f"{getattr(severity, 'name', severity)}: {msg}")
                del self.messages[:-50]
            elif "[DlaLayer]" in msg or "[GpuLayer]" in msg:
                self.placement.append(msg)

        def tail(self, n: int = 10) -> list[str]:
            return self.messages[-n:]

    return Logger()


def _calibrator(trt, cache: bytes):
    """An int8 calibrator that only hands TensorRT a calibration cache (as trtexec --calib
    does): it has no batches, so nothing is calibrated on the device."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            return None

        def read_calibration_cache(self):
            return cache

        def write_calibration_cache(self, data):
            return None

    return CacheCalibrator()


def _engine_layers(trt, logger, plan_path: Path, dla_core: int) -> list[dict[str, Any]] | None:
    """The built engine's layers from the engine inspector (None when it cannot be read)."""
    try:
        runtime = trt.Runtime(logger)
        runtime.DLA_core = dla_core
        engine = runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        inspector = engine.create_engine_inspector() if engine is not None else None
        return trt_dla.engine_layers(inspector.get_engine_information(trt.LayerInformationFormat.JSON)) \
            if inspector is not None else None
    except Exception as exc:  # noqa: BLE001 - the report then rests on the builder log alone
        logger.messages.append(f"WARNING: engine inspector unavailable ({exc})")
        return None


def _build_plan(trt, logger, settings: BuildSettings, plan_path: Path, timing_path: Path,
                calibration: bytes | None = None) -> dict[str, Any]:
    """Build one plan with the TensorRT API; returns the DLA placement report."""
    builder = trt.Builder(logger)
    flags = 0
    for name in settings.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.fspath(settings.source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"the TensorRT ONNX parser rejected {Path(settings.source).name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    if hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = settings.optimization_level
    for name in settings.builder_flags + (("STRIP_PLAN", "REFIT_IDENTICAL") if settings.strip_weights else ()):
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in settings.cleared_flags:
        if hasattr(trt.BuilderFlag, name):
            config.clear_flag(getattr(trt.BuilderFlag, name))
    if calibration is not None:
        config.int8_calibrator = _calibrator(trt, calibration)
    unsupported = []
    if settings.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = settings.dla_core
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED     # layer types in the inspector
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if not config.can_run_on_DLA(layer):
                kind = getattr(layer.type, "name", str(layer.type))
                unsupported.append({"index": i, "name": layer.name, "type": kind})
    cache, miss = trt_timing_cache.load(config, timing_path)     # set on the config, kept alive for the build
    if miss:
        logger.messages.append(f"WARNING: {miss}")
    serialized = builder.build_serialized_network(network, config)
    del cache
    if serialized is None:
        raise BackendError(f"TensorRT could not build {plan_path.name}: {' | '.join(logger.tail(3)) or 'no log'}")
    with open(plan_path, "wb") as f:
        f.write(memoryview(serialized))
    updated = config.get_timing_cache()
    if updated is not None:
        trt_timing_cache.save(config, updated, timing_path)
    layers = _engine_layers(trt, logger, plan_path, settings.dla_core) if settings.dla_core is not None else None
    report = trt_dla.placement_report(settings.dla_core, logger.placement, layers, unsupported)
    report["before_fusion"] = format_dla_fallback(unsupported, network.num_layers, settings.dla_core)
    return report


class TrtSession(Session):
    """A deserialised plan with device buffers for its (static) inputs and outputs. One
    execution context and one set of buffers: TensorRT documents a context as usable by one
    thread at a time, so concurrent run() calls take turns (a lock), never sharing buffers."""

    def __init__(self, plan_path: Path, runtime: dict[str, Any], built: SystemKey, *, finish: str | None = None):
        import tensorrt as trt

        here = system_key(str(trt.__version__))
        mismatch = check_plan_key(built, here, Path(plan_path).name, finish)
        if mismatch:
            raise PlanMismatch(mismatch)
        self._cuda = CudaRuntime.get()
        self._logger = _Logger(trt)
        self._runtime = trt.Runtime(self._logger)
        if runtime.get("dla_core") is not None:
            self._runtime.DLA_core = int(runtime["dla_core"])
        self._engine = self._runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self._engine is None:
            raise BackendError(f"TensorRT could not deserialise {Path(plan_path).name}: "
                               f"{' | '.join(self._logger.tail(3)) or 'no log'}")
        if runtime.get("refit_from"):
            self._refit(trt, Path(plan_path).parent / runtime["refit_from"], Path(plan_path).name)
        self._context = self._engine.create_execution_context()
        self._lock = threading.Lock()
        self._stream = self._cuda.stream()
        self._buffers: dict[str, int] = {}
        self._specs: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self.input_names, self.output_names = [], []
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            shape = tuple(int(d) for d in self._engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendError(f"{Path(plan_path).name}: tensor {name} has a dynamic shape {shape}")
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            self._specs[name] = (shape, dtype)
            self._buffers[name] = self._cuda.malloc(int(np.prod(shape)) * dtype.itemsize)
            self._context.set_tensor_address(name, self._buffers[name])
            if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.input_names.append(name)
            else:
                self.output_names.append(name)
        order = list(runtime.get("output_order") or [])
        if order and sorted(order) == sorted(self.output_names):
            self.output_names = order
        self.options = {"backend": "tensorrt", "dla_core": runtime.get("dla_core")}

    def _refit(self, trt, onnx_path: Path, plan_name: str) -> None:
        """Put the weights back into a weight-stripped plan, from the ONNX it was built from."""
        refitter = trt.Refitter(self._engine, self._logger)
        parser = trt.OnnxParserRefitter(refitter, self._logger)
        if not parser.refit_from_file(os.fspath(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"TensorRT could not read the weights of {plan_name} from {onnx_path.name}: "
                               f"{errors or ' | '.join(self._logger.tail(3))}")
        if not refitter.refit_cuda_engine():
            raise BackendError(f"TensorRT could not refit {plan_name} from {onnx_path.name}: "
                               f"{' | '.join(self._logger.tail(3)) or 'no log'}")

    def io(self) -> tuple[list[dict], list[dict]]:
        def spec(names):
            return io_spec(names, [self._specs[n][0] for n in names], [self._specs[n][1].name for n in names])

        return spec(self.input_names), spec(self.output_names)

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        _check_feed(self, inputs)
        with self._lock:
            return self._run(inputs)

    def _run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        keep = []
        for name in self.input_names:
            shape, dtype = self._specs[name]
            array = np.ascontiguousarray(inputs[name], dtype=dtype)
            if array.shape != shape:
                raise ValueError(f"input {name} has shape {array.shape}, the engine takes {shape}")
            keep.append(array)
            self._cuda.to_device(self._buffers[name], array, self._stream)
        if not self._context.execute_async_v3(self._stream):
            raise BackendError(f"TensorRT execution failed: {' | '.join(self._logger.tail(3)) or 'no log'}")
        outputs = []
        for name in self.output_names:
            shape, dtype = self._specs[name]
            host = np.empty(shape, dtype=dtype)
            self._cuda.to_host(host, self._buffers[name], self._stream)
            outputs.append(host)
        self._cuda.sync(self._stream)
        del keep
        return outputs

    def close(self) -> None:
        if getattr(self, "_buffers", None):
            for ptr in self._buffers.values():
                self._cuda.free(ptr)
            self._buffers = {}
        if getattr(self, "_stream", None):
            self._cuda.destroy_stream(self._stream)
            self._stream = None
        self._context = self._engine = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
