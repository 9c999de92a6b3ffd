"""Analytic FLOPs and parameter counts per configuration point.

FLOPs count the matrix products the deployed (static) engine performs for one
image, 2 FLOPs per multiply-add, as torch's FlopCounterMode and the paper count
them: element-wise work (norms, softmax, GELU, RoPE, additions) is not counted
(nor the static graph's product that swaps the rotary pairs: `rotation_flops`),
and the image-independent products folded into constants by `specialize` (latent
and output queries) are not performed at all.

The blocks' self-attention (q k^T and the weighted sum of v) is 2 D MACs per scored
(query, key) pair: N^2 pairs in `full` mode; under the block-causal mask, each run of query
rows with its key prefix (`layers.prefix_runs`: the static graph computes nothing else). The
paper's FLOPs table leaves these products out; `attention_scores=False` reproduces that
convention (to within 0.5%).
"""

from __future__ import annotations

from .point import ConfigPoint
from .config import AdaPerceiverConfig, ffn_hidden
from .layers import block_causal_mask, prefix_runs


def _adapter_macs(cfg: AdaPerceiverConfig, rows: int, out_dim: int, use_ffn: bool) -> int:
    d = cfg.embed_dim
    return rows * (d * cfg.hidden_dim + cfg.hidden_dim * out_dim) if use_ffn else rows * d * out_dim


def _embed_macs(cfg: AdaPerceiverConfig, patches: int) -> int:
    macs = patches * cfg.embed_dim * cfg.in_channels * cfg.patch_size**2   # patchify conv
    if cfg.use_embed_ffn:
        macs += patches * 2 * cfg.embed_dim * cfg.hidden_dim              # embedding MLP
    return macs


def _read_macs(cfg: AdaPerceiverConfig, n: int, patches: int) -> int:
    d = cfg.embed_dim
    return 2 * patches * d * d + 2 * n * patches * d + n * d * d          # read-in: k, v; scores, mix; proj


def score_pairs(cfg: AdaPerceiverConfig, n: int, attention: str) -> int:
    """The (query, key) pairs a block's self-attention scores at n tokens in the static graph."""
    runs = None if attention == "full" else prefix_runs(block_causal_mask(n, cfg.mask_token_grans))
    return n * n if runs is None else sum((end - start) * keys for start, end, keys in runs)


def _block_macs(cfg: AdaPerceiverConfig, n: int, width: int, pairs: int) -> int:
    d = cfg.embed_dim
    macs = 4 * n * d * d + 2 * n * d * ffn_hidden(width, cfg.ffn_ratio)  # projections, MLP
    return macs + 2 * pairs * d                                           # ... and q k^T, weights x v


def _write_keys_macs(cfg: AdaPerceiverConfig, n: int) -> int:
    return 2 * n * cfg.embed_dim**2                                       # write-out: k, v of n latents


def _write_query_macs(cfg: AdaPerceiverConfig, n: int) -> int:
    d = cfg.embed_dim                                                     # write-out: scores, mix; proj
    return 2 * n * d + d * d + _adapter_macs(cfg, 1, cfg.num_classes, cfg.use_output_ffn)  # + classifier


def count_flops(cfg: AdaPerceiverConfig, point: ConfigPoint, image_size: int | None = None,
                attention_scores: bool = True, attention: str | None = None) -> int:
    """FLOPs for one image at `point` (and `image_size`, default the trained size) in `attention`
    mode (default the checkpoint's own)."""
    d, n = cfg.embed_dim, point.tokens
    patches = ((image_size or cfg.img_size) // cfg.patch_size) ** 2
    macs = _embed_macs(cfg, patches) + _read_macs(cfg, n, patches)
    pairs = score_pairs(cfg, n, attention or cfg.default_attention) if attention_scores else 0
    macs += point.depth * _block_macs(cfg, n, point.width, pairs)
    macs += _write_keys_macs(cfg, n) + _write_query_macs(cfg, n)
    if cfg.distilled:
        macs += patches * d * d                                         # feature queries
        macs += 2 * patches * d * d + 2 * n * d * d + 2 * patches * n * d  # feature write-out
        macs += _adapter_macs(cfg, patches, cfg.output_feat_dim, True)
    return 2 * macs


def rotation_flops(cfg: AdaPerceiverConfig, point: ConfigPoint) -> int:
    """FLOPs of the static graph's rotary pair swaps, done as products with `pair_rotation`
    (n x head_dim by head_dim x head_dim per head: the queries and keys of every block and the
    keys of each write-out). `count_flops` leaves them out: they stand in for element-wise work
    that the model defines, and the roofline is over the model's products."""
    ropes = 2 * point.depth + (2 if cfg.distilled else 1)
    return 2 * ropes * point.tokens * cfg.embed_dim * cfg.head_dim


def count_search_flops(cfg: AdaPerceiverConfig, runs: dict[int, list[int]], widths: list[int],
                       depths: list[int], image_size: int | None = None) -> int:
    """FLOPs for one image of adaexport search's shared passes (adaexport.model.shared_pass):
    the patch embedding once; per pass token count n (the keys of `runs`, each scoring the
    token counts it lists) the read-in once; per (n, width) the blocks up to the deepest
    depth, and after each scored depth the write-out keys of the n latents once and a
    write-out query and the classifier per scored token count. Logits only. The passes run
    the blocks with the additive mask, so every (query, key) pair is scored."""
    patches = ((image_size or cfg.img_size) // cfg.patch_size) ** 2
    macs = _embed_macs(cfg, patches)
    for n, scored in runs.items():
        macs += _read_macs(cfg, n, patches)
        per_depth = _write_keys_macs(cfg, n) + sum(_write_query_macs(cfg, g) for g in scored)
        macs += len(widths) * len(depths) * per_depth
        macs += sum(max(depths) * _block_macs(cfg, n, w, n * n) for w in widths)
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
