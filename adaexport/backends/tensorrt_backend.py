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
(libcudart: cudaMalloc, cudaMemcpyAsync, streams; `cuda_runtime`), so sessions need neither
cuda-python nor pycuda; engines run with the TensorRT 10 tensor API (num_io_tensors,
get_tensor_name, set_tensor_address, execute_async_v3; all present since 8.5).

This module is the backend class; the rest lives beside it:

* `trt_settings`: capabilities -> build settings, trtexec command lines, the DLA fallback
  report (plain data, tested without TensorRT);
* `trt_system`: system keys and mismatch messages (also tested without TensorRT);
* `trt_build`: the ONNX a build parses and the builder calls (toolchain side);
* `trt_session`: the session that runs (and refits) a plan (runtime side);
* `cuda_runtime`, `trt_dla`, `trt_timing_cache`: libcudart, DLA int8 and placement, timing caches.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from . import trt_dla
from .base import (
    Artifact,
    Availability,
    Backend,
    BackendError,
    CompileOptions,
    Staging,
    finalize,
    sha256_file,
    write_sidecar,
)
from .cuda_runtime import CudaRuntime
from .onnx_tensors import family_files
from .trt_build import _build_plan, default_timing_cache, prepare_source
from .trt_session import TrtSession, _Logger
from .trt_settings import (
    CAPS_10,
    BuildSettings,
    TrtCaps,
    build_settings,
    caps_of,
    needed_source,
    trtexec_command_line,
    weights_fact,
)
from .trt_system import SystemKey, system_key

PLAN_SUFFIX = ".plan"


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

    def weight_sharing(self, artifact: Artifact) -> dict[str, Any]:
        return {"group": None, "how": "not shared: a TensorRT engine holds its own weights in device memory "
                                      "(one plan per engine; a weight-stripped plan is refitted into its own copy)"}

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
