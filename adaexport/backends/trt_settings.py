"""TensorRT build settings as plain data, tested without TensorRT: what the installed
module offers (`TrtCaps`, `caps_of`, typical capabilities per generation), the network and
builder flags and the ONNX a build at each precision parses (`build_settings`), where a
plan's weights are, the trtexec line that builds the same engine, and the build log's
DLA fallback paragraph. `trt_build` applies them through the TensorRT API."""

from __future__ import annotations

import dataclasses
import os
import shlex
from typing import Any, Sequence

from .base import BackendError
from .trt_system import _version_tuple

DEFAULT_WORKSPACE_MB = 1024
DEFAULT_OPTIMIZATION_LEVEL = 3        # TensorRT's default builder optimisation level


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
