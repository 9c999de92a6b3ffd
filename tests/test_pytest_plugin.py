"""The pytest plugin (entry point pytest11): configurations as test items, run by a real
pytest in a subprocess (the installed entry point loads it, as in a user's CI)."""

import json
import subprocess
import sys

import pytest

from .conftest import json_result
from .evalbuild import copy_build, evaluated_build, raised_baseline


def pytest_run(cwd, *args):
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfs", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_inert_without_the_options(tmp_path):
    """Loaded in every pytest run: without --adaexport-manifest it adds no items and
    imports nothing of adaexport beyond the plugin module."""
    (tmp_path / "test_one.py").write_text(
        "import sys\n"
        "def test_plugin_loaded_but_idle(pytestconfig):\n"
        "    assert pytestconfig.pluginmanager.has_plugin('adaexport')\n"
        "    heavy = [m for m in sys.modules if m.startswith('adaexport.') and m != 'adaexport.pytest_plugin']\n"
        "    assert heavy == [] and 'torch' not in sys.modules and 'numpy' not in sys.modules\n")
    result = pytest_run(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    help_text = pytest_run(tmp_path, "--help").stdout
    assert "--adaexport-manifest" in help_text and "--adaexport-baseline" in help_text


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return evaluated_build(tmp_path_factory)


@pytest.mark.slow
def test_every_configuration_is_a_test(build, tmp_path):
    ids = [e["id"] for e in json.loads((build / "manifest.json").read_text())["engines"]]
    result = pytest_run(tmp_path, "--adaexport-manifest", str(build), "-rA")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(ids)} passed" in result.stdout
    passed = {line.split("::")[1] for line in result.stdout.splitlines() if line.startswith("PASSED ")}
    assert passed == set(ids)
    # -k selects configurations like any other test
    picked = pytest_run(tmp_path, "--adaexport-manifest", str(build), "-k", ids[0])
    assert picked.returncode == 0 and "1 passed" in picked.stdout


@pytest.mark.slow
def test_drops_missing_and_unevaluated_configurations_fail(build, tmp_path):
    ids = [e["id"] for e in json.loads((build / "manifest.json").read_text())["engines"]]
    baseline = raised_baseline(build, tmp_path / "base.json", [ids[2]], points=3.0)
    data = json.loads(baseline.read_text())
    extra = {**data["engines"][0], "id": "t99_w32_d1-onnxruntime-fp32"}
    data["engines"].append(extra)
    baseline.write_text(json.dumps(data))
    result = pytest_run(tmp_path, "--adaexport-manifest", str(build), "--adaexport-baseline", str(baseline))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"2 failed, {len(ids) - 1} passed" in result.stdout
    failed = {line.split("::")[1].split(" ")[0] for line in result.stdout.splitlines() if line.startswith("FAILED")}
    assert failed == {ids[2], extra["id"]}
    assert "-3.00 points" in result.stdout and "configuration missing from the build" in result.stdout
    # a tolerance above the drop lets it pass (the missing configuration still fails)
    wide = pytest_run(tmp_path, "--adaexport-manifest", str(build), "--adaexport-baseline", str(baseline),
                      "--adaexport-max-drop", "5")
    assert "1 failed" in wide.stdout

    # a build without accuracies: each configuration fails, saying why
    copy = copy_build(build, tmp_path / "copy")
    manifest = json.loads((copy / "manifest.json").read_text())
    for e in manifest["engines"]:
        e.pop("accuracy")
    manifest.pop("pareto", None)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    bare = pytest_run(tmp_path, "--adaexport-manifest", str(copy))
    assert f"{len(ids)} failed" in bare.stdout and "no accuracy (run `adaexport eval`)" in bare.stdout
    missing = pytest_run(tmp_path, "--adaexport-manifest", str(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "no manifest.json there" in missing.stderr + missing.stdout


@pytest.mark.slow
def test_check_and_the_plugin_give_the_same_verdicts(build, tmp_path):
    """One gate rule: on one build and baseline (a drop, a missing configuration, a parity
    failure), `adaexport check` and the plugin fail exactly the same configurations."""
    from .conftest import run_cli

    ids = [e["id"] for e in json.loads((build / "manifest.json").read_text())["engines"]]
    baseline = raised_baseline(build, tmp_path / "base.json", [ids[2]], points=3.0)
    data = json.loads(baseline.read_text())
    data["engines"].append({**data["engines"][0], "id": "t99_w32_d1-onnxruntime-fp32"})
    baseline.write_text(json.dumps(data))
    copy = copy_build(build, tmp_path / "copy")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["engines"][0]["parity"]["passed"] = False
    (copy / "manifest.json").write_text(json.dumps(manifest))

    checked = run_cli("check", str(copy), "--baseline", str(baseline), "--json")
    assert checked.returncode == 1, checked.stderr
    by_check = {c["id"] for c in json_result(checked, ok=False)["configurations"] if not c["passed"]}
    result = pytest_run(tmp_path, "--adaexport-manifest", str(copy), "--adaexport-baseline", str(baseline))
    by_plugin = {line.split("::")[1].split(" ")[0] for line in result.stdout.splitlines() if line.startswith("FAILED")}
    assert by_check == by_plugin == {ids[0], ids[2], "t99_w32_d1-onnxruntime-fp32"}
