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
    built = _run(["-m", "adaexport", "build", "--out", str(out), "--target-file", str(site / "toy-cpu.toml"),
                  "--profile-file", str(site / "toy.toml"), "--tokens", "8", "--width", "32", "--depth", "1",
                  "--no-profile", "--json"], env)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    assert json.loads(built.stdout)["ok"] is True
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
