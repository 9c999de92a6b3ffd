"""Engine latency against PyTorch eager and against the roofline, side by side in one run.

In `run_all.py --published` it times the family `bench_build` built (every engine kind of
x86-cpu: ONNX Runtime fp32/int8, OpenVINO fp32/fp16/bf16/int8); run alone, or in run_all
without a build before it, it builds the family itself (parity on, profiling off; at
published size with ``--dataset none`` unless a dataset is named, so only fp32 engines are
built there). Then, at the context's thread count (pinned for torch, OpenMP and every
engine's intra-op pool):

* **GEMM rate**: the best of 5 fp32 ``torch.mm`` of 2048 x 2048 x 2048 (what this machine's
  fp32 matrix units deliver to one process at this thread count), measured first and again
  last; the roofline of a point is its FLOPs (the manifest's ``flops``, the build's
  ``count_flops``) over the better of the two;
* **streamed GEMM rate**, per token count of the family: the best of 5 ONNX Runtime runs of a
  chain of as many distinct Gemm weights as the model's MLPs have (embed_dim x hidden_dim,
  in turn; 299 MB at published size, far beyond any cache), at that many rows and this
  thread count, measured with the GEMM rate. The model reads every weight once per run, and
  at 32 tokens a weight byte carries 16 FLOPs: such GEMMs wait on memory (the probe of
  session 15: 101-112 GFLOP/s at 32 rows with the weights streamed, 154-158 with the same
  GEMMs' weights in cache, 1 thread). A point's engine against FLOPs over this rate is
  against what its own GEMM library delivers on its weights: what is over 1 is the rest of
  the graph;
* **eager**: the dynamic model's forward at the point (``model(image, tokens=, width=,
  depth=)`` under ``torch.inference_mode``), which is how PyTorch users run it;
* every engine of the point, opened through ``backends.open_engine`` as profiling does.

Point by point (a point's engines are open together, then closed, so memory holds one
point's sessions), rounds are interleaved (eager, then each engine of the point, per round)
so that drift in the machine's speed lands on all of them alike, each after a pause
(``SETTLE_S``) that lets the previous runtime's threads stop spinning; a round times ``calls``
runs of each and keeps their median. Reported per engine kind: engine / eager and engine /
roofline, per round, as median and min..max over the rounds, for the worst point of the
family (named in the note, every point in ``--json``). Under 1 means faster than eager; the
roofline is the fp32 GEMM rate's, so reduced-precision engines can go under 1.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_common import Context, ratio_row, value_row

NAME = "speed"
ROUNDS = 5
CALLS = 5
# A pause before each runtime's turn. With more than one thread, the runtime timed just before
# keeps its pool's threads spinning for a while (ONNX Runtime's by default): with no spare core
# that time is taken from the next one. Measured on 2 cores, OpenVINO fp32 at the published
# t32_w832_d6 right after an ONNX Runtime run: 44.5 ms, 33.5 ms after a 20 ms pause, 26.8 ms
# after 100 ms, 25.6 ms alone.
SETTLE_S = 0.2


def thread_counts(parser, text: str) -> list[int]:
    """`--threads` as given (1, or several: 1,16): the counts, or `parser`'s usage error."""
    try:
        counts = [int(n) for n in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        parser.error(f"--threads: expected thread counts like 1 or 1,16, got {text!r}")
    return counts


def gemm_rate(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the best of ``repeats`` fp32 n x n x n matrix products."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2.0 * n ** 3 / best


def streamed_gemm_rates(cfg, threads: int, token_counts, repeats: int = 5) -> dict[int, float]:
    """FLOP/s of ONNX Runtime over a chain of 2 x depth distinct Gemm weights of the model's
    MLP shape at each token count's rows (module docstring), best of ``repeats``."""
    import numpy as np

    from gemm_bound import chain_weights, ort_session, weight_chain

    weights = chain_weights(np.random.default_rng(0), cfg.embed_dim, cfg.hidden_dim, 2 * cfg.depth)
    rates = {}
    for rows in sorted(token_counts):
        session = ort_session(weight_chain(weights, rows), threads)
        x = np.ones((rows, cfg.embed_dim), np.float32)
        run = lambda: session.run(None, {"x": x})  # noqa: E731
        run()
        rates[rows] = 2.0 * rows * sum(w.size for w in weights) / min(_timed(run) for _ in range(repeats))
    return rates


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _median_call(fn, calls: int) -> float:
    return statistics.median(_timed(fn) for _ in range(calls))


def build_family(ctx: Context, out: Path, dataset: str | None) -> dict:
    """Build the family (no profiling); its manifest's JSON."""
    from adaexport.build import BuildRequest, run_build
    from adaexport.progress import QuietReporter

    points = ctx.points
    result = run_build(BuildRequest(out=out, model=ctx.model_path, profile=ctx.profile,
                                    tokens=sorted({p.tokens for p in points}), widths=sorted({p.width for p in points}),
                                    depths=sorted({p.depth for p in points}), attention=ctx.attention,
                                    batch=ctx.batch, dataset=dataset, measure=False), QuietReporter())
    if result.failures:
        # latency does not depend on parity: a random published-size checkpoint's near-ties fail
        # reduced-precision parity (benchmarks/README.md), and those engines are timed all the same
        print(f"[speed] {len(result.failures)} engine(s) failed parity, timed anyway; first: {result.failures[0]}",
              file=sys.stderr, flush=True)
    return result.manifest.to_json()


def run(ctx: Context, dataset: str | None = None, rounds: int = ROUNDS, calls: int = CALLS,
        thread_counts: list[int] | None = None) -> list[dict]:
    """Build the family (or take the one `bench_build` left in ``ctx.shared``), then time it at
    the context's thread count, or at each of `thread_counts` in turn (one build; the rows of
    each count follow the previous count's)."""
    if "out" in ctx.shared:
        return _timed_rows(ctx, ctx.shared["out"], ctx.shared["manifest"], rounds, calls, thread_counts)
    with tempfile.TemporaryDirectory(prefix="adaexport-bench-speed-") as tmp:
        out = Path(tmp) / "family"
        manifest = build_family(ctx, out, dataset if dataset is not None else ctx.dataset)
        return _timed_rows(ctx, out, manifest, rounds, calls, thread_counts)


def _timed_rows(ctx: Context, out: Path, manifest: dict, rounds: int, calls: int,
                thread_counts: list[int] | None) -> list[dict]:
    import torch

    rows = []
    for threads in thread_counts or [ctx.threads]:
        ctx.threads = threads
        torch.set_num_threads(threads)
        rows += [{**row, "threads": threads}
                 for row in latency_rows(ctx, out, manifest, ctx.rounds or rounds, ctx.calls or calls)]
    return rows


def _time_point(model, point, sessions: dict, tensor, feeds: dict, rounds: int, calls: int) -> dict[str, list[float]]:
    """Per round, the median of `calls` runs of eager and of every engine of one point, in turn."""
    forward = lambda: model(tensor, tokens=point.tokens, width=point.width, depth=point.depth)  # noqa: E731
    forward()                               # warm every path once
    for session in sessions.values():
        session.run(feeds)
    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        time.sleep(SETTLE_S)
        times.setdefault("eager", []).append(_median_call(forward, calls))
        for engine_id, session in sessions.items():
            time.sleep(SETTLE_S)
            times.setdefault(engine_id, []).append(_median_call(lambda: session.run(feeds), calls))
    return times


def latency_rows(ctx: Context, out: Path, manifest: dict, rounds: int, calls: int) -> list[dict]:
    """Eager and every ready engine of the family, point by point (a point's engines open
    together and close before the next point's, so memory holds one point's sessions)."""
    import numpy as np
    import torch

    from adaexport.backends import open_engine
    from adaexport.space import ConfigPoint

    shape = manifest["model"]["input"]["shape"]
    image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    feeds = {manifest["model"]["input"].get("name", "image"): image}
    tensor = torch.from_numpy(image)
    model = ctx.model.eval()
    tokens = {p.tokens for p in ctx.points}
    rate_before, streamed_before = gemm_rate(ctx.threads), streamed_gemm_rates(ctx.model.config, ctx.threads, tokens)
    by_point: dict[str, list[dict]] = {}
    for engine in manifest["engines"]:
        if engine.get("status", "ready") == "ready":
            by_point.setdefault(ConfigPoint(**engine["point"]).id, []).append(engine)
    points = {p.id: p for p in ctx.points}
    times: dict[str, dict[str, list[float]]] = {}
    with torch.inference_mode():
        for name, engines in by_point.items():
            sessions = {e["id"]: open_engine(out, e, ctx.threads) for e in engines}
            times[name] = _time_point(model, points[name], sessions, tensor, feeds, rounds, calls)
            del sessions
    rate = max(rate_before, gemm_rate(ctx.threads))
    streamed_after = streamed_gemm_rates(ctx.model.config, ctx.threads, tokens)
    streamed = {t: max(streamed_before[t], streamed_after[t]) for t in tokens}
    cfg = ctx.model.config
    megabytes = 8 * cfg.depth * cfg.embed_dim * cfg.hidden_dim / 1e6      # 2 x depth float32 matrices
    chain = f"a chain of the model's {2 * cfg.depth} MLP weights ({megabytes:.0f} MB)"
    rows = [value_row(NAME, f"fp32 GEMM rate ({ctx.threads} thread(s))", round(rate / 1e9, 1), "GFLOP/s",
                      note=f"before {rate_before / 1e9:.1f}, best of 5 mm 2048^3 at start and end", key="gemm")]
    rows += [value_row(NAME, f"fp32 GEMM rate, weights streamed, {t} rows ({ctx.threads} thread(s))",
                       round(streamed[t] / 1e9, 1), "GFLOP/s",
                       note=f"before {streamed_before[t] / 1e9:.1f}; ONNX Runtime, {chain}, best of 5 at start and end",
                       key=f"gemm_streamed_t{t}") for t in sorted(tokens)]
    kinds: dict[str, dict[str, dict]] = {}
    for name, engines in by_point.items():
        roofline = engines[0]["flops"] / rate      # the manifest's count (the engines stage's count_flops)
        gemms = engines[0]["flops"] / streamed[points[name].tokens]
        eager = times[name]["eager"]
        for e in engines:
            mine = times[name][e["id"]]
            kinds.setdefault(f"{e['backend']} {e['precision']}", {})[name] = {
                "vs_eager": [m / g for m, g in zip(mine, eager)], "vs_roofline": [m / roofline for m in mine],
                "vs_streamed_gemms": [m / gemms for m in mine],
                "ms": statistics.median(mine) * 1e3, "eager_ms": statistics.median(eager) * 1e3,
                "roofline_ms": roofline * 1e3, "streamed_gemms_ms": gemms * 1e3}
    for kind, per_point in kinds.items():
        for measure in ("vs_eager", "vs_roofline", "vs_streamed_gemms"):
            worst = max(per_point, key=lambda n: statistics.median(per_point[n][measure]))
            medians = ", ".join(f"{n} {statistics.median(v[measure]):.2f}" for n, v in per_point.items())
            rows.append(ratio_row(NAME, f"{kind} {measure.replace('_', ' ')} (worst point)",
                                  per_point[worst][measure], note=f"worst {worst}; every point: {medians}",
                                  key=f"{kind.replace(' ', '_')}_{measure}", points=per_point))
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--tokens", default=None)
    parser.add_argument("--width", default=None)
    parser.add_argument("--depth", default=None)
    parser.add_argument("--threads", default="1",
                        help="thread count, or several (1,16): the family is built once and timed at each")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    import os

    counts = thread_counts(parser, args.threads)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(max(counts))
    import torch

    from adaexport.demo import DEMO_MODEL
    from adaexport.model import load_checkpoint
    from adaexport.space import build_grid

    loaded = load_checkpoint(args.model or DEMO_MODEL)
    spec = ",".join(x for x in (args.tokens, args.width, args.depth) if x)
    lists = [[int(v) for v in x.split(",")] if x else None for x in (args.tokens, args.width, args.depth)]
    points, _ = build_grid(loaded.config, None, *lists) if spec else build_grid(loaded.config, "corners")
    ctx = Context(loaded=loaded, model_path=Path(args.model or DEMO_MODEL), grid=spec or "corners", points=points,
                  attention=loaded.config.default_attention, batch=1, repeats=args.rounds, threads=counts[0],
                  profile="default", exporter="torchscript")
    torch.set_num_threads(counts[0])
    threads = None
    for row in run(ctx, args.dataset, args.rounds, thread_counts=counts):
        if row["threads"] != threads:
            threads = row["threads"]
            print(f"{threads} thread(s):")
        spread = f"{row['min']:.2f} .. {row['max']:.2f}" if row["n"] > 1 else ""
        print(f"{row['name']:<55} {row['median']:>9.2f} {row['unit']:<8} {spread:<16} {row['note']}")
    sys.exit(0)
