"""The float16 twin of a family's weights (backends/half_weights.py): what OpenVINO's fp16
and bf16 engines are bound to at load, 2 bytes a parameter. Built on a weights.bin laid out
as a family's is (a small hand-written ONNX with external data)."""

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from adaexport.backends.half_weights import half_weights


def _external(model):
    return {t.name: {e.key: e.value for e in t.external_data} for t in model.graph.initializer
            if t.data_location == TensorProto.EXTERNAL}


@pytest.fixture
def point(tmp_path):
    """x (1, 4) -> MatMul W (4, 300) -> MatMul W2 (300, 2), every initializer external in one
    weights.bin; W2 holds one value float16 cannot."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 300)).astype(np.float32)
    w2 = rng.standard_normal((300, 2)).astype(np.float32) * 0.1
    w2[3, 1] = 1e5
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"]), helper.make_node("MatMul", ["y", "W2"], ["out"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(w2, "W2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "onnx" / "p.onnx"
    path.parent.mkdir()
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=1024)
    return {"path": path, "w": w, "w2": w2,
            "places": _external(onnx.load(str(path), load_external_data=False))}


def test_the_twin_holds_every_float32_as_float16_at_half_its_offset(point):
    weights = point["path"].parent / "weights.bin"
    half = half_weights(weights)
    assert half.parent == weights.parent and half.name.startswith("weights-fp16-")
    assert half.stat().st_size * 2 == weights.stat().st_size
    for name, values in (("W", point["w"]), ("W2", point["w2"])):
        place = point["places"][name]
        stored = np.fromfile(half, dtype="<f2", count=values.size, offset=int(place["offset"]) // 2)
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(stored.reshape(values.shape), values.astype(np.float16))
    assert np.isposinf(np.fromfile(half, dtype="<f2", count=point["w2"].size,
                                   offset=int(point["places"]["W2"]["offset"]) // 2)[7])   # 1e5: beyond float16


def test_the_twin_is_made_once_and_follows_the_weights(point):
    weights = point["path"].parent / "weights.bin"
    half = half_weights(weights)
    before = (half.read_bytes(), half.stat().st_mtime_ns)
    assert half_weights(weights) == half and (half.read_bytes(), half.stat().st_mtime_ns) == before
    # new weights (a new export) -> a new half file, named after them
    data = bytearray(weights.read_bytes())
    offset = int(point["places"]["W"]["offset"])
    data[offset + 28:offset + 32] = np.float32(2.5).tobytes()        # W[0, 7]
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(0, 0))      # an old mtime: the name, not the time, says which weights
    new_half = half_weights(weights)
    assert new_half != half and new_half.parent == half.parent
    assert np.fromfile(new_half, dtype="<f2", count=1, offset=offset // 2 + 14)[0] == np.float16(2.5)


def test_a_tensor_float16_cannot_hold_stays_in_the_half_ir(point, tmp_path):
    """OpenVINO's own float16 compression keeps W2 (1e5) otherwise than the twin's infinity: the IR
    keeps its own copy of it, and only W is bound to the twin."""
    pytest.importorskip("openvino")
    import lzma

    import openvino as ov

    from adaexport.backends.openvino_backend import half_ir

    out = tmp_path / "engines"
    out.mkdir()
    files, facts = half_ir(point["path"], out, "p-openvino-fp16")
    assert facts["shared_tensors"] == 1 and facts["embedded_tensors"] == 1
    xml, weights, half = files
    core = ov.Core()
    model = core.read_model(lzma.decompress((out / xml).read_bytes()), lzma.decompress((out / weights).read_bytes()))
    bound = [p.get_friendly_name() for p in model.get_parameters() if p.get_friendly_name() != "x"]
    assert len(bound) == 1 and bound[0].endswith("W") and half.startswith("../onnx/weights-fp16-")
