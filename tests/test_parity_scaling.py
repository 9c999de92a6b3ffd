"""Parity that scales (issue 11, item 4): the PyTorch reference of every depth of one
(tokens, width) from one forward pass, and fp32 parity without a dataset."""

import json

import numpy as np
import pytest
import torch

from adaexport.build import _ReferenceFamily
from adaexport.manifest import read_manifest, validate
from adaexport.model.static import specialize
from adaexport.space import ConfigPoint, build_grid

from .conftest import CONFORMANCE, DATA, json_result, run_cli


def _specialized(model, point, attention, inputs):
    with torch.no_grad():
        return [o.numpy() for o in specialize(model, point, attention)(torch.from_numpy(inputs))]


@pytest.mark.parametrize("attention", ["block", "full"])
def test_one_pass_reference_equals_each_point(demo, attention):
    """Every depth of a (tokens, width) from one pass equals `specialize(...)`'s output within 1e-5."""
    cfg = demo.config
    tokens, widths = [cfg.mask_token_grans[0], cfg.mask_token_grans[-1]], [cfg.mat_dims[0], cfg.mat_dims[-1]]
    points, _ = build_grid(cfg, None, tokens, widths, list(range(1, cfg.depth + 1)))
    inputs = np.random.default_rng(0).standard_normal((4, cfg.in_channels, cfg.img_size, cfg.img_size),
                                                      dtype=np.float32)
    family = _ReferenceFamily(demo.model, points, attention, inputs)
    for point in points:
        got = family.outputs(point)
        want = _specialized(demo.model, point, attention, inputs)
        assert len(got) == len(want) == 1
        np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-5, err_msg=str(point))
    assert family.passes == len(tokens) * len(widths)  # one pass per (tokens, width), not one per point


def test_distilled_reference_stays_per_point(conformance_models):
    """The shared pass gives logits only: a distilled model's reference (logits and features) is per point."""
    loaded = conformance_models["distill"]
    cfg = loaded.config
    assert cfg.distilled
    points = [ConfigPoint(cfg.mask_token_grans[-1], cfg.mat_dims[-1], d) for d in (1, cfg.depth)]
    inputs = np.random.default_rng(1).standard_normal((2, cfg.in_channels, cfg.img_size, cfg.img_size),
                                                      dtype=np.float32)
    family = _ReferenceFamily(loaded.model, points, cfg.default_attention, inputs)
    for point in points:
        got, want = family.outputs(point), _specialized(loaded.model, point, cfg.default_attention, inputs)
        assert len(got) == 2
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-5)
    assert family.passes == len(points)


# --- no dataset: fp32 parity on seeded random inputs -------------------------------------

CLASSIFICATION = CONFORMANCE / "classification"  # 32x32x3, 10 classes: the demo's data does not fit it
ONE_POINT = ["--device", "x86-cpu", "--tokens", "64", "--width", "64", "--depth", "2,4", "--no-profile"]


def _random_profile(tmp_path, extra=""):
    source = (DATA / "profiles" / "ort-fp32.toml").read_text()
    path = tmp_path / "random.toml"
    path.write_text(source.replace("[parity]\n", "[parity]\n" + extra))
    return str(path)


@pytest.mark.slow
def test_build_without_dataset(tmp_path):
    """A checkpoint the demo's data does not fit builds with no dataset: fp32 engines checked on
    random inputs (recorded as such), every reduced precision skipped with the reason, exit 0."""
    out = tmp_path / "build"
    result = run_cli("build", str(CLASSIFICATION), *ONE_POINT, "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    assert "no dataset" in result.stderr
    manifest = read_manifest(out)
    validate(manifest)
    assert manifest["build"]["dataset"] == "none"
    skipped = {(s["backend"], s["precision"]) for s in manifest["build"]["skipped"]}
    assert ("onnxruntime", "int8") in skipped and all(p != "fp32" for _, p in skipped)  # (+ OpenVINO's, where installed)
    for backend, precision in skipped:
        assert f"not building {backend} {precision}: " in result.stderr
    assert all("has no dataset" in s["reason"] for s in manifest["build"]["skipped"])
    engines = manifest["engines"]
    assert {e["precision"] for e in engines} == {"fp32"} and len(engines) >= 2
    assert {(e["backend"], e["precision"]) for e in engines} >= {("onnxruntime", "fp32")}
    for e in engines:
        parity = e["parity"]
        assert parity["passed"] and parity["inputs"] == "random" and parity["seed"] == 0
        assert parity["samples"] == 16 and "top1" not in parity  # no labels: max_abs and agreement only
    from adaexport.datasets import random_inputs
    from adaexport.device_compile import _reference_inputs

    inputs, labels = _reference_inputs(manifest, 256, 16)  # what `adaexport compile` checks pending engines on
    assert labels is None and np.array_equal(inputs, random_inputs(16, 3, 32))
    # a rebuild reuses every parity result (the random inputs are the same)
    again = run_cli("build", str(CLASSIFICATION), *ONE_POINT, "--out", str(out), "--json")
    assert again.returncode == 0, again.stderr
    assert json_result(again)["parity_runs"] == 0


def test_explicit_none_and_random_samples(tmp_path, demo):
    """`--dataset none` works even where the demo data fits; the profile's random_samples sets the count."""
    out = tmp_path / "build"
    profile = _random_profile(tmp_path, "random_samples = 4\n")
    cfg = demo.config
    result = run_cli("build", "--dataset", "none", "--build-profile", profile, "--device", "x86-cpu", "--tokens",
                     str(cfg.mask_token_grans[0]), "--width", str(cfg.mat_dims[0]), "--depth", "1",
                     "--no-profile", "--batch", "3", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    (engine,) = json_result(result)["engines"]
    assert engine["parity"]["samples"] == 6  # 4 rounded up to whole batches of 3
    assert engine["parity"]["inputs"] == "random"


@pytest.mark.parametrize("args, message", [
    (["--dataset", "demo"], "does not fit classification"),
    (["--grid", "front"], "there is none: pass --dataset SPEC or --search FILE"),
])
def test_no_dataset_bad_input(tmp_path, args, message):
    result = run_cli("build", str(CLASSIFICATION), "--device", "x86-cpu", *args, "--out", str(tmp_path / "b"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "b").exists()


def test_random_samples_must_be_positive(tmp_path):
    result = run_cli("build", str(CLASSIFICATION), "--build-profile", _random_profile(tmp_path, "random_samples = 0\n"),
                     "--out", str(tmp_path / "b"))
    assert result.returncode == 2 and "parity.random_samples" in result.stderr, result.stderr


# --- --dataset imagefolder:DIR in build, decoding only the samples -------------------------


def _image_folder(root, classes=3, per_class=6, size=40):
    from PIL import Image

    rng = np.random.default_rng(2)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root


def test_image_folder_sample_decodes_only_the_sample(tmp_path, monkeypatch, conformance_models):
    pytest.importorskip("PIL")
    from adaexport import datasets

    folder = _image_folder(tmp_path / "images")
    decoded = []
    real = datasets.decode_image
    monkeypatch.setattr(datasets, "decode_image", lambda path, *a: decoded.append(path) or real(path, *a))
    cfg = conformance_models["classification"].config
    inputs, labels = datasets.model_inputs(f"imagefolder:{folder}", cfg, limit=6, spread=True)
    assert len(decoded) == 6 and inputs.shape == (6, 3, 32, 32)
    assert set(labels.tolist()) == {0, 1, 2}  # spread over the classes, not the first folder's 6


@pytest.mark.slow
def test_build_with_image_folder(tmp_path):
    pytest.importorskip("PIL")
    folder = _image_folder(tmp_path / "images")
    path = tmp_path / "folder.toml"
    path.write_text((DATA / "profiles" / "ort-fp32.toml").read_text().replace("samples = 256", "samples = 8"))
    result = run_cli("build", str(CLASSIFICATION), "--dataset", f"imagefolder:{folder}", "--build-profile", str(path),
                     "--device", "x86-cpu", "--tokens", "64", "--width", "64", "--depth", "2", "--no-profile",
                     "--out", str(tmp_path / "b"), "--json")
    assert result.returncode == 0, result.stderr
    (engine,) = json_result(result)["engines"]
    parity = engine["parity"]
    assert parity["passed"] and parity["samples"] == 8 and "top1" in parity and "inputs" not in parity
    manifest = read_manifest(tmp_path / "b")
    assert manifest["build"]["dataset"] == f"imagefolder:{folder}"
    # `adaexport compile` reads the same images from the manifest alone (no checkpoint)
    from adaexport.datasets import model_inputs
    from adaexport.device_compile import _reference_inputs
    from adaexport.model import load_checkpoint

    inputs, labels = _reference_inputs(manifest, 8, 16)
    want, want_labels = model_inputs(f"imagefolder:{folder}", load_checkpoint(CLASSIFICATION).config, 8 + 128,
                                     spread=True)
    np.testing.assert_array_equal(inputs, want[:8])
    np.testing.assert_array_equal(labels, want_labels[:8])


def test_auto_parity_samples_shrink_with_the_models_cost(demo):
    """The default profile's `samples = "auto"`: 256 images for the demo, 3600 / GFLOPs at
    the full point for a published-size model (74.8 GFLOPs in its block mode: 48); a number in the
    profile wins."""
    from adaexport.model import AdaPerceiverConfig
    from adaexport.profiles import load_profile
    from adaexport.stages.context import parity_sample_count

    published = AdaPerceiverConfig.from_dict({
        "embed_dim": 832, "num_heads": 13, "depth": 21, "max_latent_tokens": 256,
        "mask_token_grans": [32, 64, 96, 128, 192, 256], "mat_dims": [416, 624, 832], "img_size": 224,
        "patch_size": 14, "in_channels": 3, "num_classes": 1000, "ffn_ratio": 2.57})
    default = load_profile("default")
    assert default.parity_samples is None
    assert parity_sample_count(default, demo.config) == 256
    assert parity_sample_count(default, published) == 48
    assert parity_sample_count(load_profile("quick"), published) == 64
