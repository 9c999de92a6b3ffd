import gzip
import re
import struct

import numpy as np
import pytest

from adaexport.datasets import DatasetError, load_raw, model_inputs, preprocess, read_idx
from adaexport.model import AdaPerceiverConfig
from adaexport.validate import Parity, compare
from adaexport.profiles import Tolerance

from .bad_inputs_support import png_claiming
from .conftest import CONFORMANCE


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_round_trip_and_truncation(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", images)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), images)
    raw = gzip.decompress((tmp_path / "a.gz").read_bytes())
    (tmp_path / "b").write_bytes(raw[:-3])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(tmp_path / "b")
    (tmp_path / "c").write_bytes(b"hello world")
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(tmp_path / "c")


def test_fashion_mnist_layout_from_a_directory(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.full((5, 28, 28), 7))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(5))
    x, y = load_raw(f"fashion-mnist:{tmp_path}")
    assert x.shape == (5, 28, 28) and list(y) == [0, 1, 2, 3, 4]
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="missing t10k-images-idx3-ubyte"):
        load_raw(f"fashion-mnist:{tmp_path}")
    with pytest.raises(DatasetError, match="no such directory"):
        load_raw(f"fashion-mnist:{tmp_path / 'elsewhere'}")


def test_bad_specs():
    with pytest.raises(DatasetError, match="unknown dataset spec"):
        load_raw("imagenet")
    with pytest.raises(DatasetError, match="no such file"):
        load_raw("npz:/does/not/exist.npz")


def test_npz_label_range_is_checked(tmp_path):
    cfg = AdaPerceiverConfig.from_file(CONFORMANCE / "classification" / "config.json")
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 32, 32, 3), np.uint8), y=np.array([0, 1, 2, 10]))
    with pytest.raises(DatasetError, match="labels span 0..10, the model has 10 classes"):
        model_inputs(f"npz:{tmp_path / 'd.npz'}", cfg)


def test_preprocess_normalises_resizes_and_crops():
    spec = {"resize": 32, "crop": 28, "mean": [0.5], "std": [0.25]}
    images = np.full((2, 64, 80), 255, np.uint8)
    x = preprocess(images, spec, channels=1, size=28)
    assert x.shape == (2, 1, 28, 28) and x.dtype == np.float32
    assert np.allclose(x, (1.0 - 0.5) / 0.25, atol=1e-4)
    gray = preprocess(np.zeros((1, 28, 28), np.uint8), {"mean": [0.5] * 3, "std": [0.5] * 3}, channels=3, size=28)
    assert gray.shape == (1, 3, 28, 28) and np.allclose(gray, -1.0)


def test_demo_subset_is_a_held_out_slice_of_the_test_split():
    from adaexport.datasets import FASHION_MNIST_DIR, load_fashion_mnist

    x, y = load_raw("demo")
    assert len(x) >= 2000 and x.shape[1:] == (28, 28) and x.dtype == np.uint8
    assert set(np.unique(y)) == set(range(10))
    if not FASHION_MNIST_DIR.is_dir():
        pytest.skip("dataset-fashion-mnist is not installed")
    index = np.load(__import__("adaexport.demo", fromlist=["EVAL_SUBSET"]).EVAL_SUBSET)["index"]
    test_x, test_y = load_fashion_mnist(FASHION_MNIST_DIR, "test")
    assert np.array_equal(test_x[index], x) and np.array_equal(test_y[index], y)


def test_parity_metrics_and_the_tolerance_that_would_pass():
    ref = [np.array([[1.0, 2.0], [3.0, 0.0]]), np.ones((2, 4))]
    got = [np.array([[1.0, 2.5], [3.0, 4.0]]), np.ones((2, 4))]
    parity = compare(ref, got)
    assert parity == Parity(max_abs=4.0, max_rel=4.0 / 3.0, top1_agreement=0.5, samples=2, flipped=((3.0, 1.5),))
    tol = Tolerance(max_abs=1e-3, min_top1_agreement=0.99)
    assert not parity.passes(tol)
    message = parity.failure_message("t8_w32_d1 onnxruntime fp32", tol)
    assert "max_abs 4 > 0.001" in message and "max_abs >= 4" in message and "<= 0.5000" in message
    assert "(on the 1 sample(s) whose top-1 changed, PyTorch scored the engine's class 3 below its own top-1, its " \
           "logits' standard deviation being 1.5)" in message
    assert parity.passes(parity.would_pass(tol))


def test_a_parity_failure_shows_how_near_the_flipped_samples_were_to_a_tie():
    """Top-1 flips where the reference hardly preferred its class (a random-weights model's
    logits) can be told from flips of samples the reference was sure of."""
    ref = [np.array([[1.0, 1.001, 0.0], [0.0, 1.0, 1.0005], [5.0, 0.0, 0.0]])]
    got = [np.array([[1.002, 1.0, 0.0], [0.0, 1.001, 1.0], [5.0, 0.0, 0.0]])]
    parity = compare(ref, got)
    assert parity.top1_agreement == pytest.approx(1 / 3) and len(parity.flipped) == 2
    message = parity.failure_message("t256_w832_d6 (openvino bf16)", Tolerance(max_abs=None, min_top1_agreement=0.98))
    assert "top-1 agreement 0.3333 < 0.98 (2 of 3 samples changed top-1, 1 allowed) (on the 2 sample(s) whose " \
           "top-1 changed, PyTorch scored the engine's class 0.0005..0.001 below its own top-1, its logits' " \
           "standard deviation being 0.472" in message
    unchanged = compare(ref, ref).failure_message("x", Tolerance(max_abs=None, min_top1_agreement=1.1))
    assert "whose top-1 changed" not in unchanged


def test_near_ties_are_recorded_and_not_judged_but_confident_flips_are():
    """With a tie_margin, a changed top-1 counts against the agreement only where PyTorch
    scored the engine's class more than tie_margin standard deviations below its own top-1.
    The gap is to the class the engine chose, not to PyTorch's second: a sample whose top two
    are tied but whose engine picked a third class is judged."""
    ref = np.array([[1.0, 0.999, 0.0, 0.0], [1.0, 0.998, -1.0, 0.0], [1.0, 0.0, 0.999, 0.0], [1.0, 0.0, 0.0, 0.0]])
    spread = ref.std(axis=-1)
    # row 0: the engine takes PyTorch's second, 0.001 below (a near-tie); row 1: also a near-tie;
    # row 2: the engine takes class 3, which PyTorch scored 1.0 below its top-1 (its second,
    # class 2, is 0.001 below); row 3: unchanged
    got = np.array([[0.9, 1.0, 0.0, 0.0], [0.9, 1.0, -1.0, 0.0], [0.9, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    parity = compare([ref], [got])
    assert parity.changed == 3
    assert [gap for gap, _ in parity.flipped] == pytest.approx([0.001, 0.002, 1.0])
    assert [s for _, s in parity.flipped] == pytest.approx(list(spread[:3]))
    strict = Tolerance(max_abs=None, min_top1_agreement=0.75)
    tied = Tolerance(max_abs=None, min_top1_agreement=0.75, tie_margin=0.1)
    assert parity.near_ties(strict) == 0 and not parity.passes(strict)
    assert parity.near_ties(tied) == 2 and parity.judged_agreement(tied) == pytest.approx(0.75)
    assert parity.passes(tied)
    record = parity.record(tied)
    assert record["near_ties"] == 2 and record["top1_agreement"] == pytest.approx(0.25)
    assert record["tolerance"]["tie_margin"] == 0.1 and "near_ties" not in parity.record(strict)
    # the confident flip alone is more than 0.99 allows of four samples (none)
    message = parity.failure_message("e", Tolerance(max_abs=None, min_top1_agreement=0.99, tie_margin=0.1))
    assert "top-1 agreement 0.7500 < 0.99 (3 of 4 samples changed top-1, 2 of them near-ties not counted, 0 allowed)" \
        in message
    assert "min_top1_agreement <= 0.7500" in message
    # a tie_margin wide enough to cover the gap of 1.0 (over 2 standard deviations) excuses it too
    assert parity.passes(Tolerance(max_abs=None, min_top1_agreement=1.0, tie_margin=3.0))


def test_the_default_tie_margin_does_not_excuse_a_broken_engine_on_the_trained_demo():
    """An engine that lost a sign in conversion (the demo's block-1 attention projection
    negated, run in PyTorch) changes samples the trained model was sure of: none of its
    changes is a near-tie under the default profile's int8 tolerance, and it fails parity,
    where the real int8 engines' changes are mostly near-ties (docs/DESIGN.md, "Engines")."""
    import copy

    import torch

    from adaexport.demo import DEMO_MODEL
    from adaexport.model.checkpoint import load_checkpoint
    from adaexport.model.point import ConfigPoint
    from adaexport.model.static import specialize
    from adaexport.profiles import load_profile

    loaded = load_checkpoint(DEMO_MODEL)
    cfg = loaded.config
    x, y = model_inputs("demo", cfg, 256)
    point = ConfigPoint(tokens=cfg.mask_token_grans[-1], width=cfg.mat_dims[-1], depth=cfg.depth)
    broken = copy.deepcopy(loaded.model)
    with torch.no_grad():
        broken.blocks[1].attn.proj.weight.neg_()
        ref, got = (specialize(m, point)(torch.from_numpy(x))[0].numpy() for m in (loaded.model, broken))
    tol = load_profile("default").tolerance("int8")
    assert tol.tie_margin
    parity = compare([ref], [got], y)
    assert parity.changed > parity.allowed_flips(tol)
    assert parity.near_ties(tol) == 0 and not parity.passes(tol)


def demo_config():
    from adaexport.demo import DEMO_MODEL

    return AdaPerceiverConfig.from_file(DEMO_MODEL / "config.json")


def write_image_folder(root, images, labels, names):
    from PIL import Image

    for k, (image, label) in enumerate(zip(images, labels)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{k:04d}.png")


def test_imagefolder_decodes_like_the_arrays_it_was_written_from(tmp_path):
    """PNGs of demo images, in folders named after the model's classes ('/' written as '_'),
    give exactly the model input and labels the arrays themselves give."""
    pytest.importorskip("PIL")
    cfg = demo_config()
    x, y = load_raw("demo")
    x, y = x[:40], y[:40]
    names = [n.replace("/", "_") for n in cfg.class_names]
    write_image_folder(tmp_path, x, y, names)
    got_x, got_y = model_inputs(f"imagefolder:{tmp_path}", cfg)
    order = np.lexsort((np.arange(len(y)), y))  # files are read class by class, in name order
    want_x = preprocess(x[order], cfg.preprocessing_spec(), cfg.in_channels, cfg.img_size)
    assert np.array_equal(got_y, y[order])
    assert np.allclose(got_x, want_x, atol=1e-6)


def test_imagefolder_resizes_and_centre_crops_with_pillow(tmp_path):
    """A 3-channel model with resize 40 / crop 32: a 80x60 image becomes 53x40, then the
    centre 32x32; a left half black / right half white image stays split in the middle."""
    pytest.importorskip("PIL")
    from PIL import Image

    cfg = AdaPerceiverConfig.from_file(CONFORMANCE / "classification" / "config.json")
    spec = {"resize": 40, "crop": 32, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear"}
    cfg = AdaPerceiverConfig.from_dict({**cfg.to_dict(), "preprocessing": spec, "class_names": None})
    image = np.zeros((60, 80, 3), np.uint8)
    image[:, 40:] = 255
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    Image.fromarray(image).save(tmp_path / "b" / "x.png")
    Image.fromarray(image).convert("L").save(tmp_path / "a" / "y.jpg", quality=100)
    x, y = model_inputs(f"imagefolder:{tmp_path}", cfg)
    assert x.shape == (2, 3, 32, 32) and list(y) == [0, 1]  # sorted folder names without class names
    assert np.allclose(x[:, :, :, :12], -1.0, atol=0.05) and np.allclose(x[:, :, :, -12:], 1.0, atol=0.05)


def test_imagefolder_errors(tmp_path):
    pytest.importorskip("PIL")
    cfg = demo_config()
    spec = f"imagefolder:{tmp_path}"
    with pytest.raises(DatasetError, match="no such directory"):
        model_inputs(f"imagefolder:{tmp_path / 'nope'}", cfg)
    with pytest.raises(DatasetError, match="no class folders"):
        model_inputs(spec, cfg)
    (tmp_path / "Trouser").mkdir()
    (tmp_path / "Trouser" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="no images in its 1 class folder"):
        model_inputs(spec, cfg)
    (tmp_path / "Trouser" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match="broken.png: unreadable image"):
        model_inputs(spec, cfg)
    (tmp_path / "Trouser" / "broken.png").unlink()
    (tmp_path / "Giraffe").mkdir()
    with pytest.raises(DatasetError, match="'Giraffe' are not classes of the model"):
        model_inputs(spec, cfg)
    # without class names in the config, more folders than classes is an error
    plain = AdaPerceiverConfig.from_dict({**cfg.to_dict(), "class_names": None})
    for k in range(11):
        write_image_folder(tmp_path / "many", np.zeros((1, 28, 28), np.uint8), [0], [f"c{k:02d}"])
    with pytest.raises(DatasetError, match="11 class folders, the model has 10 classes"):
        model_inputs(f"imagefolder:{tmp_path / 'many'}", plain)


def test_npz_error_paths(tmp_path):
    cfg = demo_config()
    np.savez(tmp_path / "noy.npz", x=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DatasetError, match="expected arrays 'x' and 'y'"):
        model_inputs(f"npz:{tmp_path / 'noy.npz'}", cfg)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        model_inputs(f"npz:{tmp_path / 'junk.npz'}", cfg)
    np.savez(tmp_path / "count.npz", x=np.zeros((3, 28, 28), np.uint8), y=np.zeros(2))
    with pytest.raises(DatasetError, match="3 images but 2 labels"):
        model_inputs(f"npz:{tmp_path / 'count.npz'}", cfg)
    np.savez(tmp_path / "shape.npz", x=np.zeros((2, 28, 28), np.uint8), y=np.zeros((2, 1)))
    with pytest.raises(DatasetError, match=r"labels of shape \(N,\)"):
        model_inputs(f"npz:{tmp_path / 'shape.npz'}", cfg)
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 28, 28), np.uint8), y=np.zeros(0))
    with pytest.raises(DatasetError, match="the dataset is empty"):
        model_inputs(f"npz:{tmp_path / 'empty.npz'}", cfg)
    np.savez(tmp_path / "rgb.npz", x=np.zeros((2, 28, 28, 3), np.uint8), y=np.zeros(2))
    with pytest.raises(DatasetError, match="the model takes 1 channel"):
        model_inputs(f"npz:{tmp_path / 'rgb.npz'}", cfg)


def test_corrupt_gzip_and_absurd_idx_headers_are_dataset_errors(tmp_path):
    images = np.zeros((2, 3, 4), np.uint8)
    write_idx(tmp_path / "a.gz", images)
    body = (tmp_path / "a.gz").read_bytes()
    (tmp_path / "corrupt.gz").write_bytes(body[:10] + b"\xff" * 32 + body[42:])  # zlib.error, not OSError
    with pytest.raises(DatasetError, match="corrupt.gz: cannot read"):
        read_idx(tmp_path / "corrupt.gz")
    for name, header in [("dims255", bytes([0, 0, 8, 255]) + b"\0" * 16),
                         ("dims255long", bytes([0, 0, 8, 255]) + struct.pack(">255I", *[1] * 255) + b"\0"),
                         ("dims0", bytes([0, 0, 8, 0]))]:
        (tmp_path / name).write_bytes(header)
        with pytest.raises(DatasetError, match="the IDX header claims"):
            read_idx(tmp_path / name)
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 3]) + b"\0" * 4)
    with pytest.raises(DatasetError, match="truncated IDX header"):
        read_idx(tmp_path / "short")
    (tmp_path / "huge").write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1))
    with pytest.raises(DatasetError, match="truncated IDX file"):
        read_idx(tmp_path / "huge")


@pytest.mark.parametrize("size", [(20000, 20000), (10000, 10000)])  # Pillow's error, and its warning
def test_decompression_bombs_are_refused_in_one_line(tmp_path, size):
    pytest.importorskip("PIL")
    from adaexport.runtime.preprocess import InputError, load_image

    (tmp_path / "Bag").mkdir()
    (tmp_path / "Bag" / "x.png").write_bytes(png_claiming(*size))
    with pytest.raises(DatasetError, match="x.png: refused, too many pixels") as info:
        model_inputs(f"imagefolder:{tmp_path}", demo_config())
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="x.png: refused, too many pixels"):
        load_image(tmp_path / "Bag" / "x.png", 1)


@pytest.mark.parametrize("x", [np.full((2, 1, 28, 28), np.nan, np.float32), np.full((2, 1, 28, 28), np.inf),
                               np.zeros((2, 1, 28, 28), np.complex64), np.zeros((2, 0, 0), np.uint8)])
def test_arrays_that_are_not_images_are_refused(tmp_path, x):
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(2, np.int64))
    with pytest.raises(DatasetError, match="NaN or infinite|must already be model input|expected images"):
        model_inputs(f"npz:{tmp_path / 'd.npz'}", demo_config())


@pytest.mark.parametrize("array, words", [
    (np.array(["a", "b"]), "holds <U1 values"),
    (np.zeros((0, 0), np.uint8), "got shape (0, 0, 1)"),
    (np.ones((28, 28), bool), "holds bool values"),
])
def test_npy_inputs_that_are_not_images(tmp_path, array, words):
    from adaexport.runtime.preprocess import InputError, load_image

    np.save(tmp_path / "x.npy", array)
    with pytest.raises(InputError, match=re.escape(words)):
        load_image(tmp_path / "x.npy", 1)


def test_an_all_nan_input_is_refused_not_classified():
    from adaexport.runtime.preprocess import InputError, to_model_input

    spec = {"shape": [1, 1, 28, 28]}
    with pytest.raises(InputError, match="NaN or infinite"):
        to_model_input(np.full((1, 28, 28), np.nan, np.float32), spec)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_eval_and_run_prepare_identical_tensors(tmp_path, interpolation):
    """`adaexport eval` (an image folder, an npz of arrays) and `adaexport run --input` (the
    runtime's reader) turn the same image into the same tensor, bit for bit: one path."""
    pytest.importorskip("PIL")
    from PIL import Image

    from adaexport.runtime.preprocess import load_image, to_model_input

    cfg = AdaPerceiverConfig.from_file(CONFORMANCE / "classification" / "config.json")
    spec = {"resize": 37, "crop": 32, "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3],
            "interpolation": interpolation}
    cfg = AdaPerceiverConfig.from_dict({**cfg.to_dict(), "preprocessing": spec, "class_names": None})
    image = np.random.default_rng(1).integers(0, 256, (45, 61, 3), dtype=np.uint8)
    (tmp_path / "a").mkdir()
    Image.fromarray(image).save(tmp_path / "a" / "x.png")
    np.savez(tmp_path / "d.npz", x=image[None], y=np.array([0]))
    served = to_model_input(load_image(tmp_path / "a" / "x.png", 3),
                            {"shape": [1, 3, 32, 32], "preprocessing": spec})
    folder, _ = model_inputs(f"imagefolder:{tmp_path}", cfg)
    arrays, _ = model_inputs(f"npz:{tmp_path / 'd.npz'}", cfg)
    assert served.shape == (1, 3, 32, 32)
    assert np.array_equal(served, folder) and np.array_equal(served, arrays)


def _flips(changed: int, samples: int, lost: int = 0) -> Parity:
    return Parity(max_abs=0.0, max_rel=0.0, top1_agreement=(samples - changed) / samples, samples=samples,
                  top1=(samples // 2 - lost) / samples, reference_top1=(samples // 2) / samples)


@pytest.mark.parametrize("samples, agreement, allowed", [
    (48, 0.98, 1),      # published size's default count: 0.98 x 48 would allow no flip
    (8, 0.95, 1),
    (256, 0.98, 5),     # the demo's count: the rate alone, as before
    (256, 0.95, 12),
    (1, 0.98, 0),       # one sample: a 2% rate makes a flip unlikely, none allowed
    (48, 1.0, 0),       # exact agreement asked: none
])
def test_parity_allows_the_flips_the_tolerance_rate_makes_likely_on_its_samples(samples, agreement, allowed):
    tol = Tolerance(max_abs=None, min_top1_agreement=agreement)
    assert _flips(allowed, samples).passes(tol)
    failing = _flips(allowed + 1, samples)
    assert not failing.passes(tol)
    assert f"({allowed + 1} of {samples} samples changed top-1, {allowed} allowed)" in failing.failure_message("e", tol)


def test_parity_allows_one_lost_sample_where_the_drop_tolerance_makes_it_likely():
    one = 100 / 48   # points
    drop = Tolerance(max_abs=None, min_top1_agreement=0.5, max_accuracy_drop=1.0)
    assert _flips(1, 48, lost=1).accuracy_drop == pytest.approx(one)
    assert _flips(1, 48, lost=1).passes(drop)
    message = _flips(2, 48, lost=2).failure_message("e", drop)
    assert f"accuracy drop {2 * one:.2f} points > 1 ({one:.2f} allowed on 48 samples)" in message
    assert not _flips(1, 48, lost=1).passes(Tolerance(max_abs=None, min_top1_agreement=0.5, max_accuracy_drop=0.0))
    assert _flips(4, 256, lost=4).passes(Tolerance(max_abs=None, min_top1_agreement=0.5, max_accuracy_drop=2.0))
    assert not _flips(6, 256, lost=6).passes(Tolerance(max_abs=None, min_top1_agreement=0.5, max_accuracy_drop=2.0))
