"""A family's points are cut from one export per token count (adaexport.export_depths)."""

import collections

import numpy as np
import onnx
import pytest
import torch

from adaexport.export import ExportError, build_weights, export_family, export_point_proto, label
from adaexport.export_depths import cut_to_depth, tapped_template
from adaexport.model.static import specialize
from adaexport.space import ConfigPoint

torch.set_num_threads(1)

# The classification model's full point is t64_w64_d4: these are narrower and shallower.
CUT = [ConfigPoint(16, 48, 3), ConfigPoint(8, 32, 1)]


@pytest.fixture(scope="module")
def model(conformance_models):
    return conformance_models["classification"].model


def op_counts(proto):
    return collections.Counter(n.op_type for n in proto.graph.node)


@pytest.mark.parametrize("attention", ["block", "full"])
def test_a_cut_point_has_the_bytes_exporting_its_width_gives(model, attention, tmp_path):
    """Width and depth cut from the full width's template are what a template exported at the
    point's own width gives, cut to its depth: the same nodes, tensor places and shapes."""
    exported, _ = export_family(model, CUT, tmp_path, attention=attention)
    store = build_weights(model, attention=attention)
    for point, result in zip(CUT, exported):
        template, interface = tapped_template(model, point.tokens, point.width, store, attention=attention, batch=1,
                                              weights_name="weights.bin", exporter="auto")
        direct = label(cut_to_depth(template, point.depth, interface.output_names), point, interface)
        in_family = onnx.load(str(result.path), load_external_data=False)
        assert in_family.SerializeToString(deterministic=True) == direct.SerializeToString(deterministic=True)


def test_a_cut_point_runs_as_the_point_exported_on_its_own(model, tmp_path):
    """The cut graph has the ops of the point's own export (no block left over, none missing)
    and gives its outputs."""
    import onnxruntime as ort

    (result,), _ = export_family(model, [CUT[0]], tmp_path, attention="block")
    alone = export_point_proto(specialize(model, CUT[0], "block"))
    cut = onnx.load(str(result.path), load_external_data=False)
    assert op_counts(cut) == op_counts(alone)
    image = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    ours = ort.InferenceSession(str(result.path), options, providers=["CPUExecutionProvider"])
    theirs = ort.InferenceSession(alone.SerializeToString(), options, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(ours.run(None, {"image": image})[0], theirs.run(None, {"image": image})[0],
                               rtol=0, atol=1e-5)


def test_a_family_exports_one_graph_per_token_count(model, tmp_path, monkeypatch):
    """2 token counts x 3 widths x 2 depths: one export per trained token count (4), all made
    to lay out the weights file (the full point's first); the family's 12 points are cuts of
    two of them, exported nowhere else."""
    calls = []
    real = torch.onnx.export

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", counting)
    points = [ConfigPoint(t, w, d) for t in (16, 64) for w in (32, 48, 64) for d in (1, 4)]
    exported, _ = export_family(model, points, tmp_path, attention="block")
    assert len(exported) == 12 and len(calls) == len(model.config.mask_token_grans) == 4


def test_cut_to_depth_refuses_what_it_cannot_cut(model):
    point = ConfigPoint(16, 32, 2)
    plain = export_point_proto(specialize(model, point, "block"))
    with pytest.raises(ExportError, match="not a tapped template"):
        cut_to_depth(plain, 1, ("logits",))
    store = build_weights(model, attention="block")
    template, interface = tapped_template(model, 16, 64, store, attention="block", batch=1,
                                          weights_name="weights.bin", exporter="auto")
    for depth in (0, model.config.depth + 1):
        with pytest.raises(ValueError, match="outside the template"):
            cut_to_depth(template, depth, interface.output_names)


@pytest.mark.parametrize("variant, attention", [("classification", "block"), ("distill", "full")])
def test_weights_placed_without_serialising_give_the_embedded_exports_bytes(conformance_models, variant, attention):
    """The template export never serialises its large tensors (torchscript_weights): the
    result is what exporting with every weight embedded and then externalizing gives."""
    from adaexport.export import export_graph, externalize

    model = conformance_models[variant].model
    store = build_weights(model, attention=attention)
    point = ConfigPoint(8, model.config.embed_dim, model.config.depth)
    light, _ = tapped_template(model, point.tokens, point.width, store, attention=attention, batch=1,
                               weights_name="weights.bin", exporter="torchscript")
    embedded = export_graph(specialize(model, point, attention, taps=True), exporter="torchscript")
    assert any(len(t.raw_data) > 32768 for t in embedded.graph.initializer)   # it did embed the weights
    externalize(embedded, store, "weights.bin")
    assert light.SerializeToString(deterministic=True) == embedded.SerializeToString(deterministic=True)


@pytest.mark.parametrize("variant, attention", [("classification", "block"), ("distill", "full")])
def test_the_export_without_the_exporters_graph_shape_inference_has_the_same_bytes(conformance_models, variant,
                                                                                  attention, monkeypatch):
    """Skipping the TorchScript exporter's two whole-graph shape inference passes (a third of
    its time at published size) changes nothing in the folded model."""
    import contextlib

    from adaexport import torchscript_weights
    from adaexport.export import export_graph

    model = conformance_models[variant].model
    point = ConfigPoint(8, model.config.embed_dim, model.config.depth)
    skipped = export_graph(specialize(model, point, attention, taps=True), exporter="torchscript")
    monkeypatch.setattr(torchscript_weights, "skipped_graph_shape_inference", contextlib.nullcontext)
    inferred = export_graph(specialize(model, point, attention, taps=True), exporter="torchscript")
    assert skipped.SerializeToString(deterministic=True) == inferred.SerializeToString(deterministic=True)


def test_the_exporter_reshapes_with_constants(model):
    """The traced graph reshapes with constants, not Shape arithmetic for the folding to
    remove (at published size that arithmetic was half the traced nodes)."""
    import io

    from adaexport import export_proto
    from adaexport.weight_store import WeightStore

    module = specialize(model, ConfigPoint(16, 64, 4), "block", taps=True)
    with torch.no_grad():
        raw = export_proto._raw_export(module, torch.zeros(1, 3, 32, 32), "torchscript", WeightStore(io.BytesIO()),
                                       "weights.bin")
    assert op_counts(raw)["Reshape"] > 0 and "Shape" not in op_counts(raw)
