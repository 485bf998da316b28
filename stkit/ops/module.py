"""MSDeformAttn: Deformable DETR's multi-scale deformable attention as an ``nn.Module``.

    attn = MSDeformAttn(d_model=256, n_levels=4, n_heads=8, n_points=4)
    out = attn(query, reference_points, value_input, spatial_shapes, level_start_index)

Each query predicts, per head m, level l and point p, an offset from its reference point
and an attention logit; the logits are softmaxed over all L*P (level, point) pairs of a
head, and the op :func:`stkit.ops.ms_deform_attn` samples the projected value maps at the
resulting locations and sums them with those weights. Reference points are either
normalised (x, y) positions per level (offsets are then in pixels of that level) or
boxes (cx, cy, w, h) (offsets are then fractions of half the box, divided by P).

The pieces are module-level helpers (:func:`ring_offset_bias`, :func:`sampling_locations`,
:func:`check_attention_inputs`) so that spatial-temporal deformable attention
(``stkit.stnet.attention``) builds on them instead of copying them.

This module is not the op (``stkit.ops.ms_deform_attn``) and holds no transformer layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .op import ms_deform_attn

__all__ = ["MSDeformAttn", "level_start_index", "ring_offset_bias", "sampling_locations",
           "check_attention_inputs", "sampling_dtype"]

INITS = ("detr", "default")


def level_start_index(spatial_shapes: torch.Tensor) -> torch.Tensor:
    """(L,) int64 row where each level starts in the flattened pyramid (running sum of H*W)."""
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        raise ValueError(f"spatial_shapes must be (L, 2) rows (H, W), got shape "
                         f"{tuple(spatial_shapes.shape)}")
    areas = spatial_shapes[:, 0].long() * spatial_shapes[:, 1].long()  # (L,)
    return torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])


def ring_offset_bias(n_heads: int, n_levels: int, n_points: int) -> torch.Tensor:
    """Deformable DETR's initial offsets (M, L, P, 2): head m looks in direction 2*pi*m/M,
    point p at distance p+1 (in pixels, on the square ring through (cos, sin)), every level
    alike."""
    theta = torch.arange(n_heads, dtype=torch.float64) * (2.0 * math.pi / n_heads)
    ring = torch.stack([theta.cos(), theta.sin()], -1)  # (M, 2)
    ring = ring / ring.abs().max(-1, keepdim=True).values  # onto the square ring
    scale = torch.arange(1, n_points + 1, dtype=torch.float64).view(1, 1, n_points, 1)
    grid = ring.view(n_heads, 1, 1, 2) * scale  # (M, 1, P, 2)
    return grid.expand(n_heads, n_levels, n_points, 2).float().contiguous()


def sampling_locations(reference_points: torch.Tensor, offsets: torch.Tensor,
                       spatial_shapes: torch.Tensor) -> torch.Tensor:
    """Normalised sampling locations (N, Lq, M, L, P, 2) from reference points and offsets.

    reference_points (N, Lq, L, 2): normalised (x, y); offsets (N, Lq, M, L, P, 2) are in
    pixels of each level. (N, Lq, L, 4) boxes (cx, cy, w, h): offsets are scaled by
    half the box size and divided by P, as in Deformable DETR's box refinement.
    """
    P = offsets.shape[4]
    ref = reference_points[:, :, None, :, None, :]  # (N, Lq, 1, L, 1, 2|4)
    if reference_points.shape[-1] == 2:
        wh = torch.stack([spatial_shapes[:, 1], spatial_shapes[:, 0]], -1)  # (L, 2) as (W, H)
        return ref + offsets / wh.to(offsets)[None, None, None, :, None, :]
    return ref[..., :2] + offsets / P * ref[..., 2:] * 0.5


def sampling_dtype(value: torch.Tensor, locations: torch.Tensor) -> torch.dtype:
    """The op's dtype: the wider of value's and the locations'. Under autocast the value
    projection is bf16/fp16 while locations stay float32; bf16 locations would be off by
    up to half a pixel on a 128-pixel map, so the sampling runs in float32 then."""
    return torch.promote_types(value.dtype, locations.dtype)


def check_attention_inputs(query, reference_points, value_input, spatial_shapes,
                           level_start_idx, padding_mask, d_model: int, n_levels: int,
                           name: str = "MSDeformAttn") -> None:
    """Shape/dtype checks of the module's inputs; errors name the tensor."""
    def fail(msg):
        raise ValueError(f"{name}: {msg}")
    if query.dim() != 3 or query.shape[-1] != d_model:
        fail(f"query must be (N, Lq, {d_model}), got shape {tuple(query.shape)}")
    N, Lq, _ = query.shape
    if value_input.dim() != 3 or value_input.shape[0] != N or value_input.shape[-1] != d_model:
        fail(f"value_input must be (N={N}, S, {d_model}), got shape {tuple(value_input.shape)}")
    rp = reference_points
    if rp.dim() != 4 or tuple(rp.shape[:3]) != (N, Lq, n_levels) or rp.shape[-1] not in (2, 4):
        fail(f"reference_points must be (N={N}, Lq={Lq}, L={n_levels}, 2 or 4), got shape "
             f"{tuple(rp.shape)}")
    for tname, t in (("query", query), ("reference_points", rp), ("value_input", value_input)):
        if not t.dtype.is_floating_point:
            fail(f"{tname} must be a floating-point tensor, got {t.dtype}")
    if tuple(spatial_shapes.shape) != (n_levels, 2) or spatial_shapes.dtype.is_floating_point:
        fail(f"spatial_shapes must be an integer (L={n_levels}, 2) tensor, got "
             f"{spatial_shapes.dtype} {tuple(spatial_shapes.shape)}")
    if tuple(level_start_idx.shape) != (n_levels,) or level_start_idx.dtype.is_floating_point:
        fail(f"level_start_index must be an integer (L={n_levels},) tensor, got "
             f"{level_start_idx.dtype} {tuple(level_start_idx.shape)}")
    if padding_mask is not None and (padding_mask.dtype != torch.bool or tuple(
            padding_mask.shape) != tuple(value_input.shape[:2])):
        fail(f"padding_mask must be bool (N, S) = {tuple(value_input.shape[:2])}, got "
             f"{padding_mask.dtype} {tuple(padding_mask.shape)}")


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Zhu et al., Deformable DETR, 2021).

    Args:
        d_model: channels C of queries and values (split into ``n_heads`` heads).
        n_levels: pyramid levels L.
        n_heads: heads M (C must divide by M).
        n_points: sampling points P per head and level.
        init: ``"detr"`` Deformable DETR's reset (ring offsets, uniform attention,
            xavier projections); ``"default"`` leaves PyTorch's Linear init, for a caller
            that initialises the module itself (the released STNet transformer draws
            xavier_uniform_ for every weight and never runs this reset on its temporal
            attention: ``stkit.stnet.transformer.released_init``).
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8,
                 n_points: int = 4, init: str = "detr"):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"MSDeformAttn: d_model={d_model} must divide by n_heads={n_heads}")
        if init not in INITS:
            raise ValueError(f"MSDeformAttn: init={init!r}; expected one of {INITS}")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        if init == "detr":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's initialisation (see the class docstring)."""
        self.init_point_heads(self.sampling_offsets, self.attention_weights, self.n_levels,
                              self.n_points)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def init_point_heads(self, offsets: nn.Linear, weights: nn.Linear, n_levels: int,
                         n_points: int) -> None:
        """Zero offset weights, ring offset bias, zero attention weights and bias."""
        nn.init.zeros_(offsets.weight)
        with torch.no_grad():
            offsets.bias.copy_(ring_offset_bias(self.n_heads, n_levels, n_points).flatten())
        nn.init.zeros_(weights.weight)
        nn.init.zeros_(weights.bias)

    def project_value(self, value_input: torch.Tensor,
                      padding_mask: torch.Tensor | None) -> torch.Tensor:
        """(N, S, C) -> (N, S, M, D), rows under ``padding_mask`` set to zero."""
        value = self.value_proj(value_input)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        N, S, _ = value.shape
        return value.view(N, S, self.n_heads, self.d_model // self.n_heads)

    def point_heads(self, query: torch.Tensor, offsets: nn.Linear, weights: nn.Linear,
                    n_levels: int, n_points: int):
        """Offsets (N, Lq, M, L, P, 2) and attention logits (N, Lq, M, L*P) of one head pair."""
        N, Lq, _ = query.shape
        off = offsets(query).view(N, Lq, self.n_heads, n_levels, n_points, 2)
        logits = weights(query).view(N, Lq, self.n_heads, n_levels * n_points)
        return off, logits

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor,
                value_input: torch.Tensor, spatial_shapes: torch.Tensor,
                level_start_index: torch.Tensor, padding_mask: torch.Tensor | None = None,
                return_attention: bool = False):
        """(N, Lq, C) -> (N, Lq, C); with ``return_attention`` also the sampling locations
        (N, Lq, M, L, P, 2) and attention weights (N, Lq, M, L, P)."""
        check_attention_inputs(query, reference_points, value_input, spatial_shapes,
                               level_start_index, padding_mask, self.d_model, self.n_levels)
        N, Lq, _ = query.shape
        L, P = self.n_levels, self.n_points
        value = self.project_value(value_input, padding_mask)  # (N, S, M, D)
        off, logits = self.point_heads(query, self.sampling_offsets, self.attention_weights, L, P)
        attn = F.softmax(logits, -1).view(N, Lq, self.n_heads, L, P)
        loc = sampling_locations(reference_points, off, spatial_shapes)  # (N, Lq, M, L, P, 2)
        dt = sampling_dtype(value, loc)
        out = ms_deform_attn(value.to(dt), spatial_shapes, level_start_index, loc.to(dt),
                             attn.to(dt))  # (N, Lq, C)
        out = self.output_proj(out)
        return (out, loc, attn) if return_attention else out
