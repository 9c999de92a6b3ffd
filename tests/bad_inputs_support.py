"""The files of the bad-input corpus (tests/test_bad_inputs.py): broken checkpoints,
profiles, target files, datasets, images, manifests and output locations, all small and
made once per module."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np

from adaexport.demo import DEMO_MODEL

from .conftest import DATA

ORT_FP32 = DATA / "profiles" / "ort-fp32.toml"
NOT_UTF8 = b'description = "caf\xe9 \xff"\n'  # Latin-1, as an editor on another system might save it

# config.json fields of the demo model -> a broken value (NaN and 1e999 are written as JSON allows)
CONFIGS = {
    "embed-dim-0": {"embed_dim": 0}, "embed-dim-negative": {"embed_dim": -64},
    "embed-dim-fraction": {"embed_dim": 64.5}, "embed-dim-text": {"embed_dim": "64"},
    "embed-dim-bool": {"embed_dim": True}, "embed-dim-1e999": {"embed_dim": 1e999},
    "num-heads-0": {"num_heads": 0}, "num-heads-negative": {"num_heads": -4},
    "embed-dim-huge": {"embed_dim": 1 << 20, "mat_dims": [32]},  # fits no weights: refused before allocating
    "depth-0": {"depth": 0}, "depth-negative": {"depth": -1}, "depth-null": {"depth": None},
    "img-size-0": {"img_size": 0}, "patch-size-0": {"patch_size": 0}, "patch-size-negative": {"patch_size": -4},
    "in-channels-0": {"in_channels": 0}, "num-classes-0": {"num_classes": 0},
    "num-classes-negative": {"num_classes": -10}, "max-latent-tokens-0": {"max_latent_tokens": 0},
    "grans-text": {"mask_token_grans": ["8", "16"]}, "grans-fraction": {"mask_token_grans": [8.5, 16]},
    "grans-string": {"mask_token_grans": "8,16"}, "grans-null": {"mask_token_grans": None},
    "grans-empty": {"mask_token_grans": []}, "grans-zero": {"mask_token_grans": [0, 8]},
    "grans-nested": {"mask_token_grans": [[8], [16]]}, "grans-nan": {"mask_token_grans": [float("nan")]},
    "grans-object": {"mask_token_grans": {"a": 8}}, "mat-dims-text": {"mat_dims": ["a"]},
    "mat-dims-negative": {"mat_dims": [-32]},
    "ffn-ratio-nan": {"ffn_ratio": float("nan")}, "ffn-ratio-inf": {"ffn_ratio": float("inf")},
    "ffn-ratio-negative": {"ffn_ratio": -1}, "ffn-ratio-text": {"ffn_ratio": "x"},
    "rope-theta-nan": {"rope_theta": float("nan")}, "rope-theta-0": {"rope_theta": 0},
    "ls-init-nan": {"ls_init_values": float("nan")}, "drop-path-inf": {"drop_path": float("-inf")},
    "qkv-bias-text": {"qkv_bias": "yes"}, "attn-layer-number": {"attn_layer": 3},
    "class-names-short": {"class_names": ["cat"]}, "class-names-numbers": {"class_names": list(range(10))},
    "preprocessing-std-0": {"preprocessing": {"resize": 28, "crop": 28, "mean": [0.3], "std": [0]}},
    "preprocessing-mean-nan": {"preprocessing": {"resize": 28, "crop": 28, "mean": [float("nan")], "std": [0.3]}},
    "preprocessing-crop-0": {"preprocessing": {"resize": 28, "crop": 0, "mean": [0.3], "std": [0.3]}},
    "preprocessing-text": {"preprocessing": "bilinear"},
}

# profile TOML text -> what it gets wrong
PROFILES = {
    "invalid-toml": "[parity\n",
    "parity-number": "parity = 3\n",
    "parity-fp32-number": "[parity]\nfp32 = 3\n",
    "parity-fp32-list": "[parity]\nfp32 = [1, 2]\n",
    "build-string": 'build = "x"\n',
    "grid-number": "grid = 1\n",
    "grid-preset-number": "[grid]\npreset = 3\n",
    "profiling-number": "profiling = 3\n",
    "engines-string": '[build]\nengines = "onnxruntime:fp32"\n',
    "engines-no-colon": '[build]\nengines = ["onnxruntime"]\n',
    "samples-0": "[parity]\nsamples = 0\n",
    "samples-inf": "[parity]\nsamples = inf\n",
    "samples-nan": "[parity]\nsamples = nan\n",
    "samples-fraction": "[parity]\nsamples = 2.5\n",
    "samples-text": '[parity]\nsamples = "256"\n',
    "random-samples-0": "[parity]\nrandom_samples = 0\n",
    "random-samples-nan": "[parity]\nrandom_samples = nan\n",
    "random-samples-text": '[parity]\nrandom_samples = "16"\n',
    "max-abs-nan": "[parity.fp32]\nmax_abs = nan\nmin_top1_agreement = 0.99\n",
    "max-abs-inf": "[parity.fp32]\nmax_abs = inf\nmin_top1_agreement = 0.99\n",
    "max-abs-negative": "[parity.fp32]\nmax_abs = -1e-3\nmin_top1_agreement = 0.99\n",
    "agreement-nan": "[parity.fp32]\nmax_abs = 1e-3\nmin_top1_agreement = nan\n",
    "agreement-above-1": "[parity.fp32]\nmax_abs = 1e-3\nmin_top1_agreement = 2\n",
    "agreement-missing": "[parity.fp32]\nmax_abs = 1e-3\n",
    "accuracy-drop-inf": "[parity.int8]\nmin_top1_agreement = 0.9\nmax_accuracy_drop = inf\n",
    "tolerance-unknown-key": "[parity.fp32]\nmax_abs = 1e-3\nmin_top1_agreement = 0.99\nmax_rel = 1\n",
    "min-iterations-inf": "[profiling]\nmin_iterations = inf\n",
    "min-duration-inf": "[profiling]\nmin_duration_s = inf\n",
    "warmup-nan": "[profiling]\nwarmup_s = nan\n",
    "max-cv-inf": "[profiling]\nmax_cv = inf\n",
    "rounds-nan": "[profiling]\nrounds = nan\n",
    "idle-negative-inf": "[profiling]\nidle_s = -inf\n",
    "group-0": "[profiling]\ngroup = 0\n",
    "profiling-unknown-key": "[profiling]\nwarmup = 1\n",
    "enabled-number": "[profiling]\nenabled = 1\n",
}

TARGET = (DATA.parent.parent / "targets" / "x86-cpu.toml")
# target TOML text (a --device FILE.toml) -> (a change of x86-cpu.toml, what the error says)
TARGETS = {
    "target-budget-nan": (lambda t: t + '\n[[power_modes]]\nname = "LOW"\nbudget_w = nan\n',
                          "budget_w must be a finite number"),
    "target-budget-inf": (lambda t: t + '\n[[power_modes]]\nname = "LOW"\nbudget_w = inf\n',
                          "budget_w must be a finite number"),
    "target-threads-inf": (lambda t: t.replace("threads = 0", "threads = inf", 1), "threads must be a finite number"),
    "target-engines-table": (lambda t: 'name = "t"\nkind = "cpu"\n[engines]\nbackend = "onnxruntime"\n',
                             "'engines' must be list"),
    "target-power-modes-number": (lambda t: 'name = "t"\nkind = "cpu"\npower_modes = 3\n'
                                            '[[engines]]\nbackend = "onnxruntime"\nprecisions = ["fp32"]\n',
                                  "not a usable target file"),
    "target-invalid-toml": (lambda t: "name = \n", "invalid TOML"),
}


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header says width x height (Pillow reads the size from the header)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _fashion_dir(root: Path, name: str, images: bytes, labels: bytes | None = None, gz: bool = True) -> None:
    folder = root / name
    folder.mkdir()
    suffix = ".gz" if gz else ""
    (folder / f"t10k-images-idx3-ubyte{suffix}").write_bytes(images)
    labels = labels if labels is not None else _idx(np.zeros(4, np.uint8))
    (folder / f"t10k-labels-idx1-ubyte{suffix}").write_bytes(gzip.compress(labels) if gz else labels)


def _npz(path: Path, **arrays) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def make_bad_files(root: Path) -> dict[str, Path]:
    """Every bad file of the corpus under `root`; returns named places."""
    base = json.loads((DEMO_MODEL / "config.json").read_text())
    weights = DEMO_MODEL / "model.safetensors"
    models = root / "models"
    models.mkdir()
    for name, change in CONFIGS.items():
        folder = models / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({**base, **change}))
        (folder / "model.safetensors").symlink_to(weights)
    special = {"not-utf8": NOT_UTF8, "invalid-json": b"{", "array": b"[]",
               "missing-field": json.dumps({k: v for k, v in base.items() if k != "embed_dim"}).encode()}
    for name, text in special.items():
        (models / name).mkdir()
        (models / name / "config.json").write_bytes(text)
        (models / name / "model.safetensors").symlink_to(weights)
    (models / "no-weights").mkdir()
    shutil.copy(DEMO_MODEL / "config.json", models / "no-weights" / "config.json")
    (models / "garbage-weights").mkdir()
    shutil.copy(DEMO_MODEL / "config.json", models / "garbage-weights" / "config.json")
    (models / "garbage-weights" / "model.safetensors").write_bytes(b"garbage")
    _nan_weights(models / "nan-weights")
    markup = models / "m[/]odel[bold]"  # '/' makes it a folder "]odel[bold]" in a folder "m["
    markup.mkdir(parents=True)
    (markup / "config.json").write_text(json.dumps({**base, "depth": 0}))
    (markup / "model.safetensors").symlink_to(weights)

    profiles = root / "profiles"
    profiles.mkdir()
    for name, text in PROFILES.items():
        (profiles / f"{name}.toml").write_text(text)
    (profiles / "not-utf8.toml").write_bytes(NOT_UTF8)

    targets = root / "targets"
    targets.mkdir()
    for name, (change, _) in TARGETS.items():
        (targets / f"{name}.toml").write_text(change(TARGET.read_text()))
    (targets / "target-not-utf8.toml").write_bytes(NOT_UTF8)

    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 28, 28), dtype=np.uint8)
    labels = np.arange(4)
    (data / "garbage.npz").write_bytes(b"not a zip")
    _npz(data / "no-x.npz", y=labels)
    _npz(data / "text.npz", x=np.array(["a"] * 4), y=labels)
    _npz(data / "nan.npz", x=np.full((4, 1, 28, 28), np.nan, np.float32), y=labels)
    _npz(data / "inf.npz", x=np.full((4, 1, 28, 28), np.inf, np.float32), y=labels)
    _npz(data / "empty.npz", x=np.zeros((0, 28, 28), np.uint8), y=np.zeros(0, np.int64))
    _npz(data / "zero-size.npz", x=np.zeros((4, 0, 0), np.uint8), y=labels)
    _npz(data / "labels-out-of-range.npz", x=images, y=np.full(4, 99))
    _npz(data / "labels-mismatch.npz", x=images, y=np.arange(3))
    _npz(data / "labels-text.npz", x=images, y=np.array(["a", "b", "c", "d"]))
    _npz(data / "flat.npz", x=np.zeros((4, 5), np.uint8), y=labels)
    _npz(data / "complex.npz", x=np.zeros((4, 1, 28, 28), np.complex64), y=labels)
    np.save(data / "object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with open(data / "object.npz", "wb") as f:
        np.savez(f, x=np.array([{"a": 1}] * 4, dtype=object), y=labels)
    (data / "[bold]x.npz").write_bytes(b"not a zip")

    idx = _idx(images)
    fashion = root / "fashion"
    fashion.mkdir()
    body = gzip.compress(idx)
    _fashion_dir(fashion, "corrupt-gzip", body[:10] + b"\xff" * 64 + body[74:])
    _fashion_dir(fashion, "bad-crc", body[:-8] + b"\0\0\0\0" + body[-4:])
    _fashion_dir(fashion, "truncated-gzip", body[: len(body) // 2])
    _fashion_dir(fashion, "not-gzip", b"plain bytes, no gzip header")
    _fashion_dir(fashion, "255-dims", gzip.compress(bytes([0, 0, 0x08, 255]) + b"\0" * 16))
    _fashion_dir(fashion, "255-dims-long", gzip.compress(bytes([0, 0, 0x08, 255]) + struct.pack(">255I", *[1] * 255)
                                                          + b"\0"))
    _fashion_dir(fashion, "huge-shape", gzip.compress(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 10**9, 10**9, 10**9)
                                                      + b"\0" * 64))
    _fashion_dir(fashion, "not-idx", gzip.compress(b"\x89PNG...."))
    _fashion_dir(fashion, "labels-mismatch", gzip.compress(idx), _idx(np.zeros(3, np.uint8)))
    _fashion_dir(fashion, "plain-255-dims", bytes([0, 0, 0x08, 255]), gz=False)
    (fashion / "empty").mkdir()

    folders = root / "folders"
    folders.mkdir()
    for name, content in {"bomb": png_claiming(20000, 20000), "bomb-warning": png_claiming(10000, 10000),
                          "broken": b"\x89PNG not really", "empty-file": b""}.items():
        (folders / name / "Bag").mkdir(parents=True)
        (folders / name / "Bag" / "x.png").write_bytes(content)
    (folders / "no-classes").mkdir()
    (folders / "no-images" / "Bag").mkdir(parents=True)
    (folders / "unknown-class" / "Giraffe").mkdir(parents=True)

    inputs = root / "inputs"
    inputs.mkdir()
    np.save(inputs / "text.npy", np.array(["a", "b"]))
    np.save(inputs / "empty.npy", np.zeros((0, 0), np.uint8))
    np.save(inputs / "empty-rgb.npy", np.zeros((0, 5, 3), np.uint8))
    np.save(inputs / "nan.npy", np.full((1, 28, 28), np.nan, np.float32))
    np.save(inputs / "inf.npy", np.full((1, 1, 28, 28), -np.inf, np.float32))
    np.save(inputs / "float-shape.npy", np.zeros((3, 28, 28), np.float32))
    np.save(inputs / "bool.npy", np.ones((28, 28), bool))
    np.save(inputs / "complex.npy", np.ones((1, 28, 28), np.complex64))
    np.save(inputs / "channels.npy", np.zeros((28, 28, 2), np.uint8))
    np.save(inputs / "object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (inputs / "truncated.npy").write_bytes(b"\x93NUMPY")
    (inputs / "bomb.png").write_bytes(png_claiming(20000, 20000))
    (inputs / "bomb-warning.png").write_bytes(png_claiming(10000, 10000))
    (inputs / "broken.png").write_bytes(b"\x89PNG not really")
    (inputs / "empty.png").write_bytes(b"")
    (inputs / "notes.txt").write_text("hello")
    (inputs / "folder.png").mkdir()

    places = root / "places"
    places.mkdir()
    (places / "a-file").write_text("in the way")
    (places / "immutable").mkdir()
    return {"models": models, "profiles": profiles, "targets": targets, "data": data, "fashion": fashion,
            "folders": folders, "inputs": inputs, "places": places}


def _nan_weights(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder.mkdir()
    shutil.copy(DEMO_MODEL / "config.json", folder / "config.json")
    state = load_file(str(DEMO_MODEL / "model.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    save_file(state, str(folder / "model.safetensors"))


def make_manifest_variants(build: Path, root: Path) -> dict[str, Path]:
    """Build directories whose manifest.json is broken, and one whose engines are all gone."""
    text = (build / "manifest.json").read_text()
    manifest = json.loads(text)
    variants = {
        "invalid-json": text[: len(text) // 2],
        "nan": _number(text, "flops", "NaN"),
        "1e999": _number(text, "flops", "1e999"),
        "schema": json.dumps({**manifest, "engines": "none"}),
        "duplicate-key": text.replace('"schema": ', '"schema": "x", "schema": ', 1),
        "unsafe-path": json.dumps({**manifest, "engines": [{**manifest["engines"][0], "file": "../../etc/passwd"}]}),
        "empty": "",
    }
    out = {}
    for name, content in variants.items():
        folder = root / f"manifest-{name}"
        folder.mkdir()
        (folder / "manifest.json").write_text(content)
        out[name] = folder
    (root / "manifest-not-utf8").mkdir()
    (root / "manifest-not-utf8" / "manifest.json").write_bytes(b'{"schema": "\xff"}')
    out["not-utf8"] = root / "manifest-not-utf8"
    (root / "no-manifest").mkdir()
    out["none"] = root / "no-manifest"
    gone = root / "engines-gone"
    gone.mkdir()
    (gone / "manifest.json").write_text(text)
    out["engines-gone"] = gone
    unevaluated = json.loads(text)
    for engine in unevaluated["engines"]:
        engine.pop("accuracy", None)
    unevaluated.pop("pareto", None)
    (root / "unevaluated.json").write_text(json.dumps(unevaluated))
    out["unevaluated"] = root / "unevaluated.json"
    for name, value in (("nan", "NaN"), ("1e999", "1e999"), ("minus-infinity", "-Infinity")):
        (root / f"baseline-{name}.json").write_text(_number(text, "top1", value))
        out[f"baseline-{name}"] = root / f"baseline-{name}.json"
    shutil.copytree(build, root / "b[/]uild[red]", ignore=shutil.ignore_patterns(".adaexport"))
    out["markup"] = root / "b[/]uild[red]"
    return out


def _number(text: str, key: str, value: str) -> str:
    """The manifest text with the first number under `key` replaced by `value` (verbatim)."""
    changed, count = re.subn(rf'"{key}": [-0-9.eE+]+', f'"{key}": {value}', text, count=1)
    assert count == 1, key
    return changed


def snapshot(path: Path) -> dict | None:
    """Every entry under `path` with its size and modification time (None: absent)."""
    if not path.exists():
        return None
    return {p.relative_to(path).as_posix(): (p.is_dir(), p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in [path, *path.rglob("*")]}


def immutable(path: Path, on: bool) -> bool:
    """chattr +i / -i (root on a filesystem that has the flag); False where it cannot be set."""
    if os.geteuid() != 0 or not shutil.which("chattr"):
        return False
    flag = "+i" if on else "-i"
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0
