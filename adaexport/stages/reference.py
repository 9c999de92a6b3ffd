"""PyTorch's outputs for parity: every depth of one (tokens, width) from one forward pass."""

from __future__ import annotations

import numpy as np

from ..space import ConfigPoint
from ..reference import CHUNK, reference_outputs


class LazyReference:
    """PyTorch's outputs at a point, computed once and only when a parity check runs
    (a cached rebuild needs none); see `ReferenceFamily` for how."""

    def __init__(self, family: "ReferenceFamily", point: ConfigPoint):
        self.family, self.point = family, point
        self._outputs = None

    def outputs(self) -> list[np.ndarray]:
        if self._outputs is None:
            self._outputs = self.family.outputs(self.point)
        return self._outputs


class ReferenceFamily:
    """PyTorch's outputs for the build's points (`adaexport.reference`): every depth of one
    (tokens, width) from one forward pass that writes out after each block, computed the
    first time one of those points needs its reference and handed out once per point. The
    inputs go in chunks of 64 (of 1 when the count is not a multiple of 64)."""

    CHUNK = CHUNK

    def __init__(self, model, points: list[ConfigPoint], attention: str, inputs: np.ndarray | None):
        self.model, self.attention, self.inputs = model, attention, inputs
        self.depths: dict[tuple[int, int], set[int]] = {}
        for p in points:
            self.depths.setdefault((p.tokens, p.width), set()).add(p.depth)
        self._ready: dict[ConfigPoint, list[np.ndarray]] = {}
        self.passes = 0  # forward passes run (for the tests)

    def outputs(self, point: ConfigPoint) -> list[np.ndarray]:
        if point not in self._ready:
            group = [point]
            if not self.model.config.distilled:   # the shared pass gives every depth at once
                group += [ConfigPoint(point.tokens, point.width, d)
                          for d in self.depths.get((point.tokens, point.width), ())]
            chunk = self.CHUNK if len(self.inputs) % self.CHUNK == 0 else 1
            self.passes += 1
            self._ready.update(reference_outputs(self.model, group, self.attention, self.inputs, chunk))
        return self._ready.pop(point)
