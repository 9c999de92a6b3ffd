"""Device-side commands: they must run where torch and onnx are not installed."""

import subprocess
import sys

from .conftest import run_cli

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'onnx', 'onnxscript'}:
            raise ImportError('blocked on this device: ' + name)
sys.meta_path.insert(0, Block())
sys.argv = ['adaexport'] + sys.argv[1:]
from adaexport.cli import main
main()
"""


def run_without_torch(*args):
    return subprocess.run([sys.executable, "-c", BLOCK, *args], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


def test_targets_lists_every_target_without_torch():
    result = run_without_torch("targets")
    assert result.returncode == 0, result.stderr
    for name in ("jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin", "nvidia-gpu", "x86-cpu"):
        assert name in result.stdout
    assert "MAXN" in result.stdout and "VDD_IN" in result.stdout


def test_help_and_inspect_of_a_manifest_without_torch(tmp_path):
    assert run_without_torch("--help").returncode == 0
    build = run_cli("export", "--out", str(tmp_path / "b"), "--tokens", "8", "--width", "32", "--depth", "1")
    assert build.returncode == 0, build.stderr
    result = run_without_torch("inspect", str(tmp_path / "b"))
    assert result.returncode == 0, result.stderr
    assert "t8_w32_d1-onnxruntime-fp32" in result.stdout


def test_compile_without_tensorrt_says_why_in_one_line(tmp_path):
    out = tmp_path / "nx"
    build = run_cli("build", "--device", "jetson-orin-nx", "--out", str(out), "--tokens", "8", "--width", "32",
                    "--depth", "1")
    assert build.returncode == 0, build.stderr
    result = run_without_torch("compile", str(out))
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert result.returncode == 3  # the environment cannot do it: no TensorRT here
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "cannot finish 2 pending engine(s)" in lines[0] and "tensorrt" in lines[0]
    else:  # with TensorRT the engines are finished and checked
        assert result.returncode == 0, result.stderr


def test_compile_on_a_directory_without_a_manifest(tmp_path):
    result = run_without_torch("compile", str(tmp_path))
    assert result.returncode == 2 and "manifest" in result.stderr and "Traceback" not in result.stderr
