"""Tests of stkit.stern.loss: STERNLoss, faithful against improved, and its stage-2 checks."""

import pytest
import torch
import torch.nn.functional as F

from stkit.stern import STERNLoss


def test_loss_faithful_equals_improved_on_random_inputs():
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        logit = torch.randn(64, generator=g, dtype=torch.float64) * 3
        y = (torch.rand(64, generator=g) > 0.5).double()
        aspect = torch.rand(64, generator=g, dtype=torch.float64) * 3
        official = F.binary_cross_entropy(torch.sigmoid(logit), y) + torch.clamp(aspect - 1.25, min=0).mean()
        ours = STERNLoss(aspect_lambda=1.0, sf=1.25)(logit, y, aspect)
        faithful = STERNLoss(aspect_lambda=1.0, sf=1.25, faithful=True)(logit, y, aspect)
        assert torch.allclose(faithful, official, rtol=0, atol=1e-12)
        assert torch.allclose(ours, official, rtol=1e-9, atol=1e-9)


def test_loss_improved_is_finite_where_faithful_saturates():
    logit, y = torch.tensor([40.0]), torch.tensor([0.0])
    assert torch.isfinite(STERNLoss()(logit, y))
    assert STERNLoss()(logit, y).item() == pytest.approx(40.0, rel=1e-4)  # BCE-with-logits stays exact
    assert STERNLoss(faithful=True)(logit, y).item() == pytest.approx(100.0)  # BCELoss clamps log(0) to -100


def test_stage2_loss_needs_aspect():
    with pytest.raises(ValueError, match="aspect"):
        STERNLoss(aspect_lambda=1.0)(torch.zeros(2), torch.zeros(2), None)
    with pytest.raises(ValueError, match="aspect_lambda=0"):
        STERNLoss(aspect_lambda=0.5, faithful=True)
