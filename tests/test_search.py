"""adaexport search: every trained configuration scored from a few shared passes, exactly as
eval's single-configuration PyTorch reference scores it; the front; builds chosen from it."""

import json

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from adaexport.datasets import model_inputs
from adaexport.errors import UsageError
from adaexport.evaluate import scores
from adaexport.reference import reference_logits
from adaexport.model.config import AdaPerceiverConfig
from adaexport.model.flops import count_flops, count_search_flops
from adaexport.model.shared_pass import SharedPass, plan_passes
from adaexport.model.static import specialize
from adaexport.progress import QuietReporter
from adaexport.search import front_of, read_search, run_search, search_attention, spread
from adaexport.space import ConfigPoint, SpaceError, build_grid, front_count

from .conftest import CONFORMANCE, ROOT, json_result, run_cli

PROFILE = str(ROOT / "tests" / "data" / "profiles" / "ort-fp32.toml")
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the CLI runs: no thread contention on a shared machine
PUBLISHED = AdaPerceiverConfig(embed_dim=832, num_heads=13, depth=21, max_latent_tokens=256,
                               mask_token_grans=(32, 64, 96, 128, 192, 256), mat_dims=(416, 624, 832), img_size=224,
                               patch_size=14, in_channels=3, num_classes=1000, ffn_ratio=2.57)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: two contend with each other on a loaded 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def trained_plan(cfg, attention):
    points, _ = build_grid(cfg, "trained")
    return points, plan_passes(cfg, {p.tokens for p in points}, {p.width for p in points},
                               {p.depth for p in points}, attention)


# --- item 2: exactly the numbers eval gives ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["block", "full"])
def test_search_equals_single_configuration_pytorch_on_every_demo_point(demo, attention):
    """Every one of the demo's 36 points, on the 2,000 held-out images: the predicted class of
    every image, and so top-1/top-5, equal those of eval's PyTorch reference (the static
    module at that single point, same inputs and chunks); logits within 1e-5."""
    inputs, labels = model_inputs("demo", demo.config)
    result = run_search(demo, inputs, labels, "demo", attention, QuietReporter())
    by_id = {c["id"]: c for c in result.doc["configurations"]}
    points, plan = trained_plan(demo.config, attention)
    assert len(points) == 36 and set(result.predictions) == set(points) == set(by_id_points(by_id))
    shared = SharedPass(demo.model, plan)(torch.from_numpy(inputs[:64]))
    for point in points:
        reference = reference_logits(demo.model, point, attention, inputs)
        assert float(np.abs(shared[point].numpy() - reference[:64]).max()) <= 1e-5, point.id
        differ = np.flatnonzero(result.predictions[point] != reference.argmax(axis=1))
        assert differ.size == 0, f"{point.id}: images {differ[:10]} classified differently"
        top1, top5 = scores(reference, labels)
        assert (by_id[point.id]["top1"], by_id[point.id]["top5"]) == (top1, top5), point.id


def by_id_points(by_id):
    return [ConfigPoint(**c["point"]) for c in by_id.values()]


@pytest.mark.parametrize("variant", ["classification", "distill"])
def test_shared_pass_logits_match_single_configuration_on_conformance_models(conformance_models, variant):
    """Every trained point of the conformance checkpoints (grans 16..64, 3 widths, 4 depths),
    both modes: the shared passes' logits within 1e-5 of the dynamic model's forward at that
    single point (the demo test compares with the static module, what eval runs), and within
    the conformance tolerance of the reference implementation's own outputs."""
    model = conformance_models[variant].model
    cases = json.loads((CONFORMANCE / variant / "cases.json").read_text())
    arrays = np.load(CONFORMANCE / variant / "cases.npz")
    image = torch.from_numpy(arrays[cases["input"]])
    checked_cases = 0
    for attention in ("block", "full"):
        points, plan = trained_plan(model.config, attention)
        logits = SharedPass(model, plan)(image)
        assert set(logits) == set(points) and len(points) == 48
        for point in points:
            with torch.no_grad():
                single = model(image, point.tokens, point.width, point.depth, attention)["logits"]
            assert float((logits[point] - single).abs().max()) <= 1e-5, (attention, point.id)
        for case in cases["cases"]:
            point = ConfigPoint(case["num_tokens"], case["mat_dim"], case["depth"])
            if case["attention"] == attention and point in logits:
                expected = arrays[f"{case['id']}.logits"].reshape(logits[point].shape)
                assert float(np.abs(logits[point].numpy() - expected).max()) <= 1e-4, case["id"]
                checked_cases += 1
    assert checked_cases == 36  # tokens 16 and 64 x 3 widths x depths 1, 2, 4 x 2 modes


# --- item 3: the cost in forward passes --------------------------------------------------------


@pytest.mark.parametrize("attention, passes, bound", [("block", 3, 3 + 1), ("full", 9, 9 + 1)])
def test_search_costs_at_most_widths_plus_one_forward_passes_on_the_demo(demo, attention, passes, bound):
    """FLOPs measured by torch's counter on one image: the search's passes against one
    forward of the full configuration; the analytic count agrees with the measured one."""
    _, plan = trained_plan(demo.config, attention)
    assert plan.passes == passes
    image = torch.zeros(1, 1, 28, 28)
    shared, single = SharedPass(demo.model, plan), specialize(demo.model, ConfigPoint.full(demo.config), attention)
    with FlopCounterMode(display=False) as counter:
        shared(image)
    searched = counter.get_total_flops()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        single(image)
    assert searched <= bound * counter.get_total_flops()
    analytic = count_search_flops(demo.config, plan.runs, list(plan.widths), list(plan.depths))
    assert abs(analytic - searched) <= 0.02 * searched


def test_published_size_plan_and_cost():
    """378 configurations: 3 passes in block mode (one per width; the rotary tables of every
    granularity are prefixes of 256's), 18 in full mode; FLOPs within the issue's bounds."""
    full = count_flops(PUBLISHED, ConfigPoint.full(PUBLISHED))
    for attention, passes, bound in (("block", 3, 3 + 1), ("full", 18, 18 + 1)):
        points, plan = trained_plan(PUBLISHED, attention)
        assert len(points) == 378 and plan.points() == points and plan.passes == passes
        assert count_search_flops(PUBLISHED, plan.runs, list(plan.widths), list(plan.depths)) <= bound * full


def test_a_token_count_past_the_rotary_range_gets_its_own_pass():
    """Position interpolation rescales the rotary table beyond max_latent_tokens, so such a
    pass's first latents are not a smaller pass's: the plan checks the tables, not a rule."""
    cfg = AdaPerceiverConfig(**{**PUBLISHED.__dict__, "mask_token_grans": (32, 64, 320)})
    _, plan = trained_plan(cfg, "block")
    assert plan.runs == {320: (320,), 64: (32, 64)}


# --- the front and front:K ------------------------------------------------------------------------


def test_spread_keeps_the_ends_and_spreads_between():
    items = [(f"p{i}", 10.0 * 2**i, 0.5 + 0.01 * i) for i in range(10)]
    assert spread(items, None) == [i for i, _, _ in items] and spread(items, 12) == [i for i, _, _ in items]
    assert spread(items, 2) == ["p0", "p9"]
    three = spread(items, 3)
    assert three[0] == "p0" and three[-1] == "p9" and three[1] in ("p4", "p5")
    five = spread(items, 5)
    assert len(set(five)) == 5 and five == sorted(five, key=lambda i: int(i[1:]))


def test_front_grid_names():
    assert front_count("front") is None and front_count("front:12") == 12
    for bad in ("front:1", "front:x", "front:"):
        with pytest.raises(SpaceError, match="front or front:K with K >= 2"):
            front_count(bad)
    with pytest.raises(SpaceError, match="only `adaexport build` and `adaexport export` take it"):
        build_grid(PUBLISHED, "front:3")


def test_mask_modes_that_do_not_share_tokens():
    assert search_attention(PUBLISHED, None) == "block" and search_attention(PUBLISHED, "full") == "full"
    for change in ({"block_mask": "causal"}, {"block_mask": "none"}, {"attn_layer": "full"}):
        cfg = AdaPerceiverConfig(**{**PUBLISHED.__dict__, **change})
        with pytest.raises(UsageError, match="search it with --attention full"):
            search_attention(cfg, "block")
        assert search_attention(cfg, "full") == "full"


# --- the command: items 1 and 4 ------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory):
    """The first 600 demo images as an npz dataset (a build's own search stays quick; their
    front has 6 configurations)."""
    from adaexport.demo import load_eval_subset

    x, y = load_eval_subset()
    path = tmp_path_factory.mktemp("data") / "demo600.npz"
    np.savez(path, x=x[:600], y=y[:600])
    return path


@pytest.mark.slow
def test_search_command_both_modes(tmp_path):
    block = tmp_path / "block.json"
    result = run_cli("search", "--dataset", "demo", "--limit", "300", "--out", str(block), env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    assert "[search]" in result.stderr and "wrote" in result.stdout and "front (cheapest first)" in result.stdout
    doc = read_search(block)
    assert len(doc["configurations"]) == 36 and doc["attention"] == "block" and doc["passes"]["per_image"] == 3
    assert doc["dataset"] == {"spec": "demo", "samples": 300, "sha256": doc["dataset"]["sha256"]}
    assert all(c["top5"] is not None and c["flops"] > 0 and c["params"] > 0 for c in doc["configurations"])
    assert doc["front"] == front_of(doc["configurations"]) and doc["cost"]["seconds"] > 0
    assert doc["cost"]["full_forward_passes"] <= 4
    full = run_cli("search", "--dataset", "demo", "--limit", "300", "--attention", "full", "--json",
                   "--out", str(tmp_path / "full.json"), env=ONE_THREAD)
    assert full.returncode == 0, full.stderr
    doc = json_result(full)
    assert doc["attention"] == "full" and doc["passes"]["per_image"] == 9 and len(doc["configurations"]) == 36
    assert "[search]" not in full.stderr  # --json: no progress
    assert json.loads((tmp_path / "full.json").read_text())["configurations"] == doc["configurations"]


def causal_checkpoint(tmp_path):
    """The conformance classification checkpoint with block_mask 'causal'."""
    causal = tmp_path / "causal"
    causal.mkdir()
    config = json.loads((CONFORMANCE / "classification" / "config.json").read_text())
    (causal / "config.json").write_text(json.dumps({**config, "block_mask": "causal"}))
    (causal / "model.safetensors").write_bytes((CONFORMANCE / "classification" / "model.safetensors").read_bytes())
    return causal


@pytest.mark.slow
def test_search_command_errors_are_one_line(tmp_path):
    for args, message in [
        (("--dataset", "npz:/no/such.npz"), "--dataset npz:/no/such.npz: /no/such.npz: no such file"),
        ((str(causal_checkpoint(tmp_path)), "--dataset", "demo"), "search it with --attention full"),
    ]:
        result = run_cli("search", *args, env=ONE_THREAD)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)


def test_search_user_errors(tmp_path):
    from adaexport.datasets import DatasetError
    from adaexport.model import CheckpointError
    from adaexport.search import search

    for args, error, message in [
        ((None, "imagenet", None, None), DatasetError, "unknown dataset spec"),
        ((CONFORMANCE / "classification", "demo", None, None), UsageError, "does not fit this model"),
        ((tmp_path / "nothing", "demo", None, None), CheckpointError, "no such file or directory"),
        ((None, "demo", "sparse", None), UsageError, "--attention: one of full, block"),
        ((None, "demo", None, 0), UsageError, "--limit must be >= 1"),
    ]:
        with pytest.raises(error, match=message):
            search(*args, QuietReporter())


@pytest.mark.slow
def test_full_path_on_a_checkpoint_that_does_not_share_tokens(tmp_path, conformance_models):
    """block_mask 'none': the checkpoint's own mode is full; searched with one pass per
    (token count, width), every configuration still equals its single-point forward."""
    loaded = conformance_models["classification"]
    cfg = AdaPerceiverConfig(**{**loaded.config.__dict__, "block_mask": "none"})
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((70, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, 70)
    model = loaded.model
    model.config, before = cfg, model.config
    try:
        result = run_search(loaded, inputs, labels, "npz", None, QuietReporter())
        assert result.doc["attention"] == "full" and result.doc["passes"]["per_image"] == 12
        point = ConfigPoint(32, 48, 2)
        assert np.array_equal(result.predictions[point], reference_logits(model, point, "full", inputs).argmax(1))
    finally:
        model.config = before


@pytest.mark.slow
def test_build_front_then_eval_reproduces_search(tmp_path, small_npz):
    """`build --grid front:5` (searching its own dataset) builds 5 configurations of the front,
    the cheapest and the most accurate among them; the manifest says how they were chosen;
    `eval` on the same data gives PyTorch top-1 equal to the search's for each; `report
    --search` plots every configuration with the built ones marked."""
    out = tmp_path / "front5"
    data = f"npz:{small_npz}"
    built = run_cli("build", "--out", str(out), "--grid", "front:5", "--dataset", data, "--build-profile", PROFILE,
                    "--no-profile", env=ONE_THREAD)
    assert built.returncode == 0, built.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    selection = manifest["build"]["selection"]
    search = read_search(out / "search.json")
    assert selection["front"] == search["front"] and len(selection["chosen"]) == 5
    assert {search["front"][0], search["front"][-1]} <= set(selection["chosen"])
    assert selection["grid"] == "front:5" and selection["search"]["dataset"]["spec"] == data
    assert [e["id"].split("-")[0] for e in manifest["engines"]] == selection["chosen"]

    evaluated = run_cli("eval", str(out), "--dataset", data, "--json", env=ONE_THREAD)
    assert evaluated.returncode == 0, evaluated.stderr
    by_id = {c["id"]: c for c in search["configurations"]}
    for engine_id, accuracy in json_result(evaluated)["engines"].items():
        searched = by_id[engine_id.split("-")[0]]
        assert (accuracy["reference_top1"], accuracy["reference_top5"]) == (searched["top1"], searched["top5"])

    again = run_cli("build", "--out", str(out), "--grid", "front:3", "--search", str(out / "search.json"),
                    "--dataset", data, "--build-profile", PROFILE, "--no-profile", env=ONE_THREAD)
    assert again.returncode == 0, again.stderr
    assert "[search]" not in again.stderr  # chosen from the file: nothing searched
    selection = json.loads((out / "manifest.json").read_text())["build"]["selection"]
    assert len(selection["chosen"]) == 3 and selection["search"]["source"] == str(out / "search.json")

    report = run_cli("report", str(out), "--search", "--width", "640", "--height", "480")
    assert report.returncode == 0, report.stderr
    png = (out / "search.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (out / "search.html").is_file()
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (640, 480)


def test_build_refuses_a_search_of_another_model_or_mode(tmp_path):
    from adaexport.build import BuildRequest, run_build

    doc = {"schema": "adaexport.search/1", "model": {"name": "x", "sha256": "0" * 64}, "attention": "block",
           "dataset": {"spec": "demo"}, "configurations": [{"id": "t8_w32_d1", "point": {"tokens": 8, "width": 32,
                                                                                        "depth": 1},
                                                             "flops": 1, "params": 1, "top1": 0.5, "top5": None}]}
    other = tmp_path / "other.json"
    other.write_text(json.dumps(doc))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    for search, grid, message in [(other, "front", "--search .*other.json: a search of model x"),
                                  (broken, "front:3", "not a readable JSON file"),
                                  (tmp_path / "none.json", "front", "no such file"),
                                  (other, "trained", "--search FILE goes with --grid front")]:
        with pytest.raises(UsageError, match=message):
            run_build(BuildRequest(out=tmp_path / "b", grid=grid, search=search, parity=False), QuietReporter())
    with pytest.raises(UsageError, match="searched with block attention, the build uses full"):
        real = tmp_path / "demo.json"
        from adaexport.demo import DEMO_MODEL
        from adaexport.model import load_checkpoint

        real.write_text(json.dumps({**doc, "model": {"name": "demo", "sha256": load_checkpoint(DEMO_MODEL).sha256}}))
        run_build(BuildRequest(out=tmp_path / "b", grid="front", search=real, attention="full", parity=False),
                  QuietReporter())
    assert not (tmp_path / "b" / "manifest.json").exists()
