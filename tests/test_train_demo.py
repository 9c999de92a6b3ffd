"""examples/train_demo.py runs end to end (a few steps) and writes what the package ships."""

import json
import subprocess
import sys

import numpy as np
import pytest

from adaexport.datasets import FASHION_MNIST_DIR
from adaexport.model import load_checkpoint

from .conftest import ROOT


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_training_script_writes_a_loadable_checkpoint_and_report(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_demo.py"), "--epochs", "1", "--max-steps", "3",
         "--test-limit", "300", "--eval-subset", "100", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    loaded = load_checkpoint(tmp_path / "model")
    assert loaded.config.in_channels == 1 and loaded.config.class_names[0] == "T-shirt/top"
    report = json.loads((tmp_path / "training.json").read_text())
    points = report["test_top1_per_point"]
    assert len(points) == 3 * 3 * 4 and all(0.0 <= p["top1"] <= 1.0 for p in points)
    subset = np.load(tmp_path / "eval_subset.npz")
    assert subset["x"].shape == (100, 28, 28) and len(set(subset["index"])) == 100
