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


if __name__ == "__main__":
    print(published_checkpoint())
