"""Smoke test of benchmarks/run_all.py: it runs end to end on a tiny setting and reports
every benchmark. Correctness only: no timing is compared with anything."""

import json
import os
import subprocess
import sys

import pytest

from .conftest import ROOT

BENCHMARKS = ("export", "rebuild", "size", "grid", "profile", "runtime")
GRID = ("--tokens", "8,32", "--width", "32", "--depth", "1,4")   # 4 points: both token ends, shallow and deep
POINTS = 4


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), *GRID, "--repeats", "1",
         "--threads", "1", "--profile", "quick", "--json", str(out), "--plain"],
        capture_output=True, text=True, cwd=out.parent, env=env, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(out.read_text()), result.stdout


def rows(report, benchmark):
    return {r["key"]: r for r in report["benchmarks"][benchmark]}


@pytest.mark.slow
def test_every_benchmark_reports_rows_with_positive_values(report):
    data, stdout = report
    assert data["errors"] == []
    assert data["settings"]["grid"] == "tokens 8,32 x widths 32 x depths 1,4" and data["settings"]["points"] == POINTS
    assert data["settings"]["repeats"] == 1
    for name in BENCHMARKS:
        assert data["benchmarks"][name], f"no rows for {name}"
        for row in data["benchmarks"][name]:
            if name == "profile":  # correlations, slopes and percentages: checked below
                continue
            assert row["unit"] in ("s", "bytes", "x")
            assert row["values"] and all(v > 0 for v in row["values"]), row
            assert row["min"] <= row["median"] <= row["max"]
            assert row["name"] in stdout  # every row is in the printed table
    export = rows(data, "export")
    assert {"weights", "point", "point_cpu", "point_cpu_all", "weights_cpu", "peak_rss", "peak_rss_vs_checkpoint",
            "family"} <= export.keys()
    assert len(export["point"]["per_point"]) == POINTS
    assert export["point_cpu_all"]["n"] == POINTS   # every point of the one repeat
    checkpoint = sum(p.stat().st_size for p in (ROOT / "adaexport" / "demo" / "model").iterdir() if p.is_file())
    assert export["peak_rss_vs_checkpoint"]["median"] == pytest.approx(export["peak_rss"]["median"] / checkpoint,
                                                                       rel=0.01)


@pytest.mark.slow
def test_cached_rebuild_exports_nothing(report):
    data, _ = report
    rebuild = rows(data, "rebuild")
    # a cold build checks every engine the target names (on x86-cpu: several per point)
    assert rebuild["cold"]["exported"] == [POINTS] and rebuild["cold"]["parity_runs"][0] >= POINTS
    assert rebuild["cold"]["parity_runs"][0] % POINTS == 0
    assert rebuild["cached"]["exported"] == [0] and rebuild["cached"]["parity_runs"] == [0]
    assert rebuild["cold"]["failures"] == []


@pytest.mark.slow
def test_sizes_add_up(report):
    data, _ = report
    size = rows(data, "size")
    value = {k: r["median"] for k, r in size.items()}
    assert value["shared"] == value["weights"] + value["graphs"]
    assert len(size["self_contained"]["per_point"]) == POINTS
    # Every self-contained file holds its point's weights, so together they hold more
    # than the one shared weights file (a size fact, not a timing).
    assert value["self_contained"] > value["shared"]
    assert value["self_contained_vs_shared"] == pytest.approx(value["self_contained"] / value["shared"])
    # OpenVINO's fp32 engines own only their sidecars: the family adds far less than one
    # full model, whatever the number of points (they read the ONNX family and weights.bin)
    assert value["openvino_fp32_own_vs_full"] <= 1.1
    assert size["openvino_fp32_own"]["reads_onnx_family"] == value["shared"]
    # fp16 engines read the float16 twins instead: weights at 2 bytes a parameter, nothing
    # of the fp32 family
    assert size["openvino_fp16_own"]["reads_onnx_family"] == 0
    assert size["openvino_fp16_own"]["family_weights"] * 2 == value["weights"]
    assert value["openvino_fp16_all_vs_full"] == pytest.approx(value["openvino_fp16_own_vs_full"])
    # what they read of the fp32 family counts too
    assert value["openvino_fp32_all_vs_full"] > value["openvino_fp32_own_vs_full"]
    # int8 engines (ONNX Runtime and OpenVINO) read one int8 twin of the family's weights (a
    # byte a weight parameter, floats for the rest), nothing of the fp32 family, no copy each
    twins = set()
    for backend in ("onnxruntime", "openvino"):
        own = size[f"{backend}_int8_own"]
        assert own["reads_onnx_family"] == 0
        assert value["weights"] / 4 <= own["family_weights"] < value["weights"] / 3
        assert value[f"{backend}_int8_all_vs_full"] == pytest.approx(value[f"{backend}_int8_own_vs_full"])
        twins.add(own["family_weights"])
    assert len(twins) == 1


@pytest.mark.slow
def test_machine_facts_are_reported(report):
    data, stdout = report
    machine = data["machine"]
    assert machine["cpu"] and machine["logical_cpus"] >= 1
    assert set(machine["versions"]) >= {"torch", "onnx", "onnxruntime"}
    assert machine["threads"]["torch"] == 1 and machine["threads"]["OMP_NUM_THREADS"] == "1"
    assert "machine:" in stdout and "torch" in stdout


@pytest.mark.slow
def test_profile_benchmark_reports_repeatability_and_scaling(report):
    data, _ = report
    rows = {r["name"]: r for r in data["benchmarks"]["profile"]}
    rho = next(r for name, r in rows.items() if name.startswith("p50 rank correlation"))
    assert rho["unit"] == "rho" and -1.0 <= rho["median"] <= 1.0
    largest = rows["largest relative p50 difference"]["median"]
    assert 0.0 <= rows["median relative p50 difference"]["median"] <= largest
    assert any("log-log slope of p50 vs FLOPs" in name for name in rows)


@pytest.mark.slow
def test_the_published_suite_runs_its_build_and_cost_on_the_demo(tmp_path):
    """run_all --published's own benchmarks (export, the build with parity, the extrapolated
    cost) on the demo's 2-point grid: the suite runs end to end on today's records."""
    out = tmp_path / "published.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--published", "--model",
         str(ROOT / "adaexport" / "demo" / "model"), "--tokens", "8,32", "--width", "32", "--depth", "1",
         "--dataset", "demo", "--only", "export", "--only", "build", "--only", "cost", "--json", str(out), "--plain"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "COLUMNS": "200"}, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    cost = rows(report, "cost")
    assert cost["export"]["median"] > 0 and cost["bytes"]["median"] > 0
    # both token counts are trained ones: their templates came with the weights file, every point is a cut
    assert "template_cpu" not in rows(report, "export") and rows(report, "export")["cut_cpu"]["n"] == 2


@pytest.mark.slow
def test_the_whole_trained_grid_is_exported_and_counted(report):
    """bench_grid exports every trained point of the demo (3 token counts x 3 widths x 4
    depths), not the benchmark's 4, and its totals are the shared files plus every graph."""
    data, _ = report
    grid = rows(data, "grid")
    for precision in ("fp32", "fp16"):
        total = grid[f"{precision}_bytes"]
        assert total["points"] == 36
        assert total["median"] == total["shared_bytes"] + total["graph_bytes"]
        assert grid[f"{precision}_vs_model"]["median"] == pytest.approx(total["median"] / total["one_model"])
    assert grid["fp16_bytes"]["shared_bytes"] * 2 < grid["fp32_bytes"]["shared_bytes"]


def test_memory_sampler_counts_a_forked_childs_shared_pages_once_in_pss(tmp_path):
    """A child forked from a process holding 200 MB shares those pages copy-on-write: summed over
    the tree, RssAnon counts them twice (as telemetry forks by NNCF made a compile look 1 GB when
    it held 0.64), Pss_Anon once."""
    child = ("import os, time\n"
             "block = bytearray(200 * 2**20)\n"
             "for i in range(0, len(block), 4096): block[i] = 1\n"
             "pid = os.fork()\n"
             "time.sleep(1.0)\n"
             "if pid: os.waitpid(pid, 0)\n"
             "else: os._exit(0)\n")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory_sampler.py"), "--interval", "0.05",
                             "--", sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    peaks = {k: float(v.replace(",", "")) for k, v in
             (part.rsplit(" ", 1) for part in line.split(": ", 1)[1].split(";")[0].split(", "))}
    assert 380 <= peaks["RssAnon"] and 200 <= peaks["Pss_Anon"] <= 280, line


def test_bench_speed_times_one_build_at_each_thread_count(tmp_path):
    """`bench_speed.py --threads 1,2` builds the family once and times it at 1 thread, then at 2:
    each count's GEMM rate and its engines against eager (the issue's "1 thread and all threads")."""
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_speed.py"), "--tokens", "8", "--width", "32",
               "--depth", "1", "--dataset", "none", "--rounds", "1"]
    result = subprocess.run(command + ["--threads", "1,2"], capture_output=True, text=True, cwd=tmp_path,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sections = result.stdout.split("2 thread(s):\n")
    assert len(sections) == 2 and sections[0].startswith("1 thread(s):\n"), result.stdout
    for threads, section in zip((1, 2), sections):
        assert f"fp32 GEMM rate ({threads} thread(s))" in section
        assert "onnxruntime fp32 vs eager" in section and "openvino fp32 vs eager" in section
    assert result.stderr.count("not building onnxruntime int8") == 1       # one build, not one per count
    bad = subprocess.run(command + ["--threads", "1,x"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and "expected thread counts like 1 or 1,16" in bad.stderr.strip().splitlines()[-1]


def test_gemm_bound_splits_a_graphs_run_into_its_gemms_rate_and_the_rest(tmp_path):
    """`gemm_bound.py --model` counts the weight products' FLOPs from the shapes each runtime
    records: a MatMul and an Add that ONNX Runtime fuses into one Gemm, and OpenVINO into one
    FullyConnected layer, of 3 x 8 x 16 (768 FLOPs) per run, then a Softmax that stays apart.
    The point's FLOPs come from the manifest of the build it sits in."""
    import json

    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from gemm_bound import IR_VERSION, in_model_fully_connected, in_model_gemms, point_flops
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"]),
         helper.make_node("Softmax", ["y"], ["p"], axis=-1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 8])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [3, 16])],
        [numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b")])
    (tmp_path / "onnx").mkdir()
    path = tmp_path / "onnx" / "t3_w16_d1.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                       ir_version=IR_VERSION).SerializeToString())
    split = in_model_gemms(path, threads=1, runs=2)
    assert split["gemm_gflop"] == pytest.approx(2 * 3 * 8 * 16 / 1e9)
    assert set(split["other_ms"]) == {"Softmax"}
    assert 0 < split["gemm_ms"] <= split["kernel_ms"] and split["kernel_ms"] <= split["run_ms"]
    split = in_model_fully_connected(path, threads=1, runs=2)
    assert split["gemm_gflop"] == pytest.approx(2 * 3 * 8 * 16 / 1e9)
    assert "Softmax" in split["other_ms"] and split["gemm_ms"] > 0
    assert point_flops(path) is None                     # no build around it
    (tmp_path / "manifest.json").write_text(json.dumps({"engines": [
        {"point": {"tokens": 3, "width": 8, "depth": 1}, "flops": 5},
        {"point": {"tokens": 3, "width": 16, "depth": 1}, "flops": 768}]}))
    assert point_flops(path) == 768
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gemm_bound.py"), "--model", str(path),
                          "--threads", "1,x"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and "expected thread counts like 1 or 1,16" in bad.stderr.strip().splitlines()[-1]
    for tokens in ("0", "257"):
        bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gemm_bound.py"), "--attention", tokens],
                             capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert bad.returncode == 2 and "expected a token count from 1 to 256" in bad.stderr.strip().splitlines()[-1]


def test_gemm_bound_times_the_attention_as_exported_and_as_one_fused_kernel():
    """`gemm_bound.py --attention`'s two forms of a block's prefix-run attention compute what
    `layers.attention` computes, in ONNX Runtime: the form the exports have and the one of
    opset-23 Attention kernels."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from adaexport.model.layers import attention, block_causal_mask, prefix_runs

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from gemm_bound import block_attention
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    heads, head_dim, tokens = 3, 4, 12
    runs = prefix_runs(block_causal_mask(tokens, (4, 8)))
    assert len(runs) == 3
    rng = np.random.default_rng(0)
    feed = {name: rng.standard_normal((1, tokens, heads * head_dim)).astype(np.float32) for name in "qkv"}
    split = [torch.from_numpy(feed[name]).reshape(1, tokens, heads, head_dim).transpose(1, 2) for name in "qkv"]
    expected = attention(*split, runs).transpose(1, 2).reshape(1, tokens, heads * head_dim).numpy()
    for fused in (False, True):
        session = ort.InferenceSession(block_attention(runs, heads, head_dim, fused).SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(session.run(None, feed)[0], expected, rtol=1e-5, atol=1e-6)
