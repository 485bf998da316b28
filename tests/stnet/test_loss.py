"""Tests of stkit.stnet.loss: loss values by hand, aux layers, focal loss, box normalisation, the backward pass."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from stkit.stnet import build_model
from stkit.stnet.experiment import recipe
from stkit.stnet.loss import SetCriterion, loss_on_batch, normalise_targets, sigmoid_focal_loss
from tests.stnet.test_matcher import hand_giou, random_boxes
from tests.stnet.test_model import fake_batch


SMOKE = recipe("smoke").model  # the smoke-size STNetConfig


def test_loss_values_by_hand():
    cfg = replace(SMOKE, dec_layers=1)
    crit = SetCriterion(cfg)
    logits = torch.tensor([[[0.5, -1.0], [-2.0, 0.3], [1.5, 0.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.2, 0.3, 0.1, 0.1], [0.8, 0.8, 0.3, 0.3]]])
    tgt = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.22, 0.3, 0.12, 0.1]])}]
    out = {"logits": logits, "boxes": boxes, "aux": []}
    loss, parts = crit(out, tgt)
    # Query 1 is the obvious match (closest box); focal loss over all 6 (query, class) pairs.
    focal = 0.0
    for q in range(3):
        for c in range(2):
            x = float(logits[0, q, c])
            y = 1.0 if (q, c) == (1, 1) else 0.0
            p = 1 / (1 + math.exp(-x))
            ce = -(y * math.log(p) + (1 - y) * math.log(1 - p))
            p_t = p if y else 1 - p
            focal += (0.25 if y else 0.75) * ce * (1 - p_t) ** 2
    l1 = abs(0.2 - 0.22) + 0 + abs(0.1 - 0.12) + 0
    giou = 1 - hand_giou([0.2, 0.3, 0.1, 0.1], [0.22, 0.3, 0.12, 0.1])
    assert math.isclose(parts["cls"], focal, rel_tol=1e-5)
    assert math.isclose(parts["l1"], l1, rel_tol=1e-5)
    assert math.isclose(parts["giou"], giou, rel_tol=1e-5)
    assert math.isclose(float(loss), 2 * focal + 5 * l1 + 2 * giou, rel_tol=1e-5)


def test_aux_layers_count_unless_faithful():
    gen = torch.Generator().manual_seed(0)
    layer = lambda: {"logits": torch.randn(2, 4, 2, generator=gen), "boxes": random_boxes(8, gen).view(2, 4, 4)}
    last, aux = layer(), [layer(), layer()]
    tgt = [{"labels": torch.tensor([0]), "boxes": random_boxes(1, gen)},
           {"labels": torch.tensor([1, 0]), "boxes": random_boxes(2, gen)}]
    crit, faithful = SetCriterion(SMOKE), SetCriterion(replace(SMOKE, faithful=True))
    only_last, _ = faithful({**last, "aux": aux}, tgt)
    per_layer = [crit({**o, "aux": []}, tgt)[0] for o in (*aux, last)]
    torch.testing.assert_close(only_last, per_layer[-1])
    torch.testing.assert_close(crit({**last, "aux": aux}, tgt)[0], sum(per_layer))


def test_sigmoid_focal_loss_matches_formula():
    x = torch.tensor([-1.0, 0.0, 2.0])
    y = torch.tensor([1.0, 0.0, 1.0])
    p = torch.sigmoid(x)
    pt = torch.where(y > 0, p, 1 - p)
    at = torch.where(y > 0, 0.25, 0.75)
    torch.testing.assert_close(sigmoid_focal_loss(x, y), -at * (1 - pt) ** 2 * pt.log())


def test_normalise_targets_converts_and_rejects_outside_boxes():
    t = {"boxes": torch.tensor([[10.0, 20.0, 50.0, 60.0]]), "labels": torch.tensor([2]),
         "image_id": 7, "size": torch.tensor([100, 200])}
    (n,) = normalise_targets([t])
    torch.testing.assert_close(n["boxes"], torch.tensor([[30 / 200, 40 / 100, 40 / 200, 40 / 100]]))
    assert n["labels"].tolist() == [1]
    for bad in ([[10.0, 20.0, 250.0, 60.0]], [[-20.0, 20.0, 50.0, 60.0]], [[50.0, 20.0, 10.0, 60.0]]):
        with pytest.raises(ValueError, match=r"image_id 7.*outside the image"):
            normalise_targets([{**t, "boxes": torch.tensor(bad)}])
    with pytest.raises(ValueError, match="NaN"):
        normalise_targets([{**t, "boxes": torch.tensor([[float("nan"), 0, 1, 1]])}])


def test_loss_backward_reaches_every_trainable_parameter(smoke):
    cfg, _ = smoke
    torch.manual_seed(1)
    model = build_model(cfg).train()
    loss, parts = loss_on_batch(model, SetCriterion(cfg), fake_batch(cfg))
    loss.backward()
    assert math.isfinite(parts["loss"]) and set(parts) == {"cls", "l1", "giou", "loss"}
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    # The last decoder layer's self-attention sees only its own queries; everything gets a gradient.
    assert missing == [], missing
