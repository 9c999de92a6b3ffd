"""A small folder of real images for the benchmarks' reduced-precision engines.

int8 calibration must not use random data, and fp16/bf16/int8 parity is judged on labelled
images, so the published-size benchmark builds with ``--dataset imagefolder:DIR``. The folder
is made once from the Debian Fashion-MNIST test split (`adaexport.datasets.load_fashion_mnist`,
IDX files under /usr/share/datasets/fashion-mnist): ``per_class`` images of each of the 10
classes, written as grayscale PNGs (Pillow) in one sub-folder per class, as
`adaexport.datasets.image_folder_files` reads them (folders sorted and numbered, since the
published-size checkpoint has no class names). The build converts them to RGB and resizes
them to 224 px. It is cached beside the published-size checkpoint
(``~/.cache/adaexport-bench/fashion-mnist-png-<per_class>``) and appears complete or not at all.

    python benchmarks/bench_images.py        # prints the folder, made on first use
"""

from __future__ import annotations

from pathlib import Path

PER_CLASS = 32   # 320 images: the build reads its parity (48 at published size) and calibration (128) samples


def _folder_name(number: int, name: str) -> str:
    """'00-T-shirt_top': sorted in class order, a class name without '/'."""
    return f"{number:02d}-{name.replace('/', '_').replace(' ', '_')}"


def fashion_image_folder(per_class: int = PER_CLASS, cache: Path | None = None) -> Path:
    """The image folder (one sub-folder of PNGs per Fashion-MNIST class), made on first use."""
    from PIL import Image

    from adaexport.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist
    from published_model import cache_dir, made_once

    def make(staging: Path) -> None:
        images, labels = load_fashion_mnist(split="test")
        for number, name in enumerate(FASHION_MNIST_CLASSES):
            folder = staging / _folder_name(number, name)
            folder.mkdir()
            for k, index in enumerate((labels == number).nonzero()[0][:per_class]):
                Image.fromarray(images[index], mode="L").save(folder / f"{k:04d}-{index:05d}.png")

    return made_once((cache or cache_dir()) / f"fashion-mnist-png-{per_class}", make)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(fashion_image_folder())
