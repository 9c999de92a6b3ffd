"""The bad-input corpus (issue 16): every command, fed what it must refuse, exits 2 (the
pytest plugin: pytest's usage-error code 4) with exactly one line on stderr, no traceback,
and nothing written: a build's output directory is not created, an existing build and the
corpus's own files are left exactly as they were.

Most cases run in this process through typer's CliRunner against one small build made
once per module (torch is imported once); a handful run as real subprocesses to show the
console entry point prints the same single line. User text is printed literally: paths
holding rich markup such as `[/]` or `[bold]` appear as written.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import types

import pytest
from typer.testing import CliRunner

from adaexport.cli import app

from .bad_inputs_support import (CONFIGS, ORT_FP32, PROFILES, TARGETS, immutable, make_bad_files,
                                 make_manifest_variants, snapshot)
from .conftest import run_cli

runner = CliRunner()
SMALL = ["--tokens", "8", "--width", "32", "--depth", "1,2", "--build-profile", str(ORT_FP32)]


def invoke(*args) -> types.SimpleNamespace:
    result = runner.invoke(app, [str(a) for a in args])
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    return types.SimpleNamespace(code=result.exit_code, stdout=result.stdout, stderr=result.stderr,
                                 crashed=result.exception if crashed else None)


def assert_one_line_error(code: int, stderr: str, expected: int = 2, words: str = "", prefix: str = "error: "):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == expected, stderr
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{stderr}"
    assert lines[0].startswith(prefix) and "Traceback" not in stderr, stderr
    assert words in lines[0], f"expected {words!r} in: {lines[0]}"
    assert "internal error" not in lines[0]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One small evaluated build, the corpus's bad files, and the places to watch."""
    root = tmp_path_factory.mktemp("bad-inputs")
    build = root / "build"
    built = invoke("build", "--out", build, *SMALL, "--no-profile")
    assert built.code == 0, built.stderr
    evaluated = invoke("eval", build, "--dataset", "demo", "--limit", "64")
    assert evaluated.code == 0, evaluated.stderr
    bad = root / "bad"
    bad.mkdir()
    places = make_bad_files(bad)
    manifests = bad / "manifests"
    manifests.mkdir()
    make_manifest_variants(build, manifests)
    frozen = immutable(places["places"] / "immutable", True)
    yield types.SimpleNamespace(build=build, bad=bad, frozen=frozen,
                                names={"build": build, "manifests": manifests, **places})
    if frozen:
        immutable(places["places"] / "immutable", False)


def case(command: str, name: str, *args: str, words: str = "", code: int = 2):
    return pytest.param(command, list(args), words, code, id=f"{command}-{name}")


def out(*args: str) -> list[str]:
    return ["--out", "{out}", *args]


# --------------------------------------------------------------------------- build / export

BUILD = [
    case("build", "tokens-empty", *out("--tokens", ""), words="--tokens: an empty value"),
    case("build", "tokens-comma", *out("--tokens", ","), words="--tokens: an empty value"),
    case("build", "tokens-double-comma", *out("--tokens", "8,,16"), words="--tokens: an empty value"),
    case("build", "tokens-letters", *out("--tokens", "a"), words="'a' is not an integer"),
    case("build", "tokens-50000", *out("--tokens", "50000"), words="tokens must be <= 128"),
    case("build", "tokens-20-digits", *out("--tokens", "99999999999999999999"), words="tokens must be <= 128"),
    case("build", "tokens-129", *out("--tokens", "129"), words="tokens must be <= 128"),
    case("build", "tokens-0", *out("--tokens", "0"), words="tokens must be >= 1"),
    case("build", "tokens-negative", *out("--tokens", "-8"), words="tokens must be >= 1"),
    case("build", "tokens-exponent", *out("--tokens", "1e9"), words="'1e9' is not an integer"),
    case("build", "tokens-nan", *out("--tokens", "nan"), words="'nan' is not an integer"),
    case("build", "tokens-inf", *out("--tokens", "inf"), words="'inf' is not an integer"),
    case("build", "tokens-fraction", *out("--tokens", "8.5"), words="'8.5' is not an integer"),
    case("build", "width-empty", *out("--width", ""), words="--width: an empty value"),
    case("build", "width-0", *out("--width", "0"), words="width must lie in 1..64"),
    case("build", "width-65", *out("--width", "65"), words="width must lie in 1..64"),
    case("build", "width-nan", *out("--width", "nan"), words="'nan' is not an integer"),
    case("build", "depth-empty", *out("--depth", ""), words="--depth: an empty value"),
    case("build", "depth-0", *out("--depth", "0"), words="depth must lie in 1..4"),
    case("build", "depth-5", *out("--depth", "5"), words="depth must lie in 1..4"),
    case("build", "depth-letters", *out("--depth", "1,x"), words="'x' is not an integer"),
    case("build", "grid-empty", *out("--grid", ""), words="unknown grid preset ''"),
    case("build", "grid-unknown", *out("--grid", "everything"), words="unknown grid preset"),
    case("build", "grid-and-tokens", *out("--grid", "full", "--tokens", "8"), words="not both"),
    case("build", "attention-unknown", *out("--attention", "sparse"), words="attention must be one of"),
    case("build", "attention-empty", *out("--attention", "", *SMALL), words="attention must be one of"),
    case("build", "batch-0", *out("--batch", "0"), words="--batch must be >= 1"),
    case("build", "batch-negative", *out("--batch", "-1"), words="--batch must be >= 1"),
    case("build", "batch-inf", *out("--batch", "inf"), words="Invalid value for '--batch'"),
    case("build", "batch-nan", *out("--batch", "nan"), words="Invalid value for '--batch'"),
    case("build", "profile-unknown", *out("--build-profile", "fastest"), words="unknown build profile 'fastest'"),
    case("build", "profile-missing-file", *out("--build-profile", "{tmp}/none.toml"), words="no such profile file"),
    case("build", "device-unknown", *out("--device", "toaster"), words="unknown device target 'toaster'"),
    case("build", "device-missing-file", *out("--device", "{tmp}/t.toml"), words="no such target file"),
    case("build", "dataset-unknown", *out(*SMALL, "--dataset", "mnist"), words="unknown dataset spec 'mnist'"),
    case("build", "dataset-npz-empty-path", *out(*SMALL, "--dataset", "npz:"), words="unknown dataset spec"),
    case("build", "dataset-npz-missing", *out(*SMALL, "--dataset", "npz:{tmp}/x.npz"), words="no such file"),
    case("build", "out-under-a-file", "--out", "{places}/a-file/out", *SMALL, words="cannot write the build"),
    case("build", "out-is-a-file", "--out", "{places}/a-file", *SMALL, words="exists and is not a directory"),
    case("build", "out-under-proc", "--out", "/proc/adaexport-corpus/out", *SMALL, words="cannot write the build"),
    case("build", "out-in-immutable-dir", "--out", "{places}/immutable/out", *SMALL, words="cannot write the build"),
    case("build", "out-is-immutable-dir", "--out", "{places}/immutable", *SMALL, words="cannot write the build"),
    case("build", "out-missing", *SMALL, words="Missing option '--out'"),
    case("build", "unknown-option", *out("--fast"), words="No such option: --fast"),
    case("build", "json-and-bad-tokens", *out("--json", "--tokens", "50000"), words="tokens must be <= 128"),
    case("build", "model-missing", "{tmp}/model", *out(), words="no such file or directory"),
    case("build", "model-no-weights", "{models}/no-weights", *out(), words="no model.safetensors"),
    case("build", "model-garbage-weights", "{models}/garbage-weights", *out(), words="not a readable safetensors"),
    case("build", "model-nan-weights", "{models}/nan-weights", *out(), words="holds NaN or infinite values"),
]
BUILD += [case("build", f"profile-{name}", *out(*SMALL[:6], "--build-profile", f"{{profiles}}/{name}.toml"),
               words=f"profile {name}") for name in PROFILES]
BUILD += [case("build", "profile-not-utf8", *out(*SMALL[:6], "--build-profile", "{profiles}/not-utf8.toml"),
               words="not-utf8.toml: not UTF-8 text (byte 0xe9")]
BUILD += [case("build", f"config-{name}", f"{{models}}/{name}", *out(*SMALL), words="invalid config")
          for name in ("embed-dim-0", "depth-negative", "grans-text", "ffn-ratio-nan", "embed-dim-1e999",
                       "preprocessing-std-0")]
BUILD += [case("build", f"device-{name}", *out(*SMALL, "--device", f"{{targets}}/{name}.toml"),
               words=words) for name, (_, words) in TARGETS.items()]
BUILD += [case("build", "device-target-not-utf8", *out(*SMALL, "--device", "{targets}/target-not-utf8.toml"),
               words="target-not-utf8.toml: not UTF-8 text")]
BUILD += [case("build", f"dataset-{name}", *out(*SMALL, "--dataset", spec), words=words) for name, spec, words in [
    ("npz-garbage", "npz:{data}/garbage.npz", "not a readable .npz"),
    ("npz-without-x", "npz:{data}/no-x.npz", "expected arrays 'x' and 'y'"),
    ("npz-text", "npz:{data}/text.npz", "float images must already be model input"),
    ("npz-nan", "npz:{data}/nan.npz", "NaN or infinite"),
    ("npz-inf", "npz:{data}/inf.npz", "NaN or infinite"),
    ("npz-empty", "npz:{data}/empty.npz", "the dataset is empty"),
    ("npz-zero-size-images", "npz:{data}/zero-size.npz", "expected images (N, H, W)"),
    ("npz-labels-out-of-range", "npz:{data}/labels-out-of-range.npz", "labels span"),
    ("npz-labels-mismatch", "npz:{data}/labels-mismatch.npz", "4 images but 3 labels"),
    ("npz-object", "npz:{data}/object.npz", "not a readable .npz"),
    ("fashion-missing", "fashion-mnist:{tmp}/fm", "no such directory"),
    ("fashion-empty", "fashion-mnist:{fashion}/empty", "missing t10k-images"),
    ("fashion-corrupt-gzip", "fashion-mnist:{fashion}/corrupt-gzip", "cannot read"),
    ("fashion-bad-crc", "fashion-mnist:{fashion}/bad-crc", "cannot read"),
    ("fashion-truncated-gzip", "fashion-mnist:{fashion}/truncated-gzip", "cannot read"),
    ("fashion-255-dims", "fashion-mnist:{fashion}/255-dims", "claims 255 dimensions"),
    ("fashion-huge-shape", "fashion-mnist:{fashion}/huge-shape", "truncated IDX file"),
]]

EXPORT = [
    case("export", "tokens-empty", *out("--tokens", ""), words="--tokens: an empty value"),
    case("export", "tokens-50000", *out("--tokens", "50000"), words="tokens must be <= 128"),
    case("export", "width-0", *out("--width", "0"), words="width must lie in 1..64"),
    case("export", "depth-9", *out("--depth", "9"), words="depth must lie in 1..4"),
    case("export", "grid-unknown", *out("--grid", "all"), words="unknown grid preset 'all'"),
    case("export", "batch-0", *out("--batch", "0"), words="--batch must be >= 1"),
    case("export", "attention-unknown", *out("--attention", "x"), words="attention must be one of"),
    case("export", "dataset-not-an-option", *out("--dataset", "demo"), words="No such option: --dataset"),
    case("export", "profile-not-utf8", *out("--build-profile", "{profiles}/not-utf8.toml"), words="not UTF-8"),
    case("export", "profile-parity-number", *out("--build-profile", "{profiles}/parity-number.toml"),
         words="parity must be a table"),
    case("export", "profile-min-duration-inf", *out("--build-profile", "{profiles}/min-duration-inf.toml"),
         words="finite"),
    case("export", "config-not-utf8", "{models}/not-utf8", *out(), words="not UTF-8"),
    case("export", "config-grans-string", "{models}/grans-string", *out(), words="mask_token_grans"),
    case("export", "out-under-a-file", "--out", "{places}/a-file/x", "--tokens", "8", "--width", "32", "--depth", "1",
         words="cannot write the build"),
    case("export", "out-under-proc", "--out", "/proc/adaexport-corpus", "--tokens", "8", "--width", "32",
         "--depth", "1", words="cannot write the build"),
    case("export", "out-in-immutable-dir", "--out", "{places}/immutable/x", "--tokens", "8", "--width", "32",
         "--depth", "1", words="cannot write the build"),
]

# --------------------------------------------------------------------------- inspect / targets / compile

INSPECT = [case("inspect", f"config-{name}", f"{{models}}/{name}",
                words="weights do not match config" if name == "embed-dim-huge" else "config.json: invalid config")
           for name in CONFIGS]
INSPECT += [
    case("inspect", "config-not-utf8", "{models}/not-utf8", words="not UTF-8 text (byte 0xe9"),
    case("inspect", "config-invalid-json", "{models}/invalid-json", words="not valid JSON"),
    case("inspect", "config-array", "{models}/array", words="expected a JSON object"),
    case("inspect", "config-missing-field", "{models}/missing-field", words="lacks required field(s): embed_dim"),
    case("inspect", "missing", "{tmp}/nothing", words="no such file or directory"),
    case("inspect", "tokens-50000", "--tokens", "50000", words="tokens must be <= 128"),
    case("inspect", "tokens-empty", "--tokens", "", words="--tokens: an empty value"),
    case("inspect", "width-empty", "--width", "", words="--width: an empty value"),
    case("inspect", "depth-9", "--depth", "9", words="depth must lie in 1..4"),
    case("inspect", "grid-empty", "--grid", "", words="unknown grid preset ''"),
    case("inspect", "manifest-invalid-json", "{manifests}/manifest-invalid-json", words="invalid JSON"),
    case("inspect", "manifest-nan", "{manifests}/manifest-nan", words="NaN is not valid JSON"),
    case("inspect", "manifest-1e999", "{manifests}/manifest-1e999", words="inf is not allowed in JSON"),
    case("inspect", "manifest-not-utf8", "{manifests}/manifest-not-utf8", words="cannot read"),
]

TARGETS_CMD = [
    case("targets", "extra-argument", "x86-cpu", words="unexpected extra argument"),
    case("targets", "unknown-option", "--device", "x86-cpu", words="No such option: --device"),
    case("targets", "help-typo", "--hlep", words="No such option: --hlep"),
]

MANIFEST_PROBLEMS = [
    ("missing", "{tmp}/nowhere", "no such build directory"),
    ("no-manifest", "{manifests}/no-manifest", "not found"),
    ("manifest-invalid-json", "{manifests}/manifest-invalid-json", "invalid JSON"),
    ("manifest-empty", "{manifests}/manifest-empty", "invalid JSON"),
    ("manifest-nan", "{manifests}/manifest-nan", "NaN is not valid JSON"),
    ("manifest-1e999", "{manifests}/manifest-1e999", "inf is not allowed in JSON"),
    ("manifest-not-utf8", "{manifests}/manifest-not-utf8", "cannot read"),
    ("manifest-schema", "{manifests}/manifest-schema", "$.engines: expected array"),
    ("manifest-duplicate-key", "{manifests}/manifest-duplicate-key", "duplicate key 'schema'"),
    ("manifest-unsafe-path", "{manifests}/manifest-unsafe-path", "unsafe path"),
]

COMPILE = [case("compile", name, path, words=words) for name, path, words in MANIFEST_PROBLEMS]
COMPILE += [
    case("compile", "device-unknown", "{build}", "--device", "toaster", words="unknown device target"),
    case("compile", "device-budget-nan", "{build}", "--device", "{targets}/target-budget-nan.toml",
         words="budget_w must be a finite number"),
    case("compile", "device-not-utf8", "{build}", "--device", "{targets}/target-not-utf8.toml", words="not UTF-8"),
    case("compile", "extra-argument", "{build}", "more", words="unexpected extra argument"),
]

# --------------------------------------------------------------------------- profile / eval

PROFILE = [case("profile", name, path, words=words) for name, path, words in MANIFEST_PROBLEMS[:6]]
PROFILE += [case("profile", name, "{build}", *args, words=words) for name, args, words in [
    ("device-unknown", ("--device", "toaster"), "unknown device target"),
    ("power-mode-unknown", ("--power-mode", "turbo"), "no power mode 'turbo'"),
    ("min-iterations-0", ("--min-iterations", "0"), "min_iterations = 0 is out of range"),
    ("min-iterations-inf", ("--min-iterations", "inf"), "Invalid value for '--min-iterations'"),
    ("min-iterations-text", ("--min-iterations", "many"), "Invalid value for '--min-iterations'"),
    ("min-duration-inf", ("--min-duration", "inf"), "min_duration_s must be a finite number"),
    ("min-duration-nan", ("--min-duration", "nan"), "min_duration_s must be a finite number"),
    ("min-duration-negative", ("--min-duration", "-1"), "min_duration_s = -1.0 is out of range"),
    ("warmup-inf", ("--warmup", "inf"), "warmup_s must be a finite number"),
    ("warmup-nan", ("--warmup", "nan"), "warmup_s must be a finite number"),
    ("rounds-0", ("--rounds", "0"), "rounds = 0 is out of range"),
    ("max-cv-nan", ("--max-cv", "nan"), "max_cv must be a finite number"),
    ("max-cv-inf", ("--max-cv", "inf"), "max_cv must be a finite number"),
    ("max-cv-0", ("--max-cv", "0"), "max_cv = 0.0 is out of range"),
    ("engines-unknown", ("--engines", "t1_w1_d1-onnxruntime-fp32"), "no engine 't1_w1_d1-onnxruntime-fp32'"),
    ("engines-empty", ("--engines", ""), "--engines: no engine id given"),
    ("engines-commas", ("--engines", ",,"), "--engines: no engine id given"),
]]

EVAL = [case("eval", name, path, words=words) for name, path, words in MANIFEST_PROBLEMS[:5]]
EVAL += [case("eval", f"dataset-{name}", "{build}", "--dataset", spec, words=words) for name, spec, words in [
    ("unknown", "cifar", "unknown dataset spec 'cifar'"),
    ("imagefolder-empty-path", "imagefolder:", "unknown dataset spec"),
    ("npz-missing", "npz:{tmp}/x.npz", "no such file"),
    ("npz-garbage", "npz:{data}/garbage.npz", "not a readable .npz"),
    ("npz-text", "npz:{data}/text.npz", "float images must already be model input"),
    ("npz-complex", "npz:{data}/complex.npz", "float images must already be model input"),
    ("npz-nan", "npz:{data}/nan.npz", "NaN or infinite"),
    ("npz-inf", "npz:{data}/inf.npz", "NaN or infinite"),
    ("npz-empty", "npz:{data}/empty.npz", "the dataset is empty"),
    ("npz-zero-size-images", "npz:{data}/zero-size.npz", "expected images (N, H, W)"),
    ("npz-flat", "npz:{data}/flat.npz", "expected images (N, H, W)"),
    ("npz-labels-out-of-range", "npz:{data}/labels-out-of-range.npz", "labels span"),
    ("npz-labels-text", "npz:{data}/labels-text.npz", "not a readable .npz"),
    ("fashion-corrupt-gzip", "fashion-mnist:{fashion}/corrupt-gzip", "cannot read"),
    ("fashion-not-gzip", "fashion-mnist:{fashion}/not-gzip", "cannot read"),
    ("fashion-255-dims", "fashion-mnist:{fashion}/255-dims", "claims 255 dimensions"),
    ("fashion-255-dims-long", "fashion-mnist:{fashion}/255-dims-long", "claims 255 dimensions"),
    ("fashion-255-dims-plain", "fashion-mnist:{fashion}/plain-255-dims", "claims 255 dimensions"),
    ("fashion-not-idx", "fashion-mnist:{fashion}/not-idx", "not an IDX file"),
    ("fashion-labels-mismatch", "fashion-mnist:{fashion}/labels-mismatch", "3 labels for images"),
    ("imagefolder-missing", "imagefolder:{tmp}/f", "no such directory"),
    ("imagefolder-no-classes", "imagefolder:{folders}/no-classes", "no class folders"),
    ("imagefolder-no-images", "imagefolder:{folders}/no-images", "no images"),
    ("imagefolder-unknown-class", "imagefolder:{folders}/unknown-class", "'Giraffe' are not classes"),
    ("imagefolder-bomb", "imagefolder:{folders}/bomb", "too many pixels"),
    ("imagefolder-bomb-warning", "imagefolder:{folders}/bomb-warning", "too many pixels"),
    ("imagefolder-broken", "imagefolder:{folders}/broken", "unreadable image"),
    ("imagefolder-empty-file", "imagefolder:{folders}/empty-file", "unreadable image"),
]]
EVAL += [case("eval", name, "{build}", *args, words=words) for name, args, words in [
    ("limit-0", ("--limit", "0"), "--limit must be >= 1"),
    ("limit-negative", ("--limit", "-5"), "--limit must be >= 1"),
    ("limit-inf", ("--limit", "inf"), "Invalid value for '--limit'"),
    ("model-missing", ("--model", "{tmp}/m"), "no such file or directory"),
    ("model-config-nan", ("--model", "{models}/ffn-ratio-nan"), "ffn_ratio must be a finite number"),
    ("model-config-not-utf8", ("--model", "{models}/not-utf8"), "not UTF-8"),
]]

# `search` reads the same datasets: the eval cases that name no build, then its own options
SEARCH = [case("search", p.id.removeprefix("eval-"), *[a for a in p.values[1] if a != "{build}"], "--out", "{out}",
               words=p.values[2]) for p in EVAL if p.id.startswith("eval-dataset-")]
SEARCH += [case("search", name, *args, words=words) for name, args, words in [
    ("limit-0", ("--dataset", "demo", "--limit", "0", "--out", "{out}"), "--limit"),
    ("attention-bogus", ("--dataset", "demo", "--attention", "bogus", "--out", "{out}"), "attention"),
    ("model-missing", ("{tmp}/m", "--dataset", "demo", "--out", "{out}"), "no such file or directory"),
    ("model-config-nan", ("{models}/ffn-ratio-nan", "--dataset", "demo", "--out", "{out}"),
     "ffn_ratio must be a finite number"),
    ("out-no-folder", ("--dataset", "demo", "--out", "{tmp}/no/such/s.json"), "no such directory"),
    ("no-dataset", ("--out", "{out}"), "--dataset"),
]]

# --------------------------------------------------------------------------- check / report

CHECK = [case("check", name, path, "--baseline", "{build}", words=words)
         for name, path, words in MANIFEST_PROBLEMS[:4]]
CHECK += [case("check", name, "{build}", *args, words=words) for name, args, words in [
    ("baseline-missing", ("--baseline", "{tmp}/b.json"), "not found"),
    ("baseline-invalid-json", ("--baseline", "{manifests}/manifest-invalid-json"), "not a readable manifest"),
    ("baseline-nan", ("--baseline", "{manifests}/baseline-nan.json"), "NaN is not valid JSON"),
    ("baseline-1e999", ("--baseline", "{manifests}/baseline-1e999.json"), "not allowed in JSON"),
    ("baseline-minus-infinity", ("--baseline", "{manifests}/baseline-minus-infinity.json"),
     "-Infinity is not valid JSON"),
    ("baseline-not-utf8", ("--baseline", "{manifests}/manifest-not-utf8"), "not a readable manifest"),
    ("baseline-unevaluated", ("--baseline", "{manifests}/unevaluated.json"), "no engine has an accuracy"),
    ("baseline-option-missing", (), "Missing option '--baseline'"),
    ("max-drop-negative", ("--baseline", "{build}", "--max-drop", "-1"), "--max-drop must be >= 0"),
    ("junit-is-a-directory", ("--baseline", "{build}", "--junit", "{places}"), "is a directory"),
    ("junit-under-a-file", ("--baseline", "{build}", "--junit", "{places}/a-file/j.xml"), "no such directory"),
    ("junit-missing-directory", ("--baseline", "{build}", "--junit", "{tmp}/no/j.xml"), "no such directory"),
    ("junit-in-immutable-dir", ("--baseline", "{build}", "--junit", "{places}/immutable/j.xml"), "cannot write"),
]]

BUILD += [case("build", name, *out(*SMALL, *args), words=words) for name, args, words in [
    ("engines-no-colon", ("--engines", "onnxruntime"), "--engines: expected backend:precision pairs"),
    ("engines-empty", ("--engines", ","), "--engines: expected backend:precision pairs"),
    ("engines-not-in-target", ("--engines", "tensorrt:fp99"), "target x86-cpu builds onnxruntime:fp32"),
    ("atol-nan", ("--atol", "nan"), "--atol must be a finite number"),
    ("atol-negative", ("--atol", "-1e-3"), "--atol must be >= 0"),
    ("min-agreement-above-1", ("--min-agreement", "2"), "--min-agreement must be <= 1"),
    ("max-drop-inf", ("--max-drop", "inf"), "--max-drop must be a finite number"),
    ("tie-margin-negative", ("--tie-margin", "-0.1"), "--tie-margin must be >= 0"),
    ("tie-margin-nan", ("--tie-margin", "nan"), "--tie-margin must be a finite number"),
]]

REPORT = [case("report", name, path, words=words) for name, path, words in MANIFEST_PROBLEMS[:4]]
REPORT += [case("report", name, "{build}", *args, words=words) for name, args, words in [
    ("out-and-png", ("--out", "{tmp}/r", "--png", "{tmp}/r.png"), "not both"),
    ("width-50", ("--image-width", "50"), "must be 100..10000 pixels"),
    ("height-0", ("--image-height", "0"), "must be 100..10000 pixels"),
    ("width-inf", ("--image-width", "inf"), "Invalid value for '--image-width'"),
    ("height-huge", ("--image-height", "99999999999"), "must be 100..10000 pixels"),
    ("png-is-a-directory", ("--png", "{places}"), "is a directory"),
    ("html-is-a-directory", ("--html", "{places}"), "is a directory"),
    ("png-under-a-file", ("--png", "{places}/a-file/r.png"), "no such directory"),
    ("png-missing-directory", ("--png", "{tmp}/no/r.png"), "no such directory"),
    ("out-missing-directory", ("--out", "{tmp}/no/r"), "no such directory"),
    ("html-in-immutable-dir", ("--html", "{places}/immutable/r.html"), "cannot write"),
    ("device-not-profiled", ("--device", "jetson-orin-nx"), "--device jetson-orin-nx: not profiled"),
    ("mode-not-profiled", ("--mode", "15W"), "--mode 15W"),
    ("flops-and-device", ("--flops", "--device", "x86-cpu"), "--flops plots FLOPs"),
]]

# --------------------------------------------------------------------------- select / run

SELECT = [case("select", name, path, words=words) for name, path, words in MANIFEST_PROBLEMS]
SELECT += [
    case("select", "no-usable-engine", "{manifests}/engines-gone", words="no engine can serve here"),
    case("select", "no-usable-engine-json", "{manifests}/engines-gone", "--json", words="no engine can serve here"),
]
SELECT += [case("select", name, "{build}", *args, words=words) for name, args, words in [
    ("latency-negative", ("--latency-ms", "-1"), "latency_ms must be > 0"),
    ("latency-0", ("--latency-ms", "0"), "latency_ms must be > 0"),
    ("latency-nan", ("--latency-ms", "nan"), "latency_ms must be a finite number"),
    ("latency-inf", ("--latency-ms", "inf"), "latency_ms must be a finite number"),
    ("latency-text", ("--latency-ms", "fast"), "Invalid value for '--latency-ms'"),
    ("power-nan", ("--power-w", "nan"), "power_w must be a finite number"),
    ("power-inf", ("--power-w", "inf"), "power_w must be a finite number"),
    ("power-negative", ("--power-w", "-2"), "power_w must be > 0"),
    ("memory-nan", ("--memory-mb", "nan"), "--memory-mb must be a finite number"),
    ("memory-inf", ("--memory-mb", "inf"), "--memory-mb must be a finite number"),
    ("memory-0", ("--memory-mb", "0"), "--memory-mb must be > 0"),
    ("memory-negative", ("--memory-mb", "-5"), "--memory-mb must be > 0"),
    ("rate-nan", ("--rate-hz", "nan"), "rate_hz must be a finite number"),
    ("rate-inf", ("--rate-hz", "inf"), "rate_hz must be a finite number"),
    ("rate-0", ("--rate-hz", "0"), "rate_hz must be > 0"),
    ("percentile-unknown", ("--percentile", "p42"), "percentile must be one of"),
    ("device-unknown", ("--device", "bogus"), "--device bogus: not a device target"),
    ("power-mode-unknown", ("--power-mode", "bogus"), "--power-mode bogus: x86-cpu has no such power mode"),
    ("power-mode-of-other-device", ("--device", "jetson-orin-nx", "--power-mode", "bogus"),
     "jetson-orin-nx has no such power mode"),
]]

RUN = [case("run", name, path, "--input", "{inputs}/nan.npy", words=words)
       for name, path, words in MANIFEST_PROBLEMS[:5]]
RUN += [case("run", f"input-{name}", "{build}", "--input", f"{{inputs}}/{file}", words=words)
        for name, file, words in [
            ("missing", "none.png", "no such file"),
            ("folder", "folder.png", "no such file"),
            ("text-npy", "text.npy", "holds <U1 values"),
            ("empty-npy", "empty.npy", "got shape (0, 0, 1)"),
            ("empty-rgb-npy", "empty-rgb.npy", "got shape (0, 5, 3)"),
            ("all-nan", "nan.npy", "NaN or infinite"),
            ("minus-infinity", "inf.npy", "NaN or infinite"),
            ("float-wrong-shape", "float-shape.npy", "a prepared input must have shape"),
            ("bool-npy", "bool.npy", "holds bool values"),
            ("complex-npy", "complex.npy", "holds complex64 values"),
            ("two-channels", "channels.npy", "2 channel(s), the model takes 1"),
            ("object-npy", "object.npy", "not a readable .npy"),
            ("truncated-npy", "truncated.npy", "not a readable .npy"),
            ("bomb-png", "bomb.png", "too many pixels"),
            ("bomb-warning-png", "bomb-warning.png", "too many pixels"),
            ("broken-png", "broken.png", "unreadable image"),
            ("empty-png", "empty.png", "unreadable image"),
            ("text-file", "notes.txt", "unsupported input .txt"),
        ]]
RUN += [
    case("run", "no-usable-engine", "{manifests}/engines-gone", "--input", "{inputs}/nan.npy",
         words="no engine can serve here"),
    case("run", "top-0", "{build}", "--input", "{inputs}/nan.npy", "--top", "0", words="--top must be >= 1"),
    case("run", "top-text", "{build}", "--input", "{inputs}/nan.npy", "--top", "all",
         words="Invalid value for '--top'"),
    case("run", "latency-inf", "{build}", "--input", "{inputs}/nan.npy", "--latency-ms", "inf", words="finite"),
    case("run", "power-mode-unknown", "{build}", "--input", "{inputs}/nan.npy", "--power-mode", "x",
         words="no such power mode"),
    case("run", "input-option-missing", "{build}", words="Missing option '--input'"),
]

# --------------------------------------------------------------------------- user text with markup (issue 16.4)

MARKUP = [
    case("inspect", "markup-missing-path", "{tmp}/x[/]y", words="x[/]y: no such file"),
    case("inspect", "markup-bad-checkpoint", "{models}/m[/]odel[bold]", words="m[/]odel[bold]"),
    case("build", "markup-bad-checkpoint", "{models}/m[/]odel[bold]", *out(*SMALL), words="invalid config"),
    case("build", "markup-profile", *out("--build-profile", "{tmp}/p[/]x[red].toml"), words="p[/]x[red].toml"),
    case("export", "markup-out-under-a-file", "--out", "{places}/a-file/[/]", "--tokens", "8", "--width", "32",
         "--depth", "1", words="a-file/[/]"),
    case("eval", "markup-missing-dir", "{tmp}/e[/]", words="e[/]: no such build directory"),
    case("eval", "markup-dataset", "{build}", "--dataset", "npz:{data}/[bold]x.npz", words="[bold]x.npz"),
    case("select", "markup-missing-dir", "{tmp}/s[/]", words="s[/]: no such build directory"),
    case("select", "markup-build-bad-limit", "{manifests}/b[/]uild[red]", "--latency-ms", "-1",
         words="latency_ms must be > 0"),
    case("select", "markup-device", "{build}", "--device", "[/]", words="--device [/]: not a device target"),
    case("run", "markup-input", "{build}", "--input", "{tmp}/[/].png", words="[/].png: no such file"),
    case("run", "markup-missing-dir", "{tmp}/r[/]", "--input", "{inputs}/nan.npy", words="r[/]"),
    case("report", "markup-missing-dir", "{tmp}/[/]", words="[/]: no such build directory"),
    case("report", "markup-png", "{build}", "--png", "{tmp}/[/]/x.png", words="[/]/x.png"),
    case("check", "markup-baseline", "{build}", "--baseline", "{tmp}/[/]", words="[/]"),
    case("profile", "markup-missing-dir", "{tmp}/[/][bold]", words="[/][bold]: no such build directory"),
    case("compile", "markup-missing-dir", "{tmp}/[/]", words="[/]: no such build directory"),
    case("compile", "markup-device", "{build}", "--device", "[/]", words="unknown device target '[/]'"),
]

CASES = BUILD + EXPORT + INSPECT + TARGETS_CMD + COMPILE + PROFILE + EVAL + SEARCH + CHECK + REPORT + SELECT + RUN \
    + MARKUP


@pytest.mark.parametrize("command, args, words, code", CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(env, tmp_path, command, args, words, code):
    if "immutable" in " ".join(args) and not env.frozen:
        pytest.skip("cannot make a directory immutable here (needs root and chattr)")
    argv = [command, *(a.format(**env.names, out=tmp_path / "out", tmp=tmp_path) for a in args)]
    watched = {"build": env.build, "corpus files": env.bad}
    before = {name: snapshot(path) for name, path in watched.items()}
    result = invoke(*argv)
    assert result.crashed is None, repr(result.crashed)
    assert_one_line_error(result.code, result.stderr, code, words)
    assert list(tmp_path.iterdir()) == [], "the command wrote into the output location"
    for name, path in watched.items():
        assert snapshot(path) == before[name], f"the command changed the {name}"


# --------------------------------------------------------------------------- the pytest plugin

PLUGIN = [
    ("manifest-missing", ["--adaexport-manifest", "{tmp}/none"], "no manifest.json there"),
    ("manifest-empty-dir", ["--adaexport-manifest", "{manifests}/no-manifest"], "no manifest.json there"),
    ("manifest-invalid-json", ["--adaexport-manifest", "{manifests}/manifest-invalid-json"], "invalid JSON"),
    ("manifest-nan", ["--adaexport-manifest", "{manifests}/manifest-nan"], "NaN is not valid JSON"),
    ("manifest-1e999", ["--adaexport-manifest", "{manifests}/manifest-1e999"], "not allowed in JSON"),
    ("manifest-schema", ["--adaexport-manifest", "{manifests}/manifest-schema"], "expected array"),
    ("manifest-not-utf8", ["--adaexport-manifest", "{manifests}/manifest-not-utf8"], "cannot read"),
    ("manifest-markup-path", ["--adaexport-manifest", "{tmp}/[/][bold]"], "[/][bold]"),
    ("baseline-missing", ["--adaexport-manifest", "{build}", "--adaexport-baseline", "{tmp}/b"], "not found"),
    ("baseline-nan", ["--adaexport-manifest", "{build}", "--adaexport-baseline", "{manifests}/baseline-nan.json"],
     "NaN is not valid JSON"),
    ("baseline-unevaluated", ["--adaexport-manifest", "{build}", "--adaexport-baseline",
                              "{manifests}/unevaluated.json"], "no engine has an accuracy"),
    ("baseline-invalid-json", ["--adaexport-manifest", "{build}", "--adaexport-baseline",
                               "{manifests}/manifest-invalid-json/manifest.json"], "not a readable manifest"),
]


@pytest.mark.parametrize("args, words", [pytest.param(a, w, id=f"pytest-plugin-{n}") for n, a, w in PLUGIN])
def test_pytest_plugin_bad_input_is_one_line(env, tmp_path, args, words):
    """A real pytest (the plugin loads through its entry point) in an empty folder: bad input
    is pytest's usage error (exit 4, its documented code) with one `ERROR:` line."""
    work = tmp_path / "work"
    work.mkdir()
    argv = [a.format(**env.names, tmp=tmp_path) for a in args]
    before = snapshot(env.build)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *argv],
                          capture_output=True, text=True, cwd=work, timeout=120)
    assert_one_line_error(proc.returncode, proc.stderr, 4, words, prefix="ERROR: ")
    assert "Traceback" not in proc.stdout
    assert snapshot(env.build) == before and list(work.iterdir()) == []


# --------------------------------------------------------------------------- real subprocesses

SUBPROCESS = [
    ("build", ["build", "--out", "{out}", "--tokens", ""], "--tokens: an empty value"),
    ("inspect", ["inspect", "{tmp}/x[/]y"], "x[/]y: no such file"),
    ("run", ["run", "{build}", "--input", "{inputs}/bomb.png"], "too many pixels"),
    ("select", ["select", "{build}", "--device", "bogus"], "not a device target"),
    ("targets", ["targets", "extra"], "unexpected extra argument"),
    ("eval", ["eval", "{build}", "--dataset", "fashion-mnist:{fashion}/corrupt-gzip"], "cannot read"),
    ("profile", ["profile", "{build}", "--min-duration", "inf"], "finite"),
    ("check", ["check", "{build}", "--baseline", "{build}", "--junit", "{places}"], "is a directory"),
]


@pytest.mark.parametrize("args, words", [pytest.param(a, w, id=f"subprocess-{n}") for n, a, w in SUBPROCESS])
def test_console_entry_point_prints_one_line(env, tmp_path, args, words):
    argv = [a.format(**env.names, out=tmp_path / "out", tmp=tmp_path) for a in args]
    before = snapshot(env.build)
    proc = run_cli(*argv, timeout=120)
    assert_one_line_error(proc.returncode, proc.stderr, 2, words)
    assert "Traceback" not in proc.stdout
    assert list(tmp_path.iterdir()) == [] and snapshot(env.build) == before


# --------------------------------------------------------------------------- literal text on success too

def test_paths_with_markup_print_literally_on_success(env):
    build = env.names["manifests"] / "b[/]uild[red]"
    shown = invoke("inspect", build)
    assert shown.code == 0, shown.stderr
    assert str(build) in shown.stdout
    selected = invoke("select", build)
    assert selected.code == 0 and selected.stderr == "", selected.stderr


def test_the_corpus_covers_every_command():
    per_command = collections.Counter(p.values[0] for p in CASES)
    per_command["pytest plugin"] = len(PLUGIN)
    per_command.update(f"{n} (subprocess)" for n, _, _ in SUBPROCESS)
    commands = {"build", "export", "compile", "targets", "inspect", "profile", "eval", "search", "check", "report",
                "select", "run", "pytest plugin"}
    assert commands <= set(per_command)
    assert sum(per_command.values()) >= 200, per_command
    assert len({p.id for p in CASES}) == len(CASES), "duplicate case ids"

