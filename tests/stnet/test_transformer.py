"""Tests of stkit.stnet.transformer: the faithful variant's init (no DETR init of attention, the released box-head bias)."""

from __future__ import annotations

from dataclasses import replace

import torch

from stkit.stnet import build_model
from tests.stnet.test_model import SMOKE


def test_faithful_skips_detr_init():
    torch.manual_seed(0)
    faithful = build_model(replace(SMOKE, faithful=True))
    improved = build_model(SMOKE)
    assert faithful.encoder[0].attn.sampling_offsets.weight.abs().sum() > 0
    assert improved.encoder[0].attn.sampling_offsets.weight.abs().sum() == 0


def test_box_head_bias_follows_the_release_in_faithful_only():
    """Released (box refinement): the heads are deep copies taken before bias[2:] = -2 is set on
    layer 0's head, so every later head starts at bias 0; the kit's default starts every head at -2."""
    cfg = replace(SMOKE, dec_layers=3)
    for faithful in (True, False):
        heads = build_model(replace(cfg, faithful=faithful)).decoder.box_heads
        biases = torch.stack([h.layers[-1].bias.detach() for h in heads])  # (layers, 4)
        later = 0.0 if faithful else -2.0
        assert torch.equal(biases[0], torch.tensor([0.0, 0.0, -2.0, -2.0])), (faithful, biases)
        assert torch.equal(biases[1:], torch.tensor([[0.0, 0.0, later, later]] * 2)), (faithful, biases)
        assert all(h.layers[-1].weight.abs().sum() == 0 for h in heads)
