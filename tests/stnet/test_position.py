"""Tests of stkit.stnet.position: the sine position encoding against its formula."""

from __future__ import annotations

import math

import torch

from stkit.stnet.position import sine_position


def test_sine_position_by_formula():
    mask = torch.zeros(1, 2, 3, dtype=torch.bool)
    mask[:, :, 2] = True  # last column is padding
    pos = sine_position(mask, 8)  # 4 channels for y, then 4 for x
    # x of pixel (0, 1): cumulative valid 2 of 2 -> (2 - 0.5) / 2 * 2 pi; channel pair i uses 10000^(2*(i//2)/4).
    x = 1.5 / 2 * 2 * math.pi
    torch.testing.assert_close(pos[0, 4:, 0, 1], torch.tensor(
        [math.sin(x), math.cos(x), math.sin(x / 100), math.cos(x / 100)]))
    y = 0.5 / 2 * 2 * math.pi
    torch.testing.assert_close(pos[0, :2, 0, 0], torch.tensor([math.sin(y), math.cos(y)]))
