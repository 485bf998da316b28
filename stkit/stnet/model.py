"""The STNet detector: backbone pyramid -> ST-encoder over the clip -> ST-decoder per frame.

    model = build_model(STNetConfig())  # or a recipe's model (stkit.stnet.experiment.recipe)
    out = model(frames, mask)          # frames (B, T, 3, H, W) in [0, 1], mask (B, T, H, W)
    out["logits"], out["boxes"]         # (B, Q, num_classes), (B, Q, 4) cxcywh of the key frame
    out["aux"]                          # the same for every earlier decoder layer

``encode`` and ``decode`` are separate so that encoder feature shuffle can encode a clip
once and decode any of its frames (``decode(mem, clip, current)``). The single-frame
baseline (``cfg.baseline``) is the same network without temporal points; in training it
encodes only the key frame. Losses, matching, post-processing and the optimiser's
parameter groups (``stkit.stnet.task``) live in their own modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..ops.module import level_start_index
from .backbone import Pyramid
from .config import STNetConfig
from .position import sine_position
from .transformer import Decoder, EncoderLayer, encoder_reference_points, released_init, valid_ratios

__all__ = ["STNet", "Memory", "build_model", "check_clip", "shuffle_items"]


@dataclass
class Memory:
    """An encoded clip."""

    tokens: torch.Tensor        # (B, T, S, C) encoder output
    mask: torch.Tensor          # (B, T, S) True on padding
    ratios: torch.Tensor        # (B, T, L, 2) valid fraction (x, y) per level
    shapes: torch.Tensor        # (L, 2) int64 on the CPU, rows (H_l, W_l)
    starts: torch.Tensor        # (L,) int64 level start rows


def shuffle_items(B: int, K: int, device=None):
    """(clip, current) index vectors (B*K,) decoding frames 0..K-1 of every clip, clip-major."""
    clip = torch.arange(B, device=device).repeat_interleave(K)
    current = torch.arange(K, device=device).repeat(B)
    return clip, current


def check_clip(frames: torch.Tensor, mask: torch.Tensor, n_frames: int) -> None:
    """Clear errors for a clip batch of the wrong shape, length or dtype."""
    if frames.dim() != 5 or frames.shape[2] != 3:
        raise ValueError(f"STNet: frames must be (B, T, 3, H, W), got shape {tuple(frames.shape)}")
    if frames.shape[1] != n_frames:
        raise ValueError(f"STNet: the model was built for clips of {n_frames} frames "
                         f"(key + support + global), got frames with T={frames.shape[1]}")
    if not frames.dtype.is_floating_point:
        raise ValueError(f"STNet: frames must be float in [0, 1], got {frames.dtype}")
    if mask.dtype != torch.bool or tuple(mask.shape) != (*frames.shape[:2], *frames.shape[3:]):
        raise ValueError(f"STNet: mask must be bool (B, T, H, W) = "
                         f"{(*frames.shape[:2], *frames.shape[3:])}, got {mask.dtype} {tuple(mask.shape)}")


class STNet(nn.Module):
    def __init__(self, cfg: STNetConfig):
        super().__init__()
        self.config = cfg
        d, L = cfg.d_model, cfg.n_levels
        self.pyramid = Pyramid(cfg)
        self.level_embed = nn.Parameter(torch.randn(L, d))
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.enc_layers))
        self.query_embed = nn.Embedding(cfg.num_queries, 2 * d)  # (query_pos, tgt)
        self.reference_points = nn.Linear(d, 2)
        nn.init.xavier_uniform_(self.reference_points.weight)
        nn.init.zeros_(self.reference_points.bias)
        self.decoder = Decoder(cfg)
        if cfg.faithful:  # the released transformer's init (its heads and projections keep theirs)
            released_init([self.encoder, self.decoder.layers])

    def encode(self, frames: torch.Tensor, mask: torch.Tensor) -> Memory:
        """frames (B, T, 3, H, W), mask (B, T, H, W) -> the encoded clip (all T frames)."""
        B, T = frames.shape[:2]
        feats, masks = self.pyramid(frames.flatten(0, 1), mask.flatten(0, 1))
        shapes = torch.tensor([f.shape[-2:] for f in feats], dtype=torch.long)  # (L, 2) CPU
        src, pos, flat_masks = [], [], []
        for lvl, (f, m) in enumerate(zip(feats, masks)):
            p = sine_position(m, f.shape[1]).to(f.dtype)          # (BT, C, h, w)
            src.append(f.flatten(2).transpose(1, 2))              # (BT, h*w, C)
            pos.append(p.flatten(2).transpose(1, 2) + self.level_embed[lvl])
            flat_masks.append(m.flatten(1))
        src, pos, flat_mask = torch.cat(src, 1), torch.cat(pos, 1), torch.cat(flat_masks, 1)
        ratios = torch.stack([valid_ratios(m) for m in masks], 1)  # (BT, L, 2)
        ref = encoder_reference_points(shapes.tolist(), ratios)     # (BT, S, L, 2)
        starts = level_start_index(shapes)
        for layer in self.encoder:
            src = layer(src, pos, ref, shapes, starts, flat_mask, T)  # (BT, S, C)
        S = src.shape[1]
        return Memory(src.view(B, T, S, -1), flat_mask.view(B, T, S),
                      ratios.view(B, T, *ratios.shape[1:]), shapes, starts)

    def decode(self, mem: Memory, clip: torch.Tensor, current: torch.Tensor,
               return_attention: bool = False) -> dict:
        """Decode frame ``current[n]`` of clip ``clip[n]`` for each item n -> outputs (N, ...).

        With ``split_queries`` (``cfg.query_groups`` = T) an item predicts its key frame
        (``current`` must be 0) from T query groups, group t decoding frame t."""
        G = self.config.query_groups
        if G > 1:
            if bool((current != 0).any()) or return_attention:
                raise ValueError("STNet with objective split_queries: every pass predicts the key frame "
                                 "only (current must be 0) and returns no attention maps")
            clip = clip.repeat_interleave(G)
            current = torch.arange(G, device=clip.device).repeat(clip.shape[0] // G)
        N = clip.shape[0]
        query_pos, tgt = self.query_embed.weight.chunk(2, -1)  # (Q, C) each
        query_pos, tgt = (x.reshape(G, -1, x.shape[-1]).repeat(N // G, 1, 1) for x in (query_pos, tgt))
        ref = self.reference_points(query_pos).sigmoid()  # (N, Q / G, 2)
        layers = self.decoder(tgt, query_pos, ref, mem.tokens, mem.mask, mem.ratios[clip, current],
                              mem.shapes, mem.starts, clip, current, return_attention, G)
        if G > 1:  # the T groups of an item back into one set of Q predictions
            layers = [{k: v.reshape(N // G, -1, v.shape[-1]) for k, v in out.items()} for out in layers]
        out = dict(layers[-1])
        out["aux"] = layers[:-1]
        return out

    def forward(self, frames: torch.Tensor, mask: torch.Tensor, return_attention: bool = False,
                n_decode: int = 1) -> dict:
        """Predictions for the key frame (index 0) of every clip in the batch; with
        ``n_decode`` = K for frames 0..K-1 of every clip, items clip-major (b0 f0, b0 f1, ...)."""
        check_clip(frames, mask, self.config.n_frames)
        if not self.config.temporal:  # the baseline never looks at the other frames
            if n_decode != 1:
                raise ValueError("the single-frame baseline encodes the key frame only: n_decode must be 1")
            frames, mask = frames[:, :1], mask[:, :1]
        mem = self.encode(frames, mask)
        B = frames.shape[0]
        return self.decode(mem, *shuffle_items(B, n_decode, frames.device), return_attention)


def build_model(cfg: STNetConfig) -> STNet:
    """The detector of a config (random init unless ``cfg.pretrained``; seed the RNG first)."""
    return STNet(cfg)
