"""AdaPerceiver with its three inference-time knobs: tokens, width (mat_dim) and depth.

Parameter names follow the published state dict, so checkpoints load without renaming.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .config import AdaPerceiverConfig, ffn_hidden
from .layers import (
    CrossAttentionHead,
    Mlp,
    PrefixRuns,
    ProcessBlock,
    additive_mask,
    apply_rope,
    attention,
    block_causal_mask,
    fixed_shape,
    rope_tables,
)

LAYERNORM_EPS = 1e-6
ATTENTION_MODES = ("full", "block")


class Conv2dEmbed(nn.Module):
    def __init__(self, in_channels: int, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)


class PatchEmbed(nn.Module):
    """Conv patchify, flatten, add the absolute position table, then LayerNorm + MLP (no residual)."""

    def __init__(self, cfg: AdaPerceiverConfig):
        super().__init__()
        self.embed = Conv2dEmbed(cfg.in_channels, cfg.embed_dim, cfg.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches, cfg.embed_dim))
        self.use_ffn = cfg.use_embed_ffn
        if cfg.use_embed_ffn:
            self.norm = nn.LayerNorm(cfg.embed_dim, eps=LAYERNORM_EPS)
            self.ffn = Mlp(cfg.embed_dim, cfg.hidden_dim)

    def forward(self, x: torch.Tensor, pos_embed: torch.Tensor) -> torch.Tensor:
        x = self.embed.proj(x)
        batch, dim, rows, cols = fixed_shape(x)
        x = x.reshape(batch, dim, rows * cols).transpose(1, 2) + pos_embed
        if self.use_ffn:
            x = self.ffn(self.norm(x))
        return x


class LearnedToken(nn.Module):
    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(shape))


class QueryProjection(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)


class OutputAdapter(nn.Module):
    """Linear head, or LayerNorm + MLP when the checkpoint has an output FFN."""

    def __init__(self, dim: int, hidden: int, out_dim: int, use_ffn: bool):
        super().__init__()
        self.use_ffn = use_ffn
        if use_ffn:
            self.norm = nn.LayerNorm(dim, eps=LAYERNORM_EPS)
            self.ffn = Mlp(dim, hidden, out_dim)
        else:
            self.ffn = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.norm(x)) if self.use_ffn else self.ffn(x)


def pos_embed_at(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """The position table for a grid x grid patch layout (bicubic resampling when it differs)."""
    trained = int(round(pos_embed.shape[1] ** 0.5))
    if trained == grid:
        return pos_embed
    dim = pos_embed.shape[-1]
    table = pos_embed.reshape(1, trained, trained, dim).permute(0, 3, 1, 2)
    table = F.interpolate(table, size=(grid, grid), mode="bicubic", align_corners=False, antialias=False)
    return table.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)


def rope_for(cfg: AdaPerceiverConfig, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotary cos/sin tables (tokens, head_dim) of a `tokens`-latent configuration."""
    return rope_tables(tokens, cfg.head_dim, cfg.rope_theta, cfg.max_latent_tokens)


def attention_bias_for(cfg: AdaPerceiverConfig, tokens: int, attention_mode: str) -> torch.Tensor | None:
    """The additive mask of the blocks' self-attention: none in `full` mode, else block-causal."""
    if attention_mode == "full":
        return None
    return additive_mask(block_causal_mask(tokens, cfg.mask_token_grans))


# --- the computation, written once over explicit tensors so the static module reuses it ---


def cross_keys(head: CrossAttentionHead, src: torch.Tensor, k_cos: torch.Tensor | None = None,
               k_sin: torch.Tensor | None = None,
               rotation: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Key and value heads (B, H, Ns, d) of src (B, Ns, D); keys get RoPE when tables are given.

    Row i of either depends on src row i only, so the keys of a prefix of src are a prefix
    of these (adaexport search writes out over several token prefixes from one call)."""
    attn = head.cattn
    src = head.src_norm(src)
    k = attn.heads(attn.k(src))
    if k_cos is not None:
        k = apply_rope(k, k_cos, k_sin, rotation)
    return k, attn.heads(attn.v(src))


def attend(head: CrossAttentionHead, q_heads: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Unmasked attention of query heads over key/value heads, projected: (B, Nq, D)."""
    return head.cattn.proj(head.cattn.merge(attention(q_heads, k, v, None)))


def cross_attend(head: CrossAttentionHead, q_heads: torch.Tensor, src: torch.Tensor,
                 k_cos: torch.Tensor | None = None, k_sin: torch.Tensor | None = None,
                 rotation: torch.Tensor | None = None) -> torch.Tensor:
    """Cross attention of prepared query heads (B|1, H, Nq, d) over src (B, Ns, D).

    Keys get RoPE when tables are given. Returns the projected output (B, Nq, D).
    """
    return attend(head, q_heads, *cross_keys(head, src, k_cos, k_sin, rotation))


def query_heads(head: CrossAttentionHead, queries: torch.Tensor,
                cos: torch.Tensor | None = None, sin: torch.Tensor | None = None) -> torch.Tensor:
    """snk_norm -> q projection -> heads (-> RoPE) for the query side of a cross attention."""
    q = head.cattn.heads(head.cattn.q(head.snk_norm(queries)))
    return apply_rope(q, cos, sin) if cos is not None else q


def process_block(block: ProcessBlock, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  bias: torch.Tensor | PrefixRuns | None, hidden: int | None,
                  rotation: torch.Tensor | None = None) -> torch.Tensor:
    """One block; `rotation`: the rotary pairs swapped by a product with it (`apply_rope`)."""
    attn = block.attn
    h = block.norm1(x)
    q = apply_rope(attn.heads(attn.q(h)), cos, sin, rotation)
    k = apply_rope(attn.heads(attn.k(h)), cos, sin, rotation)
    v = attn.heads(attn.v(h))
    x = x + block.ls1(attn.proj(attn.merge(attention(q, k, v, bias))))
    return x + block.ls2(block.ffn(block.norm2(x), hidden))


class AdaPerceiver(nn.Module):
    """The dynamic model: `forward(image, tokens=, width=, depth=, attention=)`.

    Returns a dict with `logits` (B, classes) and, for the distilled variant,
    `features` (B, patches, output_feat_dim).
    """

    def __init__(self, cfg: AdaPerceiverConfig):
        super().__init__()
        self.config = cfg
        d, heads, hidden = cfg.embed_dim, cfg.num_heads, cfg.hidden_dim
        ls_init = cfg.ls_init_values if cfg.ls_init_values is not None else 1.0
        self.patch_embed = PatchEmbed(cfg)
        self.process_latents = LearnedToken((d,))
        self.read_head = CrossAttentionHead(d, heads, cfg.qkv_bias, cfg.proj_bias, LAYERNORM_EPS)
        self.blocks = nn.ModuleList(
            ProcessBlock(d, heads, hidden, cfg.qkv_bias, cfg.proj_bias, LAYERNORM_EPS, ls_init)
            for _ in range(cfg.depth)
        )
        self.output_latents = LearnedToken((1, d))
        self.write_head = CrossAttentionHead(d, heads, cfg.qkv_bias, cfg.proj_bias, LAYERNORM_EPS)
        self.output_adapter = OutputAdapter(d, hidden, cfg.num_classes, cfg.use_output_ffn)
        if cfg.distilled:
            self.output_latents_feat = QueryProjection(d)
            self.write_head_feat = CrossAttentionHead(d, heads, cfg.qkv_bias, cfg.proj_bias, LAYERNORM_EPS)
            self.output_adapter_feat = OutputAdapter(d, hidden, cfg.output_feat_dim, use_ffn=True)
        self.reset_parameters()

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("logits", "features") if self.config.distilled else ("logits",)

    def reset_parameters(self) -> None:
        """Truncated-normal init for training from scratch (checkpoints overwrite it)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.patch_embed.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.process_latents.token, std=0.02)
        nn.init.trunc_normal_(self.output_latents.token, std=0.02)

    # -- knobs --
    def resolve(self, tokens: int | None, width: int | None, depth: int | None,
                attention_mode: str | None) -> tuple[int, int, int, str]:
        cfg = self.config
        tokens = cfg.max_latent_tokens if tokens is None else int(tokens)
        width = cfg.embed_dim if width is None else int(width)
        depth = cfg.depth if depth is None else int(depth)
        attention_mode = attention_mode or cfg.default_attention
        if tokens < 1:
            raise ValueError(f"tokens must be >= 1, got {tokens}")
        if not 1 <= width <= cfg.embed_dim:
            raise ValueError(f"width must lie in 1..{cfg.embed_dim}, got {width}")
        if not 1 <= depth <= cfg.depth:
            raise ValueError(f"depth must lie in 1..{cfg.depth}, got {depth}")
        if attention_mode not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {attention_mode!r}")
        return tokens, width, depth, attention_mode

    def rope(self, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = rope_for(self.config, tokens)
        device = self.process_latents.token.device
        return cos.to(device), sin.to(device)

    def attention_bias(self, tokens: int, attention_mode: str) -> torch.Tensor | None:
        bias = attention_bias_for(self.config, tokens, attention_mode)
        return None if bias is None else bias.to(self.process_latents.token.device)

    def forward(self, image: torch.Tensor, tokens: int | None = None, width: int | None = None,
                depth: int | None = None, attention: str | None = None) -> dict[str, torch.Tensor]:
        cfg = self.config
        tokens, width, depth, attention = self.resolve(tokens, width, depth, attention)
        hidden = ffn_hidden(width, cfg.ffn_ratio)
        cos, sin = self.rope(tokens)
        bias = self.attention_bias(tokens, attention)
        batch = image.shape[0]
        grid = image.shape[-1] // cfg.patch_size

        patches = self.patch_embed(image, pos_embed_at(self.patch_embed.pos_embed, grid))
        latents = self.process_latents.token.expand(batch, tokens, -1)
        latents = latents + cross_attend(self.read_head, query_heads(self.read_head, latents, cos, sin), patches)
        for block in self.blocks[:depth]:
            latents = process_block(block, latents, cos, sin, bias, hidden)

        out_token = self.output_latents.token.expand(batch, 1, -1)
        out = out_token + cross_attend(self.write_head, query_heads(self.write_head, out_token), latents, cos, sin)
        result = {"logits": self.output_adapter(out).squeeze(1)}
        if cfg.distilled:
            feat_q = self.output_latents_feat.proj(patches)
            feat = feat_q + cross_attend(self.write_head_feat, query_heads(self.write_head_feat, feat_q), latents, cos, sin)
            result["features"] = self.output_adapter_feat(feat)
        return result
