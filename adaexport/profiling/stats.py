"""Summary statistics of latency samples, in pure Python (stdlib only).

Percentiles interpolate linearly between the two nearest order statistics (the
method numpy calls "linear", its default); the standard deviation is the sample one
(n - 1 in the denominator); the coefficient of variation is std / mean in percent.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

PERCENTILES = (50, 90, 95, 99)


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values."""
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def stdev(values: Sequence[float]) -> float:
    """Sample standard deviation (0 for a single value)."""
    if len(values) < 2:
        return 0.0
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def cv_percent(values: Sequence[float]) -> float:
    """Coefficient of variation: sample std / mean, in percent."""
    m = mean(values)
    return 100.0 * stdev(values) / m if m else 0.0


def summarize(values: Iterable[float]) -> dict[str, float]:
    """p50, p90, p95, p99, mean, std, min and max of the values (e.g. latencies in ms)."""
    ordered = sorted(float(v) for v in values)
    if not ordered:
        raise ValueError("no samples")
    out = {f"p{q}": percentile(ordered, q) for q in PERCENTILES}
    out.update(mean=mean(ordered), std=stdev(ordered), min=ordered[0], max=ordered[-1])
    return out


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n, ties given their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            result[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return result


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("pearson needs two sequences of the same length >= 2")
    mx, my = mean(x), mean(y)
    sxy = math.fsum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = math.fsum((a - mx) ** 2 for a in x)
    syy = math.fsum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx and syy else float("nan")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson's on the ranks, ties averaged)."""
    return pearson(ranks(x), ranks(y))


def loglog_fit(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(slope, correlation) of log(y) against log(x): how y scales as a power of x."""
    lx, ly = [math.log(v) for v in x], [math.log(v) for v in y]
    mx, my = mean(lx), mean(ly)
    sxx = math.fsum((a - mx) ** 2 for a in lx)
    slope = math.fsum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sxx
    return slope, pearson(lx, ly)
