"""adaexport eval: accuracy per engine next to PyTorch's, stored in the manifest, and the
end-to-end path build -> eval -> check -> report."""

import json
import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from adaexport.evaluate import padded_batches, scores, topk_accuracy

from .conftest import json_result, run_cli
from .evalbuild import LIMIT, PROFILE, copy_build, evaluated_build, raised_baseline


def test_topk_accuracy_from_hand_made_logits():
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5], [0.5, 0.4, 0.1]])
    labels = np.array([1, 2, 2, 2])
    assert topk_accuracy(logits, labels, 1) == 0.5  # rows 0 and 2
    assert topk_accuracy(logits, labels, 2) == 0.75  # row 1's label is second
    assert topk_accuracy(logits, labels, 3) == 1.0
    top1, top5 = scores(logits, labels)
    assert top1 == 0.5 and top5 is None  # top-5 of 3 classes says nothing


def test_padded_batches_cover_every_row_once():
    x = np.arange(10, dtype=np.float32)[:, None]
    chunks = list(padded_batches(x, 4))
    assert [len(c) for c, _ in chunks] == [4, 4, 4] and [real for _, real in chunks] == [4, 4, 2]
    assert np.array_equal(np.concatenate([c[:real] for c, real in chunks]), x)


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return evaluated_build(tmp_path_factory)


def _reference_top1(point, limit):
    """PyTorch's top-1 at a point, computed here independently of adaexport.evaluate."""
    import torch

    from adaexport.datasets import model_inputs
    from adaexport.demo import DEMO_MODEL
    from adaexport.model import load_checkpoint
    from adaexport.model.static import specialize
    from adaexport.space import ConfigPoint

    loaded = load_checkpoint(DEMO_MODEL)
    x, y = model_inputs("demo", loaded.config, limit)
    with torch.no_grad():
        logits = specialize(loaded.model, ConfigPoint(**point))(torch.from_numpy(x))[0].numpy()
    return float((logits.argmax(1) == y).mean())


@pytest.mark.slow
def test_eval_stores_accuracy_per_engine_and_the_front(build):
    manifest = json.loads((build / "manifest.json").read_text())
    engines = manifest["engines"]
    assert len(engines) == 8
    for e in engines:
        a = e["accuracy"]
        assert a["dataset"] == "demo" and a["samples"] == LIMIT
        assert set(a) == {"dataset", "samples", "top1", "top5", "reference_top1", "reference_top5", "evaluated",
                          "device"}
        assert a["device"].startswith("x86-cpu:") and e["accuracies"] == {a["device"]: a}   # keyed by this machine
        assert 0.5 < a["top1"] <= a["top5"] <= 1.0  # 10 classes: top-5 is reported
        # fp32 matches PyTorch to 1e-3 (parity), so it picks the same class on every sample
        assert a["top1"] == a["reference_top1"] and a["top5"] == a["reference_top5"]
    smallest = min(engines, key=lambda e: e["flops"])
    assert smallest["accuracy"]["reference_top1"] == pytest.approx(_reference_top1(smallest["point"], LIMIT))
    # the stored front is the FLOPs front of the stored accuracies
    from adaexport.pareto import front

    assert manifest["pareto"]["flops"] == front((e["id"], e["flops"], e["accuracy"]["top1"]) for e in engines)
    if "profile" in engines[0]:  # the build profiled on this machine: a latency front too
        (device,) = engines[0]["profile"]
        assert manifest["pareto"][f"{device}/default"] == front(
            (e["id"], e["profile"][device]["default"]["latency_ms"]["p50"], e["accuracy"]["top1"]) for e in engines)
    # one cached PyTorch reference per point
    assert len(list((build / ".adaexport" / "cache" / "reference").glob("*.json"))) == 8


@pytest.mark.slow
def test_eval_pads_the_last_batch_and_skips_pending_engines(tmp_path):
    """A batch-4 engine on 10 samples: the padded last chunk counts its 2 real rows only;
    a pending engine is skipped with a note and keeps no accuracy."""
    out = tmp_path / "b4"
    built = run_cli("build", "--out", str(out), "--build-profile", PROFILE, "--tokens", "8", "--width", "32",
                    "--depth", "1,2", "--batch", "4", "--no-profile")
    assert built.returncode == 0, built.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    pending = manifest["engines"][1]
    pending["status"] = "pending"
    for key in ("sha256", "size"):
        pending.pop(key)
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli("eval", str(out), "--limit", "10", "--json")
    assert result.returncode == 0, result.stderr
    doc = json_result(result)
    ready = manifest["engines"][0]
    assert list(doc["engines"]) == [ready["id"]] and pending["id"] in doc["skipped"]
    assert f"{pending['id']}: skipped" in result.stderr
    acc = doc["engines"][ready["id"]]
    assert acc["samples"] == 10
    assert acc["top1"] == pytest.approx(_reference_top1(ready["point"], 10))
    stored = json.loads((out / "manifest.json").read_text())["engines"]
    assert "accuracy" in stored[0] and "accuracy" not in stored[1]


@pytest.mark.slow
def test_eval_user_errors(build, tmp_path):
    from adaexport.datasets import DatasetError
    from adaexport.errors import UsageError
    from adaexport.evaluate import evaluate
    from adaexport.manifest import ManifestError
    from adaexport.progress import QuietReporter

    from .conftest import CONFORMANCE

    before = (build / "manifest.json").read_bytes()
    for kwargs, error, message in [
        ({"dataset": "npz:/no/such.npz"}, DatasetError, "no such file"),
        ({"dataset": "imagenet"}, DatasetError, "unknown dataset spec"),
        ({"limit": 0}, UsageError, "--limit must be >= 1"),
        ({"model_path": CONFORMANCE / "classification"}, UsageError, "pass that checkpoint with --model"),
        ({"directory": tmp_path / "missing"}, ManifestError, "no such build directory"),
    ]:
        args = {"directory": build, "dataset": "demo", "limit": 10, "reporter": QuietReporter(), **kwargs}
        with pytest.raises(error, match=message):
            evaluate(**args)
    assert (build / "manifest.json").read_bytes() == before  # nothing half-written
    # through the CLI: one line, exit 2
    result = run_cli("eval", str(build), "--dataset", "npz:/no/such.npz")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--dataset npz:/no/such.npz: /no/such.npz: no such file" in result.stderr


@pytest.mark.slow
def test_end_to_end_build_eval_check_report(build, tmp_path):
    """The issue's acceptance test: the demo family built and evaluated on the bundled subset
    passes `check` against itself, fails it (exit 1, JUnit naming the configurations)
    against a baseline with higher accuracy, and reports a PNG of the asked size."""
    same = run_cli("check", str(build), "--baseline", str(build))
    assert same.returncode == 0, same.stdout + same.stderr
    assert "passed: 8 configuration(s)" in same.stdout

    engines = json.loads((build / "manifest.json").read_text())["engines"]
    raised = [engines[0]["id"], engines[5]["id"]]
    baseline = raised_baseline(build, tmp_path / "baseline.json", raised, points=2.0)
    junit = tmp_path / "check.xml"
    worse = run_cli("check", str(build), "--baseline", str(baseline), "--junit", str(junit))
    assert worse.returncode == 1, worse.stdout + worse.stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == {e["id"] for e in engines}
    failed = sorted(name for name, c in cases.items() if c.find("failure") is not None)
    assert failed == sorted(raised) and suite.get("failures") == "2"
    assert "-2.00 points" in cases[raised[0]].find("failure").get("message")

    png = tmp_path / "plot.png"
    report = run_cli("report", str(build), "--png", str(png), "--html", str(tmp_path / "r.html"),
                     "--width", "900", "--height", "600")
    assert report.returncode == 0, report.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (900, 600)


@pytest.mark.slow
def test_eval_of_a_copy_reuses_nothing_stale(build, tmp_path):
    """A second eval on other data replaces the accuracies (and the front) it stored."""
    copy = copy_build(build, tmp_path / "copy")
    x, y = __import__("adaexport.demo", fromlist=["load_eval_subset"]).load_eval_subset()
    np.savez(tmp_path / "d.npz", x=x[-64:], y=y[-64:])
    result = run_cli("eval", str(copy), "--dataset", f"npz:{tmp_path / 'd.npz'}")
    assert result.returncode == 0, result.stderr
    for e in json.loads((copy / "manifest.json").read_text())["engines"]:
        assert e["accuracy"]["samples"] == 64 and e["accuracy"]["dataset"].startswith("npz:")


@pytest.mark.slow
def test_a_rebuild_keeps_the_measured_accuracy_and_front(build, tmp_path):
    """Re-running the same build (as CI does before `check`) keeps every unchanged engine's
    accuracy and the Pareto fronts; a different grid keeps them only for the engines it shares."""
    from .evalbuild import GRID

    copy = copy_build(build, tmp_path / "copy")
    before = json.loads((copy / "manifest.json").read_text())
    rebuilt = run_cli("build", "--out", str(copy), "--build-profile", PROFILE, *GRID)
    assert rebuilt.returncode == 0, rebuilt.stderr
    after = json.loads((copy / "manifest.json").read_text())
    assert [e["accuracy"] for e in after["engines"]] == [e["accuracy"] for e in before["engines"]]
    assert after["pareto"] == before["pareto"]

    narrower = run_cli("build", "--out", str(copy), "--build-profile", PROFILE, "--tokens", "8,16", "--width", "32",
                       "--depth", "1")
    assert narrower.returncode == 0, narrower.stderr
    engines = {e["point"]["tokens"]: e for e in json.loads((copy / "manifest.json").read_text())["engines"]}
    kept = next(e for e in before["engines"] if e["id"] == engines[8]["id"])
    assert engines[8]["accuracy"] == kept["accuracy"] and "accuracy" not in engines[16]
