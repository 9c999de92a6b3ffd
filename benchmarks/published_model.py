"""A checkpoint of the published model's size with seeded random weights, for benchmarks.

The architecture is the published backbone (shared/docs/adaperceiver-reference.md): embed_dim
832, 13 heads, 21 blocks, patch 14 at 224 px, ffn_ratio 2.57, mask_token_grans 32..256,
mat_dims 416/624/832, with the ImageNet-1k head (1,000 classes; about 144M parameters).
The weights are adaexport's own initialisation (`AdaPerceiver(cfg)`, truncated normal)
under `torch.manual_seed(seed)`; LayerScale starts at 0.1 so that every block changes the
latents (random weights, but the depth axis is not a no-op). Timings need the shapes, not
trained weights: never quote accuracy from this model.

    from published_model import published_checkpoint
    path = published_checkpoint()          # ~/.cache/adaexport-bench/published-in1k-seed0
    loaded = adaexport.model.load_checkpoint(path)

Made once (about 580 MB, some seconds) and reused: the directory appears complete or not
at all. `$ADAEXPORT_BENCH_CACHE` moves the cache.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PUBLISHED = {
    "embed_dim": 832, "num_heads": 13, "depth": 21, "max_latent_tokens": 256,
    "mask_token_grans": [32, 64, 96, 128, 192, 256], "mat_dims": [416, 624, 832],
    "img_size": 224, "patch_size": 14, "in_channels": 3, "num_classes": 1000, "ffn_ratio": 2.57,
    "rope_theta": 10000.0, "qkv_bias": True, "proj_bias": True, "use_embed_ffn": True, "use_output_ffn": False,
    "attn_layer": "flex", "block_mask": "block", "ls_init_values": 0.1,
}


def cache_dir() -> Path:
    return Path(os.environ.get("ADAEXPORT_BENCH_CACHE", "~/.cache/adaexport-bench")).expanduser()


def published_config():
    from adaexport.model import AdaPerceiverConfig

    return AdaPerceiverConfig.from_dict(PUBLISHED)


def made_once(directory: Path, make) -> Path:
    """`directory`, made by ``make(staging)`` into a temp folder beside it and renamed into
    place unless it exists: it appears complete or not at all, and concurrent makers agree."""
    if directory.is_dir():
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        make(staging)
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if not directory.is_dir():  # not made by a concurrent run either
            raise
    return directory


def published_checkpoint(seed: int = 0, cache: Path | None = None) -> Path:
    """The checkpoint directory (config.json + model.safetensors), made on first use."""
    import torch

    from adaexport.model import AdaPerceiver, save_checkpoint

    def make(staging: Path) -> None:
        torch.manual_seed(seed)
        save_checkpoint(AdaPerceiver(published_config()), staging)

    return made_once((cache or cache_dir()) / f"published-in1k-seed{seed}", make)


PROBE_POINTS = [(t, w, d) for t in (32, 256) for w in (416, 832) for d in (6, 21)]   # run_all --published's grid


def probe_checkpoint(seed: int = 0, images: int = 200, cache: Path | None = None) -> Path:
    """`published_checkpoint(seed)` with a linear probe for a classifier head: the backbone's
    random weights as they are, the head's rows for the 10 Fashion-MNIST classes fitted by
    least squares (targets 10 for the true class, 0 otherwise) to the head's input features
    at the 8 points of `PROBE_POINTS` on the first `images` images of the *train* split (the
    benchmarks' image folders hold test images), the other 990 rows zero with bias -5.

    A random head gives logits whose top two are hundredths apart (a top-1 margin of median
    0.025 against a standard deviation of 0.19 on Fashion-MNIST test images), so every
    reduced precision flips some near-ties and fails parity; a probe gives the margins of a
    classifier that separates its classes, which is what parity tolerances are set for. The
    backbone, and so every timing and size, is the random checkpoint's."""
    import numpy as np
    import torch

    from adaexport.datasets import load_fashion_mnist, preprocess
    from adaexport.model import load_checkpoint, save_checkpoint

    def make(staging: Path) -> None:
        loaded = load_checkpoint(published_checkpoint(seed, cache))
        model, cfg = loaded.model.eval(), loaded.config
        raw, labels = load_fashion_mnist(split="train")
        x = torch.from_numpy(preprocess(raw[:images], cfg.preprocessing_spec(), cfg.in_channels, cfg.img_size))
        head = model.output_adapter.ffn
        captured: list[torch.Tensor] = []
        hook = head.register_forward_hook(lambda module, args, out: captured.append(args[0].reshape(-1, args[0].shape[-1])))
        with torch.inference_mode():
            for tokens, width, depth in PROBE_POINTS:
                for start in range(0, images, 25):
                    model(x[start:start + 25], tokens=tokens, width=width, depth=depth)
        hook.remove()
        features = torch.cat(captured).double().numpy()
        targets = np.zeros((len(features), 10))
        targets[np.arange(len(features)), np.tile(labels[:images], len(PROBE_POINTS))] = 10.0
        design = np.hstack([features, np.ones((len(features), 1))])
        solution = np.linalg.lstsq(design.T @ design + 1e-3 * np.eye(design.shape[1]), design.T @ targets,
                                   rcond=None)[0]
        with torch.no_grad():
            head.weight.zero_()
            head.bias.fill_(-5.0)
            head.weight[:10] = torch.from_numpy(solution[:-1].T).float()
            head.bias[:10] = torch.from_numpy(solution[-1]).float()
        save_checkpoint(model, staging)

    return made_once((cache or cache_dir()) / f"published-in1k-seed{seed}-probe{images}", make)


if __name__ == "__main__":
    import sys

    print(probe_checkpoint() if sys.argv[1:] == ["--probe"] else published_checkpoint())
