"""ONNX Runtime: fp32, fp16 and int8 (static QDQ quantization) engines.

The artifact is the model as ONNX Runtime optimised it (SessionOptions.
optimized_model_filepath) at the target's portable graph-optimisation level
("extended" by default: ONNX Runtime documents that models saved at the "all" level
carry hardware-specific layouts), with every weight embedded: it loads on its own,
without the family's shared weights file. Sessions then run at the "all" level with
the target's thread count.

* fp16: every float tensor converted to float16 by ONNX Runtime's converter
  (onnxruntime.transformers.float16, keep_io_types=True), so the engine still takes
  and returns float32.
* int8: static quantization in the QDQ format (onnxruntime.quantization.
  quantize_static) of the Conv/MatMul/Gemm weights (int8, per channel) and their
  activations (uint8), calibrated (MinMax) on real preprocessed samples. The artifact is
  that QDQ model reading its int8 weights, their scales and its float tensors from the
  family's int8 twin (``int8_twin``, ``shared_int8``: one byte a parameter for the whole
  family, the full tensors' scales), or, with the target's ``int8_weights = "embedded"``,
  with its own int8 copy and the point's own scales (a faster load). On an x86 CPU
  without VNNI, u8s8 dot products can saturate (ONNX Runtime's quantization docs; the
  same hardware issue as OpenVINO's "Saturation (overflow) Issue Workaround"), so the
  weights are quantized to 7 bits there (``reduce_range``): the target's
  ``[backends.onnxruntime] reduce_range`` (true/false), or "auto" (default): when the
  building x86 host's /proc/cpuinfo has neither avx512_vnni nor avx_vnni.

Toolchain side: compile() imports onnx and onnxruntime's tools. Runtime side: open()
imports onnxruntime only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .base import (
    Artifact,
    Availability,
    Backend,
    BackendError,
    CompileOptions,
    Session,
    Staging,
    _check_feed,
    calibration_batches,
    compress_graph,
    digest_array,
    finalize,
    io_spec,
    sha256_file,
)

from .shared_int8 import int8_weights

log = logging.getLogger("adaexport.backends.onnxruntime")


QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
CALIBRATION_LIMIT = 512          # samples used at most
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool",
              "tensor(double)": "float64"}
_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}


def _level(ort, name: str):
    if name not in _LEVELS:
        raise BackendError(f"onnxruntime: graph_optimization_level must be one of {', '.join(_LEVELS)}, got {name!r}")
    return getattr(ort.GraphOptimizationLevel, _LEVELS[name])


@contextlib.contextmanager
def _quiet_logging():
    """onnxruntime's quantization tools log advice on the root logger; keep the build log clean."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def model_batch(onnx_path: Path, input_name: str | None = None) -> tuple[str, int]:
    """(name, batch) of the model's first (or named) graph input."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    inits = {t.name for t in proto.graph.initializer}
    for value in proto.graph.input:
        if value.name in inits or (input_name and value.name != input_name):
            continue
        dim = value.type.tensor_type.shape.dim[0]
        return value.name, int(dim.dim_value) if dim.HasField("dim_value") and dim.dim_value > 0 else 1
    raise BackendError(f"{onnx_path.name}: no graph input")


def convert_fp16(src: Path, dst: Path) -> dict[str, Any]:
    """Write a float16 copy of the ONNX model at src (external data resolved) to dst, with
    float32 inputs and outputs; every weight embedded."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = onnx.load(str(src))  # resolves the external weights next to src
    with _quiet_logging():
        converted = convert_float_to_float16(proto, keep_io_types=True)
    onnx.save(converted, str(dst))
    return {"conversion": "onnxruntime.transformers.float16 (keep_io_types)"}


# What TensorRT's explicit quantization parses (onnx-tensorrt docs/operators.md: DequantizeLinear
# takes INT8 (10.x: also FP8/INT4) input with zero points of 0; an INT32 bias DequantizeLinear is
# rejected: "only activation types allowed as input to this layer"). The options are those of
# TensorRT Model Optimizer's trt_guided_options: biases stay float, every weight gets its own
# QuantizeLinear -> DequantizeLinear pair, every consumer its own activation pair.
TENSORRT_QDQ_OPTIONS = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                        "AddQDQPairToWeight": True, "DedicatedQDQPair": True}


def cpu_has_vnni(root: str | os.PathLike | None = None) -> bool | None:
    """Whether the CPU has 8-bit VNNI dot products (avx512_vnni / avx_vnni in /proc/cpuinfo under
    `root`, default $ADAEXPORT_SYSFS_ROOT or "/"); None where cpuinfo cannot be read."""
    from ..hardware.machine import cpu_facts

    isa = cpu_facts(root)["isa"]
    return None if isa is None else bool(set(isa) & {"avx512_vnni", "avx_vnni"})


def reduce_range_for(target, machine: str | None = None) -> tuple[bool, str]:
    """(quantize weights to 7 bits?, why) for ONNX Runtime int8 engines of `target`."""
    import platform

    setting = target.options("onnxruntime").get("reduce_range", "auto")
    if isinstance(setting, bool):
        return setting, f"the target's reduce_range = {str(setting).lower()}"
    arch = (machine or platform.machine()).lower()
    if arch not in ("x86_64", "amd64") or target.arch not in (None, "x86_64"):
        return False, f"not an x86 CPU ({arch})"
    vnni = cpu_has_vnni()
    if vnni is None:
        return True, "x86 CPU whose VNNI support cannot be read: 7-bit weights to avoid u8s8 saturation"
    return (False, "x86 CPU with VNNI") if vnni else (True, "x86 CPU without VNNI: 7-bit weights avoid u8s8 saturation")


def quantize_qdq(src: Path, dst: Path, calibration: np.ndarray, *, symmetric_activations: bool,
                 tensorrt: bool = False, reduce_range: bool = False, stand_ins: bool = False) -> dict[str, Any]:
    """Static QDQ quantization of src into dst (weights embedded), calibrated on real samples.

    symmetric_activations=True gives int8 activations with zero points of 0; False gives
    ONNX Runtime's preferred CPU form (uint8 activations, int8 weights). tensorrt=True
    (implies symmetric activations) lays the model out as TensorRT parses it
    (TENSORRT_QDQ_OPTIONS: float biases, a Q/DQ pair per weight). reduce_range quantizes
    the weights to 7 bits. stand_ins: the quantizer reads the point with zero stand-ins for
    its weights (`shared_int8.write_stand_ins`; calibration still runs the point itself), for an
    engine whose weights `share_weights(..., stand_ins=True)` then binds to the family's twin."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, \
        quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    from .ort_calibration import cache_supported, minmax_ranges
    from .shared_int8 import StandInError, write_stand_ins

    symmetric_activations = symmetric_activations or tensorrt
    name, batch = model_batch(src)
    batches = calibration_batches(calibration, batch, CALIBRATION_LIMIT)
    activation = QuantType.QInt8 if symmetric_activations else QuantType.QUInt8
    extra = dict(TENSORRT_QDQ_OPTIONS) if tensorrt else {"ActivationSymmetric": symmetric_activations,
                                                         "WeightSymmetric": True}
    settings = dict(quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                    activation_type=activation, weight_type=QuantType.QInt8, reduce_range=reduce_range,
                    calibrate_method=CalibrationMethod.MinMax, extra_options=extra)
    lean = cache_supported()
    with _quiet_logging(), tempfile.TemporaryDirectory(prefix="adaexport-calibration-") as tmp:
        if lean:     # the ranges without a copy of the weights (ort_calibration), then ORT's quantizer
            cache = Path(tmp) / "ranges.json"
            save_tensors_data(minmax_ranges(src, batches, name, QUANTIZED_OPS), cache)
            quantized = src
            if stand_ins:
                quantized = Path(tmp) / "stand_ins.onnx"
                write_stand_ins(src, quantized)
            quantize_static(str(quantized), str(dst), None, calibration_cache_path=str(cache), **settings)
        else:
            if stand_ins:
                raise StandInError("this onnxruntime's quantize_static takes no precomputed ranges")

            class Reader(CalibrationDataReader):
                """Real samples, one engine batch at a time."""

                def __init__(self):
                    self.i = 0

                def get_next(self):
                    if self.i >= len(batches):
                        return None
                    self.i += 1
                    return {name: batches[self.i - 1]}

                def rewind(self):
                    self.i = 0

            quantize_static(str(src), str(dst), Reader(), **settings)
    samples = sum(len(b) for b in batches)
    facts = {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
             "ops": list(QUANTIZED_OPS), "per_channel": True, "calibration": "MinMax",
             "calibrator": "adaexport.backends.ort_calibration (weights memory-mapped, not prepacked)" if lean
             else "onnxruntime.quantization.MinMaxCalibrater",
             "activations": "int8 symmetric" if symmetric_activations else "uint8",
             "weights": "int8 symmetric" + (", 7-bit range" if reduce_range else ""),
             "reduce_range": reduce_range, "calibration_samples": samples,
             "calibration_sha256": digest_array(calibration[:samples])}
    if tensorrt:
        facts.update(layout="tensorrt", bias="float (not quantized)", extra_options=extra)
    return {"quantization": facts}


def _embedded_bytes(path: Path) -> bytes:
    """The model at `path` serialised with its external weights read in (protobuf: < 2 GiB)."""
    import onnx

    proto = onnx.load(str(path))
    size = proto.ByteSize()
    if size >= 2**31:
        raise BackendError(f"{path.name}: {size / 2**30:.1f} GiB with its weights, over protobuf's 2 GiB limit")
    return proto.SerializeToString()


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    runtime_modules = ("onnxruntime",)
    extension = ".onnx"
    precisions = ("fp32", "fp16", "int8")     # ONNX Runtime's CPU kernels have no bf16
    thread_option = "intra_op_num_threads"
    accepts_providers = True
    distributions = ("onnxruntime", "onnxruntime-gpu")

    @property
    def recipe(self) -> str:
        """int8 engines depend on the building CPU (reduce_range "auto"): it keys the build cache,
        with the form of their weights (2: the family's int8 twin; 3: no value infos; 4: biases
        computed in the graph, compact names; 5: the graph xz-compressed) and of their calibration
        (2: ort_calibration's session, not prepacked)."""
        return f"int8 weights 6, calibration 2, vnni={cpu_has_vnni()}"

    def support_table(self, version: str | None = None):
        from .lint import onnxruntime_table

        return onnxruntime_table(version)

    def available(self, precision: str | None = None) -> Availability:
        if precision is not None and precision not in self.precisions:
            return Availability.no(f"onnxruntime builds {', '.join(self.precisions)}, not {precision}")
        if importlib.util.find_spec("onnxruntime") is None:
            return Availability.no("the onnxruntime package is not installed (pip install onnxruntime)")
        if precision is not None and importlib.util.find_spec("onnx") is None:
            return Availability.no("compiling needs the onnx package (pip install onnx)")
        return Availability.yes()

    def versions(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__}

    # ---------------------------------------------------------------- toolchain

    def compile(self, onnx_path: Path, target, precision: str, options: CompileOptions) -> Artifact:
        import onnxruntime as ort

        self.check_precision(precision)
        self.require(precision)
        onnx_path = Path(onnx_path)
        settings = target.options(self.name)
        level = str(settings.get("graph_optimization_level", "extended"))
        threads = options.threads if options.threads is not None else int(settings.get("threads", target.threads))
        main = self.artifact_name(onnx_path, precision, options) + self.extension
        facts: dict[str, Any] = {"source": onnx_path.name, "source_sha256": sha256_file(onnx_path),
                                 "saved_optimization_level": level, "onnxruntime": ort.__version__}
        runtime: dict[str, Any] = {"intra_op_num_threads": threads, "graph_optimization_level": "all",
                                   "providers": list(settings.get("providers", ["CPUExecutionProvider"]))}
        files = [main]
        share = precision == "int8" and int8_weights(settings, self.name) == "shared"
        with Staging(options.out_dir) as stage:
            if precision == "int8":     # the QDQ model itself, reading the family's weights (shared_int8)
                reduce_range, why = reduce_range_for(target)
                qmax = 63 if reduce_range else 127
                if share:
                    reads = self._quantize_shared(onnx_path, stage.path(main), options, facts, runtime,
                                                  reduce_range, qmax)
                    if reads:       # a graph and nothing else: stored compressed
                        main = compress_graph(stage.path(main))
                    files = [main, *reads]
                else:
                    facts.update(quantize_qdq(onnx_path, stage.path(main), options.calibration,
                                              symmetric_activations=False, reduce_range=reduce_range))
                facts["quantization"]["reduce_range_reason"] = why
            else:
                self._save_optimised(ort, onnx_path, stage, main, precision, level, facts)
            stage.commit([main])
        artifact = Artifact(backend=self.name, precision=precision, files=files, root=Path(options.out_dir),
                            runtime=runtime, facts=facts)
        session = OrtSession(artifact.path, artifact.runtime)
        return finalize(artifact, session, options.check)

    @staticmethod
    def _save_optimised(ort, onnx_path: Path, stage: Staging, main: str, precision: str, level: str,
                        facts: dict) -> None:
        """Write the (fp16: converted) model as ONNX Runtime optimises it, every weight embedded."""
        source = onnx_path
        if precision == "fp16":
            source = stage.path("fp16.onnx")
            facts.update(convert_fp16(onnx_path, source))
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = _level(ort, level)
        session_options.optimized_model_filepath = str(stage.path(main))
        session_options.intra_op_num_threads = 1
        session_options.log_severity_level = 3
        try:
            # From bytes with every weight embedded: ORT keeps external-data references of
            # initializers it leaves alone, and the artifact must not depend on weights.bin.
            ort.InferenceSession(_embedded_bytes(source), session_options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise BackendError(f"onnxruntime could not load {onnx_path.name} ({precision}): {exc}") from None
        if not stage.path(main).is_file():
            raise BackendError(f"onnxruntime did not write the optimised model for {onnx_path.name}")

    def _quantize_shared(self, onnx_path: Path, qdq: Path, options: CompileOptions, facts: dict, runtime: dict,
                         reduce_range: bool, qmax: int) -> list[str]:
        """Quantize the point into `qdq` with stand-ins for its weights, then make it read the
        family's int8 weights (`_share_int8`); where a stand-in cannot be bound (StandInError),
        quantize the point itself instead. The files the engine reads besides itself."""
        from .shared_int8 import StandInError

        def quantize_and_share(stand_ins: bool) -> list[str]:
            facts.update(quantize_qdq(onnx_path, qdq, options.calibration, symmetric_activations=False,
                                      reduce_range=reduce_range, stand_ins=stand_ins))
            facts["quantization"]["weights_quantized"] = ("stand-ins (the family's int8 weights replace them)"
                                                          if stand_ins else "the point's own")
            return self._share_int8(qdq, onnx_path, Path(options.out_dir), facts, runtime, qmax, stand_ins)

        try:
            return quantize_and_share(stand_ins=True)
        except StandInError as exc:
            log.debug("%s: %s; quantizing its own weights", onnx_path.name, exc)
        return quantize_and_share(stand_ins=False)

    @staticmethod
    def _share_int8(qdq: Path, onnx_path: Path, out_dir: Path, facts: dict, runtime: dict, qmax: int,
                    stand_ins: bool = False) -> list[str]:
        """Make the QDQ model read the family's int8 weights (int8_twin, 7-bit where `qmax` is 63;
        see shared_int8); the files it then reads besides itself, relative to `out_dir`."""
        from .onnx_tensors import family_relpath
        from .shared_int8 import share_weights

        shared = share_weights(qdq, onnx_path, qmax, stand_ins)
        facts["saved_optimization_level"] = "none: the QDQ model, optimised when a session loads it"
        facts.update(shared)
        reads = [family_relpath(onnx_path.parent / f, out_dir) for f in shared.pop("reads", [])]
        if reads:
            runtime["external_data_dir"] = os.path.dirname(reads[0]) or "."
        return reads

    # ---------------------------------------------------------------- runtime

    def weight_sharing(self, artifact: Artifact) -> dict[str, Any]:
        """Only the family's fp32 ONNX engines share (``ort_prepacked``); a compiled ONNX
        Runtime engine holds its own weights."""
        if artifact.runtime.get("external_data_dir"):
            how = "not shared: its int8 weights are read from the family's int8 twin into the session's own " \
                  "memory (prepacked there)"
        else:
            how = f"not shared: the {artifact.precision} model embeds its own weights"
        return {"group": None, "how": how}

    def open(self, artifact, **overrides: Any) -> "OrtSession":
        art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
        return OrtSession(art.path, {**art.runtime, **overrides})


_ARENA_LOCK = threading.Lock()
_arena_registered = False


def _shared_arena(ort) -> None:
    """Register, once per process, the CPU arena that sessions with ``session.use_env_allocators``
    share: the sessions of a family are rarely run at once, so one arena holds the activations
    of whichever runs (a per-session arena keeps each one's peak)."""
    global _arena_registered
    with _ARENA_LOCK:
        if not _arena_registered:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
            _arena_registered = True


class OrtSession(Session):
    """An ONNX Runtime session. ``sharing``: set for a family ONNX opened from the family's
    prepacked cache (``ort_prepacked``): its weights are prepacked buffers mapped from the one
    file every session of the family maps, and its activations live in the process's shared
    CPU arena; the text says how it shares (``options["sharing"]``)."""

    def __init__(self, path: Path, runtime: dict[str, Any], sharing: str | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        threads = int(runtime.get("intra_op_num_threads", 0) or 0)
        level = str(runtime.get("graph_optimization_level", "all"))
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = _level(ort, level)
        options.log_severity_level = 3
        if sharing:
            _shared_arena(ort)
            options.add_session_config_entry("session.use_env_allocators", "1")
        have = ort.get_available_providers()
        providers = [p for p in runtime.get("providers", ["CPUExecutionProvider"]) if p in have]
        try:
            from .shared_int8 import session_source

            self._session = ort.InferenceSession(session_source(Path(path), runtime, options), options,
                                                 providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            raise BackendError(f"onnxruntime could not open {Path(path).name}: {exc}") from None
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]
        self.providers = self._session.get_providers()
        self.sharing = sharing
        self.options = {"backend": "onnxruntime", "threads": threads, "providers": list(self.providers),
                        "graph_optimization_level": level, "shared_weights": bool(sharing),
                        "sharing": sharing, "prepacking": True}

    def io(self) -> tuple[list[dict], list[dict]]:
        ins, outs = self._session.get_inputs(), self._session.get_outputs()
        return (io_spec([i.name for i in ins], [i.shape for i in ins], [_ORT_TYPES.get(i.type, i.type) for i in ins]),
                io_spec([o.name for o in outs], [o.shape for o in outs],
                        [_ORT_TYPES.get(o.type, o.type) for o in outs]))

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        _check_feed(self, inputs)
        return self._session.run(self.output_names, inputs)

    def close(self) -> None:
        self._session = None
