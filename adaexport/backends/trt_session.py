"""The runtime side of TensorRT: a deserialised plan (refitted at load when its weights were
stripped) run with the tensor API on CUDA buffers, and the logger it and the builder share.
CUDA goes through `cuda_runtime`; nothing of the toolchain side (`trt_build`, `trt_settings`, onnx)
is imported."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .base import BackendError, PlanMismatch, Session, _check_feed, io_spec
from .cuda_runtime import CudaRuntime
from .trt_system import SystemKey, check_plan_key, system_key


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
