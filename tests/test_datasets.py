import gzip
import struct

import numpy as np
import pytest

from adaexport.datasets import DatasetError, load_raw, model_inputs, preprocess, read_idx
from adaexport.model import AdaPerceiverConfig
from adaexport.validate import Parity, compare
from adaexport.profiles import Tolerance

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
    assert parity == Parity(max_abs=4.0, max_rel=4.0 / 3.0, top1_agreement=0.5, samples=2)
    tol = Tolerance(max_abs=1e-3, min_top1_agreement=0.99)
    assert not parity.passes(tol)
    message = parity.failure_message("t8_w32_d1 onnxruntime fp32", tol)
    assert "max_abs 4 > 0.001" in message and "max_abs >= 4" in message and "<= 0.5000" in message
    assert parity.passes(parity.would_pass(tol))
