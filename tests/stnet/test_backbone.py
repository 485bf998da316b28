"""Tests of stkit.stnet.backbone: FrozenBatchNorm2d, the ResNet body's channels and frozen stem."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stkit.stnet.backbone import FrozenBatchNorm2d, ResNetBody


def test_frozen_batchnorm_matches_batchnorm_eval():
    bn = nn.BatchNorm2d(5).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.normal_()
        bn.bias.normal_()
    frozen = FrozenBatchNorm2d(5)
    frozen.load_state_dict(bn.state_dict())  # num_batches_tracked is dropped
    x = torch.randn(2, 5, 3, 3)
    torch.testing.assert_close(frozen(x), bn(x))
    assert not list(frozen.parameters())


def test_backbone_channels_and_frozen_stem():
    body = ResNetBody("resnet50", pretrained=False)
    feats = body(torch.rand(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [512, 1024, 2048]
    assert [f.shape[-1] for f in feats] == [8, 4, 2]
    assert not any(p.requires_grad for p in body.stem.parameters())
    assert all(p.requires_grad for p in body.layer2.parameters())
