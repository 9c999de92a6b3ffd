"""The bundled demo model: what the package ships, and the accuracy it documents."""

import numpy as np
import pytest
import torch

from adaexport.datasets import FASHION_MNIST_DIR, model_inputs
from adaexport.demo import load_eval_subset, training_report
from adaexport.space import ConfigPoint, build_grid


def top1(model, x, y, point):
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            logits = model(torch.from_numpy(x[i:i + 1000]), point.tokens, point.width, point.depth)["logits"]
            correct += int((logits.argmax(-1).numpy() == y[i:i + 1000]).sum())
    return correct / len(x)


def test_demo_is_the_published_architecture_with_one_channel(demo):
    cfg = demo.config
    assert cfg.in_channels == 1 and cfg.num_classes == 10 and cfg.img_size == 28
    assert cfg.use_embed_ffn and not cfg.distilled and cfg.default_attention == "block"
    assert len(build_grid(cfg, "trained")[0]) == 36


def test_eval_subset_is_large_enough_and_balanced():
    x, y = load_eval_subset()
    assert len(x) >= 2000
    counts = np.bincount(y, minlength=10)
    assert counts.min() >= 150  # every class is represented


def test_documented_accuracy_holds_on_the_bundled_subset(demo):
    """Every trained point's accuracy on the shipped subset is close to what training.json
    documents for the full test set (the subset is 2,000 of those 10,000 images)."""
    x, y = model_inputs("demo", demo.config)
    report = {(r["tokens"], r["width"], r["depth"]): r["top1"] for r in training_report()["test_top1_per_point"]}
    assert len(report) == 36
    for key in [(32, 64, 4), (8, 32, 1), (16, 48, 2)]:
        measured = top1(demo.model, x, y, ConfigPoint(*key))
        assert abs(measured - report[key]) < 0.03, (key, measured, report[key])
    assert top1(demo.model, x, y, ConfigPoint(32, 64, 4)) >= 0.87


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_full_setting_reaches_88_percent_on_the_10k_test_set(demo):
    x, y = model_inputs(f"fashion-mnist:{FASHION_MNIST_DIR}", demo.config)
    assert len(x) == 10_000
    full = ConfigPoint.full(demo.config)
    accuracy = top1(demo.model, x, y, full)
    assert accuracy >= 0.88
    documented = {(r["tokens"], r["width"], r["depth"]): r["top1"] for r in training_report()["test_top1_per_point"]}
    assert accuracy == pytest.approx(documented[(full.tokens, full.width, full.depth)], abs=1e-4)
