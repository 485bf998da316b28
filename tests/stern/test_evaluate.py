"""Tests of stkit.stern.evaluate: ROC AUC, the localisation and window-vs-thorax metrics, the best fixed window."""

import numpy as np
import pytest

from stkit.stern.evaluate import (best_fixed_window, box_iou, localisation_metrics, roc_auc, thorax_metrics,
                                  window_area_fraction)


def test_roc_auc_matches_rank_definition():
    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 2, 200), rng.random(200)
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert roc_auc(y, s) == pytest.approx(pairs)
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(y, np.where(y == 1, np.nan, s))


def test_localisation_metrics():
    windows = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float)
    boxes = [np.array([[8, 8, 4, 4]]), np.array([[20, 20, 2, 2], [2, 2, 2, 2]])]
    m = localisation_metrics(windows, boxes)
    # centres (10,10) inside (edge), (21,21) outside, (3,3) inside; areas 4/16, 0, 1
    assert m["center_in_window"] == pytest.approx(2 / 3)
    assert m["area_in_window"] == pytest.approx((0.25 + 0 + 1) / 3)
    assert window_area_fraction(np.array([[-5, 0, 5, 20]]), 20, 20).tolist() == [0.25]


def _mask(x0, y0, x1, y1, n=64):
    m = np.zeros((n, n), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_iou_and_coverage_against_pixel_masks():
    rng = np.random.default_rng(0)
    win, tho = [], []
    for _ in range(50):
        x0, y0 = rng.integers(0, 40, 2)
        x1, y1 = x0 + rng.integers(1, 24), y0 + rng.integers(1, 24)
        a, b = rng.integers(0, 40, 2)
        w, h = rng.integers(1, 24, 2)
        win.append((x0, y0, x1, y1))
        tho.append((a, b, w, h))
    win, tho = np.array(win, float), np.array(tho, float)
    ious, covs = [], []
    for (x0, y0, x1, y1), (a, b, w, h) in zip(win.astype(int), tho.astype(int)):
        m, t = _mask(x0, y0, x1, y1), _mask(a, b, a + w, b + h)
        ious.append((m & t).sum() / (m | t).sum())
        covs.append((m & t).sum() / t.sum())
    assert np.allclose(box_iou(win, tho), ious)
    got = thorax_metrics(win, tho, 64, 64)
    assert got["window_thorax_iou"] == pytest.approx(np.mean(ious))
    assert got["thorax_coverage"] == pytest.approx(np.mean(covs))


def test_best_fixed_window_finds_a_shared_box_and_beats_every_candidate():
    same = np.tile([[25.6, 38.4, 102.4, 140.8]], (5, 1))  # width 0.4, height 0.55, on the 256 px search grid
    window, iou = best_fixed_window(same, 256, 256)
    assert iou == pytest.approx(1.0) and np.allclose(window, [25.6, 38.4, 128.0, 179.2])
    rng = np.random.default_rng(1)
    boxes = np.concatenate([rng.uniform(0, 120, (40, 2)), rng.uniform(40, 130, (40, 2))], 1)
    _, best = best_fixed_window(boxes, 256, 256)
    for _ in range(200):  # no random window inside the image does better than the grid's best by much
        x0, y0 = rng.uniform(0, 200, 2)
        x1, y1 = rng.uniform(x0 + 10, 256), rng.uniform(y0 + 10, 256)
        assert box_iou(np.array([[x0, y0, x1, y1]] * 40), boxes).mean() <= best + 0.03
