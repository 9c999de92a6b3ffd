"""The float16 twin of a family's weights (backends/half_weights.py): what OpenVINO's fp16
and bf16 engines read, 2 bytes a parameter. Built on a small hand-written ONNX whose
tensors are laid out in a weights.bin as a family's are, and run with ONNX Runtime."""

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from adaexport.backends.half_weights import HALF_SUFFIX, half_twin, half_weights


def _external(model):
    return {t.name: {e.key: e.value for e in t.external_data} for t in model.graph.initializer
            if t.data_location == TensorProto.EXTERNAL}


@pytest.fixture
def point(tmp_path):
    """x (1, 4) -> MatMul W (4, 300) -> Gather idx (256 int64) -> MatMul W2 (256, 2), every
    initializer external in one weights.bin; W2 holds one value float16 cannot."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 300)).astype(np.float32)
    idx = np.arange(256, dtype=np.int64) + 7
    w2 = rng.standard_normal((256, 2)).astype(np.float32) * 0.1
    w2[3, 1] = 1e5
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"]), helper.make_node("Gather", ["y", "idx"], ["z"], axis=1),
         helper.make_node("MatMul", ["z", "W2"], ["out"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(idx, "idx"), numpy_helper.from_array(w2, "W2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "onnx" / "p.onnx"
    path.parent.mkdir()
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=1024)
    assert set(_external(onnx.load(str(path), load_external_data=False))) == {"W", "idx", "W2"}
    return {"path": path, "w": w, "idx": idx, "w2": w2}


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_the_twin_reads_float16_weights_at_half_their_offsets(point):
    path = point["path"]
    twin = half_twin(path)
    assert twin.name == "p" + HALF_SUFFIX and twin.parent == path.parent
    onnx.checker.check_model(str(twin), full_check=True)
    model = onnx.load(str(twin), load_external_data=False)
    weights = path.parent / "weights.bin"
    half = half_weights(weights)
    assert half.stat().st_size * 2 == weights.stat().st_size
    source = _external(onnx.load(str(path), load_external_data=False))
    # W: float16 in the half file at half its offset, cast back to float for its readers
    assert _external(model) == {"W__fp16": {"location": half.name, "offset": str(int(source["W"]["offset"]) // 2),
                                            "length": str(int(source["W"]["length"]) // 2)}}
    stored = np.fromfile(half, dtype="<f2", count=4 * 300, offset=int(source["W"]["offset"]) // 2)
    np.testing.assert_array_equal(stored.reshape(4, 300), point["w"].astype(np.float16))
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    assert [(n.input[0], n.output[0]) for n in casts] == [("W__fp16", "W")]
    embedded = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
                if t.data_location != TensorProto.EXTERNAL}
    np.testing.assert_array_equal(embedded["idx"], point["idx"])      # not float32: embedded as it is
    np.testing.assert_array_equal(embedded["W2"], point["w2"])        # 1e5 is beyond float16: kept float32
    assert embedded["W2"].dtype == np.float32
    x = np.random.default_rng(1).standard_normal((1, 4)).astype(np.float32)
    expected = (x @ point["w"].astype(np.float16).astype(np.float32))[:, point["idx"]] @ point["w2"]
    np.testing.assert_allclose(_run(twin, x), expected, rtol=1e-5, atol=1e-3)
    assert not np.array_equal(_run(twin, x), _run(path, x))            # the weights were rounded


def test_the_twin_is_rewritten_only_when_it_changes_and_follows_the_weights(point):
    path = point["path"]
    twin = half_twin(path)
    half = half_weights(path.parent / "weights.bin")
    before = (twin.read_bytes(), twin.stat().st_mtime_ns, half.stat().st_mtime_ns)
    assert half_twin(path) == twin
    assert (twin.read_bytes(), twin.stat().st_mtime_ns, half.stat().st_mtime_ns) == before
    # new weights (a new export) -> a new half file, named after them; the twin reads it
    weights = path.parent / "weights.bin"
    data = bytearray(weights.read_bytes())
    offset = int(_external(onnx.load(str(path), load_external_data=False))["W"]["offset"])
    data[offset + 28:offset + 32] = np.float32(2.5).tobytes()        # W[0, 7], the first one gathered
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(0, 0))      # an old mtime: the name, not the time, says which weights
    half_twin(path)
    new_half = half_weights(weights)
    assert new_half != half and _external(onnx.load(str(twin), load_external_data=False))["W__fp16"]["location"] \
        == new_half.name
    x = np.zeros((1, 4), np.float32)
    x[0, 0] = 1.0
    row = point["w"][0].astype(np.float16).astype(np.float32)
    row[7] = 2.5
    np.testing.assert_allclose(_run(twin, x), row[None, point["idx"]] @ point["w2"], rtol=1e-5, atol=1e-3)


def test_an_attention_mask_beyond_float16_is_read_as_minus_infinity_with_the_same_softmax(tmp_path):
    """A mask's -3.4e38 (float16 cannot hold it) read only by an Add before a Softmax comes from
    the twin as -inf: the same probabilities, bit for bit, and nothing embedded. The same values
    read by a Mul are no mask: embedded in float32."""
    rng = np.random.default_rng(2)
    mask = np.where(rng.random((1, 300)) < 0.5, np.float32(np.finfo(np.float32).min), np.float32(0))
    mask[0, 0] = 0
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "mask"], ["scores"]), helper.make_node("Softmax", ["scores"], ["p"], axis=-1),
         helper.make_node("Mul", ["x", "scale"], ["scaled"]), helper.make_node("Softmax", ["scaled"], ["q"], axis=-1)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 300])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 300]) for n in ("p", "q")],
        [numpy_helper.from_array(mask, "mask"), numpy_helper.from_array(mask * 0 + np.float32(-3e38), "scale")])
    path = tmp_path / "onnx" / "m.onnx"
    path.parent.mkdir()
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path),
                    save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
                    size_threshold=1024)
    twin = half_twin(path)
    model = onnx.load(str(twin), load_external_data=False)
    assert set(_external(model)) == {"mask__fp16"}
    scale = next(t for t in model.graph.initializer if t.name == "scale")
    assert scale.data_type == TensorProto.FLOAT
    stored = np.fromfile(half_weights(path.parent / "weights.bin"), dtype="<f2", count=300,
                         offset=int(_external(model)["mask__fp16"]["offset"]))
    assert np.isneginf(stored[mask[0] < 0]).all()
    x = rng.standard_normal((1, 300)).astype(np.float32)
    session = ort.InferenceSession(str(twin), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for got, expected in zip(session.run(None, {"x": x}), reference.run(None, {"x": x})):
        np.testing.assert_array_equal(got, expected)
