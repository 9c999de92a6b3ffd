"""Analytic FLOPs and parameter counts per configuration point.

FLOPs count the matrix products the deployed (static) engine performs for one
image, 2 FLOPs per multiply-add, as torch's FlopCounterMode and the paper count
them: element-wise work (norms, softmax, GELU, RoPE, additions) is not counted,
and the image-independent products folded into constants by `specialize` (latent
and output queries) are not performed at all.

The paper's FLOPs table leaves out the products inside the blocks' self-attention
(q k^T and the weighted sum of v, 2 N^2 D per block); `attention_scores=False`
reproduces that convention (to within 0.5%).
"""

from __future__ import annotations

from ..space import ConfigPoint
from .config import AdaPerceiverConfig, ffn_hidden


def _adapter_macs(cfg: AdaPerceiverConfig, rows: int, out_dim: int, use_ffn: bool) -> int:
    d = cfg.embed_dim
    return rows * (d * cfg.hidden_dim + cfg.hidden_dim * out_dim) if use_ffn else rows * d * out_dim


def count_flops(cfg: AdaPerceiverConfig, point: ConfigPoint, image_size: int | None = None,
                attention_scores: bool = True) -> int:
    """FLOPs for one image at `point` (and `image_size`, default the trained size)."""
    d, n, layers = cfg.embed_dim, point.tokens, point.depth
    patches = ((image_size or cfg.img_size) // cfg.patch_size) ** 2
    h = ffn_hidden(point.width, cfg.ffn_ratio)
    macs = patches * d * cfg.in_channels * cfg.patch_size**2          # patchify conv
    if cfg.use_embed_ffn:
        macs += patches * 2 * d * cfg.hidden_dim                        # embedding MLP
    macs += 2 * patches * d * d + 2 * n * patches * d + n * d * d       # read-in: k, v; scores, mix; proj
    macs += layers * (4 * n * d * d + 2 * n * d * h)                    # process blocks: projections, MLP
    if attention_scores:
        macs += layers * 2 * n * n * d                                  # ... and q k^T, weights x v
    macs += 2 * n * d * d + 2 * n * d + d * d                           # write-out: k, v; scores, mix; proj
    macs += _adapter_macs(cfg, 1, cfg.num_classes, cfg.use_output_ffn)  # classifier
    if cfg.distilled:
        macs += patches * d * d                                         # feature queries
        macs += 2 * patches * d * d + 2 * n * d * d + 2 * patches * n * d  # feature write-out
        macs += _adapter_macs(cfg, patches, cfg.output_feat_dim, True)
    return 2 * macs


def count_params(cfg: AdaPerceiverConfig, point: ConfigPoint) -> int:
    """Trained parameters the point's computation uses (whether or not folded into constants)."""
    d = cfg.embed_dim
    ln = 2 * d
    attn = 4 * d * d + (3 * d if cfg.qkv_bias else 0) + (d if cfg.proj_bias else 0)
    mlp = lambda i, hid, o: i * hid + hid + hid * o + o  # noqa: E731
    h = ffn_hidden(point.width, cfg.ffn_ratio)
    total = cfg.in_channels * cfg.patch_size**2 * d + d + cfg.num_patches * d  # conv + pos table
    if cfg.use_embed_ffn:
        total += ln + mlp(d, cfg.hidden_dim, d)
    total += d                                                  # process latent token
    total += 2 * ln + attn                                      # read head
    total += point.depth * (2 * ln + attn + 2 * d + mlp(d, h, d))
    total += d + 2 * ln + attn                                  # output token + write head
    total += (ln + mlp(d, cfg.hidden_dim, cfg.num_classes)) if cfg.use_output_ffn else d * cfg.num_classes + cfg.num_classes
    if cfg.distilled:
        total += d * d + d + 2 * ln + attn + ln + mlp(d, cfg.hidden_dim, cfg.output_feat_dim)
    return total
