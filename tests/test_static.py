"""specialize(): same outputs as the dynamic model, with everything static baked in."""

import pytest
import torch

from adaexport.model.config import ffn_hidden
from adaexport.model import layers
from adaexport.model.layers import additive_mask, block_causal_mask, prefix_runs
from adaexport.model.static import specialize
from adaexport.space import ConfigPoint, build_grid


def max_diff(model, static, x, point, attention):
    with torch.no_grad():
        dynamic = model(x, point.tokens, point.width, point.depth, attention)
        fixed = static(x)
    return max(float((dynamic[name] - out).abs().max()) for name, out in zip(model.output_names, fixed))


@pytest.mark.parametrize("attention", ["block", "full"])
def test_every_trained_point_of_the_demo_matches(demo, attention):
    from adaexport.demo import load_eval_subset

    images, _ = load_eval_subset()
    cfg = demo.config
    mean, std = cfg.preprocessing["mean"][0], cfg.preprocessing["std"][0]
    x = (torch.from_numpy(images[:8]).float() / 255 - mean) / std
    x = x.unsqueeze(1)
    points, _ = build_grid(cfg, "trained")
    worst = {p.id: max_diff(demo.model, specialize(demo.model, p, attention), x, p, attention) for p in points}
    assert max(worst.values()) <= 1e-5, {k: v for k, v in worst.items() if v > 1e-5}


@pytest.mark.parametrize("variant", ["classification", "distill"])
@pytest.mark.parametrize("point", [ConfigPoint(16, 32, 1), ConfigPoint(40, 48, 3), ConfigPoint(80, 64, 4)])
def test_conformance_models_match(conformance_models, variant, point):
    model = conformance_models[variant].model
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for attention in ("block", "full"):
        assert max_diff(model, specialize(model, point, attention), x, point, attention) <= 1e-5


def test_contents_are_static(conformance_models):
    model = conformance_models["distill"].model
    cfg = model.config
    point = ConfigPoint(40, 32, 2)
    static = specialize(model, point, "block")
    hidden = ffn_hidden(32, cfg.ffn_ratio)
    assert len(static.blocks) == 2
    for block, original in zip(static.blocks, model.blocks):
        assert torch.equal(block.ffn.fc1.weight, original.ffn.fc1.weight[:hidden])
        assert block.ffn.fc1.weight.shape == (hidden, cfg.embed_dim)
    buffers = dict(static.named_buffers())
    assert buffers["rope_cos"].shape == (40, cfg.head_dim) and buffers["rope_cos"].dtype == torch.float32
    assert "attn_mask" not in buffers and static.attn_mask == ((0, 16, 16), (16, 32, 32), (32, 40, 40))
    assert buffers["read_queries"].shape == (1, cfg.num_heads, 40, cfg.head_dim)
    assert buffers["write_queries"].shape == (1, cfg.num_heads, 1, cfg.head_dim)
    assert buffers["pos_embed"].shape == (1, cfg.num_patches, cfg.embed_dim)
    assert not any(t.is_complex() for t in [*static.parameters(), *static.buffers()])
    # the image-independent query projections were folded away
    assert not hasattr(static.read_head.cattn, "q") and not hasattr(static.write_head.cattn, "q")
    assert specialize(model, point, "full").attn_mask is None


def test_block_mask_is_runs_of_key_prefixes(conformance_models):
    model = conformance_models["classification"].model  # grans 16, 32, 48, 64
    # 40 is not a granularity: the last block is [32, 40)
    assert specialize(model, ConfigPoint(40, 64, 1), "block").attn_mask == ((0, 16, 16), (16, 32, 32), (32, 40, 40))
    assert specialize(model, ConfigPoint(16, 64, 1), "block").attn_mask == ((0, 16, 16),)


def test_prefix_runs_only_for_masks_of_key_prefixes():
    causal = torch.tril(torch.ones(4, 4, dtype=torch.bool))
    assert prefix_runs(causal) == ((0, 1, 1), (1, 2, 2), (2, 3, 3), (3, 4, 4))
    assert prefix_runs(torch.ones(3, 3, dtype=torch.bool)) == ((0, 3, 3),)
    assert prefix_runs(~causal) is None                      # suffixes
    assert prefix_runs(torch.eye(3, dtype=torch.bool)) is None
    empty_row = causal.clone()
    empty_row[0, 0] = False
    assert prefix_runs(empty_row) is None                    # a row that sees nothing stays a mask


def test_attention_over_prefix_runs_equals_the_masked_attention():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 3, 40, 8) for _ in range(3))
    allowed = block_causal_mask(40, (16, 32))
    runs = prefix_runs(allowed)
    assert len(runs) == 3
    masked = layers.attention(q, k, v, additive_mask(allowed))
    assert torch.allclose(layers.attention(q, k, v, runs), masked, rtol=0, atol=1e-6)
    # a single run over every key is the unmasked attention itself
    assert torch.equal(layers.attention(q, k, v, ((0, 40, 40),)), layers.attention(q, k, v, None))


def test_rotary_pairs_swapped_by_the_product_give_the_same_bits(conformance_models):
    """The static graph's rotary embedding (a product with `pair_rotation`) against the
    element-wise swap the dynamic model uses, on the model's own tables."""
    torch.manual_seed(0)
    model = conformance_models["classification"].model
    cos, sin = model.rope(40)
    x = torch.randn(2, model.config.num_heads, 40, model.config.head_dim) * 100
    rotation = layers.pair_rotation(model.config.head_dim)
    assert torch.equal(layers.apply_rope(x, cos, sin, rotation), layers.apply_rope(x, cos, sin))
    assert torch.equal(specialize(model, ConfigPoint(40, 64, 2), "block").rope_rotation, rotation)


def test_export_resolution_resamples_the_position_table_once(conformance_models):
    model = conformance_models["classification"].model
    point = ConfigPoint(16, 64, 2)
    static = specialize(model, point, "full", image_size=48)
    assert static.pos_embed.shape == (1, 36, model.config.embed_dim)
    x = torch.randn(1, 3, 48, 48)
    assert max_diff(model, static, x, point, "full") <= 1e-5


def test_graph_has_no_control_flow_and_only_depth_blocks(conformance_models):
    """torch.export traces one straight-line graph: no cond/while, no complex ops;
    one softmax per attention actually run (read-in, `depth` blocks, write-out)."""
    model = conformance_models["classification"].model
    static = specialize(model, ConfigPoint(16, 48, 3), "block")
    program = torch.export.export(static, (torch.randn(1, 3, 32, 32),), strict=False)
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert not [t for t in targets if "cond" in t or "while_loop" in t or "complex" in t]
    assert sum("softmax" in t for t in targets) == 1 + 3 + 1
