"""The family's int8 twin (adaexport.backends.int8_twin): one int8 copy of the weights, laid
out from the tensor table written with weights.bin, read as leading bytes by every point."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from adaexport.backends.base import BackendError
from adaexport.backends.int8_twin import int8_twin, int8_view, locate, quantize, slots
from adaexport.export import write_tensor_table
from adaexport.weight_store import WeightStore, externalize, table_path


def test_quantize_is_symmetric_per_channel_round_half_to_even():
    weights = np.array([[1.0, -0.5, 0.25, 0.0], [0.0, 0.0, 0.0, 0.0], [-2.0, 1.0, 0.5, 0.015625]], np.float32)
    q, scales = quantize(weights, 0, 4)
    np.testing.assert_array_equal(scales, np.array([0.25, 1.0, 0.5], np.float32))     # absmax / qmax; 1 if all zero
    np.testing.assert_array_equal(q, [[4, -2, 1, 0], [0, 0, 0, 0], [-4, 2, 1, 0]])     # 0.5/0.5=1, 0.03125 -> 0
    q, scales = quantize(weights, 1, 127)            # along columns: one scale per column
    assert scales.shape == (4,) and np.abs(q).max() == 127 and q.dtype == np.int8
    np.testing.assert_allclose(q * scales, weights, atol=float(scales.max()) / 2)
    half = np.array([[2.5, 0.5, -0.5, 127.0]], np.float32)      # scale 1: halves round to even
    np.testing.assert_array_equal(quantize(half, 0, 127)[0], [[2, 0, 0, 127]])


def _table(*entries):
    return [{"name": n, "offset": o, "length": 4 * int(np.prod(d)), "dims": list(d), "axis": a}
            for n, o, d, a in entries]


def test_slots_store_weights_in_int8_with_their_scales_and_the_rest_in_float32():
    table = _table(("fc1", 0, (6, 4), 0), ("norm", 128, (4,), None), ("fc2", 192, (6, 4), 1),
                   ("twice", 320, (4, 4), 0), ("twice_t", 320, (4, 4), 1))
    layout, zeros_at, zeros_length = slots(table)
    fc1, norm, fc2, twice = (layout[o] for o in (0, 128, 192, 320))
    assert (fc1.at, fc1.scales_at, fc1.channels) == (0, 64, 6)        # 24 int8 bytes, then 6 scales, aligned
    assert norm.axis is None and norm.at == 128 and fc2.at == 192 and fc2.scales_at == 256 and fc2.channels == 4
    assert twice.axis is None            # one stored tensor read as a weight along two axes: kept in float32
    assert all(s.at % 64 == 0 for s in layout.values()) and zeros_at % 64 == 0 and zeros_length == 4 * 6
    with pytest.raises(BackendError, match="not float32"):
        slots([{**table[0], "length": 10}])


@pytest.fixture()
def family(tmp_path):
    """A weights file laid out from a small template: fc1 (Gemm transB=1, output channels as
    rows), fc2 (Gemm, as columns), a MatMul weight and a norm, with its tensor table."""
    rng = np.random.default_rng(0)
    tensors = {"fc1": rng.standard_normal((6, 8)).astype(np.float32),
               "fc2": rng.standard_normal((6, 8)).astype(np.float32),
               "proj": rng.standard_normal((8, 8)).astype(np.float32) * 3,
               "norm": rng.standard_normal(300).astype(np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "fc1"], ["h"], transB=1),
             helper.make_node("Gemm", ["h", "fc2"], ["y"]),
             helper.make_node("MatMul", ["y", "proj"], ["z"]),
             helper.make_node("Add", ["z", "norm_view"], ["out"]),
             helper.make_node("Slice", ["norm", "s", "e"], ["norm_view"])]
    graph = helper.make_graph(nodes, "template", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8])],
                              [numpy_helper.from_array(v, k) for k, v in tensors.items()] +
                              [numpy_helper.from_array(np.array([0], np.int64), n) for n in ("s",)] +
                              [numpy_helper.from_array(np.array([8], np.int64), "e")])
    template = helper.make_model(graph)
    weights = tmp_path / "weights.bin"
    with open(weights, "w+b") as file:
        store = WeightStore(file, key_bytes=64)
        externalize(template, store, "weights.bin", threshold=64)
    write_tensor_table(weights, [template])
    return weights, tensors


def test_the_twin_holds_each_weight_once_in_int8_and_the_rest_in_float32(family):
    weights, tensors = family
    table = json.loads(table_path(weights).read_text())["tensors"]
    assert {t["name"]: t["axis"] for t in table} == {"fc1": 0, "fc2": 1, "proj": 1, "norm": None}
    twin = int8_twin(weights)
    assert twin.path.parent == weights.parent and twin.path.name.startswith("weights-int8-")
    assert twin.path.stat().st_size < weights.stat().st_size
    by_name = {s.name: s for s in twin.slots.values()}
    for name, axis in (("fc1", 0), ("fc2", 1), ("proj", 1)):
        slot = by_name[name]
        (q_at, count), (s_at, s_len) = int8_view(twin, slot, tensors[name].shape)
        expected, scales = quantize(tensors[name], axis, 127)
        np.testing.assert_array_equal(np.fromfile(twin.path, np.int8, count, offset=q_at), expected.reshape(-1))
        np.testing.assert_array_equal(np.fromfile(twin.path, "<f4", s_len // 4, offset=s_at), scales)
    np.testing.assert_array_equal(np.fromfile(twin.path, "<f4", 300, offset=by_name["norm"].at), tensors["norm"])
    assert not np.fromfile(twin.path, np.uint8, twin.zeros_length, offset=twin.zeros_at).any()
    # made once: a second call finds it; 7-bit weights are another file
    stamp = os.stat(twin.path).st_mtime_ns
    assert int8_twin(weights).path == twin.path and os.stat(twin.path).st_mtime_ns == stamp
    seven = int8_twin(weights, 63)
    assert seven.path.name.startswith("weights-int7-") and np.abs(
        np.fromfile(seven.path, np.int8, 48, offset=by_name["fc1"].at)).max() == 63
    # no table beside the weights (a family exported before tables): no twin
    table_path(weights).unlink()
    assert int8_twin(weights) is None


def test_a_narrower_point_reads_leading_rows_and_nothing_else(family):
    weights, _ = family
    twin = int8_twin(weights)
    fc1 = next(s for s in twin.slots.values() if s.name == "fc1")
    assert locate(twin, fc1.offset, 4 * 4 * 8, (4, 8)) is fc1                  # 4 of its 6 rows
    (q_at, count), (s_at, s_len) = int8_view(twin, fc1, (4, 8))
    assert (q_at, count, s_at, s_len) == (fc1.at, 32, fc1.scales_at, 16)      # their scales: the first 4
    fc2 = next(s for s in twin.slots.values() if s.name == "fc2")
    assert int8_view(twin, fc2, (4, 8))[1] == (fc2.scales_at, 32)             # columns: every scale
    assert locate(twin, fc1.offset, 4 * 6 * 4, (6, 4)) is None                # columns are not a prefix
    assert locate(twin, fc1.offset + 64, 4 * 8, (1, 8)) is None               # not a tensor's start
    assert locate(twin, fc1.offset, 4 * 7 * 8, (7, 8)) is None                # longer than the tensor
