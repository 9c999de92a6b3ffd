"""A point of the configuration space (tokens, width, depth) and whether a model can run it.

Part of ``adaexport.model`` (the static module, FLOPs and the shared passes take points);
``adaexport.space`` builds grids of them.
"""

from __future__ import annotations

import dataclasses

from ..errors import SpaceError
from .config import AdaPerceiverConfig, ffn_hidden


@dataclasses.dataclass(frozen=True, order=True)
class ConfigPoint:
    tokens: int
    width: int
    depth: int

    @property
    def id(self) -> str:
        return f"t{self.tokens}_w{self.width}_d{self.depth}"

    def as_dict(self) -> dict[str, int]:
        return {"tokens": self.tokens, "width": self.width, "depth": self.depth}

    @classmethod
    def full(cls, cfg: AdaPerceiverConfig) -> "ConfigPoint":
        return cls(cfg.max_latent_tokens, cfg.embed_dim, cfg.depth)


# Beyond max_latent_tokens the rotary positions are interpolated (as the reference does,
# and the conformance cases check up to 1.25x); the block mask and the attention grow with
# the square of the token count, so a count far beyond is refused before anything is
# allocated (--tokens 50000 would ask for a 10 GB mask).
MAX_TOKENS_FACTOR = 4


def max_tokens(cfg: AdaPerceiverConfig) -> int:
    """The largest token count a point may have."""
    return MAX_TOKENS_FACTOR * cfg.max_latent_tokens


def validate_point(cfg: AdaPerceiverConfig, point: ConfigPoint) -> list[str]:
    """Raise SpaceError for a point the model cannot run; return warnings for points
    it can run but was not trained on (accuracy there is not known to hold)."""
    if point.tokens < 1:
        raise SpaceError(f"{point.id}: tokens must be >= 1, got {point.tokens}")
    if point.tokens > max_tokens(cfg):
        raise SpaceError(f"{point.id}: tokens must be <= {max_tokens(cfg)} ({MAX_TOKENS_FACTOR} x max_latent_tokens "
                         f"{cfg.max_latent_tokens}), got {point.tokens}")
    if not 1 <= point.width <= cfg.embed_dim:
        raise SpaceError(f"{point.id}: width must lie in 1..{cfg.embed_dim} (embed_dim), got {point.width}")
    if ffn_hidden(point.width, cfg.ffn_ratio) < 1:
        raise SpaceError(f"{point.id}: width {point.width} leaves no FFN hidden unit (ffn_ratio {cfg.ffn_ratio})")
    if not 1 <= point.depth <= cfg.depth:
        raise SpaceError(f"{point.id}: depth must lie in 1..{cfg.depth}, got {point.depth}")
    warnings = []
    if point.tokens not in cfg.mask_token_grans:
        warnings.append(f"{point.id}: tokens {point.tokens} is not a trained granularity {list(cfg.mask_token_grans)}")
    if point.width not in cfg.mat_dims:
        warnings.append(f"{point.id}: width {point.width} is not a trained width {list(cfg.mat_dims)}")
    return warnings
