"""ONNX Runtime int8 on x86 CPUs without VNNI (issue 14, audit section 3): u8s8 dot products can
saturate there, so the weights are quantized to 7 bits. /proc/cpuinfo is a fixture; the engines
are real ONNX Runtime builds inspected with onnx."""

import platform

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from adaexport.backends import compile_engine
from adaexport.backends.onnxruntime_backend import cpu_has_vnni, reduce_range_for
from adaexport.targets import load_target, parse_target

from .test_hw_tensorrt import CALIBRATION, conv_gemm_model

AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx avx2 fma\n"
WITH_VNNI = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n"


def cpuinfo(tmp_path, monkeypatch, text):
    (tmp_path / "proc").mkdir(exist_ok=True)
    (tmp_path / "proc/cpuinfo").write_text(text)
    monkeypatch.setenv("ADAEXPORT_SYSFS_ROOT", str(tmp_path))


def int8_weights(path) -> list[np.ndarray]:
    graph = onnx.load(str(path)).graph
    return [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == TensorProto.INT8 and t.dims]


def test_vnni_is_read_from_cpuinfo(tmp_path, monkeypatch):
    cpuinfo(tmp_path, monkeypatch, AVX2_ONLY)
    x86 = load_target("x86-cpu")
    assert cpu_has_vnni() is False and reduce_range_for(x86, "x86_64")[0] is True
    cpuinfo(tmp_path, monkeypatch, WITH_VNNI)
    assert cpu_has_vnni() is True and reduce_range_for(x86, "x86_64") == (False, "x86 CPU with VNNI")
    assert reduce_range_for(load_target("arm64-cpu"), "aarch64")[0] is False
    section = "[backends.onnxruntime]\n"
    pinned = parse_target(x86.source.replace(section, section + "reduce_range = true\n"))
    assert reduce_range_for(pinned, "x86_64") == (True, "the target's reduce_range = true")


@pytest.mark.parametrize("flags, limit", [(AVX2_ONLY, 64), (WITH_VNNI, 127)])
def test_x86_int8_engines_use_7_bit_weights_without_vnni(tmp_path, monkeypatch, flags, limit):
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("reduce_range 'auto' applies to x86 hosts")
    cpuinfo(tmp_path, monkeypatch, flags)
    art = compile_engine(conv_gemm_model(tmp_path / "p.onnx"), tmp_path / "out", "x86-cpu", "onnxruntime", "int8",
                         CALIBRATION)
    assert art.facts["quantization"]["reduce_range"] is (limit == 64)
    weights = int8_weights(art.path)
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) == limit   # per-channel max
