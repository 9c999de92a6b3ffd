"""Static specialisation: one (tokens, width, depth, attention) point as a plain module.

`specialize` returns a module whose forward is straight-line code over fixed shapes:
sliced FFN weights, only the blocks it runs, real cos/sin rotary tables as constants (the
pairs swapped by a product with `pair_rotation`, which runtimes run faster than the swap's
element-wise ops), the block-causal mask as runs of query rows over key prefixes
(`prefix_runs`: no mask tensor), the position table at the export resolution, and every
image-independent quantity (latents, read-in queries with RoPE, the write-out token and query)
precomputed.
It exports to ONNX without complex numbers, Resize or shape-dependent control flow.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from .point import ConfigPoint, validate_point
from .adaperceiver import AdaPerceiver, cross_attend, pos_embed_at, process_block, query_heads
from .config import ffn_hidden
from .layers import Mlp, fixed_shape, pair_rotation, prefix_runs


class TransposedLinear(nn.Module):
    """x @ weight_t + bias with the weight stored transposed, (in_features, out_features)."""

    def __init__(self, weight_t: torch.Tensor, bias: torch.Tensor, copy: bool = True):
        super().__init__()
        self.weight_t = nn.Parameter(weight_t.detach().contiguous().clone() if copy else weight_t.detach(),
                                     requires_grad=False)
        self.bias = nn.Parameter(bias.detach().clone() if copy else bias.detach(), requires_grad=False)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """rows (M, in) -> (M, out); one Gemm consuming weight_t as stored."""
        return torch.addmm(self.bias, rows, self.weight_t)


class SlicedMlp(nn.Module):
    """The first `hidden` units of an Mlp, stored so a narrower width is a byte prefix.

    `fc1.weight` is fc1.weight[:hidden] (hidden, D) and `fc2.weight_t` is
    fc2.weight[:, :hidden] transposed, also (hidden, D): in row-major storage the
    tensors of a narrower width are the leading bytes of the widest one's, so a
    family of exported models can share them (see adaexport.export). The forward
    works on rows (B*N, D) so that it exports to Gemm(x, fc1.weight, transB=1) and
    Gemm(h, fc2.weight_t), consuming these tensors as they are; a Linear applied to
    (B, N, D) exports as MatMul with a folded, transposed copy of its weight, which
    would not be a prefix. fc2 keeps its full bias.

    With `copy=False` the tensors are views of the model's (fc2's a transposed, strided
    one), never copied: what an export wants, which reads each tensor once into the
    weights file (at published size the copies were 2/3 of the model). The default
    copies them into this layout, which the PyTorch reference's GEMMs run on.
    """

    def __init__(self, mlp: Mlp, hidden: int, copy: bool = True):
        super().__init__()
        fc1, fc2 = mlp.fc1, mlp.fc2
        # no random initialisation to overwrite (at published size 0.8 s per export)
        self.fc1 = nn.utils.skip_init(nn.Linear, fc1.in_features, hidden)
        if copy:
            with torch.no_grad():
                self.fc1.weight.copy_(fc1.weight[:hidden])
                self.fc1.bias.copy_(fc1.bias[:hidden])
        else:
            self.fc1.weight = nn.Parameter(fc1.weight.detach()[:hidden], requires_grad=False)
            self.fc1.bias = nn.Parameter(fc1.bias.detach()[:hidden], requires_grad=False)
        self.fc2 = TransposedLinear(fc2.weight[:, :hidden].t(), fc2.bias, copy)

    @property
    def hidden(self) -> int:
        return self.fc1.out_features

    def forward(self, x: torch.Tensor, hidden: int | None = None) -> torch.Tensor:
        if hidden is not None and hidden != self.hidden:
            raise ValueError(f"this MLP is sliced to {self.hidden} hidden units, not {hidden}")
        *lead, dim = fixed_shape(x)
        rows = x.reshape(-1, dim)
        out = self.fc2(F.gelu(self.fc1(rows)))
        return out.reshape(*lead, self.fc2.bias.shape[0])


def _sliced_mlp(mlp: Mlp, hidden: int) -> SlicedMlp:
    """The MLP holding only the first `hidden` units, as views of the model's (see SlicedMlp)."""
    return SlicedMlp(mlp, hidden, copy=False)


def _shared(module: nn.Module, *replaced: str) -> nn.Module:
    """A copy of `module` that shares its parameters and buffers with the original (no
    tensor is copied, unlike copy.deepcopy: at published size the blocks are 500 MB) but
    has its own tables, so setting or deleting an attribute leaves the original intact.
    The submodules named in `replaced` are such copies too (to be edited in turn)."""
    twin = copy.copy(module)
    twin._modules, twin._parameters, twin._buffers = (dict(module._modules), dict(module._parameters),
                                                      dict(module._buffers))
    for name in replaced:
        twin._modules[name] = _shared(module._modules[name])
    return twin


class StaticAdaPerceiver(nn.Module):
    """The model at one point; forward(image) returns a tuple in `output_names` order."""

    def __init__(self, model: AdaPerceiver, point: ConfigPoint, attention: str | None = None,
                 image_size: int | None = None, taps: bool = False):
        super().__init__()
        cfg = model.config
        validate_point(cfg, point)
        tokens, width, depth, attention = model.resolve(point.tokens, point.width, point.depth, attention)
        self.point, self.attention_mode, self.config = point, attention, cfg
        self.image_size = image_size or cfg.img_size
        if self.image_size % cfg.patch_size:
            raise ValueError(f"image size {self.image_size} is not a multiple of patch_size {cfg.patch_size}")
        self.output_names = model.output_names
        # taps: forward also returns the latents after every block (`tap_names`), so that an
        # export of the full depth holds every shallower depth's graph (adaexport.export_depths)
        self.taps = taps
        hidden = ffn_hidden(width, cfg.ffn_ratio)

        with torch.no_grad():
            self.patch_embed = _shared(model.patch_embed)
            pos = pos_embed_at(model.patch_embed.pos_embed, self.image_size // cfg.patch_size)
            del self.patch_embed.pos_embed
            self.register_buffer("pos_embed", pos.detach().clone())

            cos, sin = model.rope(tokens)
            self.register_buffer("rope_cos", cos)
            self.register_buffer("rope_sin", sin)
            self.register_buffer("rope_rotation", pair_rotation(cfg.head_dim))
            # the blocks' mask: the runs of query rows that see one key prefix (`prefix_runs`, the
            # block-causal mask), no mask in full mode, else an additive mask constant
            bias = model.attention_bias(tokens, attention)
            runs = None if bias is None else prefix_runs(bias == 0)
            if bias is not None and runs is None:
                self.register_buffer("attn_mask", bias)
            else:
                self.attn_mask = runs

            latents = model.process_latents.token.expand(1, tokens, -1)
            self.register_buffer("latents", latents.detach().clone())
            self.register_buffer("read_queries", query_heads(model.read_head, latents, cos, sin))
            self.read_head = _shared(model.read_head, "cattn")
            del self.read_head.cattn.q, self.read_head.snk_norm

            self.blocks = nn.ModuleList()
            for block in model.blocks[:depth]:
                block = _shared(block)
                block.ffn = _sliced_mlp(block.ffn, hidden)
                self.blocks.append(block)

            out_token = model.output_latents.token.unsqueeze(0)
            self.register_buffer("out_token", out_token.detach().clone())
            self.register_buffer("write_queries", query_heads(model.write_head, out_token))
            self.write_head = _shared(model.write_head, "cattn")
            del self.write_head.cattn.q, self.write_head.snk_norm
            self.output_adapter = model.output_adapter

            if cfg.distilled:
                self.output_latents_feat = model.output_latents_feat
                self.write_head_feat = model.write_head_feat
                self.output_adapter_feat = model.output_adapter_feat
        shared = {id(t) for t in model.parameters()}
        for tensor in self.parameters():  # an inference artefact: frozen (the shared ones are the model's)
            if id(tensor) not in shared:
                tensor.requires_grad_(False)
        self.eval()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        patches = self.patch_embed(image, self.pos_embed)
        latents = self.latents + cross_attend(self.read_head, self.read_queries, patches)
        tapped = []
        for block in self.blocks:
            latents = process_block(block, latents, self.rope_cos, self.rope_sin, self.attn_mask, None,
                                    self.rope_rotation)
            tapped.append(latents)
        outputs = self._head(patches, latents)
        return outputs + tuple(tapped) if self.taps else outputs

    @property
    def tap_names(self) -> tuple[str, ...]:
        """The names of the latents after each block, as a tapped module outputs them."""
        return tuple(tap_name(k) for k in range(len(self.blocks))) if self.taps else ()

    def _head(self, patches: torch.Tensor, latents: torch.Tensor) -> tuple[torch.Tensor, ...]:
        rope = (self.rope_cos, self.rope_sin, self.rope_rotation)
        out = self.out_token + cross_attend(self.write_head, self.write_queries, latents, *rope)
        logits = self.output_adapter(out).flatten(1)
        if not self.config.distilled:
            return (logits,)
        feat_q = self.output_latents_feat.proj(patches)
        head = self.write_head_feat
        feat = feat_q + cross_attend(head, query_heads(head, feat_q), latents, *rope)
        return logits, self.output_adapter_feat(feat)


def tap_name(block: int) -> str:
    """The output name of the latents after block `block` (0-based) of a tapped module."""
    return f"latents_after_block_{block}"


def specialize(model: AdaPerceiver, point: ConfigPoint, attention: str | None = None,
               image_size: int | None = None, taps: bool = False) -> StaticAdaPerceiver:
    """The static module for one point (see the module docstring); `taps`: also output the
    latents after every block."""
    return StaticAdaPerceiver(model, point, attention, image_size, taps)
