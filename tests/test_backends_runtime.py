"""Real engines: ONNX Runtime and OpenVINO compile a small exported family of the demo model,
and every engine is checked against the fp32 ONNX on real Fashion-MNIST inputs (no mocks).
TensorRT runs where `import tensorrt` works; elsewhere its tests skip with the import error."""

import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import onnxruntime as ort
import pytest
import torch

from adaexport.backends import (
    Artifact,
    BackendError,
    BackendUnavailable,
    PlanMismatch,
    compile_engine,
    compile_or_defer,
    finish_pending,
    get_backend,
    lint_engine,
    open_artifact,
    pending_engine,
)
from adaexport.backends.lint import lint_onnx
from adaexport.backends.trt_timing_cache import cache_name
from adaexport.datasets import model_inputs
from adaexport.export import export_family
from adaexport.space import ConfigPoint
from adaexport.targets import load_target

from .conftest import ROOT
from .test_hw_tensorrt import dequantize_inputs

torch.set_num_threads(1)

POINTS = [ConfigPoint(16, 48, 3), ConfigPoint(32, 64, 4)]   # a sliced point and the full one
CALIBRATION = 64
EVALUATION = 128


@pytest.fixture(scope="module")
def family(tmp_path_factory, demo):
    out = tmp_path_factory.mktemp("family")
    exported, weights = export_family(demo.model, POINTS, out / "onnx", attention=None, batch=1)
    inputs, _ = model_inputs("demo", demo.config, limit=CALIBRATION + EVALUATION)
    calibration, evaluation = inputs[:CALIBRATION], inputs[CALIBRATION:]
    references = {}
    for model in exported:
        session = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
        references[model.point] = np.concatenate([session.run(None, {"image": x[None]})[0] for x in evaluation])
    return {"dir": out, "onnx": {m.point: m.path for m in exported}, "weights": weights,
            "calibration": calibration, "evaluation": evaluation, "reference": references}


def run_all(artifact_or_path, inputs):
    with open_artifact(artifact_or_path) as session:
        assert session.input_names == ["image"] and session.output_names == ["logits"]
        return np.concatenate([session.run({"image": x[None]})[0] for x in inputs])


def agreement(reference, got):
    scale = float(np.abs(reference).max()) or 1.0
    return float(np.abs(reference - got).max()), scale, float((reference.argmax(1) == got.argmax(1)).mean())


def check_parity(precision, reference, got):
    max_abs, scale, top1 = agreement(reference, got)
    if precision == "fp32":
        assert max_abs <= 1e-4 * max(1.0, scale), (max_abs, scale)
    elif precision in ("fp16", "bf16"):  # float16 / bfloat16 arithmetic
        assert max_abs <= 0.05 * max(1.0, scale) and top1 >= 0.95, (max_abs, scale, top1)
    else:                                # int8: decisions kept on real inputs
        assert top1 >= 0.9, (max_abs, scale, top1)
    return max_abs, top1


def no_leftovers(directory):
    return not [p.name for p in directory.iterdir() if p.name.startswith(".adaexport-compile-")
                or p.name.endswith(".tmp")]


ENGINES = [("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("onnxruntime", "int8"),
           ("openvino", "fp32"), ("openvino", "fp16")]


@pytest.mark.parametrize("backend, precision", ENGINES)
def test_engines_match_the_fp32_onnx(family, tmp_path, backend, precision):
    point = POINTS[0]
    artifact = compile_engine(family["onnx"][point], tmp_path, "x86-cpu", backend, precision,
                              calibration_inputs=family["calibration"], threads=1)
    assert artifact.status == "ready" and artifact.precision == precision and artifact.backend == backend
    assert artifact.sidecar.parent == tmp_path and artifact.sidecar.is_file() and no_leftovers(tmp_path)
    assert artifact.inputs == [{"name": "image", "shape": [1, 1, 28, 28], "dtype": "float32"}]
    assert artifact.outputs == [{"name": "logits", "shape": [1, 10], "dtype": "float32"}]
    artifact.verify()
    got = run_all(artifact.sidecar if artifact.name else artifact.path, family["evaluation"])
    check_parity(precision, family["reference"][point], got)
    if precision == "int8":
        assert artifact.facts["quantization"]["calibration_samples"] == CALIBRATION
    record = artifact.record(tmp_path.parent)
    own = artifact.sidecar.name if artifact.name else artifact.files[0]
    assert record["file"] == f"{tmp_path.name}/{own}" and record["status"] == "ready"


def test_openvino_float_engines_read_the_familys_onnx(family, tmp_path, monkeypatch):
    """fp32/fp16/bf16 OpenVINO engines store no weights: fp32 reads its point's ONNX and the
    family's weights.bin; fp16 (and bf16) are a compressed IR whose float16 weights are bound
    at load to the family's float16 twin, 2 bytes a parameter (one file for the family), each
    through a Convert marked as its decompression (so the CPU plugin keeps it in float16); the
    precision is an explicit hint and what runs is recorded. The compile cache is off unless
    asked for, and never inside the engines folder."""
    import openvino as ov

    engines = family["dir"] / "engines-settings"
    point = POINTS[1]
    artifact = compile_engine(family["onnx"][point], engines, "x86-cpu", "openvino", "fp32", threads=1)
    assert artifact.files == ["../onnx/t32_w64_d4.onnx", "../onnx/weights.bin"]
    assert sorted(p.name for p in engines.iterdir()) == ["t32_w64_d4-openvino-fp32.json"]
    assert artifact.runtime["PERFORMANCE_HINT"] == "LATENCY" and "cache_dir" not in artifact.runtime
    assert artifact.runtime["INFERENCE_PRECISION_HINT"] == "f32" and artifact.facts["execution_precision"] == "f32"
    assert artifact.runtime["SNIPPETS_MODE"] == "DISABLE"      # x86-cpu's [backends.openvino.fp32]
    check_parity("fp32", family["reference"][point], run_all(artifact, family["evaluation"]))
    record = artifact.record(family["dir"])
    assert [f["file"] for f in record["files"]] == ["onnx/t32_w64_d4.onnx", "onnx/weights.bin",
                                                    "engines-settings/t32_w64_d4-openvino-fp32.json"]
    fp16 = compile_engine(family["onnx"][point], engines, "x86-cpu", "openvino", "fp16", threads=1)
    assert fp16.runtime["INFERENCE_PRECISION_HINT"] == "f16" and "SNIPPETS_MODE" not in fp16.runtime
    xml, weights, half = fp16.files
    assert (xml, weights) == ("t32_w64_d4-openvino-fp16.xml.xz", "t32_w64_d4-openvino-fp16.bin.xz")
    assert half.startswith("../onnx/weights-fp16-") and (engines / half).stat().st_size * 2 == \
        family["weights"].stat().st_size
    # every tensor of the point's file is bound (the block mask is no tensor: prefix runs; a tensor
    # float16 cannot hold stays in the IR, tests/test_half_weights.py)
    assert fp16.facts["shared_tensors"] > 0 and fp16.facts["embedded_tensors"] == 0
    ir = ov.Core().read_model(lzma.decompress((engines / xml).read_bytes()),
                              lzma.decompress((engines / weights).read_bytes()))
    table = json.loads(ir.get_rt_info(["adaexport_shared_weights"]).astype(str))[half]
    assert table and all(set(entry) == {"float16"} for entry in table.values()) and "shared:attn_bias" not in table
    bound = sum(entry["float16"][1] for entry in table.values())
    assert (engines / weights).stat().st_size < bound / 4            # the point's own small constants only
    converts = [target.get_node() for p in ir.get_parameters() if p.get_friendly_name() in table
                for target in p.output(0).get_target_inputs()]
    assert len(converts) >= len(table) and all(c.get_type_name() == "Convert" for c in converts)
    # marked as decompression where a MatMul reads the weight (input 1) and nowhere else (see
    # openvino_backend._decompress_matmul_weights_only; test_openvino_bf16_engine_on_this_cpu)
    marked = {c.get_friendly_name(): any(k.startswith("decompression") for k in c.get_rt_info().keys())
              for c in converts}
    matmul_weight = {c.get_friendly_name(): all((t.get_node().get_type_name(), t.get_index()) == ("MatMul", 1)
                                                for t in c.output(0).get_target_inputs()) for c in converts}
    assert any(marked.values()) and marked == matmul_weight
    other = compile_engine(family["onnx"][POINTS[0]], engines, "x86-cpu", "openvino", "fp16", threads=1)
    assert other.files[2] == half     # one float16 file for every point
    for name in (*other.files[:2], other.sidecar.name):
        (engines / name).unlink()
    with open_artifact(fp16) as session:   # what OpenVINO reports for the compiled model, recorded as is
        assert fp16.facts["execution_precision"] == session.execution_precision == session.options["inference_precision"]
    if fp16.facts["execution_precision"] != "f16":
        assert fp16.facts["execution_note"] == f"asked for f16, this device runs {fp16.facts['execution_precision']} " \
                                               "(no native f16)"
    check_parity("fp16", family["reference"][point], run_all(fp16, family["evaluation"]))
    cache = tmp_path / "ov-cache"
    monkeypatch.setenv("ADAEXPORT_OPENVINO_CACHE_DIR", str(cache))
    run_all(artifact, family["evaluation"][:1])
    assert any(cache.iterdir()), "the compiled-model cache asked for was not written"
    assert sorted(p.name for p in engines.iterdir()) == ["t32_w64_d4-openvino-fp16.bin.xz",
                                                         "t32_w64_d4-openvino-fp16.xml.xz",
                                                         "t32_w64_d4-openvino-fp16.xml.xz.json",
                                                         "t32_w64_d4-openvino-fp32.json"]


@pytest.mark.slow
def test_openvino_int8_with_nncf(family, tmp_path):
    backend = get_backend("openvino")
    state = backend.available("int8")
    if not state:
        with pytest.raises(BackendUnavailable, match="NNCF"):
            compile_engine(family["onnx"][POINTS[0]], tmp_path, "x86-cpu", "openvino", "int8",
                           calibration_inputs=family["calibration"])
        pytest.skip(state.reason)
    build = tmp_path / "build"
    shutil.copytree(family["dir"] / "onnx", build / "onnx")
    point = POINTS[0]
    onnx_path = build / "onnx" / family["onnx"][point].name
    artifact = compile_engine(onnx_path, build / "engines", "x86-cpu", "openvino", "int8",
                              calibration_inputs=family["calibration"], threads=1)
    assert artifact.facts["quantization"]["tool"] == "nncf.quantize"
    # Its weights are the family's int8 weights (int8_twin), bound at load: the IR's own .bin
    # holds the point's small constants, not a copy of the weights, nor their ranges.
    # (compressed: a graph that runs only with that binding, whose table it carries)
    assert artifact.files[:2] == [f"{point.id}-openvino-int8.xml.xz", f"{point.id}-openvino-int8.bin.xz"]
    xml = lzma.decompress(artifact.path.read_bytes())
    assert xml.startswith(b"<?xml") and b'type="FakeQuantize"' in xml and b"shared:" in xml
    import openvino as ov

    ir = ov.Core().read_model(xml, lzma.decompress((build / "engines" / artifact.files[1]).read_bytes()))
    table = json.loads(ir.get_rt_info(["adaexport_shared_weights"]).astype(str))
    assert list(table) == [artifact.files[2]] and "shared_weights" not in artifact.runtime
    # the read-in queries' per-row ranges are bound from the twin's float copy, not kept in the .bin
    assert any("absmax" in entry for entry in table[artifact.files[2]].values() if isinstance(entry, dict))
    # NNCF quantized the point with these int8 weights bound (bind_openvino_weights): the
    # activations are calibrated for them, and no FakeQuantize lies over a weight
    weights = {name for name, entry in table[artifact.files[2]].items() if isinstance(entry, dict) and "int8" in entry}
    assert weights and not any(name.rsplit(":", 1)[-1].startswith(("low", "high")) for name in table[artifact.files[2]])
    assert not weights & {op.input_value(0).get_node().get_friendly_name() for op in ir.get_ordered_ops()
                          if op.get_type_name() == "FakeQuantize"}
    assert "bound to them before quantization" in artifact.facts["weights"]
    # every quantizer reads its input range's Constants as its output range where they are equal
    # (share_fake_quantize_ranges), and the compressed graph is stored without indentation
    quantizers = [op for op in ir.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    assert quantizers and all(op.input_value(1) == op.input_value(3) and op.input_value(2) == op.input_value(4)
                              for op in quantizers if op.get_friendly_name().endswith("fq_output_0"))
    assert b"\n\t" not in xml and b"><layer " in xml
    assert re.fullmatch(r"\.\./onnx/weights-int8-[0-9a-f]{16}\.bin", artifact.files[2]), artifact.files
    assert len(artifact.files) == 3
    assert artifact.facts["shared_tensors"] > 0 and artifact.facts["embedded_tensors"] == 0
    int8_bytes = sum(entry["int8"][1] for tensors in table.values()
                     for entry in tensors.values() if isinstance(entry, dict) and "int8" in entry)
    assert (build / "engines" / artifact.files[1]).stat().st_size < int8_bytes / 4
    record = artifact.record(build)
    assert [f["file"] for f in record["files"]][2:] == [artifact.files[2][3:],
                                                        f"engines/{point.id}-openvino-int8.xml.xz.json"]
    shared = run_all(artifact, family["evaluation"])
    check_parity("int8", family["reference"][point], shared)
    # The same engine with an int8 copy of its weights (NNCF's compression of the same ranges)
    from adaexport.targets import parse_target

    x86 = load_target("x86-cpu")
    section = "[backends.openvino]\n"
    embedded = compile_engine(onnx_path, tmp_path / "embedded", parse_target(x86.source.replace(
        section, section + 'int8_weights = "embedded"\n')), "openvino", "int8",
        calibration_inputs=family["calibration"], threads=1)
    assert embedded.files == [f"{point.id}-openvino-int8.xml", f"{point.id}-openvino-int8.bin"]
    assert "shared_weights" not in embedded.runtime
    assert agreement(run_all(embedded, family["evaluation"]), shared)[2] >= 0.98
    # Copied away with the files it lists, it runs where the build is gone
    device = tmp_path / "device"
    for path in artifact.paths() + [artifact.sidecar]:
        copy = device / os.path.relpath(path, build)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy)
    shutil.rmtree(build)
    np.testing.assert_array_equal(run_all(device / "engines" / artifact.files[0], family["evaluation"][:8]),
                                  shared[:8])


def test_openvino_fake_quantize_ranges_shared_compute_the_same():
    """An activation quantizer's output range is a copy of its input range: sharing one Constant
    for each equal pair (two fewer layers a quantizer) leaves the graph's outputs the same to
    the bit; a range that differs keeps its own Constant."""
    import openvino as ov
    from openvino import opset13 as ops

    from adaexport.backends.openvino_backend import share_fake_quantize_ranges

    def model():
        image = ops.parameter([2, 64], np.float32, name="x")
        bound = lambda v: ops.constant(np.full((1, 64), v, np.float32))  # noqa: E731
        same = ops.fake_quantize(image, bound(-1.5), bound(2.0), bound(-1.5), bound(2.0), 256)
        other = ops.fake_quantize(ops.relu(same), bound(0.0), bound(1.0), bound(0.0), bound(3.0), 256)
        return ov.Model([other], [image])

    def outputs(m, x):
        return ov.Core().compile_model(m, "CPU", {"INFERENCE_NUM_THREADS": 1})({"x": x})[0]

    x = np.random.default_rng(0).uniform(-3, 4, (2, 64)).astype(np.float32)
    before, after = model(), model()
    assert share_fake_quantize_ranges(after) == 3       # the first's low and high, the second's low
    count = lambda m: sum(op.get_type_name() == "Constant" for op in m.get_ordered_ops())  # noqa: E731
    assert count(after) == count(before) - 3
    second = [op for op in after.get_ordered_ops() if op.get_type_name() == "FakeQuantize"][1]
    assert second.input_value(1) == second.input_value(3) and second.input_value(2) != second.input_value(4)
    np.testing.assert_array_equal(outputs(after, x), outputs(before, x))
    assert share_fake_quantize_ranges(after) == 0       # once is all


def test_int8_without_calibration_fails_cleanly(family, tmp_path):
    with pytest.raises(BackendError, match="int8 needs calibration inputs"):
        compile_engine(family["onnx"][POINTS[0]], tmp_path, "x86-cpu", "onnxruntime", "int8")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(BackendError, match="does not build 'int4'"):
        compile_engine(family["onnx"][POINTS[0]], tmp_path, "x86-cpu", "onnxruntime", "int4")


def test_exported_family_lints_clean(family):
    for path in family["onnx"].values():
        for backend in ("onnxruntime", "openvino", "tensorrt"):
            assert lint_onnx(path, backend) == [], (path.name, backend)
            assert lint_engine(path, backend, "fp16") == []
    assert lint_engine(family["onnx"][POINTS[0]], "tensorrt", "fp32", dla_core=0) == [
        "DLA runs fp16 and int8 layers only; an fp32 engine cannot use the DLA"]


HYGIENE = textwrap.dedent("""
    import importlib.abc, json, sys
    BLOCKED = {"torch", "onnx", "typer", "rich"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
    import numpy as np
    from adaexport.backends import get_backend, open_artifact
    import adaexport.backends.tensorrt_backend, adaexport.targets   # importable without their libraries
    get_backend("tensorrt").available()
    x = np.load(sys.argv[1])
    for path in sys.argv[2:]:
        with open_artifact(path) as session:
            np.save(path + ".out.npy", np.concatenate([session.run({"image": s[None]})[0] for s in x]))
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)))
""")


def test_runtime_side_imports_no_toolchain_and_artifacts_stand_alone(family, tmp_path):
    """Engines copied away from their build with the files they list (ONNX Runtime's: their
    own file; OpenVINO's fp16: its sidecar, the point's ONNX and the family's weights.bin)
    open and run in a process where torch, onnx, typer and rich cannot be imported."""
    build = tmp_path / "build"
    shutil.copytree(family["dir"] / "onnx", build / "onnx")
    onnx_path = build / "onnx" / family["onnx"][POINTS[0]].name
    artifacts = [compile_engine(onnx_path, build / "engines", "x86-cpu", backend, precision,
                                calibration_inputs=family["calibration"], threads=1)
                 for backend, precision in (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp16"))]
    device = tmp_path / "device"
    for art in artifacts:
        for path in art.paths() + [art.sidecar]:
            copy = device / os.path.relpath(path, build)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, copy)
    shutil.rmtree(build)
    x = family["evaluation"][:16]
    np.save(device / "x.npy", x)
    paths = [str(device / "engines" / (art.sidecar.name if art.name else art.files[0])) for art in artifacts]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", HYGIENE, str(device / "x.npy"), *paths], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
    reference = family["reference"][POINTS[0]][:16]
    for art, path in zip(artifacts, paths):
        check_parity(art.precision, reference, np.load(path + ".out.npy"))


def test_each_point_compiles_to_its_own_engine(family, tmp_path):
    arts = [compile_engine(path, tmp_path, load_target("x86-cpu"), "onnxruntime", "fp32", threads=1)
            for path in family["onnx"].values()]
    assert sorted(a.files[0] for a in arts) == ["t16_w48_d3-onnxruntime-fp32.onnx", "t32_w64_d4-onnxruntime-fp32.onnx"]
    for art, point in zip(arts, family["onnx"]):
        check_parity("fp32", family["reference"][point][:32], run_all(art, family["evaluation"][:32]))
        assert json.loads(art.sidecar.read_text())["facts"]["source"] == f"{point.id}.onnx"


def test_multi_output_order(conformance_models, tmp_path):
    """A distilled model returns (logits, features): every backend keeps the ONNX output order."""
    loaded = conformance_models["distill"]
    point = ConfigPoint(loaded.config.mask_token_grans[0], loaded.config.mat_dims[0], 1)
    (exported,), _ = export_family(loaded.model, [point], tmp_path / "onnx", attention=None)
    x = np.random.default_rng(0).standard_normal((1, loaded.config.in_channels, loaded.config.img_size,
                                                  loaded.config.img_size)).astype(np.float32)
    reference = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    for backend in ("onnxruntime", "openvino"):
        art = compile_engine(exported.path, tmp_path / "engines", "x86-cpu", backend, "fp32", threads=1)
        assert [o["name"] for o in art.outputs] == ["logits", "features"]
        with open_artifact(art) as session:
            assert session.output_names == ["logits", "features"]
            got = session.run({"image": x})
        for ref, out in zip(reference, got, strict=True):
            assert out.shape == ref.shape and np.abs(out - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


# --------------------------------------------------------------------------- TensorRT


def test_tensorrt_cross_build_records_pending_engines(family, tmp_path):
    if get_backend("tensorrt").available():
        pytest.skip("TensorRT is installed here: engines are built, not deferred")
    onnx_path = family["onnx"][POINTS[0]]
    art = compile_or_defer(onnx_path, tmp_path, "jetson-orin-nano", "tensorrt", "int8",
                           calibration_inputs=family["calibration"])
    assert art.status == "pending" and art.files == ["t16_w48_d3-tensorrt-int8.plan"]
    assert art.facts["finish"] == "adaexport compile DIR --device jetson-orin-nano"
    assert art.facts["trtexec"].startswith("trtexec --onnx=t16_w48_d3-tensorrt-int8.qdq.onnx "
                                           "--saveEngine=t16_w48_d3-tensorrt-int8.plan --fp16 --int8 ")
    assert "tensorrt" in art.facts["pending_reason"]
    qdq = tmp_path / art.facts["source"]
    assert lint_onnx(qdq, "tensorrt") == []          # symmetric: zero points of 0
    assert set(dequantize_inputs(qdq).values()) == {"INT8"}   # the demo's Conv and Gemm biases stay float
    # the quantized model the device will build computes what the fp32 one does
    session = ort.InferenceSession(str(qdq), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(None, {"image": x[None]})[0] for x in family["evaluation"]])
    check_parity("int8", family["reference"][POINTS[0]], got)
    loaded = Artifact.load(tmp_path / art.files[0])
    assert loaded.status == "pending" and not (tmp_path / art.files[0]).exists()
    with pytest.raises(BackendError, match="adaexport compile DIR --device jetson-orin-nano"):
        open_artifact(tmp_path / art.files[0])
    fp16 = pending_engine(onnx_path, tmp_path, "jetson-agx-orin", "fp16", dla_core=1)
    assert fp16.files == ["t16_w48_d3-tensorrt-fp16-dla1.plan"]
    assert fp16.facts["source"] == os.path.relpath(onnx_path, tmp_path)   # the exported model, weights beside it
    assert "--useDLACore=1 --allowGPUFallback" in fp16.facts["trtexec"]
    with pytest.raises(BackendError, match="engine, not a pending one"):
        finish_pending(compile_engine(onnx_path, tmp_path, "x86-cpu", "onnxruntime", "fp32"))


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_engines(tensorrt, family, tmp_path, precision):
    point = POINTS[0]
    art = compile_engine(family["onnx"][point], tmp_path, "nvidia-gpu", "tensorrt", precision,
                         calibration_inputs=family["calibration"])
    assert art.path.suffix == ".plan" and (tmp_path / cache_name("nvidia-gpu", tensorrt.__version__)).is_file()
    assert art.facts["system"]["tensorrt"] == tensorrt.__version__
    check_parity(precision, family["reference"][point], run_all(art.path, family["evaluation"]))
    # a plan from another TensorRT is refused with one line
    side = json.loads(art.sidecar.read_text())
    side["facts"]["system"]["tensorrt"] = "1.0.0"
    art.sidecar.write_text(json.dumps(side))
    with pytest.raises(PlanMismatch, match="built for TensorRT 1.0.0"):
        open_artifact(art.path)


def test_tensorrt_finishes_pending_engines(tensorrt, family, tmp_path):
    art = pending_engine(family["onnx"][POINTS[0]], tmp_path, "nvidia-gpu", "fp16")
    done = finish_pending(art.path)
    assert done.status == "ready" and done.path.is_file()
    check_parity("fp16", family["reference"][POINTS[0]], run_all(done.path, family["evaluation"]))


def _cpuinfo_root(tmp_path, flags):
    root = tmp_path / ("root-" + "-".join(flags))
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc" / "cpuinfo").write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 {' '.join(flags)}\n")
    return root


def test_openvino_bf16_is_offered_only_where_the_cpu_runs_it(tmp_path, monkeypatch):
    from adaexport.backends.openvino_backend import cpu_bf16

    assert cpu_bf16(_cpuinfo_root(tmp_path, ["avx512f", "avx512_bf16"])) == (True, "Test CPU has avx512_bf16")
    assert cpu_bf16(_cpuinfo_root(tmp_path, ["amx_tile", "amx_bf16", "avx512_bf16"]))[0]
    native, why = cpu_bf16(_cpuinfo_root(tmp_path, ["avx512f"]))
    assert not native and why == "Test CPU has no native bf16 (neither avx512_bf16 nor amx_bf16 in /proc/cpuinfo)"
    assert cpu_bf16(tmp_path / "nowhere") == (False, "the CPU's flags cannot be read (/proc/cpuinfo), so native "
                                                     "bf16 is not known")
    monkeypatch.setenv("ADAEXPORT_SYSFS_ROOT", str(_cpuinfo_root(tmp_path, ["avx512f"])))
    state = get_backend("openvino").available("bf16")
    assert not state and state.reason == f"bf16 runs natively only on CPUs with AVX-512 BF16 or AMX: {why}"
    assert get_backend("openvino").available("fp16")            # the other precisions do not depend on it
    with pytest.raises(BackendUnavailable, match="no native bf16"):
        compile_engine(tmp_path / "x.onnx", tmp_path / "engines", "x86-cpu", "openvino", "bf16")


def test_openvino_bf16_engine_on_this_cpu(family, tmp_path):
    state = get_backend("openvino").available("bf16")
    if not state:
        pytest.skip(state.reason)
    point = POINTS[0]
    artifact = compile_engine(family["onnx"][point], family["dir"] / "engines-bf16", "x86-cpu", "openvino", "bf16",
                              threads=1)
    assert artifact.runtime["INFERENCE_PRECISION_HINT"] == "bf16" and artifact.facts["execution_precision"] == "bf16"
    assert "execution_note" not in artifact.facts
    check_parity("bf16", family["reference"][point], run_all(artifact, family["evaluation"]))


def test_onnxruntime_int8_reads_the_familys_int8_weights(family, tmp_path):
    """The int8 engine keeps no weights: it reads the family's int8 twin (one byte a parameter,
    the full tensors' scales), a narrower point its leading rows, and stays within int8 parity."""
    import onnx

    from adaexport.backends.int8_twin import quantize

    point = POINTS[0]                      # narrower than the full point: reads prefixes
    engines = family["dir"] / "engines-int8"
    artifact = compile_engine(family["onnx"][point], engines, "x86-cpu", "onnxruntime", "int8",
                              calibration_inputs=family["calibration"], threads=1)
    # a graph and nothing else, stored compressed (compress_graph)
    assert artifact.files[0] == "t16_w48_d3-onnxruntime-int8.onnx.xz" and len(artifact.files) == 2
    twin = engines / artifact.files[1]
    assert re.fullmatch(r"weights-int8-[0-9a-f]{16}\.bin", twin.name) and twin.parent.samefile(family["weights"].parent)
    assert artifact.facts["shared_tensors"] > 0 and artifact.facts["embedded_tensors"] == 0
    assert family["weights"].stat().st_size / 4 <= twin.stat().st_size < family["weights"].stat().st_size / 3
    model = onnx.load_from_string(lzma.decompress(artifact.path.read_bytes()))
    places = {t.name: {e.key: e.value for e in t.external_data} for t in model.graph.initializer
              if t.data_location == onnx.TensorProto.EXTERNAL}
    assert {p["location"] for p in places.values()} == {twin.name}     # never weights.bin
    assert not model.graph.value_info      # what the quantizer's shape inference added: ONNX Runtime infers it
    # fc1 (output channels as rows) and fc2 (as columns) of the narrower point: the full
    # tensors' int8 values, their leading rows, and the full tensors' scales
    full = onnx.load(str(family["onnx"][POINTS[1]]))
    full_weights = {t.name: onnx.numpy_helper.to_array(t) for t in full.graph.initializer}
    for name, axis in (("blocks.0.ffn.fc1.weight", 0), ("blocks.0.ffn.fc2.weight_t", 1)):
        place = places[name + "_quantized"]
        rows = int(next(t.dims[0] for t in model.graph.initializer if t.name == name + "_quantized"))
        assert rows < full_weights[name].shape[0]
        values = np.fromfile(twin, np.int8, count=int(place["length"]), offset=int(place["offset"]))
        expected, scales = quantize(full_weights[name], axis, 127)
        np.testing.assert_array_equal(values.reshape(rows, -1), expected[:rows])
        scale_place = places[name + "_scale"]
        got = np.fromfile(twin, "<f4", count=int(scale_place["length"]) // 4, offset=int(scale_place["offset"]))
        np.testing.assert_array_equal(got, scales[:rows] if axis == 0 else scales)
    check_parity("int8", family["reference"][point], run_all(artifact, family["evaluation"]))


def test_onnxruntime_int8_computes_its_biases_from_the_familys_float_biases(family, tmp_path):
    """A QDQ engine stores no int32 bias and no bias scale: its graph computes them from the
    family's float bias and the family's weight scales, as onnxruntime.quantization does (bias
    scale = input scale x weight scale; round(bias / scale) in float64, half to even), and
    ONNX Runtime folds that before fusing the Gemm into a QGemm."""
    import onnx
    from onnx import numpy_helper

    engines = family["dir"] / "engines-int8"
    artifact = compile_engine(family["onnx"][POINTS[0]], engines, "x86-cpu", "onnxruntime", "int8",
                              calibration_inputs=family["calibration"], threads=1)
    model = onnx.load_from_string(lzma.decompress(artifact.path.read_bytes()))
    embedded = [t for t in model.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL]
    assert embedded and not [t.name for t in embedded if t.data_type == onnx.TensorProto.INT32
                             or t.name.endswith(("bias_quantized", "bias_quantized_scale"))]
    assert all(n.name == "" for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear"))
    point_names = {n.name for n in onnx.load(str(family["onnx"][POINTS[0]]), load_external_data=False).graph.node}
    assert {n.name for n in model.graph.node} - {""} <= point_names

    # the folded biases ONNX Runtime runs with (basic level: constants folded, nothing fused)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "folded.onnx")
    from adaexport.backends.shared_int8 import session_source
    ort.InferenceSession(session_source(artifact.path, artifact.runtime, options), options,
                         providers=["CPUExecutionProvider"])
    folded = onnx.load(str(tmp_path / "folded.onnx"), load_external_data=False)
    onnx.external_data_helper.load_external_data_for_model(folded, str(family["weights"].parent))   # the twin
    values = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    producer = {o: n for n in folded.graph.node for o in n.output}
    point = onnx.load(str(family["onnx"][POINTS[0]]))
    family_weights = {t.name: numpy_helper.to_array(t) for t in point.graph.initializer}
    point_gemms = {n.name: n for n in point.graph.node if n.op_type == "Gemm"}
    checked = 0
    for gemm in (n for n in folded.graph.node if n.op_type == "Gemm"):
        bias_dq, input_dq, weight_dq = (producer[gemm.input[i]] for i in (2, 0, 1))
        bias = values[bias_dq.input[0]]
        assert bias.dtype == np.int32
        scale = (values[input_dq.input[1]] * values[weight_dq.input[1]]).astype(np.float32)
        np.testing.assert_array_equal(values[bias_dq.input[1]], scale)
        float_bias = family_weights[point_gemms[gemm.name].input[2]]       # the same Gemm, by its name
        expected = np.round(float_bias.astype(np.float64) / scale.astype(np.float64))
        np.testing.assert_array_equal(bias, expected.astype(np.int32))
        checked += 1
    assert checked >= 2 * POINTS[0].depth


def test_onnxruntime_int8_quantizer_reads_stand_ins_and_the_engine_computes_the_same(family):
    """ONNX Runtime's quantizer reads zero stand-ins for the point's weights, one per shape and
    reading op, so it holds no copy of them; the engine, whose weights are the family's int8
    twin's either way, computes exactly what one quantized from the point's own weights does."""
    import onnx

    from adaexport.backends.onnxruntime_backend import quantize_qdq, reduce_range_for
    from adaexport.backends.shared_int8 import STAND_IN, session_source, share_weights, write_stand_ins

    point = POINTS[0]
    src = family["onnx"][point]
    engines = family["dir"] / "engines-stand-ins"
    engines.mkdir(exist_ok=True)
    stand = engines / "stand-ins.onnx"
    source = onnx.load(str(src), load_external_data=False)
    weights = {n.input[1] for n in source.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")
               and n.input[1] in {t.name for t in source.graph.initializer}}
    assert write_stand_ins(src, stand) == len(weights)
    model = onnx.load(str(stand))
    stand_ins = [t for t in model.graph.initializer if t.name.startswith(STAND_IN)]
    assert 0 < len(stand_ins) < len(weights) and not weights & {t.name for t in model.graph.initializer}
    assert all(not onnx.numpy_helper.to_array(t).any() for t in stand_ins)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)

    artifact = compile_engine(src, engines, "x86-cpu", "onnxruntime", "int8",
                              calibration_inputs=family["calibration"], threads=1)
    assert artifact.facts["quantization"]["weights_quantized"].startswith("stand-ins")
    assert artifact.facts["embedded_tensors"] == 0
    # the point quantized from its own weights, then made to read the twin as the engine does
    reduce_range, _ = reduce_range_for(load_target("x86-cpu"))
    own = engines / "own-weights.onnx"
    quantize_qdq(src, own, family["calibration"], symmetric_activations=False, reduce_range=reduce_range)
    share_weights(own, src, 63 if reduce_range else 127)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(session_source(own, artifact.runtime, options), options,
                                   providers=["CPUExecutionProvider"])
    expected = np.concatenate([session.run(None, {"image": x[None]})[0] for x in family["evaluation"]])
    np.testing.assert_array_equal(run_all(artifact, family["evaluation"]), expected)


def test_int8_engines_of_a_family_without_a_tensor_table_keep_their_own_weights(family, tmp_path):
    """A family exported before weights.tensors.json existed has no int8 twin: its ONNX Runtime
    int8 engine embeds its weights, says why, and still runs within int8 parity."""
    build = tmp_path / "build"
    shutil.copytree(family["dir"] / "onnx", build / "onnx")
    (build / "onnx" / "weights.tensors.json").unlink()
    point = POINTS[0]
    artifact = compile_engine(build / "onnx" / family["onnx"][point].name, build / "engines", "x86-cpu",
                              "onnxruntime", "int8", calibration_inputs=family["calibration"], threads=1)
    assert artifact.files == [f"{point.id}-onnxruntime-int8.onnx"]
    assert "no tensor table" in artifact.facts["weights"] and artifact.facts["shared_tensors"] == 0
    assert artifact.facts["quantization"]["weights_quantized"] == "the point's own"     # no stand-ins without a twin
    assert not any(p.name.startswith("weights-int8-") for p in (build / "onnx").iterdir()
                   if not (family["dir"] / "onnx" / p.name).exists())
    check_parity("int8", family["reference"][point], run_all(artifact, family["evaluation"]))


def test_onnxruntime_int8_weights_can_stay_embedded(family, tmp_path):
    """A target that prefers load time to disk keeps an int8 copy in each engine."""
    from adaexport.targets import parse_target

    x86 = load_target("x86-cpu")
    section = "[backends.onnxruntime]\n"
    embedded = parse_target(x86.source.replace(section, section + 'int8_weights = "embedded"\n'))
    artifact = compile_engine(family["onnx"][POINTS[0]], tmp_path, embedded, "onnxruntime", "int8",
                              calibration_inputs=family["calibration"], threads=1)
    assert artifact.files == ["t16_w48_d3-onnxruntime-int8.onnx"] and "shared_tensors" not in artifact.facts
    wrong = parse_target(x86.source.replace(section, section + 'int8_weights = "copied"\n'))
    with pytest.raises(BackendError, match='int8_weights must be "shared" or "embedded"'):
        compile_engine(family["onnx"][POINTS[0]], tmp_path / "w", wrong, "onnxruntime", "int8",
                       calibration_inputs=family["calibration"])


def test_int8_calibration_reads_weights_in_place_and_gives_onnxruntimes_ranges(family, tmp_path):
    """ort_calibration runs the point's own graph on its external weights (never loaded into the
    process) and gets onnxruntime's MinMaxCalibrater's ranges for the same tensors: bit for bit
    with the session prepacked as ORT's is, to float32 rounding without; and quantize_static,
    handed those ranges, writes the very QDQ model it writes calibrating itself."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, \
        quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    from adaexport.backends.base import calibration_batches
    from adaexport.backends.onnxruntime_backend import QUANTIZED_OPS
    from adaexport.backends.ort_calibration import minmax_ranges

    src = family["onnx"][POINTS[1]]
    assert (src.parent / "weights.bin").is_file()                # weights as external data, beside the graph
    batches = calibration_batches(family["calibration"], 1, 16)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.left = list(batches)

        def get_next(self):
            return {"image": self.left.pop(0)} if self.left else None

    calibrator = create_calibrator(src, list(QUANTIZED_OPS), augmented_model_path=str(tmp_path / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.MinMax)
    calibrator.collect_data(Reader())
    theirs = calibrator.compute_data()
    cwd = os.getcwd()
    os.chdir(tmp_path)                       # the weights are found beside the model, not in the working directory
    try:
        prepacked = minmax_ranges(src, batches, "image", QUANTIZED_OPS, prepack=True)
        lean = minmax_ranges(src, batches, "image", QUANTIZED_OPS)
    finally:
        os.chdir(cwd)
    assert len(theirs.keys()) > 10 and set(prepacked.keys()) == set(theirs.keys()) == set(lean.keys())
    for name in theirs.keys():
        low, high = theirs[name].range_value
        assert low < high
        np.testing.assert_array_equal(prepacked[name].range_value[0], low)
        np.testing.assert_array_equal(prepacked[name].range_value[1], high)
        np.testing.assert_allclose(lean[name].range_value[0], low, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(lean[name].range_value[1], high, rtol=1e-5, atol=1e-6)

    settings = dict(quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    quantize_static(str(src), str(tmp_path / "own.onnx"), Reader(), **settings)
    save_tensors_data(prepacked, tmp_path / "ranges.json")
    quantize_static(str(src), str(tmp_path / "given.onnx"), None, calibration_cache_path=str(tmp_path / "ranges.json"),
                    **settings)
    assert (tmp_path / "given.onnx").read_bytes() == (tmp_path / "own.onnx").read_bytes()


@pytest.mark.parametrize("table", [{"snippets_mode": "DISABLE"}, "DISABLE", {"SNIPPETS_MODE": "DISABLE", 3: 1}])
def test_a_precisions_openvino_properties_must_be_a_table_of_property_names(table):
    from adaexport.backends.base import BackendError
    from adaexport.backends.openvino_backend import precision_properties

    assert precision_properties({"fp32": {"SNIPPETS_MODE": "DISABLE"}}, "fp32") == {"SNIPPETS_MODE": "DISABLE"}
    assert precision_properties({"fp32": {"SNIPPETS_MODE": "DISABLE"}}, "int8") == {}
    with pytest.raises(BackendError, match=r"^\[backends.openvino.fp32\] must be a table of OpenVINO properties"):
        precision_properties({"fp32": table}, "fp32")
