import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from adaexport.model import AdaPerceiverConfig
from adaexport.model.flops import count_flops, count_params, rotation_flops
from adaexport.model.static import specialize
from adaexport.space import ConfigPoint

POINTS = [ConfigPoint(16, 32, 1), ConfigPoint(40, 48, 2), ConfigPoint(64, 64, 4), ConfigPoint(80, 64, 3)]


@pytest.mark.parametrize("variant", ["classification", "distill"])
@pytest.mark.parametrize("point", POINTS, ids=lambda p: p.id)
def test_analytic_flops_match_flop_counter(conformance_models, variant, point):
    model = conformance_models[variant].model
    static = specialize(model, point, "block")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        static(torch.randn(1, 3, 32, 32))
    measured = counter.get_total_flops()
    assert abs(count_flops(model.config, point) + rotation_flops(model.config, point) - measured) <= 0.02 * measured


def test_flops_scale_with_batch_one_image(conformance_models):
    model = conformance_models["classification"].model
    point = POINTS[1]
    static = specialize(model, point, "full")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        static(torch.randn(4, 3, 32, 32))
    flops = count_flops(model.config, point, attention="full") + rotation_flops(model.config, point)
    assert abs(counter.get_total_flops() / 4 - flops) <= 0.02 * flops


@pytest.mark.parametrize("variant", ["classification", "distill"])
@pytest.mark.parametrize("point", POINTS, ids=lambda p: p.id)
def test_params_are_the_weights_that_influence_the_output(conformance_models, variant, point):
    """Count parameter entries with a non-zero gradient at the point (random output weighting)."""
    model = conformance_models[variant].model
    model.zero_grad()
    gen = torch.Generator().manual_seed(0)
    outputs = model(torch.randn(3, 3, 32, 32, generator=gen), point.tokens, point.width, point.depth, "block")
    sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outputs.values()).backward()
    used = sum(int((p.grad != 0).sum()) for p in model.parameters() if p.grad is not None)
    model.zero_grad()
    expected = count_params(model.config, point)
    assert abs(used - expected) <= 1e-4 * expected  # a stray exact-zero gradient entry or two


def test_full_point_params_equal_the_whole_model(conformance_models):
    for loaded in conformance_models.values():
        cfg = loaded.config
        assert count_params(cfg, ConfigPoint.full(cfg)) == sum(p.numel() for p in loaded.model.parameters())


PAPER_GFLOPS = {32: (9.1, 10.3, 11.5), 64: (15.4, 17.8, 20.2), 128: (27.9, 32.7, 37.5), 256: (53.1, 62.7, 72.2)}


def test_paper_flops_table_is_reproduced():
    """The published backbone at 224x224, patch 14, depth 21 (paper counts no in-block attention products)."""
    cfg = AdaPerceiverConfig(embed_dim=832, num_heads=13, depth=21, max_latent_tokens=256,
                             mask_token_grans=(32, 64, 96, 128, 192, 256), mat_dims=(416, 624, 832),
                             img_size=224, patch_size=14, in_channels=3, num_classes=1000, ffn_ratio=2.57)
    for tokens, row in PAPER_GFLOPS.items():
        for width, paper in zip(cfg.mat_dims, row):
            ours = count_flops(cfg, ConfigPoint(tokens, width, 21), attention_scores=False) / 1e9
            assert abs(ours - paper) <= 0.01 * paper, (tokens, width, ours, paper)
    assert 143e6 < count_params(cfg, ConfigPoint(256, 832, 21)) < 146e6  # "about 144M" (IN-1k)
