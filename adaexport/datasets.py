"""Readers for the datasets the demo and evaluation use (numpy only, no torch)."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
from .errors import DatasetError  # noqa: F401 - defined with the other user errors
from .preprocessing import prepare, resize_and_crop

from .errors import AdaexportError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_IDX_MAX_DIMS = 4  # labels have 1, images 3 (4 with channels)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped), the format of MNIST and Fashion-MNIST."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # a corrupt gzip stream raises zlib.error
        raise DatasetError(f"{path}: cannot read ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path}: not an IDX file")
    ndim = raw[3]
    if not 1 <= ndim <= _IDX_MAX_DIMS:
        raise DatasetError(f"{path}: the IDX header claims {ndim} dimensions (a dataset has 1 to {_IDX_MAX_DIMS})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = math.prod(shape)  # Python integers: a huge claimed shape cannot overflow
    if len(raw) - header != count * dtype.itemsize:
        raise DatasetError(f"{path}: truncated IDX file (header says shape {shape})")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise DatasetError(f"{directory}: missing {stem}[.gz]")


def load_fashion_mnist(directory: Path = FASHION_MNIST_DIR, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of one split ('train' or 't10k'/'test')."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"{directory}: no such directory")
    prefix = {"train": "train", "test": "t10k", "t10k": "t10k"}[split]
    images = read_idx(_find(directory, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(directory, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    if images.ndim != 3 or labels.shape != (images.shape[0],):
        raise DatasetError(f"{directory}: {len(labels)} labels for images of shape {images.shape}")
    return images, labels


# --- dataset specs and preprocessing into model input -------------------------------------


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        with np.load(path) as data:
            if "x" not in data or "y" not in data:
                raise DatasetError(f"{path}: expected arrays 'x' and 'y', found {sorted(data.files)}")
            return data["x"], data["y"].astype(np.int64)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable .npz file ({exc})") from None


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def image_folder_files(directory: Path, class_names=None) -> tuple[list[Path], np.ndarray, list[str]]:
    """The image files of a class-per-folder dataset, their labels and the folder names.

    With the model's class names, folder names must be among them (matched as written,
    or with '/' written as '_', since a folder name cannot hold a slash) and a folder
    gets its class's index; without them, folders are sorted and numbered."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"{directory}: no such directory")
    folders = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"{directory}: no class folders (expected one sub-folder of images per class)")
    if class_names:
        index = {}
        for i, name in enumerate(class_names):
            index.setdefault(name, i)
            index.setdefault(name.replace("/", "_"), i)
        unknown = [f.name for f in folders if f.name not in index]
        if unknown:
            raise DatasetError(f"{directory}: folder(s) {', '.join(map(repr, unknown[:5]))} are not classes of the "
                               f"model ({len(class_names)} classes: {', '.join(class_names[:5])}"
                               f"{', ...' if len(class_names) > 5 else ''})")
        folders = sorted(folders, key=lambda f: (index[f.name], f.name))  # read in class order
        numbers = [index[f.name] for f in folders]
    else:
        numbers = list(range(len(folders)))
    files: list[Path] = []
    labels: list[int] = []
    for folder, number in zip(folders, numbers):
        found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [number] * len(found)
    if not files:
        raise DatasetError(f"{directory}: no images in its {len(folders)} class folder(s) "
                           f"(looked for {', '.join(IMAGE_SUFFIXES)})")
    return files, np.asarray(labels, dtype=np.int64), [f.name for f in folders]


def decode_image(path: Path, channels: int, size: int, spec: dict) -> np.ndarray:
    """One image file -> uint8 (crop, crop, channels), resized and centre-cropped as the
    spec says (``preprocessing.resize_and_crop``; normalisation follows in `preprocess`)."""
    from .images import open_image

    with open_image(path, DatasetError, "imagefolder datasets need Pillow: pip install 'adaexport[datasets]'") as image:
        image = image.convert("L" if channels == 1 else "RGB")
        array = np.asarray(image, dtype=np.uint8).reshape(image.height, image.width, channels)
    return resize_and_crop(array, spec, size, DatasetError)


def spread_indices(total: int, count: int) -> np.ndarray:
    """`count` of `total` indices spread evenly over the whole range (every class of a
    class-ordered dataset), in a seeded shuffled order, so that any leading part of them
    (the parity samples before the calibration ones) is spread too."""
    if count >= total:
        return np.arange(total)
    chosen = np.linspace(0, total - 1, count).round().astype(np.int64)
    return chosen[np.random.default_rng(RANDOM_SEED).permutation(count)]


DECODE_CHUNK = 32  # images decoded and normalised at a time: memory holds the prepared sample and one chunk


def load_image_folder(directory: Path, config, sample: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Model input (N, C, crop, crop) float32, resized, cropped and normalised, and labels.
    With `sample`, only that many files (`spread_indices`) are decoded: memory holds the
    prepared sample and one chunk of decoded images, never the folder."""
    files, labels, folders = image_folder_files(directory, config.class_names)
    if not config.class_names and len(folders) > config.num_classes:
        raise DatasetError(f"{directory}: {len(folders)} class folders, the model has {config.num_classes} classes")
    if sample is not None:
        chosen = spread_indices(len(files), sample)
        files, labels = [files[i] for i in chosen], labels[chosen]
    spec = config.preprocessing_spec()
    inputs = None
    for start in range(0, max(len(files), 1), DECODE_CHUNK):  # decoded and prepared a chunk at a time
        images = np.stack([decode_image(f, config.in_channels, config.img_size, spec)
                           for f in files[start:start + DECODE_CHUNK]])
        crop = images.shape[1]
        chunk = preprocess(images, {**spec, "resize": crop, "crop": crop}, config.in_channels, crop)
        if inputs is None:
            inputs = np.empty((len(files), *chunk.shape[1:]), dtype=np.float32)
        inputs[start:start + len(chunk)] = chunk
    return inputs, labels


def load_raw(spec: str, config=None, sample: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels for a dataset spec: `demo`, `fashion-mnist:DIR` (its test split),
    `npz:FILE` (arrays x and y) or `imagefolder:DIR` (one folder per class; needs the
    model's config, whose class names and preprocessing it follows). `sample`: an image
    folder decodes only that many images, spread over its classes (`load_image_folder`);
    the other formats are arrays read whole, and ignore it."""
    kind, _, arg = spec.partition(":")
    if kind == "demo" and not arg:
        from .demo import load_eval_subset

        return load_eval_subset()
    if kind == "fashion-mnist":
        return load_fashion_mnist(Path(arg) if arg else FASHION_MNIST_DIR, "test")
    if kind == "npz" and arg:
        return _load_npz(Path(arg))
    if kind == "imagefolder" and arg:
        if config is None:
            raise DatasetError("imagefolder datasets are read for a model (its classes and preprocessing)")
        return load_image_folder(Path(arg), config, sample)
    raise DatasetError(f"unknown dataset spec {spec!r} (use demo, fashion-mnist:DIR, npz:FILE or imagefolder:DIR)")


def preprocess(images: np.ndarray, spec: dict, channels: int, size: int) -> np.ndarray:
    """uint8 images (N, H, W) or (N, H, W, C) -> float32 (N, C, size, size), normalised.

    Float arrays shaped (N, C, size, size) are taken as already prepared model input.
    Resize (short side), centre crop and normalisation follow the checkpoint's
    preprocessing spec (``preprocessing.prepare``, the path ``adaexport run`` takes too).
    """
    if images.dtype != np.uint8:
        if images.ndim == 4 and images.shape[1:] == (channels, size, size) and images.dtype.kind in "fiu":
            x = images.astype(np.float32, copy=False)
            if not np.isfinite(x).all():
                raise DatasetError("the images hold NaN or infinite values")
            return x
        raise DatasetError(f"float images must already be model input of shape (N, {channels}, {size}, {size}), "
                           f"got {images.dtype} {images.shape}")
    x = images[..., None] if images.ndim == 3 else images
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or 0 in x.shape[1:3]:
        raise DatasetError(f"expected images (N, H, W) or (N, H, W, C), got shape {images.shape}")
    if x.shape[-1] != channels:
        if channels == 3 and x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        else:
            raise DatasetError(f"the model takes {channels} channel(s), the images have {x.shape[-1]}")
    return prepare(x, spec, size, DatasetError)


NO_DATASET = "none"   # --dataset none: no images; fp32 parity on random_inputs
RANDOM_SEED = 0       # the seed of random_inputs, recorded with every parity result on them
CALIBRATION_SAMPLES = 128  # the build's int8 calibration samples, read after the parity ones


def random_inputs(count: int, channels: int, size: int, seed: int = RANDOM_SEED) -> np.ndarray:
    """Seeded random model input (count, channels, size, size) float32 for parity without a
    dataset (as Polygraphy does): standard normal noise, i.e. values as they are *after* the
    checkpoint's normalisation (mean 0, std 1 per channel). Enough to compare two
    implementations of the same function; meaningless for accuracy or int8 calibration."""
    return np.random.default_rng(seed).standard_normal((count, channels, size, size), dtype=np.float32)


def model_inputs(spec: str, config, limit: int | None = None, spread: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(inputs float32 (N, C, H, W), labels) of a dataset, prepared for a model config: the
    first `limit`, or with `spread` (the build's parity and calibration samples) an image
    folder's `limit` images spread over its classes, the only ones it decodes."""
    images, labels = load_raw(spec, config, limit if spread else None)
    if images.ndim < 1 or labels.ndim != 1:
        raise DatasetError(f"{spec}: expected labels of shape (N,), got {labels.shape}")
    if len(images) != len(labels):
        raise DatasetError(f"{spec}: {len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise DatasetError(f"{spec}: the dataset is empty")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    if labels.size and (labels.min() < 0 or labels.max() >= config.num_classes):
        raise DatasetError(f"{spec}: labels span {labels.min()}..{labels.max()}, "
                           f"the model has {config.num_classes} classes")
    return preprocess(images, config.preprocessing_spec(), config.in_channels, config.img_size), labels
