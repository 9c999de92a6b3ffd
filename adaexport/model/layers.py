"""Building blocks shared by the dynamic model and its static specialisations.

Everything here is written so that it exports to plain ONNX ops: rotary embeddings
use real cos/sin tables (no complex numbers) and attention is explicit matmuls
with an optional additive mask.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def rope_tables(num_positions: int, head_dim: int, theta: float, max_positions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real cos/sin tables (N, head_dim) for positions 0..N-1, each angle repeated for
    its interleaved channel pair; computed in float32 as the reference does.

    From `max_positions` on, every frequency is divided by N / max_positions
    (position interpolation), so N positions span the trained range.
    """
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    if num_positions >= max_positions:
        freqs = freqs / (num_positions / max_positions)
    angles = torch.outer(torch.arange(num_positions, dtype=torch.float32), freqs)
    cos = torch.cos(angles).repeat_interleave(2, dim=-1)
    sin = torch.sin(angles).repeat_interleave(2, dim=-1)
    return cos, sin


def fixed_shape(x: torch.Tensor) -> list[int]:
    """x's shape as Python ints, for reshapes. Traced for an ONNX export, a size read from a
    tensor is recorded as Shape/Gather/Concat ops feeding the Reshape; the exported graphs
    are static, so the folding removes them again, but at published size they were half the
    traced nodes (2,052 of 4,014 at full depth), each converted and then folded away. As ints
    they are constants from the start (the tracer's warning about it is expected: the shapes
    are static)."""
    return [int(d) for d in x.shape]


def pair_rotation(dim: int) -> torch.Tensor:
    """The signed permutation R (dim, dim) with (x @ R)[2i] = -x[2i+1] and (x @ R)[2i+1] = x[2i]:
    `apply_rope`'s pair rotation as one matrix product (every output is one input times +-1
    plus zeros, so it gives the same bits)."""
    rotation = torch.zeros(dim, dim)
    pairs = torch.arange(0, dim, 2)
    rotation[pairs + 1, pairs] = -1.0
    rotation[pairs, pairs + 1] = 1.0
    return rotation


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               rotation: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate interleaved channel pairs (2i, 2i+1) of x (..., N, head_dim).

    With `rotation` (`pair_rotation(head_dim)`) the pairs are swapped and signed by a product
    with it, which the static graphs use: four ONNX ops (MatMul, two Mul, Add) where the
    element-wise swap below exports as eleven. Same bits; at published size ONNX Runtime fp32
    ran up to 4% faster and OpenVINO fp32 4-10% (benchmarks/README.md, "The rotary embedding as
    a product").
    The product's N head_dim^2 multiply-adds per head are not counted as FLOPs
    (`flops.rotation_flops`)."""
    if rotation is not None:
        return x * cos + torch.matmul(x, rotation) * sin
    *lead, dim = fixed_shape(x)
    pairs = x.reshape(*lead, dim // 2, 2)
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).reshape(*lead, dim)
    return x * cos + rotated * sin


def block_causal_mask(num_tokens: int, grans: tuple[int, ...]) -> torch.Tensor:
    """Boolean (N, N) mask, True where a query may attend to a key.

    Granularities <= N are kept and N is appended as the last block when it is not
    one of them. A latent in block [g_{i-1}, g_i) sees keys [0, g_i). Derived from
    the configured granularities every time (the reference mutates its list).
    """
    bounds = [g for g in grans if g < num_tokens] + [num_tokens]
    block_end = torch.empty(num_tokens, dtype=torch.long)
    start = 0
    for end in bounds:
        block_end[start:end] = end
        start = end
    keys = torch.arange(num_tokens)
    return keys[None, :] < block_end[:, None]


def additive_mask(mask: torch.Tensor) -> torch.Tensor:
    """Boolean mask -> float32 additive mask (0 where allowed, a large negative elsewhere)."""
    return torch.zeros(mask.shape, dtype=torch.float32).masked_fill(~mask, torch.finfo(torch.float32).min)


PrefixRuns = tuple[tuple[int, int, int], ...]


def prefix_runs(mask: torch.Tensor) -> PrefixRuns | None:
    """A boolean (N, N) mask in which every query row sees a prefix of the keys, as runs of rows
    that see the same prefix: ((start, end, keys), ...); None where some row's keys are not a prefix.

    The block-causal mask is such a mask. `attention` given the runs instead of the additive mask
    computes each run over its prefix alone. That is exact: a masked score (float32's lowest) leaves
    exp() as 0, so the runs drop only zero terms. It also skips the masked work (41% of the scores
    at 256 tokens with the published granularities), and no Softmax sees a masked score. Those
    scores cost ONNX Runtime's Softmax 6.3x its unmasked time over one published block on x86:
    exp() of anything below -87 goes through subnormal numbers (benchmarks/README.md,
    "Attention without the mask").
    """
    keys = mask.sum(dim=-1).tolist()
    prefix = torch.arange(mask.shape[-1])[None, :] < torch.tensor(keys)[:, None]
    if not torch.equal(prefix, mask) or 0 in keys:
        return None
    runs, start = [], 0
    for row in range(1, len(keys) + 1):
        if row == len(keys) or keys[row] != keys[start]:
            runs.append((start, row, int(keys[start])))
            start = row
    return tuple(runs)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              bias: torch.Tensor | PrefixRuns | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v over (B, H, N, d) tensors, as plain matmuls.

    `bias` is an additive mask, or the `prefix_runs` of a boolean one: each run of query rows then
    attends to its key prefix alone, and the outputs are concatenated."""
    if isinstance(bias, tuple):
        every = fixed_shape(k)[-2]
        if len(bias) == 1 and bias[0][2] == every:
            return attention(q, k, v, None)
        queries = q.split([end - start for start, end, _ in bias], dim=-2)  # the runs cover every row, in order
        return torch.cat([attention(rows, k if keys == every else k[..., :keys, :],
                                    v if keys == every else v[..., :keys, :], None)
                          for rows, (_, _, keys) in zip(queries, bias)], dim=-2)
    scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    if bias is not None:
        scores = scores + bias
    return torch.matmul(torch.softmax(scores, dim=-1), v)


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2. `width` keeps the first hidden units (Matryoshka FFN)."""

    def __init__(self, dim: int, hidden: int, out_dim: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim or dim)

    def forward(self, x: torch.Tensor, hidden: int | None = None) -> torch.Tensor:
        if hidden is None or hidden == self.fc1.out_features:
            return self.fc2(F.gelu(self.fc1(x)))
        h = F.gelu(F.linear(x, self.fc1.weight[:hidden], self.fc1.bias[:hidden]))
        return F.linear(h, self.fc2.weight[:, :hidden], self.fc2.bias)


class MultiHeadAttention(nn.Module):
    """Separate q/k/v/proj projections; used for self- and cross-attention."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, H, N, D/H)."""
        *lead, dim = fixed_shape(x)
        return x.reshape(*lead, self.num_heads, dim // self.num_heads).transpose(-3, -2)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, N, d) -> (B, N, H*d)."""
        *lead, heads, tokens, dim = fixed_shape(x)
        return x.transpose(-3, -2).reshape(*lead, tokens, heads * dim)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class CrossAttentionHead(nn.Module):
    """Pre-norm cross attention: `snk_norm` on the queries' side, `src_norm` on the keys'."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, proj_bias: bool, eps: float):
        super().__init__()
        self.snk_norm = nn.LayerNorm(dim, eps=eps)
        self.src_norm = nn.LayerNorm(dim, eps=eps)
        self.cattn = MultiHeadAttention(dim, num_heads, qkv_bias, proj_bias)


class ProcessBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, hidden: int, qkv_bias: bool, proj_bias: bool, eps: float, ls_init: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = MultiHeadAttention(dim, num_heads, qkv_bias, proj_bias)
        self.ls1 = LayerScale(dim, ls_init)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.ffn = Mlp(dim, hidden)
        self.ls2 = LayerScale(dim, ls_init)
