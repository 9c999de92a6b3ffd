"""The backend interface without running engines: registry, lint, and the TensorRT logic
that needs no TensorRT (build settings, trtexec command lines, plan keys, DLA report)."""

import dataclasses
import json
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from adaexport.backends import (
    Artifact,
    Backend,
    BackendError,
    CompileOptions,
    backend_names,
    engine_choices,
    get_backend,
    open_artifact,
)
from adaexport.backends import base, registry
from adaexport.backends.lint import lint_model, lint_op_types, support_table
from adaexport.backends.trt_settings import (
    CAPS_8_6,
    CAPS_10,
    CAPS_11,
    TrtCaps,
    build_settings,
    caps_of,
    format_dla_fallback,
    needed_source,
    trtexec_command,
    trtexec_command_line,
)
from adaexport.backends.trt_system import SystemKey, check_plan_key
from adaexport.targets import load_target

# The op types of every exported AdaPerceiver graph (opset 17).
OUR_OPS = ["Add", "Concat", "Conv", "Div", "Erf", "Gather", "Gemm", "LayerNormalization", "MatMul", "Mul", "Neg",
           "Reshape", "Softmax", "Transpose", "Unsqueeze"]


# --------------------------------------------------------------------------- registry


def test_builtin_backends_are_registered_as_entry_points():
    from importlib.metadata import entry_points

    registered = {ep.name: ep.value for ep in entry_points(group="adaexport.backends")}
    assert registered == registry.BUILTIN_BACKENDS
    assert backend_names()[:3] == ["onnxruntime", "openvino", "tensorrt"]
    for name in ("onnxruntime", "openvino", "tensorrt"):
        backend = get_backend(name)
        assert backend.name == name and get_backend(name) is backend
        assert backend.runtime_modules == (name,)


class _EchoSession(base.Session):
    input_names = ["image"]
    output_names = ["image"]

    def run(self, inputs):
        return [inputs["image"]]


class EchoBackend(Backend):
    """A third-party backend, as another package would register it."""
    name = "echo"

    def available(self, precision=None):
        return base.Availability.yes()

    def versions(self):
        return {"echo": "1.0"}

    def compile(self, onnx_path, target, precision, options):
        raise BackendError("not a compiler")

    def open(self, artifact, **overrides):
        return _EchoSession()


def test_other_packages_add_backends_through_the_entry_point_group(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_entry_points", lambda: {"echo": f"{__name__}:EchoBackend",
                                                            "broken": "no_such_module:Thing"})
    monkeypatch.setattr(registry, "_INSTANCES", {})
    assert "echo" in backend_names()
    assert get_backend("echo").versions() == {"echo": "1.0"}
    with pytest.raises(BackendError, match="backend 'broken': cannot load no_such_module:Thing"):
        get_backend("broken")
    with pytest.raises(BackendError, match="unknown backend 'nope'"):
        get_backend("nope")
    art = Artifact(backend="echo", precision="fp32", files=["m.echo"], root=tmp_path)
    (tmp_path / "m.echo").write_bytes(b"x")
    base.write_sidecar(art)
    with open_artifact(tmp_path / "m.echo") as session:
        x = np.ones((1, 2), np.float32)
        assert session.run({"image": x})[0] is x


def test_tensorrt_unavailable_says_why():
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        state = get_backend("tensorrt").available("fp16")
        assert not state and str(exc) in state.reason
        choices = engine_choices("jetson-orin-nano")
        assert [(c.backend, c.precision, c.deferred) for c in choices] == [
            ("tensorrt", "fp16", True), ("tensorrt", "int8", True), ("onnxruntime", "fp32", False)]
    else:  # pragma: no cover - on a machine with TensorRT
        pytest.skip("tensorrt is installed here")


def test_artifact_sidecar_round_trip_and_safety(tmp_path):
    (tmp_path / "e.bin").write_bytes(b"weights")
    (tmp_path / "e.xml").write_bytes(b"<net/>")
    art = Artifact(backend="openvino", precision="fp16", files=["e.xml", "e.bin"], root=tmp_path,
                   runtime={"PERFORMANCE_HINT": "LATENCY"}, facts={"source": "p.onnx"})
    side = base.write_sidecar(art)
    assert side.name == "e.xml.json"
    loaded = Artifact.load(tmp_path / "e.xml")
    assert (loaded.backend, loaded.precision, loaded.files, loaded.runtime) == \
        ("openvino", "fp16", ["e.xml", "e.bin"], {"PERFORMANCE_HINT": "LATENCY"})
    assert Artifact.load(side).files == loaded.files
    loaded.verify()
    record = loaded.record(tmp_path.parent)
    assert record["file"] == f"{tmp_path.name}/e.xml" and len(record["sha256"]) == 64
    # size: every byte the engine reads (.xml, .bin and the sidecar), not the .xml alone
    assert record["size"] == 6 + 7 + side.stat().st_size == sum(f["size"] for f in record["files"])
    (tmp_path / "e.bin").write_bytes(b"tampered")
    with pytest.raises(BackendError, match="sha256 differs"):
        loaded.verify()
    raw = json.loads(side.read_text())
    raw["files"] = ["../../etc/passwd"]
    side.write_text(json.dumps(raw))
    with pytest.raises(BackendError, match="unsafe file path"):
        Artifact.load(tmp_path / "e.xml")
    with pytest.raises(BackendError, match="no artifact description"):
        Artifact.load(tmp_path / "missing.onnx")


def test_an_engine_reading_the_familys_files_owns_only_its_sidecar(tmp_path):
    """An engine that reads the family's files (an OpenVINO engine opening the point's ONNX)
    names them beside its folder, owns only <name>.json, and counts every byte it reads."""
    from adaexport.backends.onnx_tensors import family_relpath

    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "p.onnx").write_bytes(b"graph")
    (tmp_path / "onnx" / "weights.bin").write_bytes(b"shared weights")
    engines = tmp_path / "engines"
    engines.mkdir()
    files = [family_relpath(tmp_path / "onnx" / n, engines) for n in ("p.onnx", "weights.bin")]
    assert files == ["../onnx/p.onnx", "../onnx/weights.bin"]
    art = Artifact(backend="openvino", precision="fp32", files=files, root=engines, name="p-openvino-fp32")
    side = base.write_sidecar(art)
    assert side == engines / "p-openvino-fp32.json" and sorted(p.name for p in engines.iterdir()) == [side.name]
    loaded = Artifact.load(side)
    assert loaded.name == art.name and loaded.path == engines / "../onnx/p.onnx"
    record = loaded.record(tmp_path)
    assert record["file"] == "engines/p-openvino-fp32.json" and record["sha256"] == base.sha256_file(side)
    assert [f["file"] for f in record["files"]] == ["onnx/p.onnx", "onnx/weights.bin", "engines/p-openvino-fp32.json"]
    assert record["size"] == 5 + 14 + side.stat().st_size
    assert record["extra"]["files"] == ["onnx/p.onnx", "onnx/weights.bin", "engines/p-openvino-fp32.json"]
    with pytest.raises(BackendError, match="outside"):
        family_relpath(tmp_path.parent / "elsewhere.onnx", engines)
    raw = json.loads(side.read_text())
    for bad in ("../../etc/passwd", "../onnx/../../x", "/etc/passwd"):
        side.write_text(json.dumps({**raw, "files": [bad]}))
        with pytest.raises(BackendError, match="unsafe file path"):
            Artifact.load(side)
    side.write_text(json.dumps({**raw, "files": ["../onnx/p.onnx"], "name": "other"}))
    with pytest.raises(BackendError, match="not the sidecar's"):
        Artifact.load(side)


def test_calibration_batches():
    data = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    batches = base.calibration_batches(data, 4)
    assert [b.shape for b in batches] == [(4, 3), (4, 3)]
    assert len(base.calibration_batches(data, 1, limit=5)) == 5
    with pytest.raises(BackendError, match="int8 needs calibration inputs"):
        base.calibration_batches(None, 1)
    with pytest.raises(BackendError, match="at least one batch of 16"):
        base.calibration_batches(data, 16)


# --------------------------------------------------------------------------- lint


def test_our_op_types_fit_every_backend():
    for backend in ("onnxruntime", "openvino", "tensorrt"):
        assert lint_op_types(OUR_OPS, 17, backend) == [], backend
    assert lint_op_types(OUR_OPS, 17, "tensorrt", "10.3.0") == []
    assert lint_op_types(OUR_OPS + ["QuantizeLinear", "DequantizeLinear"], 17, "tensorrt", "8.6.1") == []


def test_lint_finds_problems():
    problems = lint_op_types(["Unique", "MatMul", "com.acme.Frobnicate"], 17, "tensorrt")
    assert problems == [
        "Unique: not supported by tensorrt's ONNX importer (onnx-tensorrt docs/operators.md)",
        "com.acme.Frobnicate: operators of domain 'com.acme' are not supported by tensorrt",
    ]
    assert lint_op_types(["MatMul"], 18, "tensorrt", "8.6.1") == \
        ["opset 18: tensorrt 8.6.1 reads opsets 9 to 17"]
    assert lint_op_types(["MatMul"], 18, "tensorrt", "10.3.0") == []
    assert lint_op_types(["LayerNormalization"], 17, "tensorrt", "8.5.3") == \
        ["LayerNormalization: needs TensorRT 8.6 or later (building for 8.5.3)"]
    assert lint_op_types(["com.microsoft.FusedMatMul"], 17, "onnxruntime") == []
    assert lint_op_types(["StringNormalizer"], 17, "openvino")
    assert support_table("onnxruntime").ops is None


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_lint_checks_structure_for_tensorrt():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    zero = helper.make_tensor("z", TensorProto.INT8, [], [3])
    axes_value = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("Unsqueeze", ["d", "axes"], ["u"]),
             helper.make_node("LayerNormalization", ["u", "g"], ["y", "mean"]),
             helper.make_node("Identity", ["mean"], ["m"])]
    gamma = helper.make_tensor("g", TensorProto.FLOAT, [4], [1.0] * 4)
    mean = helper.make_tensor_value_info("m", TensorProto.FLOAT, None)
    model = _model(nodes, [x, axes_value], [y, mean], [scale, zero, gamma])
    problems = lint_model(model, "tensorrt", "10.3.0", precision="fp32", dla=True)
    text = "\n".join(problems)
    assert "input x: dynamic shape" in text
    assert "zero points of 0" in text
    assert "Unsqueeze" in text and "input 1 must be a build-time constant" in text
    assert "only LayerNormalization's first output" in text
    assert "DLA runs fp16 and int8 layers only" in text
    assert lint_model(model, "onnxruntime") == []


# --------------------------------------------------------------------------- TensorRT without TensorRT


NANO, NX, AGX, GPU = (load_target(n) for n in ("jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin", "nvidia-gpu"))


def test_caps_of_reads_the_module_with_hasattr():
    def fake(version, builder_flags, network_flags, level=True):
        return types.SimpleNamespace(
            __version__=version, BuilderFlag=types.SimpleNamespace(**{f: i for i, f in enumerate(builder_flags)}),
            NetworkDefinitionCreationFlag=types.SimpleNamespace(**{f: i for i, f in enumerate(network_flags)}),
            IBuilderConfig=type("IBuilderConfig", (), {"builder_optimization_level": 3} if level else {}))

    assert caps_of(fake("8.6.1.6", ["FP16", "INT8", "GPU_FALLBACK"], ["EXPLICIT_BATCH"])) == \
        TrtCaps("8.6.1.6", fp16_flag=True, int8_flag=True, strongly_typed=False, explicit_batch_flag=True,
                strip_plan=False)
    assert caps_of(fake("10.3.0", ["FP16", "INT8", "STRIP_PLAN", "REFIT_IDENTICAL"],
                        ["EXPLICIT_BATCH", "STRONGLY_TYPED"])) == \
        TrtCaps("10.3.0", fp16_flag=True, int8_flag=True, strongly_typed=True, explicit_batch_flag=False)
    caps = caps_of(fake("11.0.0", ["GPU_FALLBACK"], ["STRONGLY_TYPED"], level=True))
    assert not caps.fp16_flag and not caps.int8_flag and caps.strongly_typed and caps.major == 11


def test_build_settings_map_target_and_precision_to_builder_options():
    s = build_settings(NANO, "fp16", CAPS_8_6, "onnx/p.onnx")
    assert (s.network_flags, s.builder_flags, s.cleared_flags, s.source_kind) == (("EXPLICIT_BATCH",), ("FP16",),
                                                                                  (), "fp32")
    assert (s.workspace_mb, s.optimization_level, s.dla_core) == (1024, 3, None)
    s = build_settings(NANO, "int8", CAPS_10, "p.qdq.onnx")
    assert (s.network_flags, s.builder_flags, s.source_kind) == ((), ("FP16", "INT8"), "qdq")
    s = build_settings(GPU, "fp32", CAPS_10, "p.onnx", workspace_mb=512, optimization_level=5)
    assert (s.builder_flags, s.cleared_flags, s.workspace_mb, s.optimization_level) == ((), ("TF32",), 512, 5)
    # TensorRT 11: no FP16/INT8 flags, strongly typed networks over converted/quantized ONNX
    assert needed_source("fp16", CAPS_11) == "fp16" and needed_source("fp16", CAPS_10) == "fp32"
    s = build_settings(AGX, "fp16", CAPS_11, "p.fp16.onnx")
    assert (s.network_flags, s.builder_flags, s.source_kind, s.strongly_typed) == (("STRONGLY_TYPED",), (),
                                                                                   "fp16", True)
    assert build_settings(AGX, "int8", CAPS_11, "q.onnx").network_flags == ("STRONGLY_TYPED",)
    # DLA: Orin NX and AGX Orin have it, Orin Nano does not; fp16/int8 only
    s = build_settings(NX, "fp16", CAPS_10, "p.onnx", dla_core=1, module="p3767-0000")
    assert s.builder_flags == ("FP16", "GPU_FALLBACK") and s.dla_core == 1 and s.workspace_mb == 2048
    with pytest.raises(BackendError, match="has no DLA"):
        build_settings(NANO, "fp16", CAPS_10, "p.onnx", dla_core=0)
    with pytest.raises(BackendError, match="DLA core 1 does not exist on jetson-orin-nx"):
        build_settings(NX, "fp16", CAPS_10, "p.onnx", dla_core=1, module="p3767-0001")
    with pytest.raises(BackendError, match="fp16 and int8 only"):
        build_settings(AGX, "fp32", CAPS_10, "p.onnx", dla_core=0)
    with pytest.raises(BackendError, match="not 'int4'"):
        build_settings(AGX, "int4", CAPS_10, "p.onnx")
    with pytest.raises(BackendError, match="neither the FP16 builder flag nor strongly typed"):
        build_settings(AGX, "fp16", dataclasses.replace(CAPS_11, strongly_typed=False), "p.onnx")


def test_trtexec_command_lines():
    s = build_settings(NX, "int8", CAPS_10, "engines/p.qdq.onnx", timing_cache="engines/nx.cache")
    assert trtexec_command(s, "engines/p.plan") == [
        "trtexec", "--onnx=engines/p.qdq.onnx", "--saveEngine=engines/p.plan", "--fp16", "--int8",
        "--memPoolSize=workspace:2048M", "--builderOptimizationLevel=3", "--timingCacheFile=engines/nx.cache",
        "--stripWeights", "--skipInference"]
    # int8 on the DLA: the model without Q/DQ nodes and the scales as a calibration cache (qdq-translator's way)
    s = build_settings(NX, "int8", CAPS_10, "onnx/p.onnx", timing_cache="engines/nx.cache", dla_core=0,
                       module="p3767-0000", calibration_cache="engines/p.calib.cache")
    assert s.source_kind == "calib" and s.calibration_cache == "engines/p.calib.cache" and s.tensorrt == "10.3.0"
    assert trtexec_command(s, "engines/p.plan") == [
        "trtexec", "--onnx=onnx/p.onnx", "--saveEngine=engines/p.plan", "--fp16", "--int8",
        "--calib=engines/p.calib.cache", "--memPoolSize=workspace:2048M", "--builderOptimizationLevel=3",
        "--timingCacheFile=engines/nx.cache", "--useDLACore=0", "--allowGPUFallback", "--skipInference"]
    s = build_settings(GPU, "fp32", CAPS_10, "my dir/p.onnx")
    assert trtexec_command_line(s, "p.plan", trtexec="/usr/src/tensorrt/bin/trtexec") == (
        "/usr/src/tensorrt/bin/trtexec '--onnx=my dir/p.onnx' --saveEngine=p.plan --noTF32 "
        "--memPoolSize=workspace:4096M --builderOptimizationLevel=3 --stripWeights --skipInference")
    s = build_settings(AGX, "fp16", CAPS_11, "p.fp16.onnx")
    assert "--stronglyTyped" in trtexec_command(s, "p.plan") and "--fp16" not in trtexec_command(s, "p.plan")


def test_plans_are_weight_stripped_where_tensorrt_can_and_say_so_where_not():
    """TensorRT 10+ GPU plans keep no weights (STRIP_PLAN, refitted from the ONNX at load);
    8.x has no such flag and DLA engines are not refittable: their facts say so."""
    from adaexport.backends.trt_settings import weights_fact

    s = build_settings(GPU, "fp32", CAPS_10, "../onnx/p.onnx")
    assert s.strip_weights and weights_fact(s) == ("stripped (STRIP_PLAN, REFIT_IDENTICAL): refitted at load from "
                                                   "../onnx/p.onnx")
    assert build_settings(AGX, "fp16", CAPS_11, "p.fp16.onnx").strip_weights
    s = build_settings(NANO, "fp16", CAPS_8_6, "../onnx/p.onnx")
    assert not s.strip_weights and "--stripWeights" not in trtexec_command(s, "p.plan")
    assert weights_fact(s) == "embedded in the plan: TensorRT 8.6.2 has no weight-stripped plans (10.0+ has)"
    s = build_settings(NX, "fp16", CAPS_10, "p.onnx", dla_core=1, module="p3767-0000")
    assert not s.strip_weights and weights_fact(s) == "embedded in the plan: DLA engines are not refittable"


def test_plan_keys_and_mismatch_messages():
    built = SystemKey("10.3.0.26", "8.7", "36.4.3", "aarch64")
    assert SystemKey.from_dict(built.as_dict()) == built
    assert check_plan_key(built, SystemKey("10.3.0.30", "8.7", "36.4.4", "aarch64")) is None
    message = check_plan_key(built, SystemKey("10.7.0", "8.7", "36.4.3"), "t32_w64_d4-tensorrt-fp16.plan",
                             "adaexport compile DIR --device jetson-orin-nano")
    assert message.startswith("t32_w64_d4-tensorrt-fp16.plan was built for TensorRT 10.3.0.26, compute "
                              "capability 8.7, L4T 36.4.3 and this system has TensorRT 10.7.0")
    assert "TensorRT 10.3.0.26 vs 10.7.0" in message
    assert message.endswith("rebuild it here: adaexport compile DIR --device jetson-orin-nano")
    assert "\n" not in message
    gpu = check_plan_key(SystemKey("10.3.0", "8.9", None), SystemKey("10.3.0", "8.6", None))
    assert "compute capability 8.9 vs 8.6" in gpu and "L4T" not in gpu.split("(")[1]
    jetpack = check_plan_key(built, SystemKey("10.3.0.26", "8.7", "35.4.1"))
    assert "L4T 36.4.3 vs 35.4.1" in jetpack
    assert "TensorRT 10.3.0.26 vs none" in check_plan_key(built, SystemKey(None, None, None))


def test_dla_fallback_report():
    assert format_dla_fallback([], 12, None) == "GPU engine (no DLA)"
    assert format_dla_fallback([], 12, 0) == "DLA core 0: all 12 layers run on the DLA"
    fallback = [{"index": i, "name": f"layer{i}", "type": "MATRIX_MULTIPLY"} for i in range(12)]
    text = format_dla_fallback(fallback, 40, 1)
    assert text.startswith("DLA core 1: 28 of 40 layers on the DLA, 12 fall back to the GPU: layer0 (MATRIX_MULTIPLY)")
    assert text.endswith("and 2 more")


def test_compile_options_defaults(tmp_path):
    options = CompileOptions(out_dir=tmp_path)
    assert options.calibration is None and options.check and options.dla_core is None
    assert get_backend("tensorrt").plan_name(tmp_path / "t8_w32_d2.onnx", "fp16",
                                             CompileOptions(out_dir=tmp_path, dla_core=1)) == \
        "t8_w32_d2-tensorrt-fp16-dla1.plan"
    assert get_backend("onnxruntime").artifact_name(tmp_path / "t8_w32_d2.onnx", "int8", options) == \
        "t8_w32_d2-onnxruntime-int8"


def test_lint_reads_onnx_files(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    path = tmp_path / "m.onnx"
    onnx.save(_model([helper.make_node("Erf", ["x"], ["y"])], [x], [y]), str(path))
    from adaexport.backends.lint import lint_onnx

    assert lint_onnx(path, "tensorrt") == [] and lint_onnx(path, "openvino") == []
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    assert "not a readable ONNX model" in lint_onnx(tmp_path / "bad.onnx", "onnxruntime")[0]
