"""The constructor arguments of an AdaPerceiver, as the published config.json holds them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message is one line meant for a user."""


@dataclasses.dataclass(frozen=True)
class AdaPerceiverConfig:
    embed_dim: int
    num_heads: int
    depth: int
    max_latent_tokens: int
    mask_token_grans: tuple[int, ...]
    mat_dims: tuple[int, ...]
    img_size: int
    patch_size: int
    in_channels: int
    num_classes: int
    ffn_ratio: float = 4.0
    rope_theta: float = 10000.0
    qkv_bias: bool = True
    proj_bias: bool = True
    use_embed_ffn: bool = True
    use_output_ffn: bool = False
    output_feat_dim: int | None = None
    attn_layer: str = "flex"
    block_mask: str = "block"
    act_layer: str = "gelu"
    norm_layer: str = "layernorm"
    ffn_layer: str = "mlp"
    process_token_init: str = "learned"
    ls_init_values: float | None = 1e-6
    # Training-only settings, kept so a round trip preserves config.json.
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    drop_path: float = 0.0
    head_drop: float = 0.0
    # adaexport extensions (absent from the published configs): how images are
    # prepared for the model, and the class names, for the demo and the runtime.
    preprocessing: dict | None = None
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask_token_grans", tuple(int(g) for g in self.mask_token_grans))
        object.__setattr__(self, "mat_dims", tuple(int(m) for m in self.mat_dims))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(self.class_names))
        problems = []
        if self.embed_dim % self.num_heads:
            problems.append(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        elif self.head_dim % 2:
            problems.append(f"head_dim {self.head_dim} must be even for rotary embeddings")
        if self.img_size % self.patch_size:
            problems.append(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if any(m < 1 or m > self.embed_dim for m in self.mat_dims):
            problems.append(f"mat_dims {list(self.mat_dims)} must lie in 1..embed_dim ({self.embed_dim})")
        if list(self.mask_token_grans) != sorted(set(self.mask_token_grans)) or not self.mask_token_grans:
            problems.append(f"mask_token_grans {list(self.mask_token_grans)} must be increasing")
        if self.act_layer != "gelu" or self.norm_layer != "layernorm" or self.ffn_layer != "mlp":
            problems.append(
                f"unsupported layers act={self.act_layer} norm={self.norm_layer} ffn={self.ffn_layer} "
                "(only gelu/layernorm/mlp are published)"
            )
        if self.process_token_init != "learned":
            problems.append(f"unsupported process_token_init {self.process_token_init!r}")
        if problems:
            raise CheckpointError("invalid config: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def hidden_dim(self) -> int:
        return ffn_hidden(self.embed_dim, self.ffn_ratio)

    @property
    def distilled(self) -> bool:
        return self.output_feat_dim is not None

    @property
    def default_attention(self) -> str:
        """The attention mode the checkpoint runs by itself: flex attention honours the
        block mask, the `full` layer ignores any mask."""
        if self.attn_layer == "full" or self.block_mask == "none":
            return "full"
        return "block"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "AdaPerceiverConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [n for n in required if n not in raw]
        if missing:
            raise CheckpointError(f"config.json lacks required field(s): {', '.join(missing)}")
        kwargs = {k: v for k, v in raw.items() if k in names}
        try:
            return cls(**kwargs)
        except TypeError as exc:  # wrong value types
            raise CheckpointError(f"invalid config: {exc}") from None

    @classmethod
    def from_file(cls, path: Path) -> "AdaPerceiverConfig":
        try:
            raw = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path}: expected a JSON object")
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["mask_token_grans"] = list(self.mask_token_grans)
        out["mat_dims"] = list(self.mat_dims)
        for optional in ("output_feat_dim", "preprocessing", "class_names"):
            if out[optional] is None:
                del out[optional]
        if self.class_names is not None:
            out["class_names"] = list(self.class_names)
        return out

    def preprocessing_spec(self) -> dict[str, Any]:
        """Resize (short side), centre crop, and per-channel normalisation.

        Published checkpoints do not say; they were trained with CLIP statistics and
        a 256 -> 224 resize/crop ratio, which is the default here."""
        if self.preprocessing is not None:
            return dict(self.preprocessing)
        return {
            "resize": int(round(self.img_size * 256 / 224)),
            "crop": self.img_size,
            "mean": list(CLIP_MEAN[: self.in_channels]) if self.in_channels == 3 else [0.5] * self.in_channels,
            "std": list(CLIP_STD[: self.in_channels]) if self.in_channels == 3 else [0.5] * self.in_channels,
            "interpolation": "bicubic",
        }


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def ffn_hidden(dim: int, ffn_ratio: float) -> int:
    """Hidden width of an MLP as the reference computes it (int truncation, not rounding)."""
    return int(dim * ffn_ratio)
