"""Parity of an engine against the PyTorch model at the same point.

Metrics over every output tensor and every sample:
* max_abs: the largest absolute difference of any value;
* max_rel: max_abs divided by the largest absolute reference value of that output
  (element-wise relative error is meaningless next to zero);
* top1_agreement: the fraction of samples whose arg-max class is the same.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from .profiles import Tolerance


@dataclasses.dataclass
class Parity:
    max_abs: float
    max_rel: float
    top1_agreement: float
    samples: int

    def passes(self, tol: Tolerance) -> bool:
        return self.max_abs <= tol.max_abs and self.top1_agreement >= tol.min_top1_agreement

    def would_pass(self) -> Tolerance:
        """The loosest tolerance this result needs: what a profile would have to allow."""
        return Tolerance(max_abs=float(f"{self.max_abs:.3g}") if self.max_abs else 0.0,
                         min_top1_agreement=self.top1_agreement)

    def record(self, tol: Tolerance) -> dict:
        return {"max_abs": self.max_abs, "max_rel": self.max_rel, "top1_agreement": self.top1_agreement,
                "samples": self.samples, "tolerance": tol.as_dict(), "passed": self.passes(tol)}

    def failure_message(self, engine: str, tol: Tolerance) -> str:
        needed = self.would_pass()
        reasons = []
        if self.max_abs > tol.max_abs:
            reasons.append(f"max_abs {self.max_abs:.3g} > {tol.max_abs:g}")
        if self.top1_agreement < tol.min_top1_agreement:
            reasons.append(f"top-1 agreement {self.top1_agreement:.4f} < {tol.min_top1_agreement:g}")
        return (f"parity failed for {engine}: {', '.join(reasons)}; a tolerance of max_abs >= "
                f"{needed.max_abs:.3g} and min_top1_agreement <= {needed.min_top1_agreement:.4f} would have passed")


def compare(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> Parity:
    """Parity of candidate outputs against reference outputs (same order; logits first)."""
    max_abs = max_rel = 0.0
    for ref, got in zip(reference, candidate, strict=True):
        if ref.shape != got.shape:
            raise ValueError(f"output shape {got.shape} differs from the reference {ref.shape}")
        diff = float(np.abs(ref.astype(np.float64) - got.astype(np.float64)).max())
        scale = float(np.abs(ref).max()) or 1.0
        max_abs, max_rel = max(max_abs, diff), max(max_rel, diff / scale)
    agreement = float((reference[0].argmax(-1) == candidate[0].argmax(-1)).mean())
    return Parity(max_abs=max_abs, max_rel=max_rel, top1_agreement=agreement, samples=len(reference[0]))


def run_batched(fn: Callable[[np.ndarray], Sequence[np.ndarray]], inputs: np.ndarray, batch: int) -> list[np.ndarray]:
    """Run a fixed-batch engine over inputs (a multiple of `batch`) and concatenate each output."""
    if len(inputs) % batch:
        raise ValueError(f"{len(inputs)} inputs are not a multiple of the engine batch {batch}")
    chunks = [fn(inputs[i:i + batch]) for i in range(0, len(inputs), batch)]
    return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]


def torch_reference(static_module, inputs: np.ndarray, batch: int) -> list[np.ndarray]:
    """Outputs of the PyTorch static module (the reference a compiled engine must match)."""
    import torch

    def fn(x):
        with torch.no_grad():
            return [o.numpy() for o in static_module(torch.from_numpy(x))]

    return run_batched(fn, inputs, batch)
