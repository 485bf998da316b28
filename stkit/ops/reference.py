"""Pure-PyTorch reference of multi-scale deformable attention (MSDeformAttn).

This is the ground truth that the compiled CPU/CUDA kernels are tested against, and the
fallback that ``stkit.ops.ms_deform_attn`` uses when no kernel is built. It is written
for clarity, not speed: one ``F.grid_sample`` call per pyramid level, then a weighted
sum over levels and points. Every step is an ordinary differentiable PyTorch op, so
autograd (including double backward) works through it.

Sampling convention (the same as Deformable DETR): a normalised location ``loc`` in
[0, 1] maps to the pixel coordinate ``loc * W - 0.5``; pixel centres sit at integers,
the four neighbouring pixels are blended bilinearly and pixels outside the map count as
zero. That is exactly ``grid_sample(value, 2 * loc - 1, mode="bilinear",
padding_mode="zeros", align_corners=False)``.

Non-finite locations (NaN, +-inf) are defined here as "outside the map": the point
samples zero and gets zero gradients. grid_sample itself is not consistent about them
(its CUDA and scalar CPU kernels treat them as outside, its vectorised CPU kernel returns
NaN), so the reference pins the behaviour down and every kernel follows it. Finite
locations far outside are clamped to 3 (still outside) so that 2 * loc - 1 cannot
overflow inside grid_sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ms_deform_attn_reference"]


def ms_deform_attn_reference(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention with ``grid_sample``; returns (N, Lq, M*D).

    Args:
        value: (N, S, M, D), the flattened feature pyramid split into M heads;
            row ``level_start_index[l] + y * W_l + x`` holds pixel (y, x) of level l.
        spatial_shapes: (L, 2) integer rows (H_l, W_l).
        level_start_index: (L,) integer offsets of each level's first row in S.
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y) in [0, 1]
            (values outside sample zeros).
        attention_weights: (N, Lq, M, L, P), already normalised over L*P.
    """
    N, _, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    # Small index tensors: read them on the host once (a no-op when they live on CPU).
    shapes = spatial_shapes.tolist()
    starts = level_start_index.tolist()
    # grid_sample's [-1, 1] convention; +-3 is outside every level (see the docstring).
    finite = torch.isfinite(sampling_locations).all(-1, keepdim=True)
    grids = torch.where(finite, (2 * sampling_locations - 1).clamp(-3, 3), -3.0)
    samples = []
    for lvl, ((H, W), start) in enumerate(zip(shapes, starts)):
        # (N, H*W, M, D) -> (N*M, D, H, W): one image of D channels per (batch, head)
        v = value[:, start:start + H * W].permute(0, 2, 3, 1).reshape(N * M, D, H, W)
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(N * M, Lq, P, 2)
        samples.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros",
                                     align_corners=False))  # (N*M, D, Lq, P)
    sampled = torch.stack(samples, dim=-2).flatten(-2)  # (N*M, D, Lq, L*P)
    w = attention_weights.transpose(1, 2).reshape(N * M, 1, Lq, L * P)
    out = (sampled * w).sum(-1)  # (N*M, D, Lq)
    return out.view(N, M * D, Lq).transpose(1, 2).contiguous()  # (N, Lq, M*D)
