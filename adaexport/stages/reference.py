"""PyTorch's outputs for parity: every depth of one (tokens, width) from one forward pass."""

from __future__ import annotations

import numpy as np

from ..space import ConfigPoint
from ..validate import torch_reference


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
    """PyTorch's outputs for the build's points: every depth of one (tokens, width) comes
    from one forward pass that writes out after each block (`model.shared_pass`), computed
    the first time one of those points needs its reference and handed out once per point.
    A distilled model (a features output besides the logits, which the shared pass does
    not give) is run point by point through the static module. Either way the inputs go
    in chunks of 64 (of 1 when the count is not a multiple of 64)."""

    CHUNK = 64

    def __init__(self, model, points: list[ConfigPoint], attention: str, inputs: np.ndarray | None):
        self.model, self.attention, self.inputs = model, attention, inputs
        self.depths: dict[tuple[int, int], set[int]] = {}
        for p in points:
            self.depths.setdefault((p.tokens, p.width), set()).add(p.depth)
        self._ready: dict[ConfigPoint, list[np.ndarray]] = {}
        self.passes = 0  # forward passes run (for the tests)

    @property
    def shared(self) -> bool:
        return not self.model.config.distilled

    def _chunk(self) -> int:
        return self.CHUNK if len(self.inputs) % self.CHUNK == 0 else 1

    def outputs(self, point: ConfigPoint) -> list[np.ndarray]:
        if point in self._ready:
            return self._ready.pop(point)
        if not self.shared:
            from ..model.static import specialize

            self.passes += 1
            return torch_reference(specialize(self.model, point, self.attention), self.inputs, self._chunk())
        self._ready = self._shared_pass(point.tokens, point.width, self.depths.get((point.tokens, point.width),
                                                                                   {point.depth}) | {point.depth})
        return self._ready.pop(point)

    def _shared_pass(self, tokens: int, width: int, depths: set[int]) -> dict[ConfigPoint, list[np.ndarray]]:
        import torch

        from ..model.shared_pass import PassPlan, SharedPass

        shared = SharedPass(self.model, PassPlan(self.attention, {tokens: (tokens,)}, (width,), tuple(sorted(depths))))
        self.passes += 1
        chunk = self._chunk()
        logits: dict[ConfigPoint, list[np.ndarray]] = {}
        for i in range(0, len(self.inputs), chunk):
            for point, out in shared(torch.from_numpy(self.inputs[i:i + chunk])).items():
                logits.setdefault(point, []).append(out.numpy())
        return {point: [np.concatenate(parts)] for point, parts in logits.items()}
