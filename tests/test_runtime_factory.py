"""What is profiled is what serves: one engine factory, session options recorded with every
profile, and a runtime that does not trust a profile of another kind of session."""

from __future__ import annotations

import numpy as np
import pytest

from adaexport.manifest import read_manifest
from adaexport.measurements import profile_of

from .conftest import DATA, run_cli
from .runtime_support import DEVICE, copy_family

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """One point, every x86-cpu engine kind (ONNX Runtime fp32/int8, OpenVINO fp32/fp16/int8),
    profiled on this machine with tiny settings."""
    out = tmp_path_factory.mktemp("factory") / "fam"
    build = run_cli("build", "--out", str(out), "--tokens", "8", "--width", "32", "--depth", "1",
                    "--profile", str(DATA / "profiles" / "mixed.toml"))
    assert build.returncode == 0, build.stderr[-2000:]
    prof = run_cli("profile", str(out), "--device", DEVICE, "--min-iterations", "3", "--min-duration", "0.001",
                   "--warmup", "0.001", "--rounds", "1")
    assert prof.returncode == 0, prof.stderr[-2000:]
    return out


def test_every_profile_records_the_session_it_measured(profiled):
    for entry in read_manifest(profiled)["engines"]:
        session = profile_of(entry, DEVICE)["session"]
        assert session["backend"] == entry["backend"] and isinstance(session["threads"], int)
        if entry["backend"] == "onnxruntime":
            assert session["shared_weights"] is False and session["prepacking"] is True


def test_the_runtime_serves_with_the_sessions_that_were_profiled(profiled):
    from adaexport.backends import open_engine
    from adaexport.runtime import Runtime

    manifest = read_manifest(profiled)
    with Runtime(profiled, preload="all", device=DEVICE) as rt:
        assert rt.status.untrusted == {}
        for entry in manifest["engines"]:
            recorded = profile_of(entry, DEVICE)["session"]
            served = rt.pool.get(entry["id"]).options
            assert served == recorded, entry["id"]
            direct = open_engine(profiled, entry, threads=recorded["threads"])     # the factory itself
            assert direct.options == served, entry["id"]
            x = np.zeros(rt.input_shape, np.float32)
            np.testing.assert_array_equal(direct.run({"image": x})[0], rt.pool.get(entry["id"]).run({"image": x})[0])
            direct.close()


def test_a_profile_of_another_session_kind_is_not_used_silently(profiled, tmp_path):
    from adaexport.runtime import Limits, Runtime

    directory = copy_family(profiled, tmp_path / "fam")
    family = [e["id"] for e in read_manifest(directory)["engines"] if "extra" not in e]
    with Runtime(directory, preload="lazy", device=DEVICE, share_weights=True,
                 limits=Limits(latency_ms=1e6)) as rt:
        untrusted = rt.status.untrusted
        assert set(untrusted) == set(family)
        assert all("shared weights False -> True" in why for why in untrusted.values())
        candidates = {c.id: c for c in rt._candidates()}
        assert all(candidates[e].latency_ms is None for e in family)            # its numbers are not used
        assert all(candidates[e].latency_ms for e in candidates if e not in family)
    with Runtime(directory, preload="lazy", device=DEVICE, threads=1) as rt:
        profiled_threads = {e["id"]: profile_of(e, DEVICE)["session"]["threads"]
                            for e in read_manifest(directory)["engines"]}
        assert set(rt.status.untrusted) == {e for e, t in profiled_threads.items() if t != 1}
