"""The Ray farm on a real local cluster (issue 17): a head and two device nodes on loopback,
joined with the real `adaexport farm join`, one of them showing another CPU through a
fixture system root so the two measure under different device identities; for the pending
engines, a third device of another target with the toy deferred backend (toydefer) that
only that node can build."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from .conftest import ROOT, json_result, run_cli

pytest.importorskip("ray", reason="the farm tests need Ray (pip install 'adaexport[farm]')")

from adaexport.farm.local import LocalRayCluster, build_digest, fake_cpu_root  # noqa: E402

pytestmark = pytest.mark.slow
XEON = ("Intel(R) Xeon(R) Platinum 8480+", "avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16")
FAKE = "platinum-8480"    # in the fake device's key only: the machine running the tests may be a Xeon too
QUICK = ("--min-iterations", "5", "--min-duration", "0.01", "--warmup", "0.005", "--rounds", "1")
PROFILE = str(ROOT / "tests" / "data" / "profiles" / "ort-fp32.toml")


@pytest.fixture(scope="module")
def cluster():
    c = LocalRayCluster()
    try:
        c.start_head()
        c.join_device("here")
        c.join_device("xeon", root=fake_cpu_root(c.tmp / "xeon-root", *XEON))
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    out = tmp_path_factory.mktemp("farm") / "build"
    built = run_cli("build", "--out", str(out), "--build-profile", PROFILE, "--tokens", "8", "--width", "32,64",
                    "--depth", "1")
    assert built.returncode == 0, built.stderr
    return out


def copy(build, tmp_path):
    import shutil

    return shutil.copytree(build, tmp_path / "build")


def test_farm_ls_lists_each_device_with_its_identity(cluster):
    listed = run_cli("farm", "ls", "--ray", cluster.address, "--json")
    assert listed.returncode == 0, listed.stderr
    devices = {d["key"]: d for d in json_result(listed)["devices"]}
    assert len(devices) == 2
    xeon = next(d for d in devices.values() if FAKE in d["key"])
    assert xeon["identity"]["cpu"] == XEON[0] and "amx_int8" in xeon["identity"]["isa"]
    for device in devices.values():
        assert device["alive"] and device["target"] == "x86-cpu" and "onnxruntime" in device["backends"]
        assert device["identity"]["target"] == "x86-cpu" and device["power_modes"]


def test_profile_ray_lands_one_section_per_device_and_keeps_the_rest(cluster, build, tmp_path):
    directory = copy(build, tmp_path)
    before = json.loads((directory / "manifest.json").read_text())
    done = run_cli("profile", str(directory), "--ray", cluster.address, "--json", *QUICK)
    assert done.returncode == 0, done.stderr
    outcomes = json_result(done)["devices"]
    assert len(outcomes) == 2 and not any(o["error"] for o in outcomes)
    manifest = json.loads((directory / "manifest.json").read_text())
    keys = {o["profiled_as"] for o in outcomes}
    assert len(keys) == 2 and set(manifest["profiling"]) == keys
    for engine in manifest["engines"]:
        assert set(engine["profile"]) == keys
        for key in keys:
            assert engine["profile"][key]["default"]["latency_ms"]["p50"] > 0
    xeon = next(k for k in keys if FAKE in k)
    assert manifest["profiling"][xeon]["identity"]["cpu"] == XEON[0]
    # everything but the measurements is as it was: the driver wrote only the devices' sections
    strip = lambda m: {k: v for k, v in m.items() if k not in ("profiling", "pareto", "engines")}  # noqa: E731
    assert strip(manifest) == strip(before)
    assert [{k: v for k, v in e.items() if k != "profile"} for e in manifest["engines"]] == \
        [{k: v for k, v in e.items() if k != "profile"} for e in before["engines"]]
    from adaexport.manifest import read_manifest, verify_files

    assert read_manifest(directory) == manifest and verify_files(directory, manifest) == []


def test_devices_selector_profiles_only_the_matching_device(cluster, build, tmp_path):
    directory = copy(build, tmp_path)
    done = run_cli("profile", str(directory), "--ray", cluster.address, "--devices", f"*{FAKE}*", "--json", *QUICK)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((directory / "manifest.json").read_text())
    assert len(manifest["profiling"]) == 1 and FAKE in next(iter(manifest["profiling"]))
    missing = run_cli("profile", str(directory), "--ray", cluster.address, "--devices", "jetson-*")
    assert missing.returncode == 2 and "no live device matches" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


BLOCK_RAY = ("import sys, runpy\n"
             "class NoRay:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name == 'ray' or name.startswith('ray.'):\n"
             "            raise ImportError('blocked: no ray here')\n"
             "sys.meta_path.insert(0, NoRay())\n"
             "sys.argv = ['adaexport', *sys.argv[1:]]\n"
             "runpy.run_module('adaexport', run_name='__main__')\n")


@pytest.mark.parametrize("args", [("profile", "{build}", "--ray", "127.0.0.1:1"), ("farm", "ls", "--ray", "127.0.0.1:1")])
def test_without_ray_the_farm_says_how_to_install_it_and_exits_3(build, args):
    argv = [a.format(build=build) for a in args]
    proc = subprocess.run([sys.executable, "-c", BLOCK_RAY, *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "pip install 'adaexport[farm]'" in proc.stderr and "Traceback" not in proc.stderr


def test_an_unreachable_cluster_is_one_line_and_exit_3(build):
    proc = run_cli("farm", "ls", "--ray", "127.0.0.1:1", timeout=180)
    assert proc.returncode == 3, proc.stderr
    assert "cannot reach the Ray cluster" in proc.stderr and "Traceback" not in proc.stderr


TOY = ROOT / "tests" / "data" / "toy_backend"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toydefer backend installed (a temporary site folder whose dist-info importlib.metadata
    finds) and its target toy-device known: the driver's environment, where toydefer engines can
    only be recorded pending, and the device's, where its toydefer_device module builds them."""
    site = shutil.copytree(TOY, tmp_path_factory.mktemp("toy") / "site", ignore=shutil.ignore_patterns("__pycache__"))
    driver = {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "ADAEXPORT_TARGETS_PATH": str(site / "targets")}
    device = {**driver, "PYTHONPATH": os.pathsep.join([str(site), str(site / "device"), str(ROOT)])}
    return {"site": site, "driver": driver, "device": device}


@pytest.fixture(scope="module")
def toy_device(cluster, toy):
    """A third device node, of target toy-device, the only one that can build toydefer engines."""
    cluster.join_device("toy", target="toy-device", env=toy["device"])
    try:
        yield cluster
    finally:
        cluster.kill("toy", signal.SIGTERM)


@pytest.fixture(scope="module")
def toy_build(tmp_path_factory, toy):
    out = tmp_path_factory.mktemp("toy-build") / "build"
    built = run_cli("build", "--device", "toy-device", "--build-profile", str(toy["site"] / "toydefer.toml"), "--out",
                    str(out), "--tokens", "8", "--width", "32,64", "--depth", "1", "--no-profile", env=toy["driver"])
    assert built.returncode == 0, built.stderr
    pending = [e["id"] for e in json.loads((out / "manifest.json").read_text())["engines"] if e["status"] == "pending"]
    assert pending == ["t8_w32_d1-toydefer-fp32", "t8_w64_d1-toydefer-fp32"]
    return out


def test_compile_ray_builds_pending_engines_on_the_matching_device_as_a_local_compile(toy_device, toy_build, toy,
                                                                                       tmp_path):
    local, farm = (shutil.copytree(toy_build, tmp_path / name) for name in ("local", "farm"))
    here = run_cli("compile", str(local), env=toy["device"])            # where toydefer builds: the reference
    assert here.returncode == 0, here.stderr
    cannot = run_cli("compile", str(farm), env=toy["driver"])          # the driver itself cannot build them
    assert cannot.returncode == 3 and "toydefer builds only on its device" in cannot.stderr
    done = run_cli("compile", str(farm), "--ray", toy_device.address, env=toy["driver"])
    assert done.returncode == 0, done.stderr
    assert build_digest(farm) == build_digest(local)                   # the same files, the same manifest
    assert "finished 2 engine(s) on toy-device:" in done.stdout
    # progress names the device for each engine as it comes back
    assert [ln.split(": built on ")[0].split()[-1] for ln in done.stderr.splitlines() if ": built on toy-device" in ln] \
        == ["t8_w32_d1-toydefer-fp32", "t8_w64_d1-toydefer-fp32"]
    from adaexport.manifest import read_manifest, verify_files

    assert verify_files(farm, read_manifest(farm)) == []


def test_compile_ray_with_a_device_that_fails_names_it_and_writes_nothing(toy_device, toy_build, toy, tmp_path):
    directory = shutil.copytree(toy_build, tmp_path / "build")
    before = build_digest(directory)
    failed = run_cli("compile", str(directory), "--ray", toy_device.address, "--dataset", "npz:/nonexistent.npz",
                     env=toy["driver"])
    assert failed.returncode == 3, failed.stderr
    lines = [ln for ln in failed.stderr.splitlines() if ln.strip() and not ln.startswith(("farm:", "["))]
    assert len(lines) == 1 and "device toy-device:" in lines[0] and "nonexistent" in lines[0], failed.stderr
    assert "Traceback" not in failed.stderr and build_digest(directory) == before


def test_profile_ray_compiles_pending_engines_on_their_device_then_profiles_them(toy_device, toy_build, toy, tmp_path):
    directory = shutil.copytree(toy_build, tmp_path / "build")
    done = run_cli("profile", str(directory), "--ray", toy_device.address, "--devices", "toy-device", "--json", *QUICK,
                   env=toy["driver"])
    assert done.returncode == 0, done.stderr
    (outcome,) = json_result(done)["devices"]
    assert outcome["compiled"] == ["t8_w32_d1-toydefer-fp32", "t8_w64_d1-toydefer-fp32"] and not outcome["error"]
    manifest = json.loads((directory / "manifest.json").read_text())
    key = outcome["profiled_as"]
    for engine in manifest["engines"]:
        assert engine["status"] == "ready" and engine["profile"][key]["default"]["latency_ms"]["p50"] > 0
    assert {e["id"] for e in manifest["engines"]} >= set(outcome["compiled"]) and not outcome["skipped"]


def test_compile_ray_without_a_device_of_the_target_exits_3_naming_it(cluster, tmp_path):
    out = tmp_path / "nx"
    built = run_cli("build", "--device", "jetson-orin-nx", "--out", str(out), "--tokens", "8", "--width", "32",
                    "--depth", "1", "--no-profile")                    # its TensorRT engines pending
    assert built.returncode == 0, built.stderr
    before = build_digest(out)
    refused = run_cli("compile", str(out), "--ray", cluster.address)
    assert refused.returncode == 3, refused.stderr
    lines = [ln for ln in refused.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "target jetson-orin-nx" in lines[0] and "tensorrt backend" in lines[0]
    assert build_digest(out) == before


MIXED = str(ROOT / "tests" / "data" / "profiles" / "mixed.toml")
FARM_GRID = ("--tokens", "8,16", "--width", "32", "--depth", "1,2")


@pytest.fixture(scope="module")
def local_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "build"
    built = run_cli("build", "--out", str(out), "--build-profile", MIXED, *FARM_GRID, "--no-profile")
    assert built.returncode == 0, built.stderr
    return out


def test_build_on_the_farm_is_byte_identical_to_a_local_build(cluster, local_build, tmp_path):
    out = tmp_path / "farm"
    built = run_cli("build", "--out", str(out), "--build-profile", MIXED, *FARM_GRID, "--no-profile",
                    "--ray", cluster.address, "--jobs", "2")
    assert built.returncode == 0, built.stderr
    assert "farm: node" in built.stderr             # progress names the nodes that did the work ...
    exports = [ln for ln in built.stderr.splitlines() if ln.startswith("farm: export ")]
    # ... for each task as it ends: one per (tokens, width), its depths cut from one export
    assert len(exports) == 2 and all(" done on node " in ln for ln in exports)
    assert exports[-1].endswith("2/2 of this stage)")
    assert build_digest(out) == build_digest(local_build)


def test_a_worker_node_killed_mid_build_names_the_unfinished_work_and_a_rerun_completes(local_build, tmp_path):
    import time

    lone = LocalRayCluster()
    try:
        lone.start_head(cpus=0)                     # build work only on the node we kill
        lone.join_device("worker")
        out = tmp_path / "killed"
        proc = subprocess.Popen([sys.executable, "-m", "adaexport", "build", "--out", str(out), "--build-profile",
                                 MIXED, *FARM_GRID, "--no-profile", "--ray", lone.address, "--jobs", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while not list((out / "onnx").glob("t*.onnx")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)                         # the first point came back from the worker: kill it
        lone.kill("worker")
        _, stderr = proc.communicate(timeout=300)
    finally:
        lone.stop()
    assert proc.returncode not in (0, 70), stderr
    assert proc.returncode == 3 and "died" in stderr and "piece(s) of work failed (" in stderr
    assert "Traceback" not in stderr
    assert not (out / "manifest.json").exists()
    resumed = run_cli("build", "--out", str(out), "--build-profile", MIXED, *FARM_GRID, "--no-profile")
    assert resumed.returncode == 0, resumed.stderr
    assert build_digest(out) == build_digest(local_build)
