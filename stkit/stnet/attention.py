"""Spatial-temporal deformable attention (STDA), STNet's core, on the kit's MSDeformAttn.

A query that belongs to frame c of a T-frame clip samples

* K_c points per head and level on its own frame's L levels (MSDeformAttn's heads), and
* K_t points per head and level on each of the T-1 other frames (a second pair of heads),

and ONE softmax per head runs over all L*K_c + (T-1)*L*K_t points, so the query decides
how much to trust its own frame against its neighbours. The other frames are folded into
the op's level axis as (T-1)*L pseudo-levels (what the released code does too), so a
layer costs one op call for the own frame and one for the others, or a single call over
T*L levels when K_c == K_t. A query's reference point is the same normalised position on
every frame.

Values come in projected and arranged per query batch item: (N, T, S, M, D) with the
query's own frame first (:func:`arrange_frames`). With ``temporal=False`` (the
single-frame baseline) STDA is exactly MSDeformAttn on the own frame.
This module holds no transformer layer (see ``transformer.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.op import ms_deform_attn
from ..ops.module import (INITS, MSDeformAttn, level_start_index, sampling_dtype,
                          sampling_locations)

__all__ = ["STDA", "frame_order", "arrange_frames"]


def frame_order(T: int) -> torch.Tensor:
    """(T, T) long: row c = [c, then the other frames in clip order]."""
    return torch.tensor([[c] + [j for j in range(T) if j != c] for c in range(T)])


def arrange_frames(value: torch.Tensor, clip: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """value (B, T, S, ...) -> (N, T, S, ...) for query items n = (clip[n], current[n])."""
    order = frame_order(value.shape[1]).to(value.device)[current]  # (N, T)
    return value[clip[:, None], order]


class STDA(MSDeformAttn):
    """MSDeformAttn over the own frame plus temporal heads over the other frames.

    Args (besides MSDeformAttn's): n_frames T the clip length; n_temporal_points K_t
    (0, or T == 1: no temporal heads, the single-frame baseline).
    """

    def __init__(self, d_model: int, n_levels: int, n_heads: int, n_points: int,
                 n_frames: int, n_temporal_points: int, init: str = "detr"):
        if init not in INITS:
            raise ValueError(f"STDA: init={init!r}; expected one of {INITS}")
        super().__init__(d_model, n_levels, n_heads, n_points, init="default")
        self.n_frames = n_frames
        self.n_temporal_points = n_temporal_points if n_frames > 1 else 0
        self.temporal = self.n_temporal_points > 0
        n_other = n_levels * (n_frames - 1)
        if self.temporal:
            self.temporal_offsets = nn.Linear(d_model, n_heads * n_other * self.n_temporal_points * 2)
            self.temporal_weights = nn.Linear(d_model, n_heads * n_other * self.n_temporal_points)
        if init == "detr":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if getattr(self, "temporal", False):
            self.init_point_heads(self.temporal_offsets, self.temporal_weights,
                                  self.n_levels * (self.n_frames - 1), self.n_temporal_points)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, value: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_idx: torch.Tensor,
                return_attention: bool = False):
        """query (N, Lq, C), reference_points (N, Lq, L, 2|4), value (N, T, S, M, D) own
        frame first -> (N, Lq, C); with ``return_attention`` also a dict of the sampling
        locations and weights: "loc"/"attn" (own frame, (N, Lq, M, L, K_c[, 2])) and
        "loc_t"/"attn_t" (others, (N, Lq, M, (T-1)*L, K_t[, 2]), frame-major)."""
        N, Lq, _ = query.shape
        M, L, Kc, Kt = self.n_heads, self.n_levels, self.n_points, self.n_temporal_points
        if value.dim() != 5 or value.shape[0] != N or value.shape[2:] != (
                value.shape[2], M, self.d_model // M):
            raise ValueError(f"STDA: value must be (N={N}, T, S, M={M}, D), got {tuple(value.shape)}")
        T = value.shape[1]
        if self.temporal and T != self.n_frames:
            raise ValueError(f"STDA: built for clips of {self.n_frames} frames, got value with T={T}")
        off, logits = self.point_heads(query, self.sampling_offsets, self.attention_weights, L, Kc)
        loc = sampling_locations(reference_points, off, spatial_shapes)  # (N, Lq, M, L, Kc, 2)
        dt = sampling_dtype(value, loc)  # float32 under autocast (see ops.module)
        value = value.to(dt)
        if not self.temporal:
            attn = F.softmax(logits, -1).view(N, Lq, M, L, Kc)
            out = ms_deform_attn(value[:, 0], spatial_shapes, level_start_idx, loc.to(dt), attn.to(dt))
            out = self.output_proj(out)
            return (out, {"loc": loc, "attn": attn}) if return_attention else out
        Lo = L * (T - 1)
        off_t, logits_t = self.point_heads(query, self.temporal_offsets, self.temporal_weights, Lo, Kt)
        attn_all = F.softmax(torch.cat([logits, logits_t], -1), -1)  # ONE softmax per head
        attn = attn_all[..., :L * Kc].reshape(N, Lq, M, L, Kc)
        attn_t = attn_all[..., L * Kc:].reshape(N, Lq, M, Lo, Kt)
        shapes_t = spatial_shapes.repeat(T - 1, 1)  # (Lo, 2) pseudo-levels, frame-major
        loc_t = sampling_locations(reference_points.repeat(1, 1, T - 1, 1), off_t, shapes_t)
        if Kc == Kt:  # one call over T*L levels
            shapes_all = spatial_shapes.repeat(T, 1)
            out = ms_deform_attn(value.flatten(1, 2), shapes_all, level_start_index(shapes_all),
                                 torch.cat([loc, loc_t], 3).to(dt), torch.cat([attn, attn_t], 3).to(dt))
        else:
            out = ms_deform_attn(value[:, 0], spatial_shapes, level_start_idx, loc.to(dt), attn.to(dt))
            out = out + ms_deform_attn(value[:, 1:].flatten(1, 2), shapes_t,
                                       level_start_index(shapes_t), loc_t.to(dt), attn_t.to(dt))
        out = self.output_proj(out)
        if return_attention:
            return out, {"loc": loc, "attn": attn, "loc_t": loc_t, "attn_t": attn_t}
        return out
