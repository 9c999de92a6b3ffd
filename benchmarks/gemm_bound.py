"""What bounds the published model's GEMMs on this CPU, 1 thread: compute or memory.

``python benchmarks/gemm_bound.py`` prints, best of several calls each:

* one MatMul of the model's shapes (and 2048^3, the roofline's own) in torch, ONNX Runtime
  and OpenVINO, GFLOP/s: whether the engines' kernels reach the roofline's GEMM rate;
* a chain of 42 distinct Gemm weights (as the model's blocks read them: every weight once
  per run) at 32 and 256 rows, ONNX Runtime and torch eager: at 32 rows a weight byte
  carries 16 FLOPs, so the chain streams its weights from memory;
* the machine's one-thread read bandwidth (numpy sum of 300 MB).

``python benchmarks/gemm_bound.py --model POINT.onnx [--threads 1,2]`` instead splits one
exported point's ONNX Runtime run with its profiler (and its OpenVINO run with the CPU plugin's
performance counters, `in_model_fully_connected`): the weight products' kernel time (ONNX
Runtime's Gemm nodes, OpenVINO's FullyConnected layers), their FLOPs (from the recorded shapes)
and so their rate, against the 2048^3 GEMM rate measured just before at the same thread count,
and the time of every other node. Where the point sits in a build (BUILD/onnx/POINT.onnx beside
BUILD/manifest.json) each is also given against the point's roofline (the manifest's FLOPs
over that rate). It says how near the roofline a graph of these products could come in each
runtime at all: the products alone at their in-model rate, plus whatever the other nodes cost.

``python benchmarks/gemm_bound.py --attention TOKENS [--threads 1,2]`` times one published
block's attention (its prefix runs of query rows at TOKENS latents) as the exports have it and
as opset-23 ``Attention`` nodes, one per run, in both runtimes (`attention_forms`): what the
attention would cost if ONNX Runtime ran it as one fused kernel.

bench_speed's roofline is FLOPs over the GEMM rate, which leaves memory out; this says where
that roofline cannot be reached. bench_speed measures the chain's rate too (`chain_weights`,
`weight_chain`, at the model's MLP shape and each token count's rows) and times every engine
against it. Timing only: run it on a quiet machine.
"""

from __future__ import annotations

import time

import numpy as np

# The ONNX IR version of the chains built here: onnx.helper's default follows the installed onnx
# (IR 14 with onnx 1.23), which an older ONNX Runtime refuses (1.30 reads up to IR 13); opset 17
# needs IR 8.
IR_VERSION = 8


def call_times(call, n: int) -> list[float]:
    """Seconds of each of n calls, after one untimed call."""
    call()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def _best(call, n: int = 10) -> float:
    return min(call_times(call, n))


def ort_session(model, threads: int = 1):
    """An ONNX Runtime CPU session of `model` with `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def one_thread_runtimes(model):
    """(an ONNX Runtime session, an OpenVINO fp32 infer request) of `model`, 1 thread each."""
    import openvino as ov

    core = ov.Core()
    request = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU",
                                 {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32"}
                                 ).create_infer_request()
    return ort_session(model), request


def single_matmuls(rng) -> None:
    import torch
    from onnx import TensorProto, helper, numpy_helper

    print("one MatMul, GFLOP/s          torch    ORT     OpenVINO")
    for m, k, n in ((2048, 2048, 2048), (256, 832, 2496), (256, 832, 2138), (256, 2138, 832), (32, 832, 2496),
                    (32, 416, 1069)):
        a = rng.standard_normal((m, k)).astype(np.float32)
        w = rng.standard_normal((k, n)).astype(np.float32)
        graph = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["y"])], "g",
                                  [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
                                  [numpy_helper.from_array(w, "w")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
        session, request = one_thread_runtimes(model)
        ta, tw = torch.from_numpy(a), torch.from_numpy(w)
        flops = 2 * m * k * n / 1e9
        rates = [flops / _best(call, 20) for call in (lambda: torch.mm(ta, tw), lambda: session.run(None, {"a": a}),
                                                      lambda: request.infer({0: a}))]
        print(f"{m} x {k} x {n}".ljust(28), "  ".join(f"{r:7.1f}" for r in rates))


def chain_weights(rng, k: int, n: int, layers: int = 42) -> list[np.ndarray]:
    """`layers` distinct Gemm weights, n x k and k x n in turn, as the model's blocks read
    theirs: every weight once per run."""
    return [(rng.standard_normal((n, k) if i % 2 == 0 else (k, n)) * 0.02).astype(np.float32)
            for i in range(layers)]


def weight_chain(weights: list[np.ndarray], m: int):
    """An ONNX model of Gemms over `weights` in turn, `m` rows, transB (as the exported model)."""
    from onnx import TensorProto, helper, numpy_helper

    k = weights[0].shape[1]
    nodes = [helper.make_node("Gemm", ["x" if i == 0 else f"y{i - 1}", f"w{i}"], [f"y{i}"], transB=1)
             for i in range(len(weights))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info(f"y{len(weights) - 1}", TensorProto.FLOAT, [m, k])],
                              [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


def weight_chains(rng, layers: int = 42) -> None:
    import torch

    print(f"a chain of {layers} distinct Gemm weights, GFLOP/s")
    for m, k, n in ((32, 416, 1069), (256, 832, 2138)):
        weights = chain_weights(rng, k, n, layers)
        session = ort_session(weight_chain(weights, m))
        x = rng.standard_normal((m, k)).astype(np.float32)
        tx, tws = torch.from_numpy(x), [torch.from_numpy(w) for w in weights]

        def eager():
            y = tx
            for w in tws:
                y = y @ w.t()

        flops = 2 * m * k * n * layers / 1e9
        megabytes = sum(w.nbytes for w in weights) / 1e6
        print(f"  {m} rows, {k} x {n}, {megabytes:.0f} MB of weights: ONNX Runtime "
              f"{flops / _best(lambda: session.run(None, {'x': x})):.1f}, torch eager {flops / _best(eager):.1f}")


def read_bandwidth() -> None:
    data = np.ones(75_000_000, np.float32)
    print(f"one-thread read bandwidth (numpy sum of 300 MB): {data.nbytes / _best(data.sum, 5) / 1e9:.1f} GB/s")


def in_model_gemms(path, threads: int, runs: int = 8) -> dict:
    """One ONNX Runtime run of the exported point at `path`, split by its profiler (the mean
    of `runs` runs after 3 untimed ones): ms of the whole run, of every node's kernel, of the
    Gemm nodes, the Gemms' GFLOPs (2 x rows x inner x outer from the recorded input and output
    shapes) and ms per other op type."""
    import json
    import os
    import tempfile
    from collections import Counter

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "run")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {i.name: np.random.default_rng(0).standard_normal(i.shape).astype(np.float32)
                for i in session.get_inputs()}
        for _ in range(3 + runs):
            session.run(None, feed)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    timed = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][-runs:]
    start = timed[0]["ts"]
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start]
    by_op, gemm_flops = Counter(), 0
    for e in kernels:
        by_op[e["args"]["op_name"]] += e["dur"]
        if e["args"]["op_name"] == "Gemm":
            rows_inner = list(e["args"]["input_type_shape"][0].values())[0]
            outer = list(e["args"]["output_type_shape"][0].values())[0][-1]
            gemm_flops += 2 * int(np.prod(rows_inner)) * outer
    ms = lambda us: us / runs / 1e3  # noqa: E731
    return {"run_ms": ms(sum(e["dur"] for e in timed)), "kernel_ms": ms(sum(by_op.values())),
            "gemm_ms": ms(by_op.pop("Gemm", 0)), "gemm_gflop": gemm_flops / runs / 1e9,
            "other_ms": {op: ms(us) for op, us in by_op.most_common()}}


def openvino_fp32_config(threads: int) -> dict:
    """The OpenVINO properties x86-cpu's fp32 engines are compiled with, at `threads` threads."""
    from adaexport.backends.openvino_backend import runtime_properties
    from adaexport.targets import get_target

    config = runtime_properties(get_target("x86-cpu").options("openvino"), "fp32", threads)
    return {k: v for k, v in config.items() if k.isupper()}


def in_model_fully_connected(path, threads: int, runs: int = 8) -> dict:
    """`in_model_gemms` for OpenVINO: one run of the point compiled as the x86-cpu target's fp32
    engines are (`openvino_backend.runtime_properties`), split by the CPU plugin's performance
    counters (the mean of `runs` runs after 3 untimed ones). Its weight products are the
    FullyConnected layers (the model's projections and MLPs, and the rotary product); their
    FLOPs are 2 x the output's elements x the inner size, from the compiled model's shapes.
    Same keys as `in_model_gemms` ("gemm": the FullyConnected layers; "other_ms" by layer type)."""
    from collections import Counter

    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", openvino_fp32_config(threads) | {"PERF_COUNT": True})
    layers = {op.get_friendly_name(): op for op in compiled.get_runtime_model().get_ordered_ops()}
    request = compiled.create_infer_request()
    feed = {port: np.random.default_rng(0).standard_normal(list(port.get_shape())).astype(np.float32)
            for port in compiled.inputs}
    for _ in range(3):
        request.infer(feed)
    by_type, fc_flops, run_s = Counter(), 0, 0.0
    for _ in range(runs):
        start = time.perf_counter()
        request.infer(feed)
        run_s += time.perf_counter() - start
        for layer in request.get_profiling_info():
            if layer.status != layer.Status.EXECUTED:
                continue
            by_type[layer.node_type] += layer.real_time.total_seconds()
            if layer.node_type == "FullyConnected":
                op = layers[layer.node_name]
                inner = op.get_input_partial_shape(0).to_shape()[-1]
                fc_flops += 2 * int(np.prod(list(op.get_output_partial_shape(0).to_shape()))) * inner
    ms = lambda s: s / runs * 1e3  # noqa: E731
    return {"run_ms": ms(run_s), "kernel_ms": ms(sum(by_type.values())),
            "gemm_ms": ms(by_type.pop("FullyConnected", 0)), "gemm_gflop": fc_flops / runs / 1e9,
            "other_ms": {kind: ms(s) for kind, s in by_type.most_common()}}


def point_flops(path) -> int | None:
    """The point's FLOPs from the manifest of the build the ONNX is in (BUILD/onnx/POINT.onnx beside
    BUILD/manifest.json; the engines stage's `count_flops`), or None where there is none."""
    import json
    from pathlib import Path

    from adaexport.space import ConfigPoint

    path = Path(path)
    try:
        engines = json.loads((path.parent.parent / "manifest.json").read_text())["engines"]
    except (OSError, ValueError, KeyError):
        return None
    for engine in engines:
        if ConfigPoint(**engine["point"]).id == path.stem:
            return engine.get("flops")
    return None


SPLITS = {"ONNX Runtime": (in_model_gemms, "Gemm nodes"), "OpenVINO": (in_model_fully_connected, "FullyConnected layers")}


def split_point(path, thread_counts) -> None:
    """Each runtime's split (`SPLITS`) at each thread count beside that count's 2048^3 GEMM rate."""
    from bench_speed import gemm_rate

    flops = point_flops(path)
    for threads in thread_counts:
        rate = gemm_rate(threads) / 1e9
        roofline_ms = flops / rate / 1e6 if flops else None
        print(f"{threads} thread(s): GEMM rate (2048^3) {rate:.1f} GFLOP/s" +
              (f"; the point's roofline {roofline_ms:.1f} ms ({flops / 1e9:.2f} GFLOP)" if flops else ""))
        for runtime, (split_run, products) in SPLITS.items():
            split = split_run(path, threads)
            gemm_rate_in_model = split["gemm_gflop"] / split["gemm_ms"] * 1e3
            others = split["kernel_ms"] - split["gemm_ms"]
            print(f"  {runtime}: run {split['run_ms']:.1f} ms, kernels {split['kernel_ms']:.1f} ms" +
                  (f" ({split['run_ms'] / roofline_ms:.2f}x the roofline; the {products} alone "
                   f"{split['gemm_ms'] / roofline_ms:.2f}x, the rest {others / roofline_ms:.2f}x)"
                   if flops else ""))
            print(f"    {products}: {split['gemm_ms']:.1f} ms for {split['gemm_gflop']:.2f} GFLOP = "
                  f"{gemm_rate_in_model:.1f} GFLOP/s ({gemm_rate_in_model / rate:.2f} of the GEMM rate; "
                  f"{split['gemm_ms'] / (split['gemm_gflop'] / rate * 1e3):.2f}x their FLOPs at it)")
            top = ", ".join(f"{op} {t:.2f}" for op, t in list(split["other_ms"].items())[:10])
            print(f"    the rest: {others:.1f} ms ({top} ...)")


def block_attention(runs, heads: int, head_dim: int, fused: bool):
    """One block's attention over (1, N, heads x head_dim) q, k and v as an ONNX model: each run
    (start, end, keys) of query rows over its key prefix. `fused` False: the exported graphs'
    form (`layers.attention` with prefix runs: heads split by Reshape and Transpose, per run a
    Slice of k and v, MatMul with k transposed, the scale, Softmax, MatMul, then Concat and the
    heads joined); True: per run one ONNX `Attention` (opset 23, which ONNX Runtime runs as one
    kernel) on the (1, rows, width) slices, no head transposes."""
    from onnx import TensorProto, helper

    n, width = runs[-1][1], heads * head_dim
    ints = lambda name, values: helper.make_tensor(name, TensorProto.INT64, [len(values)], values)  # noqa: E731
    seq_axis = 1 if fused else 2
    inits = [ints("rows", [end - start for start, end, _ in runs])]
    if any(keys != n for _, _, keys in runs):
        inits += [ints("zero", [0]), ints("axis", [seq_axis])]
    nodes, q, k, v = [], "q", "k", "v"
    if not fused:
        inits += [ints("heads", [1, n, heads, head_dim]), ints("joined", [1, n, width]),
                  helper.make_tensor("scale", TensorProto.FLOAT, [], [head_dim ** -0.5])]
        for name in "qkv":
            nodes += [helper.make_node("Reshape", [name, "heads"], [name + "_h"]),
                      helper.make_node("Transpose", [name + "_h"], [name + "_t"], perm=[0, 2, 1, 3])]
        q, k, v = "q_t", "k_t", "v_t"
    nodes.append(helper.make_node("Split", [q, "rows"], [f"q{i}" for i in range(len(runs))], axis=seq_axis))
    for i, (_, _, keys) in enumerate(runs):
        ki, vi = k, v
        if keys != n:
            inits.append(ints(f"end{i}", [keys]))
            ki, vi = f"k{i}", f"v{i}"
            nodes += [helper.make_node("Slice", [k, "zero", f"end{i}", "axis"], [ki]),
                      helper.make_node("Slice", [v, "zero", f"end{i}", "axis"], [vi])]
        if fused:
            nodes.append(helper.make_node("Attention", [f"q{i}", ki, vi], [f"o{i}"], q_num_heads=heads,
                                          kv_num_heads=heads))
        else:
            nodes += [helper.make_node("Transpose", [ki], [f"kt{i}"], perm=[0, 1, 3, 2]),
                      helper.make_node("MatMul", [f"q{i}", f"kt{i}"], [f"s{i}"]),
                      helper.make_node("Mul", [f"s{i}", "scale"], [f"ss{i}"]),
                      helper.make_node("Softmax", [f"ss{i}"], [f"p{i}"], axis=-1),
                      helper.make_node("MatMul", [f"p{i}", vi], [f"o{i}"])]
    out = "out" if fused else "cat"
    nodes.append(helper.make_node("Concat", [f"o{i}" for i in range(len(runs))], [out], axis=seq_axis))
    if not fused:
        nodes += [helper.make_node("Transpose", ["cat"], ["cat_t"], perm=[0, 2, 1, 3]),
                  helper.make_node("Reshape", ["cat_t", "joined"], ["out"])]
    spec = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, n, width])  # noqa: E731
    graph = helper.make_graph(nodes, "attention", [spec("q"), spec("k"), spec("v")], [spec("out")], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23 if fused else 17)], ir_version=10)


def attention_forms(tokens: int, thread_counts, rounds: int = 7, calls: int = 20) -> None:
    """One published block's attention at `tokens` latents, as exported and as opset-23
    `Attention` (`block_attention`), in ONNX Runtime (where it is one fused kernel) and in
    OpenVINO (compiled as x86-cpu's fp32 engines), side by side: ms per block (median and min..max
    over the rounds of the median of `calls` calls), and the largest difference of the outputs."""
    import os
    import statistics
    import tempfile

    import onnx
    import onnxruntime as ort
    import openvino as ov

    from adaexport.model.layers import block_causal_mask, prefix_runs
    from published_model import published_config

    cfg = published_config()
    runs = prefix_runs(block_causal_mask(tokens, tuple(cfg.mask_token_grans)))
    width = cfg.embed_dim
    rng = np.random.default_rng(0)
    feed = {name: rng.standard_normal((1, tokens, width)).astype(np.float32) for name in "qkv"}
    print(f"one block's attention, {tokens} tokens, runs {[(s, e, k) for s, e, k in runs]}; "
          f"ONNX Runtime {ort.__version__}, OpenVINO {ov.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        for threads in thread_counts:
            calls_by_form = {}
            for form, fused in (("as exported", False), ("Attention", True)):
                model = block_attention(runs, cfg.num_heads, width // cfg.num_heads, fused)
                session = ort_session(model, threads)
                calls_by_form[f"ONNX Runtime, {form}"] = lambda s=session: s.run(None, feed)[0]
                path = os.path.join(tmp, f"{fused}.onnx")
                onnx.save(model, path)
                request = ov.Core().compile_model(path, "CPU", openvino_fp32_config(threads)).create_infer_request()
                calls_by_form[f"OpenVINO, {form}"] = lambda r=request: r.infer(feed)[0]
            reference = calls_by_form["ONNX Runtime, as exported"]()
            times = {form: [] for form in calls_by_form}
            for _ in range(rounds):
                for form, call in calls_by_form.items():
                    time.sleep(0.1)       # the previous runtime's threads stop spinning
                    times[form].append(statistics.median(call_times(call, calls)) * 1e3)
            print(f"  {threads} thread(s):")
            for form, values in times.items():
                diff = float(np.abs(calls_by_form[form]() - reference).max())
                print(f"    {form:28s} {statistics.median(values):.3f} ms ({min(values):.3f} .. {max(values):.3f}); "
                      f"off by at most {diff:.3g}")


def main() -> None:
    import argparse

    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="an exported point's .onnx: split its ONNX Runtime and OpenVINO runs "
                                        "(module docstring)")
    parser.add_argument("--attention", type=int, metavar="TOKENS",
                        help="time one published block's attention at TOKENS latents, as exported and as Attention")
    parser.add_argument("--threads", default="1", help="thread counts for --model and --attention, e.g. 1,2")
    args = parser.parse_args()
    if args.model or args.attention is not None:
        from bench_speed import thread_counts
        from published_model import PUBLISHED

        counts = thread_counts(parser, args.threads)
        if args.attention is not None and not 1 <= args.attention <= PUBLISHED["max_latent_tokens"]:
            parser.error(f"--attention: expected a token count from 1 to {PUBLISHED['max_latent_tokens']}, "
                         f"got {args.attention}")
        if args.model:
            split_point(args.model, counts)
        if args.attention is not None:
            attention_forms(args.attention, counts)
        return
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    single_matmuls(rng)
    weight_chains(rng)
    read_bandwidth()


if __name__ == "__main__":
    main()
