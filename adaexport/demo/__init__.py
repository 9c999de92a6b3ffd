"""The bundled demo model (trained by examples/train_demo.py) and its evaluation subset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DEMO_DIR = Path(__file__).parent
DEMO_MODEL = DEMO_DIR / "model"
EVAL_SUBSET = DEMO_DIR / "eval_subset.npz"
TRAINING_REPORT = DEMO_DIR / "training.json"


def load_eval_subset() -> tuple[np.ndarray, np.ndarray]:
    """Held-out Fashion-MNIST test images (N, 28, 28) uint8 and labels (N,) int64."""
    with np.load(EVAL_SUBSET) as data:
        return data["x"], data["y"]


def training_report() -> dict:
    return json.loads(TRAINING_REPORT.read_text())
