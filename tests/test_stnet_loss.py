"""STNet's matcher and loss: brute force over permutations, hand-computed loss values,
box normalisation and its errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from stkit.stnet.config import stnet_config
from stkit.stnet.criterion import SetCriterion, normalise_targets, sigmoid_focal_loss
from stkit.stnet.matcher import cost_matrix, focal_cost, match


def hand_giou(a, b):
    """GIoU of two cxcywh boxes, written out."""
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    iw, ih = max(0.0, min(ax1, bx1) - max(ax0, bx0)), max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    return inter / union - (hull - union) / hull


def random_boxes(n, gen):
    c = 0.2 + 0.6 * torch.rand(n, 2, generator=gen)
    wh = 0.05 + 0.3 * torch.rand(n, 2, generator=gen)
    return torch.cat([c, wh], -1)


@pytest.mark.parametrize("seed", range(4))
def test_matcher_is_the_brute_force_optimum(seed):
    gen = torch.Generator().manual_seed(seed)
    Q, C, n = 5, 2, 3 if seed % 2 else 5
    logits = torch.randn(1, Q, C, generator=gen)
    boxes = random_boxes(Q, gen)[None]
    tgt = {"labels": torch.randint(0, C, (n,), generator=gen), "boxes": random_boxes(n, gen)}
    (rows, cols), = match(logits, boxes, [tgt])
    cost = cost_matrix(logits[0], boxes[0], tgt["labels"], tgt["boxes"])
    best = min(sum(float(cost[q, j]) for j, q in enumerate(perm))
               for perm in itertools.permutations(range(Q), n))
    assert len(rows) == n and sorted(cols.tolist()) == list(range(n))
    assert math.isclose(float(cost[rows, cols].sum()), best, rel_tol=1e-6, abs_tol=1e-6)


def test_cost_entry_by_hand_and_obvious_assignment():
    logits = torch.tensor([[[-3.0, 2.0], [1.0, -1.0], [0.0, 0.0]]])
    boxes = torch.tensor([[[0.7, 0.7, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9]]])
    tgt = {"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2],
                                                                [0.7, 0.7, 0.2, 0.2]])}
    (rows, cols), = match(logits, boxes, [tgt])
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 1, 1: 0}
    c = cost_matrix(logits[0], boxes[0], tgt["labels"], tgt["boxes"])
    p = 1 / (1 + math.exp(-(-3.0)))  # query 0, class 0
    cls = 0.25 * (1 - p) ** 2 * -math.log(p) - 0.75 * p ** 2 * -math.log(1 - p)
    l1 = 2 * 0.4  # |0.7-0.3| in cx and cy; w, h equal
    giou = hand_giou([0.7, 0.7, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2])
    assert math.isclose(float(c[0, 0]), 2 * cls + 5 * l1 - 2 * giou, rel_tol=1e-5)
    assert math.isclose(float(focal_cost(torch.tensor(p))), cls, rel_tol=1e-5)


def test_loss_values_by_hand():
    cfg = stnet_config("smoke", dec_layers=1)
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
    crit, faithful = SetCriterion(stnet_config("smoke")), SetCriterion(stnet_config("smoke", faithful=True))
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
