"""Exporting a family of static ONNX models that share one weights file (adaexport.export)."""

import hashlib
import itertools
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from adaexport.export import (
    FORBIDDEN_OPS,
    OPSET,
    ExportError,
    WeightStore,
    export_family,
    export_point_proto,
    export_point,
    lay_out_weights,
    verify_static,
)
from adaexport.model.static import specialize
from adaexport.space import ConfigPoint

from .conftest import CONFORMANCE, ROOT

torch.set_num_threads(1)

# 2 tokens x 3 widths x 2 depths of the classification model (trained widths 32/48/64).
FAMILY = [ConfigPoint(t, w, d) for t, w, d in itertools.product((16, 64), (32, 48, 64), (1, 4))]
WIDEST = ConfigPoint(64, 64, 4)
METADATA = {"adaexport.source_sha256": "ab" * 32, "adaexport.tool_version": "0.1.0"}


def ext_info(tensor):
    return {e.key: e.value for e in tensor.external_data}


def load_structure(path):
    return onnx.load(str(path), load_external_data=False)


def param_bytes(model):
    return sum(p.numel() * p.element_size() for p in model.parameters())


def tree_bytes(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def reference(model, point, attention, image):
    with torch.no_grad():
        return [o.numpy() for o in specialize(model, point, attention)(torch.from_numpy(image))]


def run_ort(path, image):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [o.name for o in session.get_outputs()], session.run(None, {"image": image})


def run_openvino(path, image):
    import openvino as ov

    core = ov.Core()
    core.set_property("CPU", {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32"})
    compiled = core.compile_model(core.read_model(str(path)), "CPU")
    result = compiled({"image": image})
    return [result[compiled.output(i)] for i in range(len(compiled.outputs))]


@pytest.fixture(scope="module")
def classification(conformance_models):
    return conformance_models["classification"]


@pytest.fixture(scope="module")
def family(classification, tmp_path_factory):
    out = tmp_path_factory.mktemp("family")
    seen = []
    exported, weights = export_family(classification.model, FAMILY, out, attention="block", batch=2,
                                      metadata=METADATA, on_exported=seen.append)
    return {"out": out, "exported": exported, "weights": weights, "seen": seen}


def test_one_file_per_point_named_by_id(family):
    exported, out = family["exported"], family["out"]
    assert [e.point for e in exported] == FAMILY
    assert [e.path for e in exported] == [out / f"{p.id}.onnx" for p in FAMILY]
    assert family["seen"] == exported
    assert family["weights"] == out / "weights.bin"
    # Nothing else is left behind (no temp files); the weights' tensor table lies beside them.
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{p.id}.onnx" for p in FAMILY] +
                                                           ["weights.bin", "weights.tensors.json"])


def test_the_tensor_table_says_where_each_tensor_of_the_weights_file_ends(family):
    """weights.tensors.json lists the full point's tensors in the weights file, each weight's
    output-channel axis (fc1 as rows, fc2 as columns), and every point's external tensor is
    the leading bytes of one of them: what the int8 engines lay their weights out from."""
    import json

    table = json.loads((family["out"] / "weights.tensors.json").read_text())
    assert table["weights"] == "weights.bin"
    tensors = table["tensors"]
    ends = [(t["offset"], t["offset"] + t["length"]) for t in tensors]
    assert all(a[1] <= b[0] for a, b in zip(ends, ends[1:])) and ends[-1][1] <= family["weights"].stat().st_size
    assert all(t["length"] == 4 * int(np.prod(t["dims"])) for t in tensors)
    axes = {t["name"]: t["axis"] for t in tensors}
    assert axes["blocks.0.ffn.fc1.weight"] == 0 and axes["blocks.0.ffn.fc2.weight_t"] == 1
    assert axes["patch_embed.embed.proj.weight"] == 0 and axes["latents"] is None
    assert sum(a is not None for a in axes.values()) > len(axes) / 2
    starts = {t["offset"]: t["length"] for t in tensors}
    for model in family["exported"]:
        for tensor in onnx.load(str(model.path), load_external_data=False).graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                place = {e.key: e.value for e in tensor.external_data}
                assert int(place["length"]) <= starts[int(place["offset"])], (model.point, tensor.name)


def test_checker_and_static_interface(family, classification):
    cfg = classification.config
    for e in family["exported"]:
        onnx.checker.check_model(str(e.path), full_check=True)
        proto = load_structure(e.path)
        assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)]
        assert OPSET == 17
        (image,) = proto.graph.input
        assert image.name == "image"
        assert image.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert [d.dim_value for d in image.type.tensor_type.shape.dim] == [2, cfg.in_channels, cfg.img_size, cfg.img_size]
        (logits,) = proto.graph.output
        assert logits.name == "logits"
        assert [d.dim_value for d in logits.type.tensor_type.shape.dim] == [2, cfg.num_classes]


def test_a_points_file_names_its_intermediate_values_compactly(family):
    """No value infos and every intermediate value `t<hex>`, numbered as produced; the input,
    outputs and initializers keep their names, the nodes the exporter's (unique) names."""
    for e in family["exported"]:
        graph = load_structure(e.path).graph
        assert not graph.value_info
        kept = {"image"} | {o.name for o in graph.output} | {t.name for t in graph.initializer}
        produced = [o for n in graph.node for o in n.output if o not in kept]
        assert produced == [f"t{i:x}" for i in range(len(produced))]
        assert all(name in kept or name in produced for n in graph.node for name in n.input if name)
        names = [n.name for n in graph.node]
        assert all(names) and len(set(names)) == len(names) and any("/" in name for name in names)


def test_op_types_are_static_and_reported(family):
    for e in family["exported"]:
        proto = load_structure(e.path)
        ops = sorted({n.op_type for n in proto.graph.node})
        assert e.op_types == ops
        assert not set(ops) & FORBIDDEN_OPS
        assert not set(ops) & {"Shape", "If", "Loop", "Resize", "DFT", "STFT", "Constant"}
        assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
        assert {"MatMul", "Gemm", "Softmax", "LayerNormalization", "Conv"} <= set(ops)
        types = [v.type.tensor_type.elem_type for v in
                 list(proto.graph.value_info) + list(proto.graph.input) + list(proto.graph.output)]
        types += [t.data_type for t in proto.graph.initializer]
        assert onnx.TensorProto.COMPLEX64 not in types and onnx.TensorProto.COMPLEX128 not in types


def test_block_attention_is_exported_as_prefix_runs_without_a_mask(family, classification):
    """Grans 16, 32, 48, 64: a block of 64 tokens attends in four runs (four Softmax), one of 16
    tokens in one; besides them one Softmax each for the read-in and the write-out. No tensor of
    the graphs or the weights file holds a masked score (float32's lowest)."""
    from onnx import numpy_helper

    lowest = np.finfo(np.float32).min
    for e in family["exported"]:
        proto = onnx.load(str(e.path))
        softmax = sum(n.op_type == "Softmax" for n in proto.graph.node)
        assert softmax == e.point.depth * (4 if e.point.tokens == 64 else 1) + 2, e.point.id
        for tensor in proto.graph.initializer:
            values = numpy_helper.to_array(tensor)
            assert not (values.dtype == np.float32 and (values == lowest).any()), (e.point.id, tensor.name)


def test_metadata_records_point_attention_and_given_keys(family):
    for e in family["exported"]:
        props = {p.key: p.value for p in load_structure(e.path).metadata_props}
        assert props["adaexport.point.tokens"] == str(e.point.tokens)
        assert props["adaexport.point.width"] == str(e.point.width)
        assert props["adaexport.point.depth"] == str(e.point.depth)
        assert props["adaexport.point.id"] == e.point.id
        assert props["adaexport.attention"] == "block"
        assert props["adaexport.batch"] == "2"
        for key, value in METADATA.items():
            assert props[key] == value


def test_all_files_reference_one_weights_file(family):
    weights_size = family["weights"].stat().st_size
    for e in family["exported"]:
        external = [t for t in load_structure(e.path).graph.initializer
                    if t.data_location == onnx.TensorProto.EXTERNAL]
        assert external, "the large tensors must live in the shared weights file"
        for t in external:
            info = ext_info(t)
            assert info["location"] == "weights.bin"
            assert int(info["offset"]) + int(info["length"]) <= weights_size
        # Only small tensors are embedded: at every trained token count (16 as 64), the
        # token-dependent constants (read-in queries, mask) are in the weights file too.
        embedded = [t for t in load_structure(e.path).graph.initializer
                    if t.data_location != onnx.TensorProto.EXTERNAL]
        assert not [t.name for t in embedded if len(t.raw_data) >= 1024], e.point


def test_narrower_ffn_weights_are_prefixes_of_the_widest(family, classification):
    by_point = {e.point: load_structure(e.path) for e in family["exported"]}
    widest = {t.name: ext_info(t) for t in by_point[WIDEST].graph.initializer if t.external_data}
    cfg = classification.config
    full_hidden = int(cfg.embed_dim * cfg.ffn_ratio)
    checked = 0
    for point, proto in by_point.items():
        hidden = int(point.width * cfg.ffn_ratio)
        for t in proto.graph.initializer:
            if not (".ffn.fc1.weight" in t.name or ".ffn.fc2.weight_t" in t.name) or not t.name.startswith("blocks."):
                continue
            assert list(t.dims) == [hidden, cfg.embed_dim]
            info, wide = ext_info(t), widest[t.name]
            assert info["offset"] == wide["offset"]
            assert int(info["length"]) == hidden * cfg.embed_dim * 4
            if point.width < cfg.embed_dim:
                assert int(info["length"]) < int(wide["length"]) == full_hidden * cfg.embed_dim * 4
            checked += 1
    assert checked == sum(2 * p.depth for p in FAMILY)

    # ...and the shared bytes really are the sliced weights: fc1 rows [:h], fc2 columns [:, :h].
    data = family["weights"].read_bytes()
    block = classification.model.blocks[1].ffn
    narrow = {t.name: ext_info(t) for t in by_point[ConfigPoint(16, 32, 4)].graph.initializer if t.external_data}
    h = int(32 * cfg.ffn_ratio)
    for name, expected in (("blocks.1.ffn.fc1.weight", block.fc1.weight[:h]),
                           ("blocks.1.ffn.fc2.weight_t", block.fc2.weight[:, :h].t())):
        info = narrow[name]
        stored = np.frombuffer(data, np.float32, int(info["length"]) // 4, int(info["offset"]))
        np.testing.assert_array_equal(stored, expected.detach().contiguous().numpy().ravel())


def test_family_costs_about_one_model(family, classification):
    size = family["weights"].stat().st_size
    assert size < 1.3 * param_bytes(classification.model)
    # Without sharing, the points' external tensors would add up to many models.
    total = 0
    for e in family["exported"]:
        for t in load_structure(e.path).graph.initializer:
            if t.external_data:
                total += int(ext_info(t)["length"])
    assert total > 5 * size


@pytest.mark.parametrize("index", [0, 7, 11])
def test_outputs_match_pytorch_in_onnx_ort_and_openvino(family, classification, index):
    e = family["exported"][index]
    image = np.random.default_rng(index).standard_normal((2, 3, 32, 32)).astype(np.float32)
    (expected,) = reference(classification.model, e.point, "block", image)
    # onnx.load pulls the external data from beside the file.
    proto = onnx.load(str(e.path))
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    names, (ort_logits,) = run_ort(e.path, image)
    assert names == ["logits"]
    (ov_logits,) = run_openvino(e.path, image)
    assert ort_logits.shape == ov_logits.shape == expected.shape == (2, 10)
    np.testing.assert_allclose(ort_logits, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(ov_logits, expected, atol=1e-4, rtol=0)


def test_distilled_model_exports_logits_and_features_at_batch_1(conformance_models, tmp_path):
    model = conformance_models["distill"].model
    cfg = model.config
    points = [ConfigPoint(64, 64, 4), ConfigPoint(32, 48, 2)]
    exported, weights = export_family(model, points, tmp_path, attention="full", batch=1)
    image = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    patches = (cfg.img_size // cfg.patch_size) ** 2
    for e in exported:
        proto = load_structure(e.path)
        assert [o.name for o in proto.graph.output] == ["logits", "features"]
        assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]
        assert {p.key: p.value for p in proto.metadata_props}["adaexport.attention"] == "full"
        expected = reference(model, e.point, "full", image)
        names, ort_out = run_ort(e.path, image)
        assert names == ["logits", "features"]
        ov_out = run_openvino(e.path, image)
        assert [o.shape for o in ort_out] == [(1, cfg.num_classes), (1, patches, cfg.output_feat_dim)]
        for got_ort, got_ov, want in zip(ort_out, ov_out, expected):
            np.testing.assert_allclose(got_ort, want, atol=1e-4, rtol=0)
            np.testing.assert_allclose(got_ov, want, atol=1e-4, rtol=0)
    assert weights.stat().st_size < 1.3 * param_bytes(model)


DETERMINISM_POINTS = [ConfigPoint(16, 32, 1), ConfigPoint(64, 64, 2), ConfigPoint(32, 48, 2)]

_SUBPROCESS_EXPORT = """
import sys, torch
torch.set_num_threads(1)
from pathlib import Path
from adaexport.export import export_family
from adaexport.model import load_checkpoint
from adaexport.space import ConfigPoint
model = load_checkpoint(sys.argv[2]).model
points = [ConfigPoint(*map(int, p.split(","))) for p in sys.argv[3:]]
export_family(model, points, Path(sys.argv[1]), attention="block", metadata={"k": "v"})
"""


def test_export_is_deterministic_across_runs_and_processes(classification, tmp_path):
    first, second, third = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    export_family(classification.model, DETERMINISM_POINTS, first, attention="block", metadata={"k": "v"})
    # A second run over an existing output replaces the files with identical bytes.
    export_family(classification.model, DETERMINISM_POINTS, second, attention="block", metadata={"k": "v"})
    a = tree_bytes(first)
    assert a == tree_bytes(second)
    export_family(classification.model, DETERMINISM_POINTS, first, attention="block", metadata={"k": "v"})
    assert tree_bytes(first) == a
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = [f"{p.tokens},{p.width},{p.depth}" for p in DETERMINISM_POINTS]
    subprocess.run([sys.executable, "-c", _SUBPROCESS_EXPORT, str(third), str(CONFORMANCE / "classification"), *args],
                   check=True, env=env, timeout=300)
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in tree_bytes(third).items()}
    assert digests == {name: hashlib.sha256(data).hexdigest() for name, data in a.items()}


def test_weights_file_does_not_depend_on_the_grid(classification, tmp_path):
    """The shared file holds the full point's tensors whatever is exported, so a point
    exported alone (e.g. a resumed build) is byte-identical to one exported in a family."""
    model = classification.model
    family, _ = export_family(model, [ConfigPoint(16, 32, 1), ConfigPoint(64, 48, 4)], tmp_path / "a",
                              attention="block")
    single, _ = export_family(model, [ConfigPoint(16, 32, 1)], tmp_path / "b", attention="block")
    assert (tmp_path / "a" / "weights.bin").read_bytes() == (tmp_path / "b" / "weights.bin").read_bytes()
    assert family[0].path.read_bytes() == single[0].path.read_bytes()


def test_frozen_store_only_references(classification, tmp_path):
    model = classification.model
    store = lay_out_weights(model, tmp_path / "weights.bin", attention="full")
    size = store.size
    assert (tmp_path / "weights.bin").stat().st_size == size and not list(tmp_path.glob(".*.tmp"))
    exported = export_point(model, ConfigPoint(40, 32, 2), tmp_path, store, attention="full")
    assert store.size == size
    proto = load_structure(exported.path)
    embedded = [t.name for t in proto.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL
                and len(t.raw_data) >= 1024]
    external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and all(int(ext_info(t)["offset"]) + int(ext_info(t)["length"]) <= size for t in external)
    assert embedded  # token-count-dependent constants (40 tokens) are not in the full point's file


def test_weight_store_dedupes_exact_and_prefix_tensors(tmp_path):
    rng = np.random.default_rng(0)
    wide = rng.standard_normal((40, 16)).astype(np.float32).tobytes()
    other = rng.standard_normal((30, 16)).astype(np.float32).tobytes()
    with open(tmp_path / "w.bin", "w+b") as f:
        store = WeightStore(f)
        off_wide, len_wide = store.add(wide)
        off_other, _ = store.add(other)
        assert store.add(wide) == (off_wide, len_wide)
        assert store.add(wide[:20 * 64]) == (off_wide, 20 * 64)  # rows [:20] of the (40, 16) tensor
        assert off_other % 64 == 0 and off_other >= off_wide + len_wide
        # A longer tensor that merely starts like a stored one is stored anew.
        longer = wide + b"\x01" * 64
        off_longer, _ = store.add(longer)
        assert off_longer not in (off_wide, off_other)
        assert store.stats["stored"] == 3 and store.stats["exact"] == 1 and store.stats["prefix"] == 1
    data = (tmp_path / "w.bin").read_bytes()
    assert data[off_wide:off_wide + len_wide] == wide and data[off_longer:off_longer + len(longer)] == longer


def test_verify_static_rejects_shape_dependent_graphs():
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])
    logits = helper.make_tensor_value_info("logits", TensorProto.INT64, [4])
    graph = helper.make_graph([helper.make_node("Shape", ["image"], ["logits"])], "g", [image], [logits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    with pytest.raises(ExportError, match="Shape"):
        verify_static(model, [1, 3, 8, 8], ["logits"])
    with pytest.raises(ExportError, match="expected float32"):
        verify_static(model, [2, 3, 8, 8], ["logits"])


def test_point_proto_embeds_everything_and_rejects_clashing_metadata(classification):
    module = specialize(classification.model, ConfigPoint(16, 32, 1), "full")
    proto = export_point_proto(module, batch=1, metadata={"extra": "1"})
    onnx.checker.check_model(proto, full_check=True)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert {p.key: p.value for p in proto.metadata_props}["extra"] == "1"
    with pytest.raises(ValueError, match="adaexport.point.width"):
        export_point_proto(module, metadata={"adaexport.point.width": "64"})


@pytest.mark.parametrize("variant, attention", [("classification", "block"), ("classification", "full"),
                                                ("distill", "block")])
def test_fold_gives_what_the_onnxscript_optimizer_gives(conformance_models, variant, attention):
    """`fold` runs only the rewrite rule that fires on these graphs; the bytes must be the
    full optimizer's, or exports would silently change."""
    from onnxscript import optimizer

    from adaexport.export_proto import _raw_export, fold

    model = conformance_models[variant].model
    cfg = model.config
    module = specialize(model, ConfigPoint(cfg.mask_token_grans[-1], cfg.mat_dims[0], 2), attention)
    raw = _raw_export(module, torch.zeros(1, cfg.in_channels, cfg.img_size, cfg.img_size), "torchscript")
    assert fold(raw).SerializeToString(deterministic=True) == \
        optimizer.optimize(raw).SerializeToString(deterministic=True)


@pytest.mark.slow
def test_dynamo_exporter_gives_the_same_model(classification, tmp_path):
    points = [ConfigPoint(32, 64, 2), ConfigPoint(32, 32, 2)]
    exported, _ = export_family(classification.model, points, tmp_path, attention="block", exporter="dynamo")
    image = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    for e in exported:
        assert not set(e.op_types) & FORBIDDEN_OPS
        (expected,) = reference(classification.model, e.point, "block", image)
        _, (got,) = run_ort(e.path, image)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    narrow = {t.name: ext_info(t) for t in load_structure(exported[1].path).graph.initializer if t.external_data}
    wide = {t.name: ext_info(t) for t in load_structure(exported[0].path).graph.initializer if t.external_data}
    for name in ("blocks.0.ffn.fc1.weight", "blocks.0.ffn.fc2.weight_t"):
        assert narrow[name]["offset"] == wide[name]["offset"]
        assert int(narrow[name]["length"]) < int(wide[name]["length"])


@pytest.mark.slow
def test_large_family_costs_about_one_model(classification, tmp_path):
    """3 tokens x 3 widths x 4 depths = 36 points, still about one model's weights."""
    points = [ConfigPoint(t, w, d) for t, w, d in itertools.product((16, 32, 64), (32, 48, 64), (1, 2, 3, 4))]
    exported, weights = export_family(classification.model, points, tmp_path, attention="block")
    assert len(exported) == 36
    assert weights.stat().st_size < 1.3 * param_bytes(classification.model)
