"""An image file -> the model's input, per the manifest's ``model.input.preprocessing``.

numpy only; PNG/JPEG need Pillow (imported only for them, and for resizing). Accepts
``.npy`` files holding uint8 images (H, W) / (H, W, C), or float32 arrays already prepared
as model input ((C, H, W) or (1, C, H, W)).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..images import open_image
from ..manifest_records import InputSpec
from ..preprocessing import prepare

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


class InputError(ValueError):
    """An input the runtime cannot turn into model input; one line for a user."""


NEEDS_PILLOW = "reading PNG/JPEG needs Pillow (pip install pillow); or pass a .npy array"


def load_image(path: str | Path, channels: int) -> np.ndarray:
    """The file's pixels as uint8 (H, W, C), or a float array taken as prepared input."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable .npy array ({exc})") from None
        if array.dtype != np.uint8:
            if array.dtype.kind not in "fiu":  # text, objects, booleans, complex numbers
                raise InputError(f"{path}: holds {array.dtype} values; expected uint8 pixels or float32 model input")
            return array.astype(np.float32)  # to_model_input checks its shape and values
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3 or 0 in array.shape:
            raise InputError(f"{path}: expected an image (H, W) or (H, W, C), got shape {array.shape}")
        return _channels(array, channels, path)
    if suffix in IMAGE_SUFFIXES:
        with open_image(path, InputError, NEEDS_PILLOW) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            return np.asarray(image, dtype=np.uint8).reshape(image.height, image.width, channels)
    raise InputError(f"{path}: unsupported input {suffix or '(no suffix)'} (use .png, .jpg or .npy)")


def _channels(array: np.ndarray, channels: int, path: Path) -> np.ndarray:
    if array.shape[-1] == channels:
        return array
    if channels == 1 and array.shape[-1] in (3, 4):
        rgb = array[..., :3].astype(np.float32)
        return np.round(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None].astype(np.uint8)
    if channels == 3 and array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    raise InputError(f"{path}: {array.shape[-1]} channel(s), the model takes {channels}")


def to_model_input(pixels: np.ndarray, input_spec: InputSpec | dict) -> np.ndarray:
    """uint8 (H, W, C) -> float32 (1, C, size, size): resize the short side, centre crop,
    scale to 0..1, normalise with the manifest's mean and std (``preprocessing.prepare``,
    the path eval, parity and calibration take). Float arrays pass through."""
    if isinstance(input_spec, InputSpec):
        input_spec = input_spec.to_json()
    shape = tuple(input_spec["shape"])
    if pixels.dtype != np.uint8:
        x = pixels.reshape((1,) + pixels.shape) if pixels.ndim == len(shape) - 1 else pixels
        if tuple(x.shape) != shape:
            raise InputError(f"a prepared input must have shape {shape[1:]} or {shape}, got {pixels.shape}")
        if not np.isfinite(x).all():
            raise InputError("the input holds NaN or infinite values")
        return np.ascontiguousarray(x, dtype=np.float32)
    return prepare(pixels[None], input_spec.get("preprocessing") or {}, shape[-1], InputError)
