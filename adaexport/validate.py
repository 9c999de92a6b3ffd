"""Parity of an engine against the PyTorch model at the same point.

Metrics over every output tensor and every sample:
* max_abs: the largest absolute difference of any value;
* max_rel: max_abs divided by the largest absolute reference value of that output
  (element-wise relative error is meaningless next to zero);
* top1_agreement: the fraction of samples whose arg-max class is the same, and for the
  samples where it is not, how far below its own top-1 the reference scored the engine's
  class (its gap), beside the standard deviation of its logits;
* near-ties: changed samples whose gap is under the tolerance's `tie_margin` standard
  deviations. The reference itself hardly told those two classes apart, so a reduced
  precision that swaps them disagrees with nothing the model decided: they are counted and
  recorded (`near_ties`) but not judged against min_top1_agreement. A published-size
  checkpoint with random weights has flat logits (spread 0.17-0.21 over 1000 classes): its
  int8 engines change 1-7 of 48 samples, with gaps of 0.00003-0.023, and at the default
  profile's 0.1 standard deviations 73 of the build's 75 changes were near-ties. A reduced
  precision changes close calls in a trained model too (the demo changed 100 of 36,864
  reduced-precision checks, and 89 were near-ties): with a tie_margin the agreement judges the
  changes PyTorch was surer of, a guard against a broken engine, and the accuracy drop on
  labelled samples judges every change;
* with labels: top1 and reference_top1 (accuracy of the engine and of PyTorch) and
  accuracy_drop = reference_top1 - top1 in percentage points.

A tolerance's rates are judged at the resolution the samples give (`allowed_flips`,
`allowed_drop`): the rate times the samples, rounded down, is how many may change; but where
that is none and the rate still gives a change among these samples at least a 5% chance
(`ONE_CHANGE_CHANCE`), one is allowed. At published size the default profile checks 48
samples, where bf16's min_top1_agreement 0.98 would otherwise allow no flip and its
max_accuracy_drop of 1 point no lost sample (one is 2.08 points): an engine that flips one
near-tie in 48 failed, while an engine flipping exactly 2% of its inputs flips at least one
of 48 in 62% of draws. With 256 samples (the demo) the rule changes nothing; on one sample
it allows nothing.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import numpy as np

from .profiles import Tolerance


@dataclasses.dataclass
class Parity:
    max_abs: float
    max_rel: float
    top1_agreement: float
    samples: int
    top1: float | None = None
    reference_top1: float | None = None
    flipped: tuple[tuple[float, float], ...] = ()   # (the reference's gap from its top-1 to the engine's
                                                    # class, its logits' std) of each sample whose top-1 changed

    @property
    def accuracy_drop(self) -> float | None:
        if self.top1 is None or self.reference_top1 is None:
            return None
        return round(100.0 * (self.reference_top1 - self.top1), 6)

    @property
    def changed(self) -> int:
        """Samples whose top-1 changed."""
        return round((1.0 - self.top1_agreement) * self.samples)

    def near_ties(self, tol: Tolerance) -> int:
        """Changed samples the reference nearly tied: a gap under tol.tie_margin standard
        deviations of its logits (module docstring)."""
        if not tol.tie_margin:
            return 0
        return sum(gap < tol.tie_margin * spread for gap, spread in self.flipped)

    def judged_agreement(self, tol: Tolerance) -> float:
        """The top-1 agreement with the near-ties counted as agreeing."""
        return 1.0 - (self.changed - self.near_ties(tol)) / self.samples

    def allowed_flips(self, tol: Tolerance) -> int:
        """How many of the samples may change top-1 (module docstring)."""
        rate = 1.0 - tol.min_top1_agreement
        return max(math.floor(rate * self.samples + 1e-9), int(_one_change_likely(rate, self.samples)))

    def allowed_drop(self, tol: Tolerance) -> float | None:
        """The accuracy drop allowed, in points: the tolerance's, or one sample's (100 /
        samples) where the tolerance makes losing one likely enough (module docstring)."""
        drop = tol.max_accuracy_drop
        if drop is None or not _one_change_likely(drop / 100.0, self.samples):
            return drop
        return max(drop, 100.0 / self.samples)

    def _problems(self, tol: Tolerance) -> list[str]:
        problems = []
        if tol.max_abs is not None and self.max_abs > tol.max_abs:
            problems.append(f"max_abs {self.max_abs:.3g} > {tol.max_abs:g}")
        allowed, ties = self.allowed_flips(tol), self.near_ties(tol)
        if self.changed - ties > allowed:
            excused = f", {ties} of them near-ties not counted" if ties else ""
            problems.append(f"top-1 agreement {self.judged_agreement(tol):.4f} < {tol.min_top1_agreement:g} "
                            f"({self.changed} of {self.samples} samples changed top-1{excused}, {allowed} allowed)")
        drop, allowed_drop = self.accuracy_drop, self.allowed_drop(tol)
        if allowed_drop is not None and drop is not None and drop > allowed_drop + 1e-9:
            problems.append(f"accuracy drop {drop:.2f} points > {tol.max_accuracy_drop:g}"
                            + (f" ({allowed_drop:.2f} allowed on {self.samples} samples)"
                               if allowed_drop != tol.max_accuracy_drop else ""))
        return problems

    def passes(self, tol: Tolerance) -> bool:
        return not self._problems(tol)

    def would_pass(self, tol: Tolerance) -> Tolerance:
        """The loosest tolerance of `tol`'s kind this result needs: what a profile would have to allow
        (max_abs rounded up at 3 significant digits)."""
        max_abs = None
        if tol.max_abs is not None:
            max_abs = float(f"{self.max_abs:.3g}")
            if max_abs < self.max_abs:
                max_abs = float(f"{self.max_abs * 1.001:.3g}")
        drop = self.accuracy_drop if tol.max_accuracy_drop is not None else None
        return Tolerance(max_abs=max_abs, min_top1_agreement=self.judged_agreement(tol),
                         max_accuracy_drop=max(drop, 0.0) if drop is not None else None, tie_margin=tol.tie_margin)

    def record(self, tol: Tolerance) -> dict:
        out = {"max_abs": self.max_abs, "max_rel": self.max_rel, "top1_agreement": self.top1_agreement,
               "samples": self.samples, "tolerance": tol.as_dict(), "passed": self.passes(tol)}
        if tol.tie_margin:
            out["near_ties"] = self.near_ties(tol)
        if self.top1 is not None:
            out.update(top1=self.top1, reference_top1=self.reference_top1, accuracy_drop=self.accuracy_drop)
        return out

    def failure_message(self, engine: str, tol: Tolerance) -> str:
        needed = self.would_pass(tol)
        wanted = []
        if needed.max_abs is not None:
            wanted.append(f"max_abs >= {needed.max_abs:.3g}")
        wanted.append(f"min_top1_agreement <= {needed.min_top1_agreement:.4f}")
        if needed.max_accuracy_drop is not None:
            wanted.append(f"max_accuracy_drop >= {needed.max_accuracy_drop:.2f}")
        return (f"parity failed for {engine}: {', '.join(self._problems(tol))}{self._flips()}; a tolerance of "
                f"{' and '.join(wanted)} would have passed")

    def _flips(self) -> str:
        """What the samples whose top-1 changed looked like in the reference."""
        if not self.flipped:
            return ""

        def span(values) -> str:
            low, high = f"{min(values):.3g}", f"{max(values):.3g}"
            return low if low == high else f"{low}..{high}"

        gaps, spreads = zip(*self.flipped)
        return (f" (on the {len(self.flipped)} sample(s) whose top-1 changed, PyTorch scored the engine's class "
                f"{span(gaps)} below its own top-1, its logits' standard deviation being {span(spreads)})")


ONE_CHANGE_CHANCE = 0.05


def _one_change_likely(rate: float, samples: int) -> bool:
    """Whether a change at `rate` per sample shows among `samples` at least ONE_CHANGE_CHANCE
    of the time."""
    return rate > 0 and 1.0 - (1.0 - min(rate, 1.0)) ** samples >= ONE_CHANGE_CHANCE


def compare(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray],
            labels: np.ndarray | None = None) -> Parity:
    """Parity of candidate outputs against reference outputs (same order; logits first);
    with labels, also both accuracies."""
    max_abs = max_rel = 0.0
    for ref, got in zip(reference, candidate, strict=True):
        if ref.shape != got.shape:
            raise ValueError(f"output shape {got.shape} differs from the reference {ref.shape}")
        diff = float(np.abs(ref.astype(np.float64) - got.astype(np.float64)).max())
        scale = float(np.abs(ref).max()) or 1.0
        max_abs, max_rel = max(max_abs, diff), max(max_rel, diff / scale)
    ref_top, got_top = reference[0].argmax(-1), candidate[0].argmax(-1)
    agreement = float((ref_top == got_top).mean())
    flipped: tuple[tuple[float, float], ...] = ()
    if reference[0].ndim == 2 and reference[0].shape[-1] > 1:
        changed = ref_top != got_top
        logits = reference[0][changed].astype(np.float64)
        rows = np.arange(len(logits))
        gaps = logits[rows, ref_top[changed]] - logits[rows, got_top[changed]]
        flipped = tuple((float(g), float(d)) for g, d in zip(gaps, logits.std(axis=-1)))
    top1 = reference_top1 = None
    if labels is not None:
        top1, reference_top1 = float((got_top == labels).mean()), float((ref_top == labels).mean())
    return Parity(max_abs=max_abs, max_rel=max_rel, top1_agreement=agreement, samples=len(reference[0]),
                  top1=top1, reference_top1=reference_top1, flipped=flipped)


def run_batched(fn: Callable[[np.ndarray], Sequence[np.ndarray]], inputs: np.ndarray, batch: int) -> list[np.ndarray]:
    """Run a fixed-batch engine over inputs (a multiple of `batch`) and concatenate each output."""
    if len(inputs) % batch:
        raise ValueError(f"{len(inputs)} inputs are not a multiple of the engine batch {batch}")
    chunks = [fn(inputs[i:i + batch]) for i in range(0, len(inputs), batch)]
    return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]
