"""Reliability on a real mixed family (ONNX Runtime + OpenVINO engines): concurrent serving,
every file an engine reads hashed and verified, a gate NaN cannot open, reproducible
builds that resume byte for byte after SIGKILL, and no staging left behind."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from adaexport.manifest import read_manifest

from .conftest import DATA, run_cli
from .runtime_support import copy_family, write_measurements

pytestmark = pytest.mark.slow

MIXED = ("--build-profile", str(DATA / "profiles" / "mixed.toml"))
GRID = ("--tokens", "8", "--width", "32", "--depth", "1,2")


def build(out: Path, *extra: str) -> Path:
    result = run_cli("build", "--out", str(out), *GRID, *MIXED, *extra)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def artifact_hashes(directory: Path) -> dict[str, str]:
    """Every file of a build but the cache folders (the build's own and OpenVINO's compile
    cache, whose blobs are the plugin's business) and the manifest (it holds a timestamp)."""
    skip = {".adaexport", ".openvino-cache"}
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*"))
            if p.is_file() and not skip & set(p.relative_to(directory).parts) and p.name != "manifest.json"}


def without_created(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k != "created"}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("mixed") / "fam")


@pytest.fixture(scope="module")
def images():
    from adaexport.datasets import model_inputs
    from adaexport.demo import DEMO_MODEL
    from adaexport.model import AdaPerceiverConfig

    x, _ = model_inputs("demo", AdaPerceiverConfig.from_file(DEMO_MODEL / "config.json"), limit=16)
    return x


def engines_of(directory: Path, backend: str | None = None) -> list[dict]:
    return [e for e in read_manifest(directory)["engines"] if backend is None or e["backend"] == backend]


# --------------------------------------------------------------------------- 1. threads


def test_one_openvino_session_serves_threads_with_their_own_outputs(mixed, images):
    from adaexport.backends import open_engine

    entry = next(e for e in engines_of(mixed, "openvino") if e["precision"] == "fp32")
    session = open_engine(mixed, entry)
    expected = [session.run({"image": images[i:i + 1]})[0] for i in range(len(images))]
    errors, wrong = [], []

    def worker(seed: int):
        order = np.random.default_rng(seed).integers(0, len(images), 300)
        try:
            for i in order:
                out = session.run({"image": images[i:i + 1]})[0]
                if not np.array_equal(out, expected[i]):
                    wrong.append(int(i))
        except Exception as exc:  # noqa: BLE001 - any error is the failure
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert not wrong, f"{len(wrong)} outputs belonged to another thread's input"


@pytest.mark.parametrize("backends", [["openvino"], None], ids=["openvino", "mixed"])
def test_runtime_threads_with_openvino_engines_while_limits_flip(mixed, images, tmp_path, backends):
    """4 threads infer distinct images while a fifth flips the latency limit; no call raises
    and every output is what the engine it names gives for that image, run alone."""
    from adaexport.runtime import Runtime

    directory = copy_family(mixed, tmp_path / "fam")
    entries = sorted((e for e in engines_of(directory) if backends is None or e["backend"] in backends),
                     key=lambda e: (e["flops"], e["id"]))
    latency = {e["id"]: 1.0 + i for i, e in enumerate(entries)}
    write_measurements(directory, latency_p90=latency, accuracy={e: 0.8 + 0.001 * v for e, v in latency.items()})
    with Runtime(directory, preload="all", backends=backends) as rt:
        assert set(rt.engines()) == set(latency)
        reference = {(e, i): rt.pool.get(e).run({"image": images[i:i + 1]})[0]
                     for e in rt.engines() for i in range(len(images))}
        stop = threading.Event()
        results, errors = [], []

        def worker(seed: int):
            rng = np.random.default_rng(seed)
            try:
                while not stop.is_set():
                    i = int(rng.integers(0, len(images)))
                    r = rt.infer(images[i])
                    results.append((r.engine, i, r.outputs[0]))
            except Exception as exc:  # noqa: BLE001
                errors.append(repr(exc))

        threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        limits = sorted(latency.values())
        deadline = time.monotonic() + 20                 # a bound on the test, not a measurement
        flips = 0
        while (len(results) < 2000 or flips < 200) and time.monotonic() < deadline:
            rt.set_limits(latency_ms=limits[flips % len(limits)] + 0.01)
            flips += 1
            time.sleep(0.001)
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors[:3]
    served = {e for e, _, _ in results}
    assert len(served) >= 2 and any(e.split("-")[-2] == "openvino" for e in served)
    mismatched = [(e, i) for e, i, out in results if not np.array_equal(out, reference[(e, i)])]
    assert not mismatched, f"{len(mismatched)} of {len(results)} outputs were not their engine's"


# --------------------------------------------------------------------------- 3. hashes


def test_every_file_an_engine_reads_is_in_the_manifest(mixed):
    manifest = read_manifest(mixed)
    for entry in manifest["engines"]:
        recorded = {f["file"] for f in entry["files"]}
        expected = set(entry.get("extra", {}).get("files", [entry["file"]]))
        if "extra" not in entry:
            expected.add(manifest["weights"]["file"])            # the family ONNX reads the shared weights
        elif not entry["file"].endswith(".json"):
            expected.add(entry["file"] + ".json")               # the sidecar holds its session options
        else:              # it owns only its sidecar: it reads the family's files, fp16/bf16 their float16 twins
            point = entry["id"].split("-")[0]
            half = entry["precision"] in ("fp16", "bf16")
            weights = [f for f in expected if f.endswith(".bin")]
            assert entry["file"] in expected and len(weights) == 1, entry["id"]
            assert (weights[0] == manifest["weights"]["file"]) != half, entry["id"]
            assert weights[0].startswith("onnx/weights-fp16-") == half, entry["id"]
            assert [f for f in expected if f.endswith(".onnx")] == [f"onnx/{point}{'.fp16' if half else ''}.onnx"]
        assert recorded == expected, entry["id"]
        for record in entry["files"]:
            data = (mixed / record["file"]).read_bytes()
            assert record["size"] == len(data) and record["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["size"] == sum(f["size"] for f in entry["files"]), entry["id"]   # every byte it reads


def _rewrite_sidecar_hash(sidecar: Path, name: str, data: bytes | None) -> None:
    raw = json.loads(sidecar.read_text())
    if data is None:
        raw["hashes"].pop(name)
    else:
        raw["hashes"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    sidecar.write_text(json.dumps(raw))


@pytest.mark.parametrize("sidecar_edit", ["updated", "deleted"])
def test_an_edited_openvino_bin_is_refused_whatever_its_sidecar_says(mixed, tmp_path, sidecar_edit):
    from adaexport.runtime import Runtime

    directory = copy_family(mixed, tmp_path / "fam")
    entry = next(e for e in engines_of(directory, "openvino") if e["precision"] == "int8")
    xml = directory / entry["file"]
    weights = directory / next(f["file"] for f in entry["files"] if f["file"].endswith("-openvino-int8.bin.xz"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)    # same size, other weights
    weights.write_bytes(bytes(data))
    _rewrite_sidecar_hash(xml.with_name(xml.name + ".json"), weights.name,
                          bytes(data) if sidecar_edit == "updated" else None)
    with Runtime(directory, preload="lazy") as rt:
        assert entry["id"] not in rt.engines()
        assert weights.name in rt.problems[entry["id"]]
        assert len(rt.engines()) == len(engines_of(directory)) - 1    # the rest serve


def test_an_edited_shared_weights_file_refuses_every_engine_that_reads_it(mixed, tmp_path):
    """OpenVINO's float engines read the family's files (no copy of their own): fp32 the
    weights.bin, fp16 its float16 twin; both int8 kinds its int8 twin. An edit of any refuses
    each engine that reads it, and only those, at start-up."""
    from adaexport.runtime import Runtime

    directory = copy_family(mixed, tmp_path / "fam")
    manifest = read_manifest(directory)
    openvino = {e["precision"]: e["id"] for e in engines_of(directory, "openvino")}
    half = next(f["file"] for e in manifest["engines"] if e["id"] == openvino["fp16"] for f in e["files"]
                if "weights-fp16-" in f["file"])
    int8 = next(f["file"] for e in manifest["engines"] if e["id"] == openvino["int8"] for f in e["files"]
                if "weights-int8-" in f["file"])
    ort_int8 = next(e["id"] for e in engines_of(directory, "onnxruntime") if e["precision"] == "int8")
    for shared in (manifest["weights"]["file"], half, int8):
        readers = {e["id"] for e in manifest["engines"] if shared in {f["file"] for f in e["files"]}}
        assert (openvino["fp32"] in readers) == (shared == manifest["weights"]["file"])
        assert (openvino["fp16"] in readers) == (shared == half)
        assert (openvino["int8"] in readers) == (ort_int8 in readers) == (shared == int8)
        weights = directory / shared
        original = weights.read_bytes()
        data = bytearray(original)
        data[len(data) // 2: len(data) // 2 + 64] = bytes(64)       # same size, other weights
        weights.write_bytes(bytes(data))
        with Runtime(directory, preload="lazy") as rt:
            assert readers.isdisjoint(rt.engines()) and readers <= set(rt.problems)
            assert all(Path(shared).name in rt.problems[e] for e in readers)
            assert set(rt.engines()) == {e["id"] for e in manifest["engines"]} - readers   # the rest serve
        weights.write_bytes(original)


def test_weights_swapped_after_a_lazy_start_are_not_served(mixed, tmp_path, images):
    from adaexport.runtime import Runtime, RuntimeUnavailable
    from adaexport.runtime.engine_pool import EngineUnavailable

    directory = copy_family(mixed, tmp_path / "fam")
    weights = directory / read_manifest(directory)["weights"]["file"]
    # every engine reads the family's weights: weights.bin (the family ONNX, OpenVINO fp32), its
    # float16 twin (OpenVINO fp16 and bf16) or its int8 twin (OpenVINO and ONNX Runtime int8)
    shared = {Path(f["file"]).name for e in engines_of(directory) for f in e["files"]
              if f["file"].endswith(".bin") and f["file"].startswith("onnx/")}
    assert len(shared) == 3 and weights.name in shared
    family = [e["id"] for e in engines_of(directory) if shared & {Path(f["file"]).name for f in e["files"]}]
    assert any("-onnxruntime-int8" in e for e in family) and any("-openvino-fp32" in e for e in family)
    assert any("-openvino-int8" in e for e in family) and any("-openvino-fp16" in e for e in family)
    files = [weights.parent / name for name in sorted(shared)]
    for share in (True, False):
        originals = [f.read_bytes() for f in files]
        with Runtime(directory, preload="lazy", share_weights=share) as rt:
            assert set(family) == set(rt.engines())
            for file, original in zip(files, originals):     # after start-up, before any engine opened
                tampered = bytearray(original)
                tampered[:4096] = bytes(4096)
                file.write_bytes(bytes(tampered))
            for engine in family:                            # each family engine is refused as it opens
                with pytest.raises(EngineUnavailable, match="weights"):
                    rt.pool.get(engine)
            with pytest.raises(RuntimeUnavailable, match="weights"):   # none is left to serve
                rt.infer(images[0])
        for file, original in zip(files, originals):
            file.write_bytes(original)


@pytest.mark.parametrize("command", ["eval", "profile"])
def test_eval_and_profile_refuse_a_tampered_build(mixed, tmp_path, command):
    directory = copy_family(mixed, tmp_path / "fam")
    weights = directory / read_manifest(directory)["weights"]["file"]
    data = bytearray(weights.read_bytes())
    data[:4096] = bytes(4096)
    weights.write_bytes(bytes(data))
    before = (directory / "manifest.json").read_bytes()
    args = ["--dataset", "demo", "--limit", "16"] if command == "eval" else \
        ["--min-iterations", "1", "--min-duration", "0.001", "--rounds", "1"]
    result = run_cli(command, str(directory), *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().count("\n") == 0, result.stderr           # one line, before any work
    assert "weights.bin" in result.stderr and "sha256" in result.stderr and "Traceback" not in result.stderr
    assert (directory / "manifest.json").read_bytes() == before


# --------------------------------------------------------------------------- 2. the gate


def test_a_nan_tolerance_cannot_open_the_gate(mixed, tmp_path):
    from adaexport.gate import compare, max_drop_points

    directory = copy_family(mixed, tmp_path / "fam")
    ids = [e["id"] for e in engines_of(directory)]
    write_measurements(directory, accuracy={e: 0.5 for e in ids})
    baseline = copy_family(directory, tmp_path / "base")
    write_measurements(baseline, accuracy={e: 0.9 for e in ids})      # the build lost 40 points
    for value in ("nan", "NaN", "inf", "-1"):
        result = run_cli("check", str(directory), "--baseline", str(baseline), "--max-drop", value)
        assert result.returncode == 2 and "--max-drop" in result.stderr, (value, result.stderr)
        with pytest.raises(ValueError):
            max_drop_points(value)
        with pytest.raises(ValueError):
            compare(read_manifest(directory), read_manifest(baseline), float(value))
    assert run_cli("check", str(directory), "--baseline", str(baseline), "--max-drop", "50").returncode == 0
    plugin = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                             "--adaexport-manifest", str(directory), "--adaexport-baseline", str(baseline),
                             "--adaexport-max-drop", "nan"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert plugin.returncode == 4 and "--adaexport-max-drop" in plugin.stdout + plugin.stderr, plugin.stdout[-2000:]


def test_a_baseline_with_nan_accuracy_is_refused(mixed, tmp_path):
    directory = copy_family(mixed, tmp_path / "fam")
    write_measurements(directory, accuracy={e["id"]: 0.5 for e in engines_of(directory)})
    baseline = tmp_path / "base.json"
    baseline.write_text((directory / "manifest.json").read_text().replace('"top1": 0.5', '"top1": NaN'))
    result = run_cli("check", str(directory), "--baseline", str(baseline))
    assert result.returncode == 2 and "NaN" in result.stderr, result.stderr


# --------------------------------------------------------------------------- 5, 6. reproducible builds


def test_two_builds_in_one_process_give_identical_files(tmp_path):
    """OpenVINO names the nodes it makes from a process-wide counter: the second build of a
    process starts where the first left off, and must still write the same bytes."""
    script = (
        "import sys\nfrom pathlib import Path\n"
        "from adaexport.build import BuildRequest, run_build\nfrom adaexport.progress import QuietReporter\n"
        "for out in sys.argv[2:]:\n"
        "    run_build(BuildRequest(out=Path(out), tokens=[8], widths=[32], depths=[1, 2], profile=sys.argv[1],"
        " measure=False), QuietReporter())\n")
    proc = subprocess.run([sys.executable, "-c", script, MIXED[1], str(tmp_path / "a"), str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = artifact_hashes(tmp_path / "a"), artifact_hashes(tmp_path / "b")
    assert any(name.endswith("-openvino-int8.xml.xz") for name in a)
    assert a == b, sorted(k for k in a if a[k] != b.get(k))
    assert without_created(read_manifest(tmp_path / "a")) == without_created(read_manifest(tmp_path / "b"))


def test_a_recompiled_engine_keeps_its_measurements_and_staging_is_cleaned(mixed, tmp_path):
    directory = copy_family(mixed, tmp_path / "fam")
    shutil.copytree(mixed / ".adaexport", directory / ".adaexport")
    ids = [e["id"] for e in engines_of(directory)]
    write_measurements(directory, latency_p90={e: 1.0 for e in ids}, accuracy={e: 0.75 for e in ids})
    victim = next(e for e in engines_of(directory, "openvino") if e["precision"] == "int8")
    for name in victim["extra"]["files"]:
        (directory / name).unlink()
    shutil.rmtree(directory / ".adaexport" / "cache" / "compile")              # it must be compiled again
    staging = directory / "engines" / ".adaexport-compile-killed"                 # what a killed compile leaves
    staging.mkdir()
    (staging / "half.xml").write_bytes(b"<net")
    for leftover in (directory / ".manifest.json.x1.tmp", directory / "onnx" / ".weights.bin.x2.tmp"):
        leftover.write_bytes(b"partial")
    build(directory)
    rebuilt = {e["id"]: e for e in engines_of(directory)}
    assert rebuilt[victim["id"]]["sha256"] == victim["sha256"]
    assert all(rebuilt[e]["accuracy"]["top1"] == 0.75 and rebuilt[e]["profile"] for e in ids)
    assert not list(directory.rglob("*.tmp")) and not staging.exists()


def test_a_build_killed_five_times_resumes_to_identical_files(tmp_path):
    """SIGKILL at five moments spread over the build (by the cache records it has written,
    as fractions of a clean build's), resuming each time; then every artifact is
    byte-identical to an uninterrupted build's."""
    clean = build(tmp_path / "clean")
    records = lambda d: len(list((d / ".adaexport" / "cache").rglob("*.json"))) if d.exists() else 0  # noqa: E731
    total = records(clean)
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "adaexport", "build", "--out", str(killed), *GRID, *MIXED]
    kills = 0
    for k in range(1, 6):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while proc.poll() is None and records(killed) < k * total / 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 4, "the build finished before it could be killed"
    build(killed)
    assert artifact_hashes(killed) == artifact_hashes(clean)
    assert without_created(read_manifest(killed)) == without_created(read_manifest(clean))
    assert not list(killed.rglob("*.tmp")) and not list(killed.rglob(".adaexport-compile-*"))
