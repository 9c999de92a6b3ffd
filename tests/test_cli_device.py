"""Device-side commands: they must run where torch and onnx are not installed."""

import json
import subprocess
import sys

from .conftest import json_result, run_cli

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


def test_a_custom_profile_build_needs_nothing_else_on_the_device(tmp_path):
    """The manifest keeps the build profile's text (and command-line overrides): with the
    profile file gone, the build moved away from the build host's paths and torch blocked,
    `compile` and `profile` still run with the custom profile's settings."""
    profile = tmp_path / "mine.toml"
    profile.write_text('[build]\nengines = ["onnxruntime:fp32", "tensorrt:fp16"]\n[parity]\nsamples = 16\n'
                       '[parity.fp32]\nmax_abs = 1e-3\nmin_top1_agreement = 0.97\n'
                       '[parity.fp16]\nmin_top1_agreement = 0.9\nmax_accuracy_drop = 2.5\n'
                       '[profiling]\nenabled = false\nwarmup_s = 0.005\nmin_iterations = 7\nmin_duration_s = 0.01\n'
                       'rounds = 1\nremeasure = 0\nidle_s = 0\n')
    built = run_cli("build", "--device", "jetson-orin-nx", "--out", str(tmp_path / "nx"), "--tokens", "8", "--width",
                    "32", "--depth", "1", "--build-profile", str(profile), "--atol", "2e-3", "--tie-margin", "0.5")
    assert built.returncode == 0, built.stderr
    profile.unlink()
    device_dir = tmp_path / "on-device"
    (tmp_path / "nx").rename(device_dir)
    read = subprocess.run([sys.executable, "-c", BLOCK.split("sys.argv")[0] + (
        "from adaexport.manifest import read_manifest\nfrom adaexport.profiles import profile_of_manifest\n"
        f"p = profile_of_manifest(read_manifest({str(device_dir)!r}))\n"
        "print(p.name, p.parity_samples, p.tolerance('fp32').max_abs, p.tolerance('fp32').min_top1_agreement,\n"
        "      p.tolerance('fp16').max_accuracy_drop, p.tolerance('fp16').tie_margin,\n"
        "      p.tolerance('fp32').tie_margin)\n")],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert read.returncode == 0, read.stderr
    assert read.stdout.split() == ["mine", "16", "0.002", "0.97", "2.5", "0.5", "None"]
    compiled = run_without_torch("compile", str(device_dir))
    try:
        import tensorrt  # noqa: F401
    except ImportError:  # no TensorRT here: exit 3, and not for want of the profile file
        assert compiled.returncode == 3 and "tensorrt" in compiled.stderr, compiled.stderr
    else:
        assert compiled.returncode == 0, compiled.stderr
    profiled = run_without_torch("profile", str(device_dir), "--device", "x86-cpu", "--engines",
                                 "t8_w32_d1-onnxruntime-fp32", "--json")
    assert profiled.returncode == 0, profiled.stderr
    device = json_result(profiled)["device"]
    manifest = json.loads((device_dir / "manifest.json").read_text())
    assert manifest["profiling"][device]["settings"]["min_iterations"] == 7
