"""`adaexport inspect` through the real console entry point, in a subprocess."""

import json
import shutil

import pytest

from .conftest import CONFORMANCE, run_cli


def test_inspect_demo(demo):
    result = run_cli("inspect")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "classification" in out and "1x28x28" in out
    assert f"{sum(p.numel() for p in demo.model.parameters()):,}" in out
    assert "36 points" in out  # 3 token granularities x 3 widths x 4 depths


@pytest.mark.parametrize("variant, words", [("classification", "classification"), ("distill", "distilled")])
def test_inspect_conformance_checkpoints(variant, words, conformance_models):
    result = run_cli("inspect", str(CONFORMANCE / variant), "--tokens", "16,64", "--width", "32", "--depth", "2")
    assert result.returncode == 0, result.stderr
    assert words in result.stdout
    assert "t16_w32_d2" in result.stdout and "t64_w32_d2" in result.stdout
    params = sum(p.numel() for p in conformance_models[variant].model.parameters())
    assert f"{params:,}" in result.stdout


def test_inspect_warns_outside_trained_grid():
    result = run_cli("inspect", str(CONFORMANCE / "classification"), "--tokens", "40", "--width", "64", "--depth", "4")
    assert result.returncode == 0
    assert "tokens 40 is not a trained granularity" in result.stderr


def _corrupt_copy(tmp_path, mutate):
    target = tmp_path / "ckpt"
    shutil.copytree(CONFORMANCE / "classification", target)
    mutate(target)
    return str(target)


@pytest.mark.parametrize("make_args, words", [
    (lambda t: ["inspect", str(t / "missing")], "no such file or directory"),
    (lambda t: ["inspect", str(t)], "no config.json"),
    (lambda t: ["inspect", _corrupt_copy(t, lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 64))],
     "not a readable safetensors file"),
    (lambda t: ["inspect", _corrupt_copy(t, lambda d: (d / "config.json").write_text(
        json.dumps({**json.loads((d / "config.json").read_text()), "embed_dim": 96, "num_heads": 3})))],
     "weights do not match config"),
    (lambda t: ["inspect", str(CONFORMANCE / "classification"), "--depth", "9"], "depth must lie in 1..4"),
    (lambda t: ["inspect", str(CONFORMANCE / "classification"), "--width", "32,x"], "--width: 'x' is not an integer"),
    (lambda t: ["inspect", str(CONFORMANCE / "classification"), "--grid", "bogus"], "unknown grid preset"),
])
def test_bad_input_gives_one_line_error_and_nonzero_exit(tmp_path, make_args, words):
    result = run_cli(*make_args(tmp_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and words in lines[0]
