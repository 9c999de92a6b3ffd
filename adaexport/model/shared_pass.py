"""The logits of many configurations from a few forward passes (`adaexport search`).

* Depth: the configuration at depth d is a prefix of the deepest one, so one pass writes
  out and classifies after every block (the write-out and head are shared by all depths).
* Tokens, under the block-causal mask: a latent in block [g_{i-1}, g_i) attends to keys
  [0, g_i) only, so the first g latents of an n-token pass are those of a g-token pass at
  every depth. Writing out over the first g latents gives configuration (g, width, depth);
  the write-out's keys and values are per latent, so they are computed once over the n
  latents and sliced. `plan_passes` checks this prefix property on the actual rotary
  tables and mask, and gives a token count its own pass where it does not hold (`full`
  attention: every token count).
* Width: one pass per width; the patch embedding (and the read-in, which does not depend
  on width) is computed once for all of them.

Every operation is the static module's (`adaexport.model.static`): the same sliced MLPs,
precomputed read-in and write-out queries, rotary tables and additive mask, over the same
weights, so a configuration's logits match `specialize(model, point)(image)` to float32
rounding (the token prefix changes only the shapes the products run over).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .point import ConfigPoint
from .adaperceiver import (AdaPerceiver, attend, attention_bias_for, cross_attend, cross_keys, pos_embed_at,
                           process_block, query_heads, rope_for)
from .config import AdaPerceiverConfig, ffn_hidden
from .static import SlicedMlp


@dataclasses.dataclass(frozen=True)
class PassPlan:
    """Which passes score which configurations: `runs` maps the token count of a pass to
    the token counts it scores (its prefixes); every run goes once per width."""

    attention: str
    runs: dict[int, tuple[int, ...]]
    widths: tuple[int, ...]
    depths: tuple[int, ...]

    @property
    def passes(self) -> int:
        """Forward passes (through the blocks) per image."""
        return len(self.runs) * len(self.widths)

    def points(self) -> list[ConfigPoint]:
        return sorted(ConfigPoint(g, w, d) for scored in self.runs.values() for g in scored
                      for w in self.widths for d in self.depths)


def shares_prefix(cfg: AdaPerceiverConfig, n: int, g: int, attention: str) -> bool:
    """Whether the first g latents of an n-token pass equal a g-token pass's at every depth:
    the first g rows of n's rotary table are g's table, and the mask lets them see no key
    at or after g and is g's own mask on the first g keys."""
    if g == n:
        return True
    cos_n, sin_n = rope_for(cfg, n)
    cos_g, sin_g = rope_for(cfg, g)
    if not (torch.equal(cos_n[:g], cos_g) and torch.equal(sin_n[:g], sin_g)):
        return False
    bias_n, bias_g = attention_bias_for(cfg, n, attention), attention_bias_for(cfg, g, attention)
    if bias_n is None:  # full attention: every latent sees every key
        return False
    hidden = bias_n[:g, g:]
    return bool((hidden == torch.finfo(hidden.dtype).min).all()) and torch.equal(bias_n[:g, :g], bias_g)


def plan_passes(cfg: AdaPerceiverConfig, tokens, widths, depths, attention: str) -> PassPlan:
    """The fewest passes that score every (token count, width, depth): each token count is
    scored by the largest pass it is a prefix of (`shares_prefix`), else by its own."""
    runs: dict[int, list[int]] = {}
    for g in sorted(set(tokens), reverse=True):
        host = next((n for n in runs if shares_prefix(cfg, n, g, attention)), g)
        runs.setdefault(host, []).append(g)
    return PassPlan(attention, {n: tuple(sorted(gs)) for n, gs in runs.items()},
                    tuple(sorted(set(widths))), tuple(sorted(set(depths))))


class _WidthBlock(nn.Module):
    """A process block whose MLP is sliced to one width; every other weight is the model's."""

    def __init__(self, block: nn.Module, hidden: int):
        super().__init__()
        self.norm1, self.attn, self.ls1 = block.norm1, block.attn, block.ls1
        self.norm2, self.ls2 = block.norm2, block.ls2
        self.ffn = SlicedMlp(block.ffn, hidden)


class SharedPass:
    """`shared(image)` -> {ConfigPoint: logits (B, classes)} for every point of the plan."""

    def __init__(self, model: AdaPerceiver, plan: PassPlan):
        cfg = model.config
        self.model, self.plan = model, plan
        deepest = max(plan.depths)
        with torch.no_grad():
            self.pos_embed = pos_embed_at(model.patch_embed.pos_embed, cfg.grid_size).detach().clone()
            self.blocks = {w: [_WidthBlock(b, ffn_hidden(w, cfg.ffn_ratio)) for b in model.blocks[:deepest]]
                           for w in plan.widths}
            self.tables = {}
            for n in plan.runs:
                cos, sin = model.rope(n)
                latents = model.process_latents.token.expand(1, n, -1).detach().clone()
                self.tables[n] = (cos, sin, model.attention_bias(n, plan.attention), latents,
                                  query_heads(model.read_head, latents, cos, sin))
            self.out_token = model.output_latents.token.unsqueeze(0).detach().clone()
            self.write_queries = query_heads(model.write_head, self.out_token)

    def __call__(self, image: torch.Tensor) -> dict[ConfigPoint, torch.Tensor]:
        model, plan = self.model, self.plan
        logits: dict[ConfigPoint, torch.Tensor] = {}
        with torch.no_grad():
            patches = model.patch_embed(image, self.pos_embed)
            for n, scored in plan.runs.items():
                cos, sin, bias, latents, read_queries = self.tables[n]
                read = latents + cross_attend(model.read_head, read_queries, patches)
                for width in plan.widths:
                    x = read
                    for depth, block in enumerate(self.blocks[width], 1):
                        x = process_block(block, x, cos, sin, bias, None)
                        if depth in plan.depths:
                            self._write_out(x, cos, sin, scored, width, depth, logits)
        return logits

    def _write_out(self, latents, cos, sin, scored, width, depth, logits) -> None:
        """Write out and classify over each scored prefix of the latents."""
        model = self.model
        k, v = cross_keys(model.write_head, latents, cos, sin)
        for g in scored:
            out = self.out_token + attend(model.write_head, self.write_queries, k[:, :, :g], v[:, :, :g])
            logits[ConfigPoint(g, width, depth)] = model.output_adapter(out).flatten(1)
