"""Parity that scales (issue 11, item 4): the PyTorch reference of every depth of one
(tokens, width) from one forward pass, and fp32 parity without a dataset."""

import numpy as np
import pytest
import torch

from adaexport.build import _ReferenceFamily
from adaexport.model.static import specialize
from adaexport.space import ConfigPoint, build_grid


def _specialized(model, point, attention, inputs):
    with torch.no_grad():
        return [o.numpy() for o in specialize(model, point, attention)(torch.from_numpy(inputs))]


@pytest.mark.parametrize("attention", ["block", "full"])
def test_one_pass_reference_equals_each_point(demo, attention):
    """Every depth of a (tokens, width) from one pass equals `specialize(...)`'s output within 1e-5."""
    cfg = demo.config
    tokens, widths = [cfg.mask_token_grans[0], cfg.mask_token_grans[-1]], [cfg.mat_dims[0], cfg.mat_dims[-1]]
    points, _ = build_grid(cfg, None, tokens, widths, list(range(1, cfg.depth + 1)))
    inputs = np.random.default_rng(0).standard_normal((4, cfg.in_channels, cfg.img_size, cfg.img_size),
                                                      dtype=np.float32)
    family = _ReferenceFamily(demo.model, points, attention, inputs)
    for point in points:
        got = family.outputs(point)
        want = _specialized(demo.model, point, attention, inputs)
        assert len(got) == len(want) == 1
        np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-5, err_msg=str(point))
    assert family.passes == len(tokens) * len(widths)  # one pass per (tokens, width), not one per point


def test_distilled_reference_stays_per_point(conformance_models):
    """The shared pass gives logits only: a distilled model's reference (logits and features) is per point."""
    loaded = conformance_models["distill"]
    cfg = loaded.config
    assert cfg.distilled
    points = [ConfigPoint(cfg.mask_token_grans[-1], cfg.mat_dims[-1], d) for d in (1, cfg.depth)]
    inputs = np.random.default_rng(1).standard_normal((2, cfg.in_channels, cfg.img_size, cfg.img_size),
                                                      dtype=np.float32)
    family = _ReferenceFamily(loaded.model, points, cfg.default_attention, inputs)
    for point in points:
        got, want = family.outputs(point), _specialized(loaded.model, point, cfg.default_attention, inputs)
        assert len(got) == 2
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-5)
    assert family.passes == len(points)
