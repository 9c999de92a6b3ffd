"""`adaexport export` / `build` end to end through the real CLI, in subprocesses."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from adaexport.manifest import read_manifest, verify_files

from .conftest import CONFORMANCE, DATA, json_result, run_cli
from .test_hw_tensorrt import dequantize_inputs

FP32 = ["--build-profile", str(DATA / "profiles" / "ort-fp32.toml")]  # the pipeline's own tests: one engine per point
SMALL = ["--tokens", "8,32", "--width", "32,64", "--depth", "2", *FP32]


def build_json(*args, **kwargs):
    result = run_cli(*args, "--json", **kwargs)
    assert result.returncode == 0, result.stderr
    return json_result(result)


def hashes(directory):
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and ".adaexport" not in p.parts}


def without_created(manifest):
    return {k: v for k, v in manifest.items() if k != "created"}


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    summary = build_json("build", "--out", str(out), *SMALL)
    return out, summary


def test_build_writes_a_verified_family_and_manifest(small_build):
    out, summary = small_build
    manifest = read_manifest(out)
    assert summary["exported"] == 4 and summary["failures"] == []
    assert [e["point"] for e in manifest["engines"]] == [
        {"tokens": t, "width": w, "depth": 2} for t in (8, 32) for w in (32, 64)]
    assert verify_files(out, manifest) == []
    for engine in manifest["engines"]:
        assert engine["parity"]["passed"] and engine["parity"]["samples"] == 256
        assert engine["parity"]["top1_agreement"] == 1.0
        onnx.checker.check_model(str(out / engine["file"]), full_check=True)
        assert "Resize" not in engine["op_types"] and "If" not in engine["op_types"]
        assert engine["lint"] == []  # every op is one ONNX Runtime supports
    assert manifest["model"]["input"]["shape"] == [1, 1, 28, 28]
    assert manifest["weights"]["file"] == "onnx/weights.bin"


def test_each_onnx_runs_alone_and_matches_pytorch(small_build, demo):
    from adaexport.model.static import specialize
    from adaexport.space import ConfigPoint

    out, _ = small_build
    engine = read_manifest(out)["engines"][1]
    point = ConfigPoint(**engine["point"])
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    (got,) = ort.InferenceSession(str(out / engine["file"]), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    with torch.no_grad():
        (expected,) = specialize(demo.model, point)(torch.from_numpy(x))
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)
    props = {p.key: p.value for p in onnx.load(str(out / engine["file"]), load_external_data=False).metadata_props}
    assert props["adaexport.source_sha256"] == demo.sha256 and props["adaexport.point.tokens"] == str(point.tokens)


def test_rerun_does_no_work_and_keeps_every_byte(small_build):
    out, _ = small_build
    before = hashes(out)
    started = time.perf_counter()
    summary = build_json("build", "--out", str(out), *SMALL)
    assert summary["exported"] == 0 and summary["parity_runs"] == 0
    assert hashes(out) == before  # manifest included: nothing changed, nothing rewritten differently
    assert time.perf_counter() - started < 120  # generous: "seconds", without a timing threshold in spirit


def test_changing_one_option_redoes_only_what_depends_on_it(small_build, tmp_path):
    out, _ = small_build
    # a new tolerance: nothing exported, nothing re-run, only re-judged
    profile = tmp_path / "strict.toml"
    profile.write_text('[build]\nengines = ["onnxruntime:fp32"]\n'
                       "[parity]\nsamples = 256\n[parity.fp32]\nmax_abs = 1e-3\nmin_top1_agreement = 1.0\n")
    summary = build_json("build", "--out", str(out), *SMALL[:-2], "--build-profile", str(profile))
    assert summary["exported"] == 0 and summary["parity_runs"] == 0
    assert all(e["parity"]["tolerance"]["min_top1_agreement"] == 1.0 for e in summary["engines"])
    # one more depth: only the four new points are exported and checked
    summary = build_json("build", "--out", str(out), "--tokens", "8,32", "--width", "32,64", "--depth", "2,3", *FP32)
    assert summary["exported"] == 4 and summary["parity_runs"] == 4
    # back to the original grid: all cached; the extra files are pruned from the directory
    summary = build_json("build", "--out", str(out), *SMALL)
    assert summary["exported"] == 0
    assert sorted(p.name for p in (out / "onnx").iterdir()) == sorted(
        [f"t{t}_w{w}_d2.onnx" for t in (8, 32) for w in (32, 64)] + ["weights.bin", "weights.tensors.json"])


def test_tampered_artefacts_are_detected_and_redone(tmp_path):
    out = tmp_path / "b"
    build_json("export", "--out", str(out), "--tokens", "8", "--width", "32", "--depth", "1")
    target = out / "onnx" / "t8_w32_d1.onnx"
    original = target.read_bytes()
    target.write_bytes(original[:-10] + b"0123456789")
    summary = build_json("build", "--out", str(out), "--tokens", "8", "--width", "32", "--depth", "1", *FP32)
    assert summary["exported"] == 1 and target.read_bytes() == original


def test_a_corrupted_model_fails_parity_with_the_tolerance_that_would_pass(demo, tmp_path):
    from adaexport.model import load_checkpoint, save_checkpoint

    model = load_checkpoint(demo.path).model
    with torch.no_grad():  # classifier weights blown up: fp32 rounding differs far beyond 1e-3
        model.output_adapter.ffn.weight.mul_(1e7)
    save_checkpoint(model, tmp_path / "corrupt")
    result = run_cli("build", str(tmp_path / "corrupt"), "--out", str(tmp_path / "out"),
                     "--tokens", "32", "--width", "64", "--depth", "4", *FP32)
    assert result.returncode == 1
    assert "parity failed for t32_w64_d4 (onnxruntime fp32): max_abs" in result.stderr
    assert "would have passed" in result.stderr and "Traceback" not in result.stderr
    manifest = read_manifest(tmp_path / "out")
    assert manifest["engines"][0]["parity"]["passed"] is False


@pytest.mark.parametrize("args, words", [
    (["--tokens", "0"], "tokens must be >= 1"),
    (["--width", "999"], "width must lie in 1..64"),
    (["--depth", "2,x"], "--depth: 'x' is not an integer"),
    (["--grid", "nope"], "unknown grid preset 'nope'"),
    (["--grid", "trained", "--tokens", "8"], "not both"),
    (["--attention", "sparse"], "attention must be one of"),
    (["--batch", "0"], "--batch must be >= 1"),
    (["--build-profile", "nope"], "unknown build profile 'nope'"),
    (["--device", "toaster"], "unknown device target 'toaster'"),
    (["--dataset", "npz:/no/such.npz"], "no such file"),
])
def test_bad_options_give_one_line_errors(tmp_path, args, words):
    result = run_cli("build", "--out", str(tmp_path / "o"), *args)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.stderr


def test_a_model_the_demo_data_does_not_fit_asks_for_a_dataset(tmp_path):
    # asked for explicitly; without --dataset such a model builds on random inputs
    # (fp32 only, tests/test_parity_scaling.py)
    result = run_cli("build", str(CONFORMANCE / "classification"), "--out", str(tmp_path / "o"), "--grid", "full",
                     "--dataset", "demo")
    assert result.returncode == 2 and "pass --dataset" in result.stderr
    # with data that fits, the conformance model builds (distilled: logits + features)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8), y=np.arange(8) % 10)
    summary = build_json("build", str(CONFORMANCE / "distill"), "--out", str(tmp_path / "d"), "--grid", "full",
                         "--dataset", f"npz:{tmp_path / 'd.npz'}", *FP32)
    assert summary["engines"][0]["parity"]["passed"] and summary["engines"][0]["parity"]["samples"] == 8
    outputs = [o["name"] for o in read_manifest(tmp_path / "d")["model"]["outputs"]]
    assert outputs == ["logits", "features"]


@pytest.mark.slow
def test_a_build_killed_part_way_resumes_to_the_same_result(tmp_path):
    args = ["build", "--out", None, "--grid", "trained", *FP32, "--json"]
    clean = tmp_path / "clean"
    build_json(*[str(clean) if a is None else a for a in args[:-1]])
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "adaexport", *[str(killed) if a is None else a for a in args]]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # killed once the first token count's points are recorded (a task: one export, then its
    # 12 points cut from it), while the next two are still to come
    records = killed / ".adaexport" / "cache" / "export"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (records.is_dir() and any(records.glob("*.json"))):
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "manifest.json").exists(), "the build finished before it could be killed"
    summary = build_json(*[str(killed) if a is None else a for a in args[:-1]])
    assert 0 < summary["exported"] < 36
    assert hashes(killed).keys() == hashes(clean).keys()
    assert {k: v for k, v in hashes(killed).items() if k != "manifest.json"} == \
        {k: v for k, v in hashes(clean).items() if k != "manifest.json"}
    assert without_created(read_manifest(killed)) == without_created(read_manifest(clean))


def test_progress_is_a_rich_display_on_a_terminal_and_plain_lines_otherwise(tmp_path):
    import pty

    args = [sys.executable, "-m", "adaexport", "export", "--out", str(tmp_path / "tty"),
            "--tokens", "8", "--width", "32", "--depth", "1"]
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(args, stdin=secondary, stdout=secondary, stderr=secondary, close_fds=True,
                            env={**os.environ, "COLUMNS": "120", "TERM": "xterm"})
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=300)
    os.close(primary)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, screen
    assert "\x1b[" in screen and "━" in screen  # ANSI control sequences and a progress bar
    assert "[export] 1/1" not in screen

    plain = run_cli("export", "--out", str(tmp_path / "plain"), "--tokens", "8", "--width", "32", "--depth", "1")
    assert plain.returncode == 0
    assert "[export] 1/1 t8_w32_d1: exported" in plain.stderr and "\x1b[" not in plain.stderr


def test_x86_cpu_builds_every_precision_its_backends_offer(tmp_path):
    """ONNX Runtime fp32 + int8 and OpenVINO fp32 + fp16 (+ int8 with NNCF, + bf16 where the CPU
    has it natively), each checked."""
    from adaexport.backends import get_backend

    summary = build_json("build", "--device", "x86-cpu", "--out", str(tmp_path / "b"),
                         "--tokens", "16", "--width", "48", "--depth", "3")
    engines = {(e["backend"], e["precision"]): e for e in summary["engines"]}
    expected = {("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "fp16")}
    for precision in ("int8", "bf16"):
        if get_backend("openvino").available(precision):
            expected.add(("openvino", precision))
    assert set(engines) == expected
    for (backend, precision), engine in engines.items():
        assert engine["lint"] == [], (backend, precision)
        parity = engine["parity"]
        assert parity["passed"], (backend, precision, parity)
        assert parity["reference_top1"] > 0.5  # real labelled images, a trained model
        if precision == "fp32":
            assert parity["max_abs"] < 1e-3
        else:
            assert parity["tolerance"]["max_abs"] is None and "max_accuracy_drop" in parity["tolerance"]
    manifest = read_manifest(tmp_path / "b")
    assert verify_files(tmp_path / "b", manifest) == []
    assert set(manifest["device"]["backends"]) == {"onnxruntime", "openvino"}
    # OpenVINO fp16 (and bf16) read the float16 twin in onnx/, both int8 kinds the int8 twin;
    # a rebuild without them removes them
    onnx_dir = tmp_path / "b" / "onnx"
    family = ["t16_w48_d3.onnx", "weights.bin", "weights.tensors.json"]
    twins = sorted(p.name for p in onnx_dir.iterdir() if p.name not in family)
    assert len(twins) == 2 and twins[0].startswith("weights-fp16-") and twins[1].startswith("weights-int8-")
    half_files = {f["file"] for e in manifest["engines"] if e["precision"] in ("fp16", "bf16") for f in e["files"]}
    assert f"onnx/{twins[0]}" in half_files and "onnx/weights.bin" not in half_files
    int8_files = {f["file"] for e in manifest["engines"] if e["precision"] == "int8" for f in e["files"]}
    assert f"onnx/{twins[1]}" in int8_files and "onnx/weights.bin" not in int8_files
    build_json("build", "--device", "x86-cpu", "--out", str(tmp_path / "b"), "--tokens", "16", "--width", "48",
               "--depth", "3", "--engines", "onnxruntime:fp32,openvino:fp32")
    assert sorted(p.name for p in onnx_dir.iterdir()) == family
    assert verify_files(tmp_path / "b", read_manifest(tmp_path / "b")) == []


def test_cross_building_for_jetson_leaves_tensorrt_engines_pending(tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed: engines are built, not left pending")
    except ImportError:
        pass
    out = tmp_path / "nx"
    result = run_cli("build", "--device", "jetson-orin-nx", "--out", str(out),
                     "--tokens", "8", "--width", "32", "--depth", "2")
    assert result.returncode == 0, result.stderr
    assert f"adaexport compile {out} --device jetson-orin-nx" in result.stdout
    assert "trtexec --onnx=" in result.stderr
    manifest = read_manifest(out)
    pending = [e for e in manifest["engines"] if e["backend"] == "tensorrt"]
    assert {e["precision"] for e in pending} == {"fp16", "int8"}
    assert all(e["status"] == "pending" and e["parity"] is None and "sha256" not in e for e in pending)
    # the int8 engine's QDQ model, written at build time, is one TensorRT parses: no INT32 (bias) input
    int8 = next(e for e in pending if e["precision"] == "int8")
    qdq = out / "engines" / int8["extra"]["facts"]["source"]
    assert qdq.name.endswith(".qdq.onnx") and set(dequantize_inputs(qdq).values()) == {"INT8"}
    assert manifest["device"]["target"] == "jetson-orin-nx"
    assert verify_files(out, manifest) == []
