"""Sine position encoding of a padded feature map (DETR's, normalised to the valid region).

    pos = sine_position(mask, d_model)   # mask (N, H, W) True on padding -> (N, d_model, H, W)

Half the channels encode y, half x: sin/cos of (cumulative valid position / valid size *
2 pi) / 10000^(2i/(d/2)). Learned level embeddings are added by the transformer; this
module has no parameters.
"""

from __future__ import annotations

import math

import torch

__all__ = ["sine_position"]


def sine_position(mask: torch.Tensor, d_model: int, temperature: float = 10000.0) -> torch.Tensor:
    """(N, H, W) bool padding mask -> (N, d_model, H, W) float32 encoding."""
    if d_model % 4:
        raise ValueError(f"sine_position: d_model={d_model} must divide by 4")
    valid = (~mask).float()
    eps, scale = 1e-6, 2 * math.pi
    y = valid.cumsum(1)
    x = valid.cumsum(2)
    y = (y - 0.5) / (y[:, -1:, :] + eps) * scale   # (N, H, W) in (0, 2 pi]
    x = (x - 0.5) / (x[:, :, -1:] + eps) * scale
    half = d_model // 2
    i = torch.arange(half, dtype=torch.float32, device=mask.device)
    freq = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / half)  # (half,)
    px = x[..., None] / freq                      # (N, H, W, half)
    py = y[..., None] / freq
    px = torch.stack([px[..., 0::2].sin(), px[..., 1::2].cos()], -1).flatten(3)
    py = torch.stack([py[..., 0::2].sin(), py[..., 1::2].cos()], -1).flatten(3)
    return torch.cat([py, px], -1).permute(0, 3, 1, 2)  # (N, d_model, H, W)
