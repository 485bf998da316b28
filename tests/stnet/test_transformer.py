"""Tests of stkit.stnet.transformer: faithful mode keeps the attention layers' default init (no DETR init)."""

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
