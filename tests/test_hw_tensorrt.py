"""TensorRT paths the vendors' sources say were wrong (issue 14, audit section 1), checked
without TensorRT: the QDQ model a cross-build writes (real ONNX Runtime quantization,
inspected with onnx), lint, trtexec lines per TensorRT version, DLA int8 from a
calibration cache, the post-fusion placement report, and the timing-cache file logic.
The TensorRT builds themselves run where `import tensorrt` works and skip elsewhere."""

import json
import multiprocessing
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from adaexport.backends import BackendError, get_backend, pending_engine
from adaexport.backends import trt_dla, trt_timing_cache
from adaexport.backends.lint import lint_onnx
from adaexport.backends.onnxruntime_backend import quantize_qdq
from adaexport.backends.trt_settings import (
    CAPS_8_5,
    CAPS_8_6,
    CAPS_10,
    CAPS_11,
    build_settings,
    caps_of,
    trtexec_command,
)
from adaexport.targets import load_target

NX, AGX, GPU = (load_target(n) for n in ("jetson-orin-nx", "jetson-agx-orin", "nvidia-gpu"))


def conv_gemm_model(path):
    """image (1,1,4,4) -> Conv (with bias) -> Reshape -> Gemm (with bias) -> MatMul: the op kinds
    (and the biases) of the exported AdaPerceiver that ONNX Runtime's quantizer touches."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
             for name, shape in (("W", (4, 1, 3, 3)), ("B", (4,)), ("GW", (8, 64)), ("GB", (8,)), ("MW", (8, 8)))]
    inits.append(numpy_helper.from_array(np.array([1, -1], np.int64), "shape"))
    nodes = [helper.make_node("Conv", ["image", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "shape"], ["r"]),
             helper.make_node("Gemm", ["r", "GW", "GB"], ["g"], transB=1),
             helper.make_node("MatMul", ["g", "MW"], ["logits"])]
    graph = helper.make_graph(nodes, "convgemm",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 8])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


CALIBRATION = np.random.default_rng(1).standard_normal((16, 1, 4, 4)).astype(np.float32)


def dequantize_inputs(path) -> dict[str, str]:
    """DequantizeLinear node -> the element type of its input, read from the ONNX file: an
    initializer's type, else the producing QuantizeLinear's zero point type."""
    graph = onnx.load(str(path), load_external_data=False).graph
    types = {t.name: t.data_type for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            types[node.output[0]] = types.get(node.input[2], TensorProto.UINT8) if len(node.input) > 2 \
                else TensorProto.UINT8
    return {n.name: TensorProto.DataType.Name(types[n.input[0]]) for n in graph.node if n.op_type == "DequantizeLinear"}


def weight_layout(path) -> dict[str, str]:
    """How each Conv/Gemm/MatMul gets its weight (input 1) and its bias (input 2)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    layout = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        dq = producer.get(node.input[1])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        weight = "Q/DQ pair on a float weight" if q is not None and q.op_type == "QuantizeLinear" \
            and inits[q.input[0]].data_type == TensorProto.FLOAT else "other"
        bias = None
        if len(node.input) > 2:
            bias = "float initializer" if node.input[2] in inits and \
                inits[node.input[2]].data_type == TensorProto.FLOAT else "quantized"
        layout[node.op_type] = f"{weight}, bias {bias}"
    return layout


# --------------------------------------------------------------------------- 1.1 the QDQ model


def no_tensorrt():
    if get_backend("tensorrt").available():
        pytest.skip("TensorRT is installed here: engines are built, not left pending")


def test_a_jetson_cross_build_writes_a_qdq_model_tensorrt_parses(tmp_path):
    no_tensorrt()
    art = pending_engine(conv_gemm_model(tmp_path / "p.onnx"), tmp_path, "jetson-orin-nx", "int8", CALIBRATION)
    qdq = tmp_path / art.facts["source"]
    assert qdq.name == "p-tensorrt-int8.qdq.onnx"
    kinds = dequantize_inputs(qdq)
    assert kinds and set(kinds.values()) == {"INT8"}, kinds          # no INT32 (bias), no UINT8
    assert weight_layout(qdq) == {"Conv": "Q/DQ pair on a float weight, bias float initializer",
                                  "Gemm": "Q/DQ pair on a float weight, bias float initializer",
                                  "MatMul": "Q/DQ pair on a float weight, bias None"}
    assert lint_onnx(qdq, "tensorrt", "10.3.0") == [] and lint_onnx(qdq, "tensorrt", "8.6.1") == []
    assert art.facts["quantization"]["bias"] == "float (not quantized)"


def test_lint_rejects_int32_and_uint8_dequantize_inputs_for_tensorrt(tmp_path):
    model = conv_gemm_model(tmp_path / "p.onnx")
    quantize_qdq(model, tmp_path / "ort.onnx", CALIBRATION, symmetric_activations=True)     # ORT defaults
    assert dequantize_inputs(tmp_path / "ort.onnx")["B_DequantizeLinear"] == "INT32"
    problems = lint_onnx(tmp_path / "ort.onnx", "tensorrt", "10.3.0")
    assert any("B_DequantizeLinear: input B_quantized is INT32" in p and "QuantizeBias off" in p for p in problems)
    assert any("GB_DequantizeLinear" in p and "INT32" in p for p in problems)
    quantize_qdq(model, tmp_path / "u8.onnx", CALIBRATION, symmetric_activations=False)     # the CPU form
    problems = lint_onnx(tmp_path / "u8.onnx", "tensorrt", "10.3.0")
    assert any("c_DequantizeLinear: input c_QuantizeLinear_Output is UINT8" in p for p in problems)
    assert lint_onnx(tmp_path / "u8.onnx", "onnxruntime") == []                 # ONNX Runtime runs it


# --------------------------------------------------------------------------- 1.4 trtexec per version


def test_trtexec_line_has_only_the_options_of_its_tensorrt():
    line = trtexec_command(build_settings(NX, "fp16", CAPS_8_5, "p.onnx"), "p.plan")
    assert "--buildOnly" in line and "--skipInference" not in line
    assert not any(a.startswith("--builderOptimizationLevel") for a in line)
    for caps in (CAPS_8_6, CAPS_10):
        line = trtexec_command(build_settings(NX, "fp16", caps, "p.onnx"), "p.plan")
        assert "--skipInference" in line and "--builderOptimizationLevel=3" in line and "--buildOnly" not in line
    assert "--stronglyTyped" in trtexec_command(build_settings(NX, "fp16", CAPS_11, "p.fp16.onnx"), "p.plan")


# --------------------------------------------------------------------------- 1.3 the DLA


def test_dla_is_refused_on_a_tensorrt_without_dla():
    assert CAPS_10.dla and CAPS_8_6.dla and not CAPS_11.dla
    with pytest.raises(BackendError, match="TensorRT 11.0.0 has no DLA support"):
        build_settings(AGX, "fp16", CAPS_11, "p.fp16.onnx", dla_core=0)
    with pytest.raises(BackendError, match="calibration cache"):
        build_settings(AGX, "int8", CAPS_10, "p.onnx", dla_core=0)


def test_caps_of_reads_dla_support_from_the_version():
    import types

    def fake(version):
        flags = types.SimpleNamespace(FP16=0, INT8=1)
        return types.SimpleNamespace(__version__=version, BuilderFlag=flags,
                                     NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=0),
                                     IBuilderConfig=type("IBuilderConfig", (), {"builder_optimization_level": 3}))

    assert caps_of(fake("10.3.0")).dla and not caps_of(fake("11.1.0")).dla


def test_dla_int8_cross_build_uses_the_exported_model_and_a_calibration_cache(tmp_path):
    no_tensorrt()
    model = conv_gemm_model(tmp_path / "p.onnx")
    art = pending_engine(model, tmp_path, "jetson-orin-nx", "int8", CALIBRATION, dla_core=0)
    settings = art.facts["settings"]
    assert settings["source_kind"] == "calib" and art.facts["source"] == "p.onnx"      # no Q/DQ nodes for the DLA
    assert "--calib=p-tensorrt-int8-dla0.calib.cache" in art.facts["trtexec"]
    assert "--useDLACore=0" in art.facts["trtexec"] and "--int8" in art.facts["trtexec"]
    cache = (tmp_path / settings["calibration_cache"]).read_text().splitlines()
    assert cache[0] == "TRT-100300-EntropyCalibration2"                                 # TensorRT 10.3's header
    # every activation scale of the QDQ model it came from, keyed by the fp32 model's tensor names
    graph = onnx.load(str(tmp_path / art.facts["calibration_from"])).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    expected = {n.input[0]: float(inits[n.input[1]]) for n in graph.node
                if n.op_type == "QuantizeLinear" and n.input[0] not in inits}
    expected["logits"] = expected.pop("logits_QuantizeLinear_Input")                   # a renamed graph output
    got = trt_dla.read_cache("\n".join(cache))
    assert set(got) == {"image", "c", "r", "g", "logits"} == set(expected)
    assert got == pytest.approx(expected, rel=1e-7)


def test_calibration_cache_format_matches_trtexec():
    # the header integer is NV_TENSORRT_VERSION; the value is the float32 bit pattern in hex (qdq-translator)
    assert trt_dla.calibration_version("8.6.1.6") == 8601 and trt_dla.calibration_version("10.3.0") == 100300
    text = trt_dla.cache_text({"image": 0.1, "c": 1.0}, "8.6.1")
    assert text == "TRT-8601-EntropyCalibration2\nimage: 3dcccccd\nc: 3f800000\n"
    assert trt_dla.read_cache(text) == pytest.approx({"image": 0.1, "c": 1.0})


def test_placement_report_counts_the_layers_after_fusion():
    log = ["---------- Layers Running on DLA ----------",
           "[DlaLayer] {ForeignNode[/patch/Conv.../blocks.0/Add]}",
           "---------- Layers Running on GPU ----------",
           "[GpuLayer] SHUFFLE: /Reshape", "[GpuLayer] MYELIN: {ForeignNode[/blocks.1/MatMul.../head/Gemm]}"]
    inspector = json.dumps({"Layers": [{"Name": "image to nvm", "LayerType": "Reformat"},
                                       {"Name": "{ForeignNode[/patch/Conv.../blocks.0/Add]}", "LayerType": "DLA"},
                                       {"Name": "/Reshape", "LayerType": "Shuffle"},
                                       {"Name": "{ForeignNode[/blocks.1/MatMul.../head/Gemm]}", "LayerType": "Myelin"}],
                            "Bindings": ["image", "logits"]})
    before = [{"index": 7, "name": "/blocks.1/MatMul", "type": "MATRIX_MULTIPLY"}]
    report = trt_dla.placement_report(0, log, trt_dla.engine_layers(inspector), before)
    assert report["on_dla"] == ["{ForeignNode[/patch/Conv.../blocks.0/Add]}"]
    assert report["on_gpu"] == ["SHUFFLE: /Reshape", "MYELIN: {ForeignNode[/blocks.1/MatMul.../head/Gemm]}"]
    assert report["engine_layers"] == 4 and report["unsupported_before_fusion"] == before
    assert report["summary"].startswith("DLA core 0 after fusion: 1 DLA subgraph(s)")
    empty = trt_dla.placement_report(1, ["[GpuLayer] CONVOLUTION: /patch/Conv"], None, [])
    assert empty["summary"] == "DLA core 1 requested, but no layer runs on the DLA after fusion"
    assert trt_dla.placement_report(None, [], None, [])["summary"] == "GPU engine (no DLA)"


# --------------------------------------------------------------------------- 1.2 the timing cache


class StandInCache:
    """What the TensorRT binding's ITimingCache offers: serialize() and combine()."""

    def __init__(self, entries=(), device="here"):
        self.entries, self.device = dict(entries), device

    def serialize(self):
        return json.dumps({"device": self.device, "entries": self.entries}).encode()

    def combine(self, other, ignore_mismatch):
        if other.device != self.device and not ignore_mismatch:
            return False
        self.entries.update(other.entries)
        return True


class StandInConfig:
    """IBuilderConfig's cache calls as the binding behaves (pyCore.cpp): create_timing_cache
    returns None (nullptr) for bytes it cannot read; set_timing_cache returns False for a cache
    of another device when mismatches are not ignored. `slow` widens a writer's read-merge-write."""

    def __init__(self, slow=0.0):
        self.cache, self.slow = None, slow

    def create_timing_cache(self, data):
        time.sleep(self.slow)
        if not data:
            return StandInCache()
        try:
            raw = json.loads(data)
        except ValueError:
            return None
        return StandInCache(raw["entries"], raw["device"])

    def set_timing_cache(self, cache, ignore_mismatch):
        if cache is None:
            raise TypeError("set_timing_cache(): incompatible function arguments")    # what pybind does with None
        if cache.device != "here" and not ignore_mismatch:
            return False
        self.cache = cache
        return True


@pytest.mark.parametrize("content, why", [
    (b"\x00\x01truncated", "not a timing cache this TensorRT can read"),
    (json.dumps({"device": "jetpack5", "entries": {"k": 1}}).encode(), "another device or TensorRT version"),
])
def test_a_cache_that_cannot_be_loaded_is_a_miss(tmp_path, content, why):
    path = tmp_path / "t.timing-cache"
    path.write_bytes(content)
    config = StandInConfig()
    cache, miss = trt_timing_cache.load(config, path)
    assert config.cache is cache and cache.entries == {} and why in miss and "starting afresh" in miss


def test_a_good_cache_is_used_and_a_missing_one_is_no_warning(tmp_path):
    path = tmp_path / "t.timing-cache"
    cache, miss = trt_timing_cache.load(StandInConfig(), path)
    assert miss is None and cache.entries == {}
    path.write_bytes(StandInCache({"conv": 3}).serialize())
    cache, miss = trt_timing_cache.load(StandInConfig(), path)
    assert miss is None and cache.entries == {"conv": 3}


def test_the_cache_name_carries_the_tensorrt_version(tmp_path):
    from adaexport.backends.trt_build import default_timing_cache

    name = trt_timing_cache.cache_name("jetson-orin-nx", "10.3.0.30")
    assert name == "tensorrt-jetson-orin-nx-trt10.3.0.timing-cache"
    assert default_timing_cache(tmp_path, NX, "8.5.2.2").name != default_timing_cache(tmp_path, NX, "10.3.0").name


def _writer(path, key, start):
    while time.time() < start:
        time.sleep(0.001)
    trt_timing_cache.save(StandInConfig(slow=0.05), StandInCache({key: 1}), path)


def test_concurrent_writers_merge_into_the_file(tmp_path):
    path = tmp_path / "t.timing-cache"
    path.write_bytes(StandInCache({"earlier": 1}).serialize())
    start = time.time() + 0.5
    workers = [multiprocessing.get_context("fork").Process(target=_writer, args=(path, f"engine{i}", start))
               for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert all(w.exitcode == 0 for w in workers)
    assert json.loads(path.read_bytes())["entries"] == {"earlier": 1, "engine0": 1, "engine1": 1, "engine2": 1,
                                                        "engine3": 1}


# --------------------------------------------------------------------------- with TensorRT


def test_real_tensorrt_builds_over_a_corrupt_timing_cache(tensorrt, tmp_path):
    from adaexport.backends import compile_engine

    model = conv_gemm_model(tmp_path / "p.onnx")
    caps = caps_of(tensorrt)
    cache = tmp_path / trt_timing_cache.cache_name("nvidia-gpu", caps.version)
    cache.write_bytes(b"not a timing cache")
    art = compile_engine(model, tmp_path, "nvidia-gpu", "tensorrt", "int8", CALIBRATION)
    assert art.status == "ready" and cache.stat().st_size > len(b"not a timing cache")
    assert any("timing cache miss" in line for line in art.facts["build_log"])
