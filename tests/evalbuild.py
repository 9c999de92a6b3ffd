"""One small evaluated build shared by the eval/check/report/plugin tests (built once per
test session: later callers find it in pytest's base temp directory)."""

import json
import shutil

from .conftest import ROOT, run_cli

GRID = ("--tokens", "8,32", "--width", "32,64", "--depth", "1,4")
PROFILE = str(ROOT / "tests" / "data" / "profiles" / "ort-fp32.toml")
LIMIT = 500


def evaluated_build(tmp_path_factory):
    """An 8-point ONNX Runtime fp32 build of the demo, evaluated on the first 500 demo images."""
    out = tmp_path_factory.getbasetemp() / "adaexport-evaluated-build"
    if (out / "evaluated").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    built = run_cli("build", "--out", str(out), "--build-profile", PROFILE, *GRID)
    assert built.returncode == 0, built.stderr
    evaluated = run_cli("eval", str(out), "--dataset", "demo", "--limit", str(LIMIT))
    assert evaluated.returncode == 0, evaluated.stderr
    (out / "evaluated").write_text(evaluated.stdout)
    return out


def copy_build(src, dst):
    """A copy to modify (the shared build stays as it is)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("evaluated"))
    return dst


def raised_baseline(build, path, ids, points=2.0):
    """A baseline manifest whose top-1 for `ids` is `points` higher than the build's."""
    manifest = json.loads((build / "manifest.json").read_text())
    for e in manifest["engines"]:
        if e["id"] in ids:
            e["accuracy"]["top1"] = min(1.0, e["accuracy"]["top1"] + points / 100)
    path.write_text(json.dumps(manifest))
    return path
