"""What is profiled is what serves: one engine factory, session options recorded with every
profile, and a runtime that does not trust a profile of another kind of session."""

from __future__ import annotations

import numpy as np
import pytest

from adaexport.manifest import read_manifest, read_records, write_manifest
from adaexport.manifest_records import DEFAULT_MODE, EngineRecord

from .conftest import DATA, run_cli
from .runtime_support import DEVICE, copy_family

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """One point, every x86-cpu engine kind (ONNX Runtime fp32/int8, OpenVINO fp32/fp16/int8),
    profiled on this machine with tiny settings."""
    out = tmp_path_factory.mktemp("factory") / "fam"
    build = run_cli("build", "--out", str(out), "--tokens", "8", "--width", "32", "--depth", "1",
                    "--build-profile", str(DATA / "profiles" / "mixed.toml"))
    assert build.returncode == 0, build.stderr[-2000:]
    prof = run_cli("profile", str(out), "--device", DEVICE, "--min-iterations", "3", "--min-duration", "0.001",
                   "--warmup", "0.001", "--rounds", "1")
    assert prof.returncode == 0, prof.stderr[-2000:]
    return out


def here(directory) -> str:
    """The profile key `adaexport profile` used: this machine's identity."""
    (key,) = read_records(directory).profiled_devices()
    return key


def profile_of(entry: dict, device: str) -> dict:
    """An engine entry's profile on `device` (its default mode), as JSON."""
    return EngineRecord.from_json(entry).profile_at(device).to_json()


def test_every_profile_records_the_session_it_measured(profiled):
    for entry in read_manifest(profiled)["engines"]:
        session = profile_of(entry, here(profiled))["session"]
        assert session["backend"] == entry["backend"] and isinstance(session["threads"], int)
        if entry["backend"] == "onnxruntime":
            assert session["shared_weights"] is False and session["prepacking"] is True


def test_the_runtime_serves_with_the_sessions_that_were_profiled(profiled):
    from adaexport.backends import open_engine
    from adaexport.runtime import Runtime

    manifest = read_manifest(profiled)
    sharing_keys = ("shared_weights", "sharing")     # the prepacked cache: same kernels, weights mapped
    with Runtime(profiled, preload="all") as rt:
        assert rt.status.untrusted == {} and rt.status.device_match == "exact" and rt.device == here(profiled)
        for entry in manifest["engines"]:
            recorded = profile_of(entry, rt.device)["session"]
            served = rt.pool.get(entry["id"]).options
            assert {k: v for k, v in served.items() if k not in sharing_keys} == \
                {k: v for k, v in recorded.items() if k not in sharing_keys}, entry["id"]
            family = "extra" not in entry
            assert bool(served.get("sharing")) == family, entry["id"]
            assert rt.status.sharing[entry["id"]].startswith("prepacked" if family else "not shared: "), entry["id"]
            weights = rt.pool.weights() if family else None
            direct = open_engine(profiled, entry, threads=recorded["threads"], weights=weights)   # the factory
            assert direct.options == served, entry["id"]
            x = np.zeros(rt.input_shape, np.float32)
            np.testing.assert_array_equal(direct.run({"image": x})[0], rt.pool.get(entry["id"]).run({"image": x})[0])
            direct.close()


def test_only_the_family_onnx_engines_share_and_the_others_count_in_full(profiled):
    """The manifest records, from each backend, which engines share their weights; the
    runtime's memory counts every engine that holds its own (OpenVINO repacks its weights
    per compiled model, an int8 ONNX Runtime engine quantizes them into its session) at its
    full profile, and says why it does not share."""
    from adaexport.backends.ort_prepacked import GROUP, SHARING
    from adaexport.runtime import Runtime

    engines = read_manifest(profiled)["engines"]
    family = [e["id"] for e in engines if "extra" not in e]
    assert len(family) == 1 and len(engines) == 5
    for entry in engines:
        sharing = entry["weight_sharing"]
        assert sharing == SHARING if entry["id"] in family else sharing["group"] is None, entry["id"]
        if entry["backend"] == "openvino":
            assert "repacks its own copy of its weights" in sharing["how"]
    with Runtime(profiled, preload="all") as rt:
        memory = rt.status.memory
        assert memory.groups == {GROUP: tuple(family)}
        assert set(memory.alone) == {e["id"] for e in engines} - set(family)
        for entry in engines:
            full = EngineRecord.from_json(entry).profile_at(rt.device).memory_bytes()
            if entry["id"] in family:
                assert memory.own_bytes[entry["id"]] == full - memory.shared_bytes[GROUP]   # one engine: all its pages
            else:
                assert memory.own_bytes[entry["id"]] == full
                assert rt.status.sharing[entry["id"]] == entry["weight_sharing"]["how"]
        assert memory.total == sum(EngineRecord.from_json(e).profile_at(rt.device).memory_bytes() for e in engines)


def test_a_profile_of_another_session_kind_is_not_used_silently(profiled, tmp_path):
    from adaexport.runtime import Limits, Runtime

    directory = copy_family(profiled, tmp_path / "fam")
    family = [e["id"] for e in read_manifest(directory)["engines"] if "extra" not in e]
    manifest = read_manifest(directory)
    for entry in manifest["engines"]:                # as the former unpacked sharing recorded its profiles
        if entry["id"] in family:
            entry["profile"][here(directory)][DEFAULT_MODE]["session"]["prepacking"] = False
    write_manifest(directory, manifest)
    with Runtime(directory, preload="lazy", limits=Limits(latency_ms=1e6)) as rt:
        untrusted = rt.status.untrusted
        assert set(untrusted) == set(family)
        assert all("prepacking off -> on" in why for why in untrusted.values())
        candidates = {c.id: c for c in rt._candidates()}
        assert all(candidates[e].latency_ms is None for e in family)            # its numbers are not used
        assert all(candidates[e].latency_ms for e in candidates if e not in family)
    with Runtime(directory, preload="lazy", threads=1) as rt:
        profiled_threads = {e["id"]: profile_of(e, rt.device)["session"]["threads"]
                            for e in read_manifest(directory)["engines"]}
        assert set(rt.status.untrusted) == {e for e, t in profiled_threads.items() if t != 1}


def test_a_profile_from_another_machine_is_not_used_silently(profiled, tmp_path):
    """The same target, another CPU: the runtime takes those numbers only as the target
    class's, and says so; an exact match wins when both are there."""
    from adaexport.device_identity import identity_key
    from adaexport.runtime import Runtime

    directory = copy_family(profiled, tmp_path / "fam")
    manifest = read_manifest(directory)
    mine = here(directory)
    facts = dict(manifest["profiling"][mine]["identity"], cpu="Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
                 isa=["amx_tile", "avx2", "avx512_vnni", "fma"])
    other = identity_key(facts)
    manifest["profiling"][other] = {**manifest["profiling"].pop(mine), "identity": facts}
    for engine in manifest["engines"]:
        engine["profile"] = {other: engine["profile"].pop(mine)}
    manifest.pop("pareto", None)
    write_manifest(directory, manifest)
    with Runtime(directory, preload="lazy") as rt:
        assert rt.device == other and rt.status.device_match == "target class"
    manifest["profiling"][mine] = read_manifest(profiled)["profiling"][mine]
    for engine, original in zip(manifest["engines"], read_manifest(profiled)["engines"]):
        engine["profile"][mine] = original["profile"][mine]
    write_manifest(directory, manifest)
    with Runtime(directory, preload="lazy") as rt:
        assert rt.device == mine and rt.status.device_match == "exact"


def test_the_runtime_ranks_by_the_accuracy_measured_on_its_device(profiled, tmp_path):
    """int8 accuracy differs between CPUs: the accuracy evaluated on the matched device wins
    over one from another machine."""
    from adaexport.runtime import Runtime

    directory = copy_family(profiled, tmp_path / "fam")
    manifest = read_manifest(directory)
    mine = here(directory)
    ids = sorted(e["id"] for e in manifest["engines"])
    for i, engine in enumerate(manifest["engines"]):
        rank = ids.index(engine["id"])
        engine["accuracy"] = {"dataset": "demo", "samples": 10, "top1": 0.5 + 0.01 * rank, "device": "x86-cpu:other:0"}
        engine["accuracies"] = {"x86-cpu:other:0": engine["accuracy"],
                                mine: {**engine["accuracy"], "top1": 0.9 - 0.01 * rank, "device": mine}}
    write_manifest(directory, manifest)
    with Runtime(directory, preload="lazy") as rt:
        assert rt.device == mine and rt.status.engine == ids[0]          # best here, worst on the other machine
    with Runtime(directory, preload="lazy", device="x86-cpu:other:0") as rt:
        assert rt.status.engine == ids[-1]
