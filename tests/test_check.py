"""adaexport check: the per-configuration accuracy gate against a baseline."""

import copy
import json
import xml.etree.ElementTree as ET

import pytest

from adaexport.gate import DEFAULT_MAX_DROP, compare, junit_xml, load_baseline
from adaexport.manifest import ManifestError

from .conftest import json_result, run_cli
from .evalbuild import evaluated_build, raised_baseline
from .test_pareto import engine, manifest_of


def acc(top1, dataset="demo", samples=2000):
    return {"dataset": dataset, "samples": samples, "top1": top1, "top5": None, "reference_top1": top1,
            "reference_top5": None, "evaluated": "2026-01-01T00:00:00Z"}


def parity(passed: bool = True) -> dict:
    return {"max_abs": 0.0, "max_rel": 0.0, "top1_agreement": 1.0, "samples": 1,
            "tolerance": {"max_abs": None, "min_top1_agreement": 0.99}, "passed": passed}


def family(**accuracies):
    return manifest_of([{**engine(ident, 100), "parity": parity(), **({"accuracy": a} if a is not None else {})}
                        for ident, a in accuracies.items()])


def verdicts_of(build, baseline, max_drop=DEFAULT_MAX_DROP):
    return {v.id: v.verdict for v in compare(build, baseline, max_drop)}


def test_each_verdict():
    baseline = family(same=acc(0.90), edge=acc(0.90), over=acc(0.90), gone=acc(0.90), unevaluated=acc(0.90),
                      other=acc(0.90), never=None)
    build = family(same=acc(0.90), edge=acc(0.895), over=acc(0.8949), unevaluated=None,
                   other=acc(0.90, samples=500), never=acc(0.5), fresh=acc(0.1))
    assert verdicts_of(build, baseline, max_drop=0.5) == {
        "same": "pass", "edge": "pass",  # exactly the tolerance is allowed
        "over": "drop", "gone": "missing", "unevaluated": "not evaluated", "other": "incomparable",
        "fresh": "new",  # "never" had no baseline accuracy: nothing to judge
    }


def test_parity_and_pending_come_before_accuracy():
    """A configuration whose parity failed (or was never checked) fails the gate whatever
    its accuracy; a pending one passes, judged when it is built on the device."""
    baseline = family(a=acc(0.9), b=acc(0.9), c=acc(0.9), d=acc(0.9))
    build = family(a=acc(0.9), b=acc(0.9), c=acc(0.9), d=acc(0.9))
    build["engines"][1]["parity"] = parity(passed=False)
    build["engines"][2]["parity"] = None
    build["engines"][3]["status"] = "pending"
    assert verdicts_of(build, baseline) == {"a": "pass", "b": "parity", "c": "parity", "d": "pending"}
    assert verdicts_of(build, None) == {"a": "pass", "b": "parity", "c": "parity", "d": "pending"}
    assert [v.failed for v in compare(build, None)] == [False, True, True, False]


def test_tolerance_zero_and_improvements():
    baseline, build = family(a=acc(0.80), b=acc(0.80)), family(a=acc(0.7995), b=acc(0.95))
    assert verdicts_of(build, baseline, max_drop=0.0) == {"a": "drop", "b": "pass"}
    assert verdicts_of(build, baseline, max_drop=0.05) == {"a": "pass", "b": "pass"}
    (a, b) = compare(build, baseline, 0.0)
    assert a.change_points == pytest.approx(-0.05) and b.change_points == pytest.approx(15.0)
    with pytest.raises(ValueError, match="max-drop"):
        compare(build, baseline, -1)


def test_junit_has_one_case_per_configuration_and_failures_named():
    baseline = family(a=acc(0.9), b=acc(0.9), c=acc(0.9))
    build = family(a=acc(0.9), b=acc(0.8))
    root = ET.fromstring(junit_xml(compare(build, baseline)))
    suite = root.find("testsuite")
    cases = {c.get("name"): c.find("failure") for c in suite.findall("testcase")}
    assert set(cases) == {"a", "b", "c"} and cases["a"] is None
    assert cases["b"].get("type") == "drop" and "-10.00 points" in cases["b"].get("message")
    assert cases["c"].get("type") == "missing"
    assert suite.get("tests") == "3" and suite.get("failures") == "2"


def test_baseline_without_accuracies_is_a_clear_error(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(ManifestError, match="baseline"):
        load_baseline(tmp_path)
    with pytest.raises(ManifestError, match="not found"):
        load_baseline(tmp_path / "nothing")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return evaluated_build(tmp_path_factory)


@pytest.mark.slow
def test_check_cli(build, tmp_path):
    manifest = json.loads((build / "manifest.json").read_text())
    ids = [e["id"] for e in manifest["engines"]]

    # against its own manifest file, as JSON
    same = run_cli("check", str(build), "--baseline", str(build / "manifest.json"), "--json")
    assert same.returncode == 0, same.stderr
    doc = json_result(same)
    assert doc["passed"] and doc["failures"] == 0 and [c["id"] for c in doc["configurations"]] == ids
    assert all(c["verdict"] == "pass" and c["change_points"] == 0 for c in doc["configurations"])

    # a baseline with a configuration this build lacks, and one 1 point better
    base = copy.deepcopy(manifest)
    extra = copy.deepcopy(base["engines"][0])
    extra["id"] = "t99_w32_d1-onnxruntime-fp32"
    base["engines"].append(extra)
    (tmp_path / "b.json").write_text(json.dumps(base))
    raised = raised_baseline(build, tmp_path / "r.json", [ids[1]], points=1.0)
    base_r = json.loads(raised.read_text())
    base_r["engines"].append(extra)
    (tmp_path / "both.json").write_text(json.dumps(base_r))
    result = run_cli("check", str(build), "--baseline", str(tmp_path / "both.json"), "--json")
    assert result.returncode == 1
    failed = {c["id"]: c["verdict"] for c in json_result(result, ok=False)["configurations"] if not c["passed"]}
    assert failed == {ids[1]: "drop", extra["id"]: "missing"}
    # a wider tolerance lets the drop pass, never the missing configuration
    wide = run_cli("check", str(build), "--baseline", str(tmp_path / "both.json"), "--max-drop", "1.5")
    assert wide.returncode == 1 and "FAILED: 1 of 9" in wide.stdout and extra["id"] in wide.stdout

    # user errors: one line, exit 2, no JUnit file
    stripped = copy.deepcopy(manifest)
    for e in stripped["engines"]:
        e.pop("accuracy")
    stripped.pop("pareto", None)
    (tmp_path / "none.json").write_text(json.dumps(stripped))
    for args, message in [
        (("--baseline", str(tmp_path / "none.json")), "no engine has an accuracy"),
        (("--baseline", str(tmp_path / "nope")), "not found"),
        (("--baseline", str(build), "--max-drop", "-1"), "--max-drop must be >= 0"),
    ]:
        bad = run_cli("check", str(build), *args, "--junit", str(tmp_path / "j.xml"))
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "j.xml").exists()


@pytest.mark.slow
def test_the_ci_example_script_gates(build, tmp_path):
    """examples/ci/gate.sh on a copy of the small build (its cache makes the rebuild cheap):
    it passes against the build's own manifest and fails, with JUnit, against a better one."""
    import os
    import subprocess
    import sys

    from .conftest import ROOT
    from .evalbuild import GRID, LIMIT, PROFILE, copy_build

    out = copy_build(build, tmp_path / "out")
    baseline = raised_baseline(build, tmp_path / "better.json", [json.loads((build / "manifest.json").read_text())
                                                                 ["engines"][3]["id"]], points=2.0)
    env = {**os.environ, "ADAEXPORT": f"{sys.executable} -m adaexport", "LIMIT": str(LIMIT), "COLUMNS": "200"}
    script = str(ROOT / "examples" / "ci" / "gate.sh")
    ok = subprocess.run([script, str(out), str(build / "manifest.json"), "--build-profile", PROFILE, *GRID],
                        capture_output=True, text=True, env=env, timeout=600)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert (out / "report.html").is_file() and "passed: 8 configuration(s)" in ok.stdout
    bad = subprocess.run([script, str(out), str(baseline), "--build-profile", PROFILE, *GRID],
                         capture_output=True, text=True, env=env, timeout=600)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    failures = ET.parse(out / "accuracy-junit.xml").getroot().iter("failure")
    assert [f.get("type") for f in failures] == ["drop"]
