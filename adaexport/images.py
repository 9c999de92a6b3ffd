"""Opening image files with Pillow for `eval --dataset imagefolder:DIR` and `run --input`:
one-line errors for unreadable files and decompression bombs (Pillow is imported only here,
only when an image is read; no torch, no numpy)."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path


def pillow(error: type[Exception], missing: str):
    """The PIL.Image module, or MissingDependency(missing) when Pillow is not installed (exit
    3: the input is fine, this machine lacks the package)."""
    from .errors import MissingDependency

    try:
        from PIL import Image
    except ImportError:
        raise MissingDependency(missing) from None
    return Image


@contextlib.contextmanager
def open_image(path: Path, error: type[Exception], missing: str):
    """``with open_image(path, DatasetError, "...") as image:`` a Pillow image. Unreadable
    files, and images over Pillow's pixel limit (a small file claiming 20000x20000 pixels
    would take gigabytes to decode: Pillow warns above ``Image.MAX_IMAGE_PIXELS`` and
    refuses at twice that; both are refused here), raise ``error`` with one line; so does
    anything the body raises while decoding."""
    Image = pillow(error, missing)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                yield image
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise error(f"{path}: refused, too many pixels to decode safely ({exc})") from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:  # UnidentifiedImageError is an OSError
            raise error(f"{path}: unreadable image ({exc})") from None
