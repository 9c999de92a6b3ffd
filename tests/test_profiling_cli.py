"""`adaexport build`'s profile stage and `adaexport profile DIR` end to end, through the
real CLI in subprocesses (ONNX Runtime fp32, two points, the test profile's tiny settings)."""

import json
import os
import shutil
import sys

import pytest

from adaexport.manifest import read_manifest
from adaexport.manifest_records import target_of
from adaexport.profiles import load_profile

from .conftest import DATA, json_result, run_cli
from .jetson_fixtures import jetson_root, switches
from .test_profiling_power_modes import CONF, SCRIPT
from .test_profiling_sensors import orin_nx_tree

pytestmark = pytest.mark.slow

TEST_PROFILE = DATA / "profiles" / "ort-fp32.toml"
TINY = ["--min-iterations", "5", "--min-duration", "0.01", "--warmup", "0", "--rounds", "2"]


@pytest.fixture(scope="module")
def profile_file(tmp_path_factory):
    """The build tests' profile (ONNX Runtime fp32, tiny profiling settings) with its
    profile stage switched on."""
    path = tmp_path_factory.mktemp("profiles") / "ort-fp32-profiled.toml"
    text = TEST_PROFILE.read_text()
    assert "enabled = false" in text
    path.write_text(text.replace("enabled = false", "enabled = true"))
    return path


@pytest.fixture(scope="module")
def grid(profile_file):
    return ["--tokens", "8", "--width", "32,64", "--depth", "1", "--build-profile", str(profile_file)]
def cli_json(*args, env=None):
    result = run_cli(*args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json_result(result)


@pytest.fixture(scope="module")
def built(tmp_path_factory, grid):
    out = tmp_path_factory.mktemp("profiled") / "b"
    cli_json("build", "--out", str(out), *grid)
    return out


def key(manifest: dict, target: str) -> str:
    """The profile key `adaexport profile` wrote for `target`: this machine's identity as one."""
    (found,) = [d for d in manifest["profiling"] if target_of(d) == target]
    return found


def copy(built, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(built, out)
    return out


def test_build_profiles_every_engine_with_energy_null_and_the_reason(built, profile_file):
    manifest = read_manifest(built)     # schema-checked, the profile subtree included
    assert manifest["device"]["target"] == "x86-cpu"
    section = manifest["profiling"][key(manifest, "x86-cpu")]
    assert section["identity"]["target"] == "x86-cpu" and section["identity"]["cpu"]
    assert section["target"] == "x86-cpu"
    assert section["settings"] == load_profile(str(profile_file)).profiling.as_dict()
    assert list(section["modes"]) == ["default"]
    assert section["modes"]["default"]["power_source"] is None and section["modes"]["default"]["energy_reason"]
    for engine in manifest["engines"]:
        p = engine["profile"][key(manifest, "x86-cpu")]["default"]
        assert p["iterations"] >= 5 and p["duration_s"] >= 0.01 - 1e-9 and p["rounds"] == 2
        assert p["latency_ms"]["p50"] <= p["latency_ms"]["p99"] <= p["latency_ms"]["max"]
        assert p["load_ms"] > 0 and p["memory"]["rss_bytes"] is not None and p["memory"]["backend_source"]
        assert p["threads"] == 0   # x86-cpu: the backend's default
        energy = p["energy"]
        assert energy["per_inference_mj"] is None and energy["source"] is None
        assert energy["reason"] == section["modes"]["default"]["energy_reason"]


def test_rebuild_reuses_the_profiles(built, grid, profile_file, tmp_path):
    out = copy(built, tmp_path)
    before = (out / "manifest.json").read_bytes()
    cli_json("build", "--out", str(out), *grid)
    assert (out / "manifest.json").read_bytes() == before
    # other settings: profiled again, the rest of the build still cached
    faster = tmp_path / "p.toml"
    faster.write_text(profile_file.read_text().replace("min_iterations = 5", "min_iterations = 7"))
    summary = cli_json("build", "--out", str(out), *grid[:-2], "--build-profile", str(faster))
    assert summary["parity_runs"] == 0
    here = key(read_manifest(out), "x86-cpu")
    assert all(e["profile"][here]["default"]["iterations"] >= 7 for e in summary["engines"])
    assert read_manifest(out)["profiling"][here]["settings"]["min_iterations"] == 7


def test_no_profile_skips_the_stage(profile_file, tmp_path):
    out = tmp_path / "np"
    summary = cli_json("build", "--out", str(out), "--tokens", "8", "--width", "32", "--depth", "1",
                       "--build-profile", str(profile_file), "--no-profile")
    assert "profile" not in summary["engines"][0] and "profiling" not in read_manifest(out)


def test_a_second_device_adds_its_section_and_never_overwrites(built, grid, tmp_path):
    out = copy(built, tmp_path)
    mine = key(read_manifest(out), "x86-cpu")
    own = {e["id"]: e["profile"][mine] for e in read_manifest(out)["engines"]}
    one = next(iter(own))
    report = cli_json("profile", str(out), "--device", "jetson-orin-nx", "--engines", one, *TINY)
    assert report["target"] == "jetson-orin-nx" and report["modes"] == ["default"] and list(report["engines"]) == [one]
    manifest = read_manifest(out)
    orin = report["device"]
    assert sorted(target_of(d) for d in manifest["profiling"]) == ["jetson-orin-nx", "x86-cpu"]
    assert key(manifest, "jetson-orin-nx") == orin and orin.startswith("jetson-orin-nx:")
    for engine in manifest["engines"]:
        assert engine["profile"][mine] == own[engine["id"]]        # untouched
    theirs = next(e for e in manifest["engines"] if e["id"] == one)["profile"][orin]["default"]
    assert theirs["threads"] == 6                                       # the Jetson target's ONNX Runtime threads
    # the device's own numbers again: only x86-cpu changes
    cli_json("profile", str(out), *TINY)
    again = read_manifest(out)
    assert next(e for e in again["engines"] if e["id"] == one)["profile"][orin]["default"] == theirs
    # and a rebuild keeps the other device's numbers
    cli_json("build", "--out", str(out), *grid)
    rebuilt = read_manifest(out)
    assert next(e for e in rebuilt["engines"] if e["id"] == one)["profile"][orin]["default"] == theirs
    assert orin in rebuilt["profiling"]


@pytest.mark.skipif(os.geteuid() != 0, reason="walking power modes needs root (the not-root message is tested "
                                              "in test_profiling_power_modes)")
def test_power_mode_all_walks_the_modes_with_energy_and_restores(built, tmp_path):
    out = copy(built, tmp_path)
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/nvpmodel.conf").write_text(CONF)
    (root / "var/lib/nvpmodel").mkdir(parents=True)
    (root / "var/lib/nvpmodel/status").write_text("pmode:0002 fmode:quiet\n")
    orin_nx_tree(root)
    (tmp_path / "nvpmodel.py").write_text(SCRIPT)
    env = {"ADAEXPORT_SYSFS_ROOT": str(root), "ADAEXPORT_NVPMODEL": f"{sys.executable} {tmp_path / 'nvpmodel.py'}"}
    one = read_manifest(out)["engines"][0]["id"]
    report = cli_json("profile", str(out), "--device", "jetson-orin-nx", "--power-mode", "all", "--engines", one,
                      *TINY, env=env)
    # the target's modes that this module's nvpmodel.conf has, in the target's order
    assert report["modes"] == ["MAXN", "10W", "15W", "25W"]
    assert (root / "var/lib/nvpmodel/status").read_text().startswith("pmode:0002")   # 15W again
    manifest = read_manifest(out)
    profile = next(e for e in manifest["engines"] if e["id"] == one)["profile"][key(manifest, "jetson-orin-nx")]
    assert sorted(profile) == sorted(report["modes"])
    for mode in report["modes"]:
        energy = profile[mode]["energy"]
        assert energy["source"].startswith("ina3221:VDD_IN") and energy["reason"] is None
        assert energy["idle_power_w"] == pytest.approx(6.0) and energy["active_power_w"] == pytest.approx(6.0)
        assert energy["per_inference_mj"] == pytest.approx(0.0, abs=1e-6)   # constant rail: nothing above idle
    assert sorted(manifest["profiling"][key(manifest, "jetson-orin-nx")]["modes"]) == sorted(report["modes"])
    # the current mode alone, read by name
    report = cli_json("profile", str(out), "--device", "jetson-orin-nx", "--engines", one, *TINY, env=env)
    assert report["modes"] == ["15W"]


@pytest.mark.skipif(os.geteuid() != 0, reason="walking power modes needs root")
def test_power_mode_all_on_agx_orin_profiles_what_switches_and_says_why_not_the_rest(built, tmp_path, monkeypatch):
    out = copy(built, tmp_path)
    root = jetson_root(tmp_path, monkeypatch, "p3701_0000", "MODE_30W")     # GPU mask 240 in force
    one = read_manifest(out)["engines"][0]["id"]
    report = cli_json("profile", str(out), "--device", "jetson-agx-orin", "--power-mode", "all", "--engines", one,
                      *TINY)
    assert report["modes"] == ["MODE_30W"]
    assert sorted(report["skipped_modes"]) == ["MAXN", "MODE_15W", "MODE_50W"]
    assert all("needs a reboot" in why for why in report["skipped_modes"].values())
    assert switches(root) == []
    manifest = read_manifest(out)
    profile = next(e for e in manifest["engines"] if e["id"] == one)["profile"][key(manifest, "jetson-agx-orin")]
    assert list(profile) == ["MODE_30W"]
    # one mode that needs a reboot, asked for alone: nothing profiled, one line, exit 3 (this device cannot do it now)
    result = run_cli("profile", str(out), "--device", "jetson-agx-orin", "--power-mode", "MODE_15W", *TINY)
    assert result.returncode == 3 and "no power mode profiled: MODE_15W: needs a reboot" in result.stderr


@pytest.mark.parametrize("args, words", [
    (["/nonexistent/build"], "no such build directory"),
    (["BUILT", "--power-mode", "15W"], "target x86-cpu has no power mode '15W'"),
    (["BUILT", "--device", "jetson-orin-nx", "--power-mode", "3W"], "target jetson-orin-nx has no power mode '3W'"),
    (["BUILT", "--engines", "t1_w1_d1-nope"], "--engines: no engine 't1_w1_d1-nope'"),
    (["BUILT", "--rounds", "0"], "rounds = 0 is out of range"),
    (["BUILT", "--device", "toaster"], "unknown device target 'toaster'"),
])
def test_bad_input_is_one_line_and_exit_2(built, args, words):
    before = (built / "manifest.json").read_bytes()
    result = run_cli("profile", *[str(built) if a == "BUILT" else a for a in args])
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert (built / "manifest.json").read_bytes() == before
