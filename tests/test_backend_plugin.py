"""A third-party backend, registered only through the ``adaexport.backends`` entry point of
an installed distribution (a ``toyort-0.1.dist-info`` with ``entry_points.txt`` on
sys.path, found by importlib.metadata), builds, profiles and serves like a built-in one."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT

TOY = ROOT / "tests" / "data" / "toy_backend"

pytestmark = pytest.mark.slow

SCRIPT = """
import sys
from pathlib import Path
import numpy as np
from adaexport.backends import backend_names
from adaexport.build import BuildRequest, run_build
from adaexport.progress import QuietReporter
from adaexport.runtime import Runtime

toy, out = Path(sys.argv[1]), Path(sys.argv[2])
assert "toyort" in backend_names(), backend_names()
result = run_build(BuildRequest(out=out, target=str(toy / "toy-cpu.toml"), profile=str(toy / "toy.toml"),
                                tokens=[8], widths=[32], depths=[1]), QuietReporter())
assert result.failures == [], result.failures
"""

SERVE = """
import sys
import numpy as np
from adaexport.runtime import Runtime

with Runtime(sys.argv[1], backends=["toyort"], preload="all") as rt:
    result = rt.infer(np.zeros(rt.input_shape, np.float32))
    print(result.engine, result.outputs[0].shape, rt.status.device)
"""


def _run(args, env):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def test_a_backend_from_an_entry_point_builds_profiles_and_serves(tmp_path):
    site = shutil.copytree(TOY, tmp_path / "site", ignore=shutil.ignore_patterns("__pycache__"))  # a temporary install
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    out = tmp_path / "fam"
    built = _run(["-c", SCRIPT, str(site), str(out)], env)
    assert built.returncode == 0, built.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    toy = next(e for e in manifest["engines"] if e["backend"] == "toyort")
    assert toy["status"] == "ready" and toy["parity"]["passed"] and toy["lint"] == []

    profiled = _run(["-m", "adaexport", "profile", str(out), "--device", "x86-cpu", "--min-iterations", "3",
                     "--min-duration", "0.001", "--warmup", "0.001", "--rounds", "1"], env)
    assert profiled.returncode == 0, profiled.stderr[-2000:]
    toy = next(e for e in json.loads((out / "manifest.json").read_text())["engines"] if e["backend"] == "toyort")
    (device,) = toy["profile"]
    assert toy["profile"][device]["default"]["latency_ms"]["p50"] > 0

    served = _run(["-c", SERVE, str(out)], env)
    assert served.returncode == 0, served.stderr[-2000:]
    assert served.stdout.split()[:2] == [toy["id"], "(1,"]

    # without the distribution on the path the backend is unknown, and the runtime says so
    plain = {**os.environ, "PYTHONPATH": str(ROOT)}
    missing = _run(["-c", SERVE, str(out)], plain)
    assert missing.returncode != 0 and "toyort is not installed here" in missing.stderr
