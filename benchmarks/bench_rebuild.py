"""Cold build vs cached rebuild with `adaexport.build.run_build`.

Per repeat, in a fresh temporary directory:

* cold: `run_build` into the empty directory, with parity (each point exported,
  then checked against PyTorch in ONNX Runtime on the profile's real images, the
  manifest written), exactly the work of `adaexport build`;
* cached: `run_build` again on the same directory with the same request. Every
  stage is cached by content hash, so it only loads the checkpoint and the parity
  data, hashes the files on disk against the cache records and rewrites the
  manifest. The benchmark checks that it exported nothing and ran no parity check
  (a correctness check, not a timing threshold) and stops with an error otherwise.

The ratio cold / cached is taken per repeat, from two runs side by side.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench_common import Context, measure, ratio_row, time_row

NAME = "rebuild"


class RebuildError(AssertionError):
    """The cached rebuild did work it should have found in the cache."""


def _request(ctx: Context, out: Path):
    from adaexport.build import BuildRequest

    return BuildRequest(out=out, model=ctx.model_path, profile=ctx.profile, **ctx.grid_args(),
                        attention=ctx.attention, batch=ctx.batch, parity=True)


def run(ctx: Context) -> list[dict]:
    from adaexport.build import run_build
    from adaexport.progress import QuietReporter

    n = len(ctx.points)
    cold_s, cached_s, ratios = [], [], []
    cold_exported, cold_parity, cached_exported, cached_parity, failures = [], [], [], [], []
    for _ in range(ctx.repeats):
        with tempfile.TemporaryDirectory(prefix="adaexport-bench-build-") as tmp:
            out = Path(tmp) / "family"
            cold, first = measure(lambda: run_build(_request(ctx, out), QuietReporter()))
            cached, second = measure(lambda: run_build(_request(ctx, out), QuietReporter()))
        if first.exported != n:
            raise RebuildError(f"the cold build exported {first.exported} point(s), expected {n}")
        if second.exported != 0 or second.parity_runs != 0:
            raise RebuildError(f"the cached rebuild exported {second.exported} point(s) and ran "
                               f"{second.parity_runs} parity check(s); expected 0 and 0")
        cold_s.append(cold)
        cached_s.append(cached)
        ratios.append(cold / cached)
        cold_exported.append(first.exported)
        cold_parity.append(first.parity_runs)
        cached_exported.append(second.exported)
        cached_parity.append(second.parity_runs)
        failures.extend(first.failures)
    note_fail = f"; {len(failures)} parity failure(s)!" if failures else ""
    return [
        time_row(NAME, f"cold build ({n} points, parity)", cold_s,
                 f"run_build into an empty directory, profile {ctx.profile}: "
                 f"{cold_exported[0]} exported, {cold_parity[0]} parity checks{note_fail}",
                 key="cold", exported=cold_exported, parity_runs=cold_parity, failures=failures),
        time_row(NAME, "cached rebuild (same directory)", cached_s,
                 "run_build again: 0 exported, 0 parity checks (checked)",
                 key="cached", exported=cached_exported, parity_runs=cached_parity),
        ratio_row(NAME, "cold / cached", ratios, "per repeat, side by side", key="ratio"),
    ]
