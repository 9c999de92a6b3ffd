"""The constructor arguments of an AdaPerceiver, as the published config.json holds them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..checks import checked_number, optional_number, read_utf8
from ..errors import CheckpointError  # noqa: F401 - defined with the other user errors


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
        self._check_values()
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

    def _check_values(self) -> None:
        """Types and ranges of every field, before anything computes with them: a config
        file is user input (a zero dimension, NaN, a string for a number)."""

        def error(message: str) -> CheckpointError:
            return CheckpointError(f"invalid config: {message}")

        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        for name in _DIMENSIONS:
            put(name, checked_number(getattr(self, name), name, error, integer=True, minimum=1))
        put("output_feat_dim", optional_number(self.output_feat_dim, "output_feat_dim", error, integer=True,
                                               minimum=1))
        for name in ("mask_token_grans", "mat_dims"):
            values = getattr(self, name)
            if not isinstance(values, (list, tuple)) or not values:
                raise error(f"{name} must be a non-empty list of whole numbers, got {values!r}")
            put(name, tuple(checked_number(v, f"{name}[{i}]", error, integer=True, minimum=1)
                            for i, v in enumerate(values)))
        put("ffn_ratio", float(checked_number(self.ffn_ratio, "ffn_ratio", error, above=0)))
        put("rope_theta", float(checked_number(self.rope_theta, "rope_theta", error, above=0)))
        put("ls_init_values", optional_number(self.ls_init_values, "ls_init_values", error))
        for name in ("attn_drop", "proj_drop", "drop_path", "head_drop"):
            put(name, float(checked_number(getattr(self, name), name, error, minimum=0, maximum=1)))
        for name in ("qkv_bias", "proj_bias", "use_embed_ffn", "use_output_ffn"):
            if not isinstance(getattr(self, name), bool):
                raise error(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("attn_layer", "block_mask", "act_layer", "norm_layer", "ffn_layer", "process_token_init"):
            if not isinstance(getattr(self, name), str):
                raise error(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.class_names is not None:
            names = self.class_names
            if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
                raise error(f"class_names must be a list of strings, got {names!r}")
            if len(names) != self.num_classes:
                raise error(f"{len(names)} class_names for num_classes {self.num_classes}")
            put("class_names", tuple(names))
        if self.preprocessing is not None:
            _check_preprocessing(self.preprocessing, self.in_channels, error)

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
        text = read_utf8(path, CheckpointError)
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path}: expected a JSON object")
        try:
            return cls.from_dict(raw)
        except CheckpointError as exc:  # name the file: a build may read several
            raise CheckpointError(f"{path}: {exc}") from None

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


_DIMENSIONS = ("embed_dim", "num_heads", "depth", "max_latent_tokens", "img_size", "patch_size", "in_channels",
               "num_classes")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def _check_preprocessing(spec: Any, channels: int, error) -> None:
    """A config's `preprocessing` table: sizes in pixels, per-channel mean and std."""
    if not isinstance(spec, dict):
        raise error(f"preprocessing must be an object, got {spec!r}")
    for key in ("resize", "crop"):
        if key in spec:
            checked_number(spec[key], f"preprocessing.{key}", error, integer=True, minimum=1)
    for key, above in (("mean", None), ("std", 0)):
        if key in spec:
            values = spec[key]
            if not isinstance(values, (list, tuple)) or len(values) != channels:
                raise error(f"preprocessing.{key} must be a list of {channels} number(s), got {values!r}")
            for i, v in enumerate(values):
                checked_number(v, f"preprocessing.{key}[{i}]", error, above=above)
    if spec.get("interpolation", "bilinear") not in INTERPOLATIONS:
        raise error(f"preprocessing.interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                    f"got {spec['interpolation']!r}")


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def ffn_hidden(dim: int, ffn_ratio: float) -> int:
    """Hidden width of an MLP as the reference computes it (int truncation, not rounding)."""
    return int(dim * ffn_ratio)
