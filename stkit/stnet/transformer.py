"""STNet's ST-encoder and ST-decoder (Deformable DETR's layers with STDA instead of MSDeformAttn).

Encoder: the tokens of every frame of a clip attend (STDA) to their own frame and the
other frames, then an FFN; post-norm as in Deformable DETR. Decoder: object queries of
one "current" frame run self-attention, then STDA cross-attention into the encoded clip
(current frame first), then an FFN; every layer refines the reference boxes (iterative
box refinement) and emits class logits and boxes, so the criterion can supervise every
layer. Which clip and which frame a decoded item belongs to is given per item
(``clip``, ``current``), which is what encoder feature shuffle needs.

This module holds no backbone, no loss and no post-processing.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import STDA, arrange_frames
from .config import STNetConfig

__all__ = ["EncoderLayer", "DecoderLayer", "Decoder", "MLP", "inverse_sigmoid",
           "encoder_reference_points", "valid_ratios", "released_init"]


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def valid_ratios(mask: torch.Tensor) -> torch.Tensor:
    """(N, H, W) padding mask -> (N, 2) fraction of width and height that is image (x, y)."""
    h = (~mask[:, :, 0]).sum(1).float() / mask.shape[1]
    w = (~mask[:, 0, :]).sum(1).float() / mask.shape[2]
    return torch.stack([w, h], -1)


def encoder_reference_points(shapes: list, ratios: torch.Tensor) -> torch.Tensor:
    """Pixel centres of every level as reference points: ratios (N, L, 2) -> (N, S, L, 2)."""
    refs = []
    for lvl, (H, W) in enumerate(shapes):
        ys, xs = torch.meshgrid(torch.linspace(0.5, H - 0.5, H, device=ratios.device),
                                torch.linspace(0.5, W - 0.5, W, device=ratios.device),
                                indexing="ij")
        y = ys.reshape(1, -1) / (ratios[:, None, lvl, 1] * H)  # (N, H*W), 1 = valid edge
        x = xs.reshape(1, -1) / (ratios[:, None, lvl, 0] * W)
        refs.append(torch.stack([x, y], -1))
    ref = torch.cat(refs, 1)  # (N, S, 2)
    return ref[:, :, None] * ratios[:, None]  # (N, S, L, 2)


# The released decoder layer builds its self-attention with 8 heads whatever the head count
# of the rest of the model (a literal in its constructor); the faithful variant does too.
RELEASED_SELF_ATTENTION_HEADS = 8


def released_init(modules) -> None:
    """The released transformer's init of its layers: ``xavier_uniform_`` on every parameter of
    more than one dimension (value/output projections, point and weight heads, FFNs,
    self-attention); biases keep what PyTorch drew. The release's reset would also run
    Deformable DETR's MSDeformAttn reset (zero offset weights, a ring of offset biases,
    uniform attention) on instances of that class, but its temporal attention modules are
    not instances of it, so that reset never runs (``STDA(init="default")`` then this)."""
    for module in modules:
        for p in module.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)


class MLP(nn.Module):
    """A few Linear layers with ReLU between them (the box head)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, n_layers: int):
        super().__init__()
        dims = [d_in] + [d_hidden] * (n_layers - 1) + [d_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class _FFN(nn.Module):
    def __init__(self, d: int, hidden: int, dropout: float):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(d, hidden), nn.Linear(hidden, d)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, x):
        return self.norm(x + self.drop(self.lin2(self.drop(F.relu(self.lin1(x))))))


def _stda(cfg: STNetConfig, points: int, temporal_points: int) -> STDA:
    return STDA(cfg.d_model, cfg.n_levels, cfg.n_heads, points, cfg.n_frames,
                temporal_points if cfg.temporal else 0,
                init="default" if cfg.faithful else "detr")


class EncoderLayer(nn.Module):
    """STDA over the clip + FFN, for the tokens of all B*T frames at once."""

    def __init__(self, cfg: STNetConfig):
        super().__init__()
        self.attn = _stda(cfg, cfg.enc_points, cfg.enc_temporal_points)
        self.drop = nn.Dropout(cfg.dropout)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.ffn = _FFN(cfg.d_model, cfg.ffn_dim, cfg.dropout)

    def forward(self, src, pos, ref, shapes, lsi, mask, T: int):
        """src, pos (B*T, S, C); ref (B*T, S, L, 2); mask (B*T, S) -> (B*T, S, C)."""
        v = self.attn.project_value(src, mask)  # (B*T, S, M, D)
        if self.attn.temporal:
            BT = v.shape[0]
            frames = torch.arange(BT, device=v.device)
            v = arrange_frames(v.view(BT // T, T, *v.shape[1:]), frames // T, frames % T)
        else:
            v = v[:, None]  # (B*T, 1, S, M, D): own frame only
        src = self.norm(src + self.drop(self.attn(src + pos, ref, v, shapes, lsi)))
        return self.ffn(src)


class DecoderLayer(nn.Module):
    """Self-attention of the queries, STDA into the clip (current frame first), FFN."""

    def __init__(self, cfg: STNetConfig):
        super().__init__()
        d = cfg.d_model
        heads = RELEASED_SELF_ATTENTION_HEADS if cfg.faithful else cfg.n_heads
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=cfg.dropout, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop1, self.drop2 = nn.Dropout(cfg.dropout), nn.Dropout(cfg.dropout)
        self.cross = _stda(cfg, cfg.dec_points, cfg.dec_temporal_points)
        self.ffn = _FFN(d, cfg.ffn_dim, cfg.dropout)

    def forward(self, tgt, query_pos, ref, memory, mask, shapes, lsi, clip, current,
                return_attention=False, groups: int = 1):
        """tgt, query_pos (N, Q, C); ref (N, Q, L, 2|4); memory (B, T, S, C); mask (B, T, S).
        ``groups`` > 1: every run of that many items is one query set split into groups
        (``split_queries``): self-attention runs over the whole set."""
        q = (tgt + query_pos).reshape(tgt.shape[0] // groups, -1, tgt.shape[-1])
        v = tgt.reshape(q.shape)
        tgt = self.norm1(tgt + self.drop1(self.self_attn(q, q, v, need_weights=False)[0].reshape(tgt.shape)))
        B, T, S, _ = memory.shape
        v = self.cross.project_value(memory.flatten(0, 1), mask.flatten(0, 1))
        v = v.view(B, T, *v.shape[1:])  # (B, T, S, M, D)
        v = arrange_frames(v, clip, current) if self.cross.temporal else v[clip, current][:, None]
        out = self.cross(tgt + query_pos, ref, v, shapes, lsi, return_attention=return_attention)
        out, att = out if return_attention else (out, None)
        tgt = self.ffn(self.norm2(tgt + self.drop2(out)))
        return tgt, att


class Decoder(nn.Module):
    """Decoder layers with iterative box refinement and per-layer class/box heads."""

    def __init__(self, cfg: STNetConfig):
        super().__init__()
        d = cfg.d_model
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.dec_layers))
        cls = nn.Linear(d, cfg.num_classes)
        nn.init.constant_(cls.bias, -math.log((1 - 0.01) / 0.01))  # prior probability 0.01
        box = MLP(d, d, 4, 3)
        nn.init.zeros_(box.layers[-1].weight)
        nn.init.zeros_(box.layers[-1].bias)
        nn.init.constant_(box.layers[-1].bias[2:], -2.0)  # small initial boxes
        self.class_heads = nn.ModuleList(copy.deepcopy(cls) for _ in range(cfg.dec_layers))
        self.box_heads = nn.ModuleList(copy.deepcopy(box) for _ in range(cfg.dec_layers))
        if cfg.faithful:  # released: the copies are taken before the -2, which goes on layer 0's head only
            for head in self.box_heads[1:]:
                nn.init.zeros_(head.layers[-1].bias)

    def forward(self, tgt, query_pos, ref, memory, mask, ratios, shapes, lsi, clip, current,
                return_attention=False, groups: int = 1):
        """ref (N, Q, 2) initial reference points; ratios (N, L, 2). Returns per layer
        dicts with "logits" (N, Q, num_classes), "boxes" (N, Q, 4) cxcywh in [0, 1]
        (and "attention" with ``return_attention``); ``groups`` see ``DecoderLayer``."""
        outputs = []
        for layer, cls_head, box_head in zip(self.layers, self.class_heads, self.box_heads):
            scale = ratios if ref.shape[-1] == 2 else torch.cat([ratios, ratios], -1)
            ref_in = ref[:, :, None] * scale[:, None]  # (N, Q, L, 2|4)
            tgt, att = layer(tgt, query_pos, ref_in, memory, mask, shapes, lsi, clip, current,
                             return_attention, groups)
            delta = box_head(tgt)  # (N, Q, 4)
            if ref.shape[-1] == 4:
                boxes = (delta + inverse_sigmoid(ref)).sigmoid()
            else:
                boxes = torch.cat([delta[..., :2] + inverse_sigmoid(ref), delta[..., 2:]], -1).sigmoid()
            out = {"logits": cls_head(tgt), "boxes": boxes}
            if return_attention:
                out["attention"] = {k: t.detach() for k, t in att.items()}
                out["reference"] = ref_in.detach()
            outputs.append(out)
            ref = boxes.detach()
        return outputs
