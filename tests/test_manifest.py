"""The build manifest: schema, both validators, safe paths, atomic writes, file checks."""

import copy
import json
import os
import subprocess
import sys

import pytest

from adaexport import manifest as m
from adaexport.manifest import ManifestError
from adaexport.manifest_records import Manifest

from .conftest import ROOT

ENGINE_BYTES = b"not really an onnx model\n"
WEIGHTS_BYTES = b"\x00\x01shared weights\x02"


def minimal_manifest(engine_sha256: str, weights_sha256: str) -> dict:
    """The smallest valid manifest: one engine, shared weights, no optional sections."""
    return {
        "schema": "adaexport.manifest/1",
        "tool": {"name": "adaexport", "version": "0.1.0"},
        "created": "2025-01-31T12:00:00Z",
        "model": {
            "name": "demo",
            "sha256": "ab" * 32,
            "task": "classification",
            "attention": "full",
            "input": {
                "name": "image", "shape": [1, 1, 28, 28], "dtype": "float32", "layout": "NCHW",
                "preprocessing": {"resize": 32, "crop": 28, "mean": [0.5], "std": [0.5], "interpolation": "bicubic"},
            },
            "outputs": [{"name": "logits", "shape": [1, 10], "dtype": "float32"}],
            "trained_grid": {"tokens": [16, 32], "widths": [32, 64], "depths": [1, 2]},
        },
        "device": {
            "target": "host-cpu",
            "host": {"system": "Linux", "machine": "x86_64", "processor": "x86_64", "python": "3.11.7", "cpu_count": 4},
            "backends": {"onnxruntime": "1.20.1"},
        },
        "weights": {"file": "weights.bin", "sha256": weights_sha256, "size": len(WEIGHTS_BYTES)},
        "engines": [{
            "id": "t32_w64_d2",
            "point": {"tokens": 32, "width": 64, "depth": 2},
            "backend": "onnxruntime",
            "precision": "fp32",
            "file": "engines/t32_w64_d2.onnx",
            "sha256": engine_sha256,
            "size": len(ENGINE_BYTES),
            "flops": 12_300_000,
            "params": 45_678,
            "parity": {
                "max_abs": 3.1e-6, "max_rel": 1.2e-5, "top1_agreement": 1.0, "samples": 64,
                "tolerance": {"max_abs": 1e-4, "min_top1_agreement": 0.99}, "passed": True,
            },
        }],
    }


@pytest.fixture
def build(tmp_path):
    """A real build directory with an engine file and a weights file, and its manifest data."""
    directory = tmp_path / "build"
    (directory / "engines").mkdir(parents=True)
    (directory / "engines" / "t32_w64_d2.onnx").write_bytes(ENGINE_BYTES)
    (directory / "weights.bin").write_bytes(WEIGHTS_BYTES)
    data = minimal_manifest(m.sha256_file(directory / "engines" / "t32_w64_d2.onnx"),
                            m.sha256_file(directory / "weights.bin"))
    return directory, data


@pytest.fixture
def valid():
    return minimal_manifest("cd" * 32, "ef" * 32)


def engine(data, i=0):
    return data["engines"][i]


def _dup(d):
    d["engines"].append(copy.deepcopy(engine(d)))


# (name, mutation, JSON path the error must name)
BROKEN = [
    ("missing top-level field", lambda d: d.pop("model"), "$: missing required field \"model\""),
    ("missing nested field", lambda d: engine(d)["point"].pop("tokens"), "$.engines[0].point: missing required field \"tokens\""),
    ("missing parity", lambda d: engine(d).pop("parity"), "$.engines[0]: missing required field \"parity\""),
    ("tokens as string", lambda d: engine(d)["point"].update(tokens="32"), "$.engines[0].point.tokens"),
    ("tokens zero", lambda d: engine(d)["point"].update(tokens=0), "$.engines[0].point.tokens"),
    ("tokens bool", lambda d: engine(d)["point"].update(tokens=True), "$.engines[0].point.tokens"),
    ("size negative", lambda d: engine(d).update(size=-1), "$.engines[0].size"),
    ("flops float", lambda d: engine(d).update(flops=1.5), "$.engines[0].flops"),
    ("engines not a list", lambda d: d.update(engines={}), "$.engines"),
    ("manifest not an object", lambda d: [], "$: expected object"),
    ("bad engine sha256", lambda d: engine(d).update(sha256="abc123"), "$.engines[0].sha256"),
    ("non-hex sha256", lambda d: d["weights"].update(sha256="g" * 64), "$.weights.sha256"),
    ("unknown schema id", lambda d: d.update(schema="adaexport.manifest/2"), "$.schema"),
    ("duplicate engine ids", _dup, "$.engines[1].id: duplicate engine id"),
    ("unknown precision", lambda d: engine(d).update(precision="fp8"), "$.engines[0].precision"),
    ("unknown status", lambda d: engine(d).update(status="done"), "$.engines[0].status"),
    ("unknown task", lambda d: d["model"].update(task="detection"), "$.model.task"),
    ("bad created", lambda d: d.update(created="2025-01-31 12:00"), "$.created"),
    ("non-UTC created", lambda d: d.update(created="2025-01-31T12:00:00+02:00"), "$.created"),
    ("input shape rank", lambda d: d["model"]["input"].update(shape=[1, 28, 28]), "$.model.input.shape"),
    ("input layout", lambda d: d["model"]["input"].update(layout="NHWC"), "$.model.input.layout"),
    ("zero std", lambda d: d["model"]["input"]["preprocessing"].update(std=[0]), "$.model.input.preprocessing.std[0]"),
    ("extra field in point", lambda d: engine(d)["point"].update(heads=4), "$.engines[0].point: unexpected field"),
    ("parity agreement > 1", lambda d: engine(d)["parity"].update(top1_agreement=1.5), "$.engines[0].parity.top1_agreement"),
    ("parity passed not bool", lambda d: engine(d)["parity"].update(passed="yes"), "$.engines[0].parity.passed"),
    ("backend version not str", lambda d: d["device"]["backends"].update(openvino=2024), "$.device.backends.openvino"),
    ("weights without hash", lambda d: d["weights"].pop("sha256"), "$.weights: missing required field"),
    ("absolute engine path", lambda d: engine(d).update(file="/etc/x.onnx"), "$.engines[0].file: unsafe path \"/etc/x.onnx\""),
    ("dotdot weights path", lambda d: d["weights"].update(file="../w.bin"), "$.weights.file: unsafe path \"../w.bin\""),
    ("backslash path", lambda d: engine(d).update(file="engines\\x.onnx"), "$.engines[0].file"),
    ("drive letter path", lambda d: engine(d).update(file="C:/x.onnx"), "$.engines[0].file"),
    ("pareto unknown id", lambda d: d.update(pareto={"maxn": ["nope"]}), "$.pareto.maxn[0]: unknown engine id"),
    ("profile not object", lambda d: engine(d).update(profile=[]), "$.engines[0].profile"),
    ("NaN parity", lambda d: engine(d)["parity"].update(max_rel=float("nan")), "$.engines[0].parity.max_rel"),
    ("non-JSON value", lambda d: engine(d).update(extra={"s": {1, 2}}), "$.engines[0].extra.s"),
    ("weight sharing without why", lambda d: engine(d).update(weight_sharing={"group": None}),
     "$.engines[0].weight_sharing: missing required field \"how\""),
    ("weight sharing group empty", lambda d: engine(d).update(weight_sharing={"group": "", "how": "x"}),
     "$.engines[0].weight_sharing.group"),
    ("negative near-ties", lambda d: engine(d)["parity"].update(near_ties=-1), "$.engines[0].parity.near_ties"),
    ("negative tie margin", lambda d: engine(d)["parity"]["tolerance"].update(tie_margin=-0.1),
     "$.engines[0].parity.tolerance.tie_margin"),
]

# Variants both validators must accept.
ACCEPTED = [
    ("parity checked on the device against an engine", lambda d: engine(d)["parity"].update(reference="t8-ort-fp32")),
    ("near-ties and their margin", lambda d: (engine(d)["parity"].update(near_ties=3),
                                              engine(d)["parity"]["tolerance"].update(tie_margin=0.1))),
    ("every file an engine reads", lambda d: engine(d).update(files=[{"file": engine(d)["file"], "sha256": "ab" * 32,
                                                                      "size": 1}])),
    ("accuracy per device", lambda d: engine(d).update(accuracies={"x86-cpu:epyc:12345678": {"top1": 0.5}})),
    ("weights null", lambda d: d.update(weights=None)),
    ("parity null", lambda d: engine(d).update(parity=None)),
    ("status pending", lambda d: engine(d).update(status="pending")),
    ("tuple shape", lambda d: d["model"]["input"].update(shape=(1, 1, 28, 28))),
    ("extra top-level section", lambda d: d.update(profiles={"jetson": {"maxn": {}}})),
    ("extra engine and device fields", lambda d: (engine(d).update(notes="x"), d["device"].update(jetpack="6.0"))),
    ("optional engine sections", lambda d: engine(d).update(
        op_types=["MatMul", "Softmax"], profile={"maxn": {"latency_ms": {"p50": 1.0}}},
        accuracy={"dataset": "fmnist", "top1": 0.9}, extra={"any": [1, "x"]})),
    ("pareto and class names", lambda d: (d.update(pareto={"maxn": ["t32_w64_d2"], "15W": []}),
                                          d["model"].update(class_names=[str(i) for i in range(10)]))),
    ("features task", lambda d: (d["model"].update(task="classification+features", attention="block"),
                                 d["model"]["outputs"].append({"name": "features", "shape": [1, 16], "dtype": "float32"}))),
    ("uppercase sha256, offset UTC", lambda d: (engine(d).update(sha256="CD" * 32), d.update(created="2025-01-31T12:00:00.5+00:00"))),
    ("unknown cpu count", lambda d: d["device"]["host"].update(cpu_count=None)),
    ("weight sharing", lambda d: engine(d).update(weight_sharing={"group": "onnxruntime-prepacked", "how": "mapped"})),
    ("an engine that holds its own weights", lambda d: engine(d).update(weight_sharing={"group": None, "how": "x"})),
    ("the shared-tensors table of an older build", lambda d: engine(d).update(shared_tensors=[
        {"name": "w", "offset": 0, "length": 4, "dtype": "float32", "shape": [1]}])),
]

def read_records(data):
    """What the runtime's stdlib reader checks: the records' own field checks."""
    return Manifest.from_json(m._to_json(data))


VALIDATORS = [pytest.param(read_records, id="records"),
              pytest.param(m.validate, id="jsonschema")]


def mutated(data, mutation):
    data = copy.deepcopy(data)
    result = mutation(data)
    return result if isinstance(result, list) else data


@pytest.mark.parametrize("validator", VALIDATORS)
def test_minimal_manifest_is_valid(valid, validator):
    validator(valid)
    m.validate(valid)


@pytest.mark.parametrize("validator", VALIDATORS)
@pytest.mark.parametrize("name,mutation,where", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_manifests_are_rejected_by_both_validators(valid, validator, name, mutation, where):
    data = mutated(valid, mutation)
    with pytest.raises(ManifestError) as info:
        validator(data)
    message = str(info.value)
    assert where in message
    assert "\n" not in message


@pytest.mark.parametrize("validator", VALIDATORS)
@pytest.mark.parametrize("name,mutation", ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_valid_variants_are_accepted_by_both_validators(valid, validator, name, mutation):
    validator(mutated(valid, mutation))


def test_unknown_schema_id_is_named_before_other_problems(valid):
    data = {"schema": "adaexport.manifest/2", "engines": "whatever"}
    for validator in (read_records, m.validate):
        with pytest.raises(ManifestError, match=r"unsupported manifest schema \"adaexport.manifest/2\""):
            validator(data)


def test_schema_file_is_a_valid_json_schema():
    from jsonschema import Draft202012Validator

    schema = m.load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema"]["const"] == m.SCHEMA_ID
    schema["title"] = "changed"  # callers get a copy
    assert m.load_schema()["title"] != "changed"


@pytest.mark.parametrize("name,mutation", ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_records_write_back_what_they_read(valid, name, mutation):
    """The records are a typed view, not a new format: every field (modelled or not) comes
    back, in the order it was read."""
    data = m._to_json(mutated(valid, mutation))
    back = Manifest.from_json(data).to_json()
    assert back == data
    assert json.dumps(back) == json.dumps(data)


def test_records_type_the_fields_consumers_use(valid):
    engine(valid).update(profile={"x86-cpu:a:1": {"default": {"latency_ms": {"p50": 1.5, "p90": 2},
                                                                "memory": {"rss_bytes": 10, "device_bytes": 5}}}},
                         accuracy={"top1": 0.5}, accuracies={"x86-cpu:a:1": {"top1": 0.75}})
    manifest = Manifest.from_json(valid)
    record = manifest.engines[0]
    assert record.point.tokens == 32 and record.ready and record.parity.passed
    assert record.profile_at("x86-cpu:a:1").latency("p90") == 2.0
    assert record.profile_at("x86-cpu:a:1").memory_bytes() == 15
    assert record.profile_at("x86-cpu:a:1", "MAXN") is None
    assert record.accuracy_on("x86-cpu:a:1") == 0.75 and record.accuracy_on("other") == 0.5
    assert manifest.default_device() == "x86-cpu:a:1"   # not the own target, but the only one profiled
    assert manifest.resolve_device("x86-cpu") == "x86-cpu:a:1"
    record.accuracy.top1 = 0.25                   # consumers change records, the writer writes them
    assert manifest.to_json()["engines"][0]["accuracy"] == {"top1": 0.25}


# --------------------------------------------------------------------------- read / write


def test_round_trip(build):
    directory, data = build
    path = m.write_manifest(directory, data)
    assert path == directory / m.MANIFEST_NAME
    assert m.read_manifest(directory) == data
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and json.loads(text) == data
    assert path.stat().st_mode & 0o777 == 0o644
    assert m.verify_files(directory, data) == []


def test_write_normalises_tuples(build):
    directory, data = build
    data["model"]["input"]["shape"] = (1, 1, 28, 28)
    m.write_manifest(directory, data)
    assert m.read_manifest(directory)["model"]["input"]["shape"] == [1, 1, 28, 28]


def test_write_accepts_numpy_scalars(build):
    np = pytest.importorskip("numpy")
    directory, data = build
    engine(data).update(flops=np.int64(12_300_000), params=np.int32(45_678))
    engine(data)["parity"].update(max_abs=np.float32(0.5), top1_agreement=np.float64(1.0))
    m.write_manifest(directory, data)
    back = m.read_manifest(directory)
    assert type(engine(back)["flops"]) is int and engine(back)["flops"] == 12_300_000
    assert engine(back)["parity"]["max_abs"] == 0.5


def test_read_missing_directory_manifest_and_bad_json(tmp_path):
    with pytest.raises(ManifestError, match="no such build directory"):
        m.read_manifest(tmp_path / "nope")
    with pytest.raises(ManifestError, match="manifest.json: not found"):
        m.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"schema": "adaexport.manifest/1",')
    with pytest.raises(ManifestError, match="invalid JSON .* line 1"):
        m.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"schema": 1, "schema": 2}')
    with pytest.raises(ManifestError, match="duplicate key 'schema'"):
        m.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"x": NaN}')
    with pytest.raises(ManifestError, match="NaN"):
        m.read_manifest(tmp_path)


def test_read_reports_schema_problems_with_the_manifest_path(build):
    directory, data = build
    engine(data)["point"]["tokens"] = "32"
    (directory / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError) as info:
        m.read_manifest(directory)
    assert str(directory / "manifest.json") in str(info.value)
    assert "$.engines[0].point.tokens" in str(info.value)


def _write_raw(directory, data):
    """Write a manifest bypassing write_manifest (which would refuse it)."""
    (directory / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize("rel", ["/abs/x.onnx", "../x.onnx", "a/../../x", "engines/../x.onnx", "C:/x.onnx",
                                 "engines\\x.onnx"])
def test_unsafe_paths_are_rejected_on_read(build, rel):
    directory, data = build
    engine(data)["file"] = rel
    _write_raw(directory, data)
    with pytest.raises(ManifestError) as info:
        m.read_manifest(directory)
    assert json.dumps(rel) in str(info.value)
    assert "$.engines[0].file" in str(info.value)


def test_absolute_path_to_a_real_file_is_rejected(build, tmp_path):
    directory, data = build
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(ENGINE_BYTES)
    data["weights"]["file"] = str(outside)
    _write_raw(directory, data)
    with pytest.raises(ManifestError, match="unsafe path") as info:
        m.read_manifest(directory)
    assert str(outside) in str(info.value)


def test_symlinks_resolving_outside_are_rejected(build, tmp_path):
    directory, data = build
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.onnx").write_bytes(ENGINE_BYTES)
    (directory / "link.onnx").symlink_to(outside / "x.onnx")
    (directory / "linkdir").symlink_to(outside, target_is_directory=True)
    for rel in ("link.onnx", "linkdir/x.onnx"):
        engine(data)["file"] = rel
        _write_raw(directory, data)
        with pytest.raises(ManifestError, match="outside the build directory") as info:
            m.read_manifest(directory)
        assert json.dumps(rel) in str(info.value)
        with pytest.raises(ManifestError, match="outside the build directory"):
            m.write_manifest(directory, data)
        assert any(json.dumps(rel) in p for p in m.verify_files(directory, data))


def test_symlinks_inside_are_accepted(build):
    directory, data = build
    (directory / "alias.onnx").symlink_to("engines/t32_w64_d2.onnx")
    engine(data)["file"] = "alias.onnx"
    m.write_manifest(directory, data)
    assert m.read_manifest(directory) == data
    assert m.verify_files(directory, data) == []


def test_safe_relative_path(tmp_path):
    assert m.safe_relative_path(tmp_path, "engines/a.onnx") == tmp_path / "engines" / "a.onnx"
    assert m.safe_relative_path(tmp_path, "./a.onnx") == tmp_path / "a.onnx"
    for rel in ("", ".", "/a", "..", "a/..", "../a", "a/../../b", "C:a", "a\\b", "a\x00b"):
        with pytest.raises(ManifestError, match="unsafe path"):
            m.safe_relative_path(tmp_path, rel)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(ManifestError, match="unsafe path"):
        m.safe_relative_path(tmp_path, "loop/x")


def _listing(directory):
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("breakage", [
    lambda d: engine(d)["point"].update(tokens=0),           # fails validation
    lambda d: engine(d).update(extra={"when": object()}),    # not serialisable
    lambda d: engine(d)["parity"].update(max_abs=float("inf")),
    lambda d: engine(d).update(file="../escape.onnx"),
], ids=["invalid", "not-serialisable", "infinite", "unsafe-path"])
def test_failed_write_leaves_previous_manifest_untouched(build, breakage):
    directory, data = build
    path = m.write_manifest(directory, data)
    before = path.read_bytes()
    listing = _listing(directory)
    broken = copy.deepcopy(data)
    breakage(broken)
    with pytest.raises(ManifestError):
        m.write_manifest(directory, broken)
    assert path.read_bytes() == before
    assert _listing(directory) == listing


def test_failed_rename_leaves_no_temp_file(build):
    directory, data = build
    (directory / "manifest.json").mkdir()  # os.replace onto a directory fails
    listing = _listing(directory)
    with pytest.raises(ManifestError, match="cannot write"):
        m.write_manifest(directory, data)
    assert _listing(directory) == listing
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_overwrite_replaces_and_keeps_mode(build):
    directory, data = build
    path = m.write_manifest(directory, data)
    os.chmod(path, 0o640)
    data["engines"][0]["status"] = "pending"
    m.write_manifest(directory, data)
    assert m.read_manifest(directory)["engines"][0]["status"] == "pending"
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in directory.iterdir() if p.name.startswith(".manifest")] == []


# --------------------------------------------------------------------------- files


def test_sha256_file(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    assert m.sha256_file(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_verify_files_detects_tampering_and_missing_files(build):
    directory, data = build
    assert m.verify_files(directory, data) == []
    engine_file = directory / "engines" / "t32_w64_d2.onnx"

    engine_file.write_bytes(ENGINE_BYTES.upper())  # same size, other content
    problems = m.verify_files(directory, data)
    assert len(problems) == 1 and "t32_w64_d2" in problems[0] and "sha256" in problems[0]

    engine_file.write_bytes(ENGINE_BYTES + b"more")
    problems = m.verify_files(directory, data)
    assert len(problems) == 1 and "t32_w64_d2" in problems[0] and "bytes" in problems[0]

    engine_file.unlink()
    (directory / "weights.bin").write_bytes(b"x" + WEIGHTS_BYTES[1:])
    problems = m.verify_files(directory, data)
    assert len(problems) == 2
    assert any(p.startswith("weights:") and "sha256" in p for p in problems)
    assert any("t32_w64_d2" in p and "missing" in p for p in problems)

    engine(data)["status"] = "pending"  # a pending engine's file need not exist yet
    assert len(m.verify_files(directory, data)) == 1


# --------------------------------------------------------------------------- display


def test_engines_table_renders(valid):
    from rich.console import Console

    from adaexport.render import engines_table

    second = copy.deepcopy(engine(valid))
    second.update(id="t16_w32_d1", point={"tokens": 16, "width": 32, "depth": 1}, precision="fp16",
                  status="pending", size=3 * 1024 * 1024, flops=2_500_000_000, parity=None)
    failing = copy.deepcopy(engine(valid))
    failing.update(id="t32_w64_d1_int8", precision="int8")
    failing["parity"].update(passed=False, top1_agreement=0.875)
    tied = copy.deepcopy(engine(valid))
    tied.update(id="t32_w64_d1_bf16", precision="bf16")
    tied["parity"].update(top1_agreement=0.75, near_ties=2)
    valid["engines"] += [second, failing, tied]
    m.validate(valid)
    console = Console(record=True, width=200)
    console.print(engines_table(valid))
    text = console.export_text()
    for expected in ("t32_w64_d2", "t16_w32_d1", "t32_w64_d1_int8", "12.3M", "2.5G", "45.7K", "3.0 MiB",
                     "pass", "FAIL", "87.5%", "pending", "FLOPs", "parity", "75.0% (2 near-ties)"):
        assert expected in text, expected
    assert text.count("near-ties") == 1


def test_human_units():
    from adaexport.render import human_bytes, human_count

    assert human_count(999) == "999"
    assert human_count(12_345_678) == "12.3M"
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"


# --------------------------------------------------------------------------- the device side


def test_module_needs_only_the_standard_library(build):
    """On a device (no jsonschema, rich, numpy...), import, validate, read and write still work."""
    directory, data = build
    m.write_manifest(directory, data)
    script = f"""
import sys
for name in ("jsonschema", "rich", "numpy", "typer", "torch"):
    sys.modules[name] = None  # makes `import name` fail
from pathlib import Path
import adaexport.manifest as m
assert not m.jsonschema_available()
d = Path({str(directory)!r})
data = m.read_manifest(d)
m.write_manifest(d, data)
assert m.verify_files(d, data) == []
data["engines"][0]["point"]["tokens"] = "32"
try:
    m.validate(data)
except m.ManifestError as exc:
    print(exc)
loaded = sorted(n for n in sys.modules if n.split(".")[0] in ("jsonschema", "rich", "numpy", "typer", "torch")
                and sys.modules[n] is not None)
print("third-party:", loaded)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "$.engines[0].point.tokens: expected integer" in result.stdout
    assert "third-party: []" in result.stdout
