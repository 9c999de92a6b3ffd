"""A TensorRT build on the toolchain side: the ONNX a build parses (the exported model, a
float16 copy, a QDQ-quantized copy, or the DLA's calibration cache; `prepare_source`), the
family's timing cache, and one plan built with the TensorRT builder API from `BuildSettings`
(`_build_plan`, which also reports where the layers run on a DLA)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from . import trt_dla, trt_timing_cache
from .base import BackendError, BackendUnavailable, Staging
from .trt_settings import CAPS_10, BuildSettings, format_dla_fallback

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


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
