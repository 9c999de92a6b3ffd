"""The top-level targets/ and profiles/ directories reach an installed wheel, and users add
their own through ADAEXPORT_TARGETS_PATH / ADAEXPORT_PROFILES_PATH."""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from .conftest import ROOT, run_cli

LIST = ("from adaexport.targets import list_targets; from adaexport.profiles import available_profiles; "
        "import adaexport; print(adaexport.__file__); print(list_targets()); print(available_profiles())")


@pytest.mark.slow
def test_a_wheel_installs_the_targets_and_profiles(tmp_path):
    pytest.importorskip("setuptools", reason="building a wheel without build isolation needs setuptools")
    source = tmp_path / "src"  # a clean copy: the build leaves nothing in the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                                ".adaexport", "tests", "benchmarks"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w",
                            str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheel").glob("adaexport-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "adaexport/_targets/x86-cpu.toml" in names and "adaexport/_profiles/quick.toml" in names
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:  # what pip install does with a pure-Python wheel
        archive.extractall(site)
    listed = subprocess.run([sys.executable, "-c", LIST], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(site)}, timeout=60)
    assert listed.returncode == 0, listed.stderr
    where, targets, profiles = listed.stdout.splitlines()
    assert where.startswith(str(site))
    assert "jetson-orin-nano" in targets and "x86-cpu" in targets and "'quick'" in profiles


def test_user_targets_and_profiles_on_the_search_paths(tmp_path):
    (tmp_path / "targets").mkdir()
    (tmp_path / "profiles").mkdir()
    x86 = (ROOT / "targets" / "x86-cpu.toml").read_text()
    (tmp_path / "targets" / "my-box.toml").write_text(x86.replace('name = "x86-cpu"', 'name = "my-box"'))
    (tmp_path / "profiles" / "tiny.toml").write_text('[grid]\npreset = "corners"\n[parity]\nsamples = 8\n'
                                                     '[parity.fp32]\nmax_abs = 1e-3\nmin_top1_agreement = 0.9\n')
    env = {"ADAEXPORT_TARGETS_PATH": str(tmp_path / "targets"), "ADAEXPORT_PROFILES_PATH": str(tmp_path / "profiles")}
    listed = run_cli("targets", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "my-box" in listed.stdout and "x86-cpu" in listed.stdout
    out = tmp_path / "b"
    built = run_cli("export", "--out", str(out), "--tokens", "8", "--width", "32", "--depth", "1", "--build-profile",
                    "tiny", "--json", env=env)
    assert built.returncode == 0, built.stderr
    assert '"profile": "tiny"' in (out / "manifest.json").read_text()
