"""Tests of stkit.stnet.matcher: the match against brute force over permutations, a cost entry by hand."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

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
