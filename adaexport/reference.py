"""PyTorch's outputs at configuration points: the one reference that build parity, eval's
PyTorch accuracy and `adaexport search` all take.

`point_outputs` runs the inputs in chunks through as few forward passes as the model
allows: `model.shared_pass` scores every depth of a (tokens, width), and under the
block-causal mask every token count sharing a prefix, in one pass. A distilled model (a
features output besides the logits, which the shared pass does not give) is run point by
point through its static module (`model.static.specialize`). Either way a configuration's
outputs are the static module's to float32 rounding (tests/test_parity_scaling.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .space import ConfigPoint

CHUNK = 64  # images per forward pass: eval's reference, search, and parity where it divides


def point_outputs(model, points, attention: str, inputs: np.ndarray, chunk: int = CHUNK,
                  plan=None) -> Iterator[tuple[int, dict[ConfigPoint, list[np.ndarray]]]]:
    """Yield ``(start, {point: outputs})`` for each chunk ``inputs[start:start + chunk]`` (the
    last may be shorter); ``outputs`` is the list of the model's outputs at that point (the
    logits, then the features of a distilled model). Only the asked `points` are given.
    `plan`: the shared pass's `PassPlan` when the caller has it already (default: the
    fewest passes for `points`, `plan_passes`)."""
    import torch

    points = sorted(set(points))
    if model.config.distilled:
        from .model.static import specialize

        modules = {p: specialize(model, p, attention) for p in points}
        run = lambda x: {p: list(m(x)) for p, m in modules.items()}  # noqa: E731
    else:
        from .model.shared_pass import SharedPass, plan_passes

        plan = plan or plan_passes(model.config, {p.tokens for p in points}, {p.width for p in points},
                                   {p.depth for p in points}, attention)
        shared = SharedPass(model, plan)
        wanted = set(points)
        run = lambda x: {p: [out] for p, out in shared(x).items() if p in wanted}  # noqa: E731
    for start in range(0, len(inputs), chunk):
        with torch.no_grad():   # not held across the yield: the caller's grad mode is its own
            outputs = {p: [o.numpy() for o in outs]
                       for p, outs in run(torch.from_numpy(inputs[start:start + chunk])).items()}
        yield start, outputs


def reference_outputs(model, points, attention: str, inputs: np.ndarray,
                      chunk: int = CHUNK) -> dict[ConfigPoint, list[np.ndarray]]:
    """`point_outputs` gathered: every asked point's outputs over all the inputs."""
    parts: dict[ConfigPoint, list[list[np.ndarray]]] = {}
    for _, outputs in point_outputs(model, points, attention, inputs, chunk):
        for point, outs in outputs.items():
            parts.setdefault(point, []).append(outs)
    return {point: [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]
            for point, chunks in parts.items()}


def reference_logits(model, point: ConfigPoint, attention: str, inputs: np.ndarray) -> np.ndarray:
    """PyTorch's logits at one point (what `adaexport eval` reports as PyTorch's accuracy)."""
    return reference_outputs(model, [point], attention, inputs)[point][0]
