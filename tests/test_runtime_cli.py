"""adaexport select / run and the embedded example, through real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from .conftest import ROOT, json_result, run_cli
from .runtime_support import copy_family, measured_copy, small_family

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    return measured_copy(small_family(tmp_path_factory), tmp_path_factory.mktemp("cli") / "fam")


def test_select_explains_the_choice(measured):
    directory, latency, accuracy = measured
    proc = run_cli("select", str(directory), "--latency-ms", "2.5", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json_result(proc)
    expected = max((e for e in latency if latency[e] <= 2.5), key=accuracy.get)
    assert (data["engine"], data["fits"], data["device"], data["mode"]) == (expected, True, "x86-cpu", "default")
    rows = {r["id"]: r for r in data["engines"]}
    assert rows[expected]["state"] == "chosen"
    for eid, p90 in latency.items():
        if p90 > 2.5:
            assert rows[eid]["state"] == "rejected" and "latency" in rows[eid]["reason"]
    # the table form names every engine
    text = run_cli("select", str(directory), "--latency-ms", "2.5")
    assert text.returncode == 0 and all(eid in text.stdout for eid in latency)
    # p50 is 0.8 x p90 in these measurements: a looser statistic admits a bigger engine
    p50 = json_result(run_cli("select", str(directory), "--latency-ms", "2.5", "--percentile", "p50", "--json"))
    assert p50["engine"] == max((e for e in latency if 0.8 * latency[e] <= 2.5), key=accuracy.get)


def test_select_nothing_fits_is_not_an_error(measured):
    directory, latency, _ = measured
    data = json_result(run_cli("select", str(directory), "--latency-ms", "0.01", "--json"))
    assert data["engine"] == min(latency, key=latency.get) and data["fits"] is False


@pytest.mark.parametrize("args, message", [
    (("--latency-ms", "-1"), "latency_ms must be > 0"),
    (("--percentile", "p42"), "percentile"),
])
def test_select_bad_input(measured, args, message):
    proc = run_cli("select", str(measured[0]), *args)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_run_classifies_an_image(measured, tmp_path):
    from adaexport.demo import load_eval_subset

    directory, latency, accuracy = measured
    images, labels = load_eval_subset()
    names = json.loads((directory / "manifest.json").read_text())["model"]["class_names"]
    np.save(tmp_path / "frame.npy", images[0])
    proc = run_cli("run", str(directory), "--input", str(tmp_path / "frame.npy"), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json_result(proc)
    assert data["engine"] == max(accuracy, key=accuracy.get)
    assert data["classes"][0]["name"] == names[data["classes"][0]["class"]]
    assert 0 < data["classes"][0]["probability"] <= 1
    # the same image as PNG gives the same answer (Pillow is a test dependency here)
    PIL = pytest.importorskip("PIL.Image")
    PIL.fromarray(images[0]).save(tmp_path / "frame.png")
    png = json_result(run_cli("run", str(directory), "--input", str(tmp_path / "frame.png"), "--json"))
    assert png["classes"][0]["class"] == data["classes"][0]["class"]
    text = run_cli("run", str(directory), "--input", str(tmp_path / "frame.png"), "--latency-ms", "1.5")
    assert text.returncode == 0 and min(latency, key=latency.get) in text.stdout


@pytest.mark.parametrize("name, content", [("missing.png", None), ("bad.png", b"not a png"),
                                           ("frame.txt", b"hello"), ("shape.npy", "shape")])
def test_run_bad_input_is_one_line_and_exit_2(measured, tmp_path, name, content):
    path = tmp_path / name
    if content == "shape":
        np.save(path, np.zeros((2, 3, 4, 5), np.uint8))
    elif content is not None:
        path.write_bytes(content)
    proc = run_cli("run", str(measured[0]), "--input", str(path))
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert name in proc.stderr


def test_run_on_a_directory_without_a_manifest(tmp_path):
    proc = run_cli("run", str(tmp_path), "--input", str(tmp_path / "x.npy"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_embedded_example_runs(measured):
    directory, latency, accuracy = measured
    script = ROOT / "examples" / "embedded_app.py"
    proc = subprocess.run([sys.executable, str(script), str(directory), "--frames", "9", "--limits", "none,0.001,none"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    served = [line.split()[2] for line in proc.stdout.splitlines() if line.startswith("frame ") and " ms  class" in line]
    # no limit: the most accurate; a limit nothing meets: the fastest, and the app is told
    best, fast = max(accuracy, key=accuracy.get), min(latency, key=latency.get)
    assert served == [best] * 3 + [fast] * 3 + [best] * 3
    assert "does NOT fit" in proc.stdout
    usage = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert usage.returncode == 2 and "adaexport build" in usage.stderr


def test_end_to_end_with_real_profile_and_eval(tmp_path_factory):
    """The real measuring stages feed the choice: `adaexport eval` and `adaexport profile`
    on a build, then `adaexport select` picks the most accurate engine whose measured p90
    fits, and the runtime serves it."""
    from adaexport.manifest import read_records
    from adaexport.runtime import Limits, Runtime

    directory = copy_family(small_family(tmp_path_factory), tmp_path_factory.mktemp("e2e") / "fam")
    proc = run_cli("eval", str(directory), "--limit", "100", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_cli("profile", str(directory), "--min-iterations", "20", "--min-duration", "0.02", "--rounds", "1",
                   "--warmup", "0.01", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = read_records(directory)
    device = manifest.default_device()
    p90 = {e.id: e.latency_ms(device, "default", "p90") for e in manifest.engines}
    acc = {e.id: e.accuracy_on() for e in manifest.engines}
    flops = {e.id: e.flops for e in manifest.engines}
    assert all(v is not None for v in p90.values()) and all(v is not None for v in acc.values())
    limit = sorted(p90.values())[len(p90) // 2]                 # about half the engines fit
    fitting = [e for e in p90 if p90[e] <= limit]
    expected = max(fitting, key=lambda e: (acc[e], -flops[e]))
    data = json_result(run_cli("select", str(directory), "--latency-ms", str(limit), "--json"))
    assert (data["engine"], data["fits"], data["device"]) == (expected, True, device)
    with Runtime(directory, limits=Limits(latency_ms=limit), preload="pareto") as rt:
        assert rt.infer(np.zeros(rt.input_shape, np.float32)).engine == expected
