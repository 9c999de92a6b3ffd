"""The one image preprocessing path: the checkpoint's resize / centre crop / normalise.

Eval, parity, int8 calibration (``datasets``) and ``adaexport run`` (``runtime.preprocess``)
all come here, so an engine is measured on exactly the tensors it serves. numpy, and
Pillow for the resize (imported only when an image needs one):

1. the short side is resized to ``resize`` with Pillow (uint8 in, uint8 out; the spec's
   ``interpolation``: bilinear, bicubic or nearest), the other side in proportion;
2. the centre ``crop`` x ``crop`` is cut out;
3. pixels are scaled to 0..1 and normalised with the spec's per-channel ``mean``/``std``.
"""

from __future__ import annotations

import numpy as np

from .images import pillow

FILTERS = ("bilinear", "bicubic", "nearest")


class PreprocessingError(ValueError):
    """Images that cannot be prepared as asked; one line for the user."""


def _sizes(spec: dict, size: int) -> tuple[int, int]:
    return int(spec.get("resize", size)), int(spec.get("crop", size))


def resize_and_crop(pixels: np.ndarray, spec: dict, size: int, error: type[Exception] = PreprocessingError) -> np.ndarray:
    """uint8 (H, W, C) -> uint8 (crop, crop, C): the short side resized to the spec's
    ``resize`` (with Pillow, each channel alike), then the centre crop."""
    resize, crop = _sizes(spec, size)
    h, w = pixels.shape[:2]
    if min(h, w) != resize:
        Image = pillow(error, "resizing images needs Pillow (pip install pillow)")
        name = spec.get("interpolation", "bilinear")
        mode = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
                "nearest": Image.Resampling.NEAREST}.get(name, Image.Resampling.BILINEAR)
        scale = resize / min(h, w)
        new = (max(resize, round(w * scale)), max(resize, round(h * scale)))
        bands = [np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., c])).resize(new, mode))
                 for c in range(pixels.shape[-1])]
        pixels = np.stack(bands, axis=-1)
        h, w = pixels.shape[:2]
    if min(h, w) < crop:
        raise error(f"an image of {w}x{h} pixels is smaller than the {crop}x{crop} crop")
    top, left = (h - crop) // 2, (w - crop) // 2
    return pixels[top:top + crop, left:left + crop]


def normalise(pixels: np.ndarray, spec: dict) -> np.ndarray:
    """uint8 (..., H, W, C) -> float32 (..., C, H, W): scaled to 0..1, then (x - mean) / std."""
    x = np.moveaxis(pixels.astype(np.float32) / 255.0, -1, -3)
    channels = x.shape[-3]
    mean = np.asarray(spec.get("mean", [0.0] * channels), dtype=np.float32)[:, None, None]
    std = np.asarray(spec.get("std", [1.0] * channels), dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


def prepare(pixels: np.ndarray, spec: dict, size: int, error: type[Exception] = PreprocessingError) -> np.ndarray:
    """uint8 images (N, H, W, C) -> model input float32 (N, C, crop, crop)."""
    if not len(pixels):
        crop = _sizes(spec, size)[1]
        return np.zeros((0, pixels.shape[-1], crop, crop), np.float32)
    return normalise(np.stack([resize_and_crop(image, spec, size, error) for image in pixels]), spec)
