"""The embedded runtime: overhead, switch time, resident memory, and the cascade policy.

    python benchmarks/bench_runtime.py [DIR] [--repeats 5] [--samples 1000]

DIR is a build directory with ONNX Runtime fp32 engines (default: a small family built
into a temporary directory). Single-threaded sessions (intra_op_num_threads=1). With
``--published DIR`` (a family of the published-size checkpoint), the latency and memory
rows at that size (see ``published_size``).

* overhead: ``Runtime.infer`` against a plain ``onnxruntime.InferenceSession.run`` on the
  same engine file (default options: its own copy of the weights, prepacked), the
  runtime's shared session (the family's prepacked cache, ``backends.ort_prepacked``) and
  its unshared one (``share_weights=False``), in rounds of 200 calls whose order rotates;
  median and spread of the per-call times and of the ratios within a round;
* switch: time from ``set_limits`` to the end of the first inference on the new engine,
  with every engine preloaded and with lazy opening (which includes opening the session);
* memory: growth of a fresh process that opens one engine (shared, and plain), every
  engine sharing, and every engine as separate plain sessions (each in its own
  subprocess, one inference per engine). Proportional set size (Pss, /proc/self/
  smaps_rollup) is the measure: the shared sessions map the same file pages, which VmRSS
  counts once per mapping (it is printed too) while Pss counts each page once;
* cascade: on the demo's held-out images, each engine's top-1, then the input-adaptive
  cascade over the FLOPs Pareto front (cheapest first; escalate when the softmax top-1
  probability is under a threshold) against the best single engine: accuracy, mean FLOPs
  and mean latency (each engine's measured mean latency summed along the engines each
  image ran). A real ``Runtime(policy="cascade")`` run checks the offline replay.

A module ``run(ctx)`` in the house style is provided for benchmarks/run_all.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NAME = "runtime"
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _rows_stat(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "values": list(values)}


def build_small(out: Path) -> Path:
    cmd = [sys.executable, "-m", "adaexport", "build", "--out", str(out), "--build-profile",
           str(ROOT / "tests/data/profiles/ort-fp32.toml"), "--tokens", "8,32", "--width", "32,64", "--depth", "1,4"]
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    return out


def eval_inputs(directory: Path, limit: int):
    from adaexport.demo import load_eval_subset
    from adaexport.manifest import read_manifest
    from adaexport.runtime.preprocess import to_model_input

    spec = read_manifest(directory)["model"]["input"]
    images, labels = load_eval_subset()
    x = np.concatenate([to_model_input(img[..., None], spec) for img in images[:limit]])
    return x, labels[:limit]


def overhead(directory: Path, repeats: int, calls: int = 200) -> dict:
    """Per-call time of rt.infer, of the runtime's own session for the same engine (shared
    through the prepacked cache), of its unshared session and of a plain ONNX Runtime
    session on the file (default options); rounds rotate the order, ratios are taken
    within a round."""
    import onnxruntime as ort

    from adaexport.runtime import Runtime

    rt = Runtime(directory, preload="all", threads=1)
    engine = rt.status.engine
    entry = rt.manifest.engine(engine)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    plain = ort.InferenceSession(str(directory / entry.file), options, providers=["CPUExecutionProvider"])
    own = rt.pool.get(engine)
    unshared_rt = Runtime(directory, preload="lazy", threads=1, share_weights=False)
    unshared = unshared_rt.pool.get(engine)
    x = np.zeros(rt.input_shape, np.float32)
    fns = {"plain": lambda: plain.run(None, {"image": x}), "session": lambda: own.run({"image": x}),
           "unshared_session": lambda: unshared.run({"image": x}), "runtime": lambda: rt.infer(x)}
    per_call = {k: [] for k in fns}
    names = list(fns)
    for r in range(4 * repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            for _ in range(20):
                fns[name]()
            start = time.perf_counter()
            for _ in range(calls):
                fns[name]()
            per_call[name].append((time.perf_counter() - start) / calls * 1e6)
    rt.close()
    unshared_rt.close()
    rounds = range(len(per_call["plain"]))
    return {"engine": engine, **{f"{k}_us": _rows_stat(v) for k, v in per_call.items()},
            "runtime_minus_session_us": _rows_stat([per_call["runtime"][i] - per_call["session"][i] for i in rounds]),
            "runtime_over_plain": _rows_stat([per_call["runtime"][i] / per_call["plain"][i] for i in rounds]),
            "session_over_plain": _rows_stat([per_call["session"][i] / per_call["plain"][i] for i in rounds]),
            "runtime_over_session": _rows_stat([per_call["runtime"][i] / per_call["session"][i] for i in rounds]),
            "shared_over_unshared": _rows_stat([per_call["session"][i] / per_call["unshared_session"][i]
                                                for i in rounds])}


def own_overhead(directory: Path, repeats: int, calls: int = 20000) -> dict:
    """What ``Runtime.infer`` itself costs per call: the same loop with every session replaced
    by a stand-in that returns a fixed output at once, against calling that stand-in
    directly (choice, locks, closed loop, result; no inference to hide behind)."""
    from adaexport.runtime import Runtime

    out = [np.zeros((1, 10), np.float32)]

    class Instant:
        options: dict = {}

        def run(self, feed):
            return out

        def close(self):
            pass

    with Runtime(directory, preload="all", threads=1) as rt:
        for state in rt.pool.engines.values():
            if state.session is not None:
                state.session = Instant()
        x = np.zeros(rt.input_shape, np.float32)
        direct, feed = Instant(), {rt.input_name: x}
        per_call = {"runtime": [], "direct": []}
        for _ in range(repeats):
            for name, fn in (("runtime", lambda: rt.infer(x)), ("direct", lambda: direct.run(feed))):
                start = time.perf_counter_ns()
                for _ in range(calls):
                    fn()
                per_call[name].append((time.perf_counter_ns() - start) / calls / 1e3)
    return {"runtime_own_us": _rows_stat([r - d for r, d in zip(per_call["runtime"], per_call["direct"])])}


def switch_time(directory: Path, repeats: int) -> dict:
    from adaexport.runtime import Limits, Runtime

    out = {}
    for preload in ("all", "lazy"):
        values = []
        for _ in range(repeats):
            rt = Runtime(directory, preload=preload, threads=1)
            x = np.zeros(rt.input_shape, np.float32)
            first = rt.status.engine
            rt.infer(x)
            start = time.perf_counter()
            rt.set_limits(Limits(latency_ms=1e-6))       # nothing fits: the fastest engine
            result = rt.infer(x)
            values.append((time.perf_counter() - start) * 1e3)
            assert result.engine != first
            rt.close()
        out[preload] = _rows_stat(values)
    return out


_MEMORY_SCRIPT = """
import sys, numpy as np
def memory():
    out = {}
    for line in open('/proc/self/smaps_rollup'):
        key, _, value = line.partition(':')
        if key in ('Rss', 'Pss', 'Pss_Anon', 'Pss_File'):
            out[key] = int(value.split()[0]) * 1024
    return out
from adaexport.runtime import Runtime
import onnxruntime
mode, directory = sys.argv[1], sys.argv[2]
before = memory()
rt = Runtime(directory, preload="lazy", share_weights=mode in ("one", "shared"), threads=1)
x = np.zeros(rt.input_shape, np.float32)
ids = rt.engines()[-1:] if mode.startswith("one") else rt.engines()
for eid in ids:
    rt.pool.get(eid).run({"image": x})
after = memory()
print(len(ids), *(after[k] - before[k] for k in ('Pss', 'Rss', 'Pss_Anon', 'Pss_File')))
"""
MEMORY_MODES = {"one": "one engine, shared", "one-plain": "one engine, plain", "shared": "every engine, shared",
                "separate": "every engine, plain"}


def prepare_cache(directory: Path) -> dict:
    """Make the family's prepacked cache before anything is measured (once per device): its
    build time and size on disk against the family's weights file."""
    from adaexport.backends.ort_prepacked import PrepackedFamily
    from adaexport.manifest_reader import load_manifest

    manifest = load_manifest(directory)
    cache = PrepackedFamily(directory, manifest.engines, manifest.weights.sha256 if manifest.weights else None)
    start = time.perf_counter()
    cache.meta()
    weights = (directory / manifest.weights.file).stat().st_size if manifest.weights else 0
    return {"seconds": time.perf_counter() - start, "mib_on_disk": cache.bytes_on_disk / 2**20,
            "weights_mib": weights / 2**20}


def memory(directory: Path, repeats: int) -> dict:
    """Pss (and VmRSS) growth, MiB, of a fresh process per mode and repeat; the ratios of
    every engine shared to one plain engine, and to one shared engine."""
    prepare_cache(directory)
    out = {}
    for mode in MEMORY_MODES:
        values, count = {"pss": [], "rss": [], "pss_anon": [], "pss_file": []}, 0
        for _ in range(repeats):
            proc = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, mode, str(directory)], capture_output=True,
                                  text=True, check=True, cwd=ROOT)
            count, *grown = proc.stdout.split()
            for key, value in zip(values, grown):
                values[key].append(int(value) / 2**20)
        out[mode] = {"what": MEMORY_MODES[mode], "engines": int(count), **{k: _rows_stat(v) for k, v in values.items()}}
    pss = {mode: out[mode]["pss"]["median"] for mode in out}
    out["shared_over_one_plain"] = pss["shared"] / pss["one-plain"]
    out["shared_over_one_shared"] = pss["shared"] / pss["one"]
    out["separate_over_shared"] = pss["separate"] / pss["shared"]
    return out


def cascade(directory: Path, samples: int, thresholds=(0.5, 0.7, 0.8, 0.9, 0.95)) -> dict:
    from adaexport.manifest_records import FLOPS_FRONT
    from adaexport.pareto import front
    from adaexport.runtime import Runtime, softmax_top1

    x, y = eval_inputs(directory, samples)
    rt = Runtime(directory, preload="all", threads=1)
    flops = {e.id: float(e.flops) for e in rt.manifest.engines}
    logits, mean_ms = {}, {}
    for eid in rt.engines():
        session = rt.pool.get(eid)
        outs, times = [], []
        for i in range(len(x)):
            start = time.perf_counter()
            outs.append(session.run({"image": x[i:i + 1]})[0][0])
            times.append(time.perf_counter() - start)
        logits[eid], mean_ms[eid] = np.stack(outs), 1e3 * float(np.mean(times))
    top1 = {e: float((logits[e].argmax(1) == y).mean()) for e in logits}
    conf = {e: softmax_top1(logits[e]) for e in logits}
    stages = front((e, flops[e], top1[e]) for e in logits)     # cheapest first; the last is the most accurate
    best = max(top1, key=lambda e: (top1[e], -flops[e]))
    result = {"samples": len(x), "front": stages, "best": {"engine": best, "top1": top1[best], "flops": flops[best],
                                                            "latency_ms": mean_ms[best]},
              "engines": {e: {"top1": top1[e], "flops": flops[e], "latency_ms": mean_ms[e]} for e in logits},
              "thresholds": []}
    for threshold, chain in [(t, c) for c in ("front", "two-stage") for t in thresholds]:
        path = stages if chain == "front" else [stages[0], stages[-1]]
        correct, spent_flops, spent_ms, exits = 0, 0.0, 0.0, {e: 0 for e in path}
        for i in range(len(x)):
            for j, e in enumerate(path):
                spent_flops += flops[e]
                spent_ms += mean_ms[e]
                if conf[e][i] >= threshold or j == len(path) - 1:
                    correct += int(logits[e][i].argmax() == y[i])
                    exits[e] += 1
                    break
        n = len(x)
        result["thresholds"].append({"chain": chain, "threshold": threshold, "top1": correct / n, "mean_flops": spent_flops / n,
                                     "mean_latency_ms": spent_ms / n, "exits": exits})
    # the real cascade policy on a slice agrees with the replay
    rt.close()
    check = Runtime(directory, preload="all", policy="cascade", cascade_threshold=0.9, cascade_chain="front",
                    threads=1)
    check.manifest.pareto[FLOPS_FRONT] = stages
    check._stages = tuple(stages)
    agree = 0
    for i in range(min(200, len(x))):
        r = check.infer(x[i:i + 1])
        exit_engine = next(e for j, e in enumerate(stages) if conf[e][i] >= 0.9 or j == len(stages) - 1)
        agree += r.engine == exit_engine
    result["runtime_agrees"] = f"{agree}/{min(200, len(x))}"
    check.close()
    return result


def published_size(directory: Path, repeats: int) -> dict:
    """For a family of the published model (ONNX Runtime fp32 engines, exported with
    `adaexport export`), 1 thread: per-call time of a plain session (its own prepacked
    weights) and of the runtime's shared session (the family's prepacked cache) at the
    smallest and the largest point, every engine of the family loaded in the runtime, and
    of Runtime.infer at the point it serves (the largest, unprofiled); rounds interleaved,
    ratios within a round; then the switch time (limit change to the end of the first
    inference on the new engine, preloaded and lazy), the cache's cost and resident memory
    (fresh processes)."""
    import onnxruntime as ort

    from adaexport.runtime import Runtime

    cache = prepare_cache(directory)
    rt = Runtime(directory, preload="all", threads=1)
    entries = sorted((e for e in rt.manifest.engines if e.id in rt.engines()), key=lambda e: e.flops)
    x = np.zeros(rt.input_shape, np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    out: dict = {"cache": cache, "sharing": rt.status.sharing}
    for label, entry, calls in (("smallest", entries[0], 5), ("largest", entries[-1], 2)):
        plain = ort.InferenceSession(str(directory / entry.file), options, providers=["CPUExecutionProvider"])
        shared = rt.pool.get(entry.id)
        fns = {"plain": lambda: plain.run(None, {"image": x}), "shared": lambda: shared.run({"image": x})}
        if entry.id == rt.status.engine:
            fns["runtime"] = lambda: rt.infer(x)
        per_call = {k: [] for k in fns}
        for r in range(repeats):
            names = list(fns)[r % len(fns):] + list(fns)[:r % len(fns)]
            for name in names:
                fns[name]()                                   # warm
                start = time.perf_counter()
                for _ in range(calls):
                    fns[name]()
                per_call[name].append((time.perf_counter() - start) / calls * 1e3)
        rounds = range(repeats)
        out[label] = {"engine": entry.id, "gflops": entry.flops / 1e9,
                      **{f"{k}_ms": _rows_stat(v) for k, v in per_call.items()},
                      "shared_over_plain": _rows_stat([per_call["shared"][i] / per_call["plain"][i] for i in rounds])}
        if "runtime" in per_call:
            out[label]["runtime_over_session"] = _rows_stat([per_call["runtime"][i] / per_call["shared"][i]
                                                             for i in rounds])
        del plain
    rt.close()
    out["switch_ms"] = switch_time(directory, 2)
    out["memory_mib"] = memory(directory, 1)
    return out


def report(directory: Path, repeats: int, samples: int) -> dict:
    return {"directory": str(directory), "overhead": overhead(directory, repeats),
            "own_overhead": own_overhead(directory, repeats),
            "switch_ms": switch_time(directory, repeats), "memory_mib": memory(directory, repeats),
            "cascade": cascade(directory, samples)}


def run(ctx) -> list[dict]:
    """For benchmarks/run_all.py: a small family in a temporary directory."""
    from bench_common import ratio_row, time_row

    with tempfile.TemporaryDirectory(prefix="adaexport-bench-runtime-") as tmp:
        directory = build_small(Path(tmp) / "fam")
        over = overhead(directory, ctx.repeats)
        own = own_overhead(directory, ctx.repeats)
        switch = switch_time(directory, ctx.repeats)
        mem = memory(directory, 1)
    return [ratio_row(NAME, "infer / plain session", over["runtime_over_plain"]["values"], note=over["engine"]),
            ratio_row(NAME, "shared session / plain session", over["session_over_plain"]["values"]),
            time_row(NAME, "infer's own cost per call", [v / 1e6 for v in own["runtime_own_us"]["values"]],
                     note="sessions replaced by an instant stand-in"),
            time_row(NAME, "switch preloaded", [v / 1e3 for v in switch["all"]["values"]]),
            time_row(NAME, "switch lazy", [v / 1e3 for v in switch["lazy"]["values"]]),
            ratio_row(NAME, "Pss all engines shared / one plain engine", [mem["shared_over_one_plain"]],
                      note="one fresh process each"),
            ratio_row(NAME, "Pss all engines plain / shared", [mem["separate_over_shared"]])]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--published", action="store_true",
                        help="DIR is a published-size family (adaexport export of benchmarks/published_model.py's "
                             "checkpoint): latency of plain vs shared sessions and Runtime.infer, and memory")
    args = parser.parse_args(argv)
    if args.published:
        if not args.directory:
            parser.error("--published needs DIR")
        print(json.dumps(published_size(Path(args.directory), args.repeats), indent=1))
        return 0
    if args.directory:
        print(json.dumps(report(Path(args.directory), args.repeats, args.samples), indent=1))
        return 0
    with tempfile.TemporaryDirectory(prefix="adaexport-bench-runtime-") as tmp:
        print(json.dumps(report(build_small(Path(tmp) / "fam"), args.repeats, args.samples), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
