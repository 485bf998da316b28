"""STERN's attention: the bounded parameterisation's start, pyramid sampling, thorax boxes
and the window-vs-thorax metrics, each against a hand computation or brute force."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from stkit.data import CXRDataset
from stkit.evaluate import best_fixed_window, box_iou, thorax_metrics
from stkit.experiment import ThoraxCrops
from stkit.stn import AttentionSTN, STNConfig, glimpse, pixels_to_theta, pyramid_glimpse, theta_from_window, window_to_pixels


# ----------------------------------------------------------------------------- parameterisation
def _start_jacobian(cfg: STNConfig) -> torch.Tensor:
    """d(sx, sy, tx, ty) / d(regressor output) at the initial regressor output (the bias)."""
    stn = AttentionSTN(cfg)
    raw0 = stn.loc.regressor[-1].bias.detach()[None]  # zero weights: every image gives the bias
    return torch.autograd.functional.jacobian(lambda r: stn.window(r)[0], raw0)[:, 0, :]  # (4, 4)


def test_start_gradient_is_not_small():
    jac = _start_jacobian(STNConfig())
    diag = jac.diagonal()
    # scale: (s - s_min)(s_max - s)/(s_max - s_min) at s = 0.625 in (0.25, 1) is 0.1875; centre: exactly 1
    assert diag[:2].min() > 0.15, diag
    assert torch.allclose(diag[2:], torch.ones(2)), diag
    # the parameterisation this replaced (s in (0.2, 1) started at 0.95, t = (1 - s) tanh(r)) had 0.047 and 0.05
    s_old = 0.95
    assert (s_old - 0.2) * (1 - s_old) / 0.8 < 0.06 and 1 - s_old < 0.06


def test_start_gradient_matches_hand_formula_anywhere_in_range():
    for s_min, s_max, s0 in [(0.2, 1.0, 0.5), (0.3, 0.9, 0.7), (0.1, 0.8, 0.15)]:
        jac = _start_jacobian(STNConfig(s_min=s_min, s_max=s_max, init_scale=s0))
        want = (s0 - s_min) * (s_max - s0) / (s_max - s_min)
        assert torch.allclose(jac.diagonal()[:2], torch.full((2,), want), atol=1e-6)
        assert torch.allclose(jac.diagonal()[2:], torch.ones(2), atol=1e-6)


@pytest.mark.parametrize("s_max", [1.0, 0.8])
def test_windows_never_leave_the_image_and_never_become_strips(s_max):
    torch.manual_seed(0)
    stn = AttentionSTN(STNConfig(s_min=0.25, s_max=s_max, init_scale=0.5))
    raw = torch.randn(4000, 4) * torch.logspace(-2, 3, 4000)[:, None]  # from tiny to saturating outputs
    sx, sy, tx, ty = stn.window(raw).unbind(1)
    px = window_to_pixels(theta_from_window(sx, sy, tx, ty), 200, 300)
    eps = 1e-3  # float32 rounding of s + |t| = 1, in pixels
    assert (px[:, :2] >= -eps).all() and (px[:, 2] <= 300 + eps).all() and (px[:, 3] <= 200 + eps).all()
    assert (sx >= 0.25).all() and (sy >= 0.25).all() and (sx <= s_max).all() and (sy <= s_max).all()
    assert ((sx / sy) <= s_max / 0.25 + 1e-5).all()


def test_faithful_is_unchanged():
    stn = AttentionSTN(STNConfig("faithful"))
    raw = torch.randn(5, 4)
    assert torch.equal(stn.window(raw), raw)
    assert torch.equal(stn.loc.regressor[-1].bias.detach(), torch.tensor([1.0, 0.1, 0.0, 0.0]))


def test_config_checks_the_range():
    with pytest.raises(ValueError, match="s_max"):
        STNConfig(s_min=0.3, init_scale=0.9, s_max=0.8)


# ----------------------------------------------------------------------------- pyramid sampling
def test_pyramid_equals_plain_sampling_without_downscale():
    torch.manual_seed(1)
    img = torch.rand(6, 1, 64, 64)
    # glimpse 32 px: window scale <= 0.5 * sqrt(2) means at most ~1.41 image pixels per sample
    theta = theta_from_window(torch.rand(6) * 0.2 + 0.3, torch.rand(6) * 0.2 + 0.3, torch.rand(6) * 0.6 - 0.3, torch.rand(6) * 0.6 - 0.3)
    assert torch.equal(pyramid_glimpse(img, theta, (32, 32)), glimpse(img, theta, (32, 32)))


def test_pyramid_reads_the_halved_image_for_a_double_stride():
    torch.manual_seed(2)
    img = torch.rand(2, 1, 64, 64, dtype=torch.float64)
    theta = theta_from_window(torch.ones(2), torch.ones(2), torch.zeros(2), torch.zeros(2)).double()  # stride 2 into 32 px
    half = F.interpolate(img, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(pyramid_glimpse(img, theta, (32, 32)), half, atol=1e-12)  # the whole level-1 image, pixel for pixel


def test_pyramid_does_not_alias_a_fine_pattern():
    yy, xx = torch.meshgrid(torch.arange(128), torch.arange(128), indexing="ij")
    checker = ((xx + yy) % 2).float()[None, None]  # a one-pixel checkerboard: mean 0.5, nothing coarser
    theta = theta_from_window(torch.tensor([0.9]), torch.tensor([0.9]), torch.tensor([0.03]), torch.tensor([-0.02]))
    plain, pyr = glimpse(checker, theta, (32, 32)), pyramid_glimpse(checker, theta, (32, 32))
    assert (pyr - 0.5).abs().max() < 0.05  # averaged, as a coarser view should be
    assert (plain - 0.5).abs().max() > 0.2  # point samples of the pattern: aliased


def test_pyramid_gradient_reaches_the_window():
    torch.manual_seed(3)
    img = F.avg_pool2d(torch.rand(1, 1, 128, 128), 5, 1, 2)
    win = torch.tensor([[0.8, 0.7, 0.1, -0.1]], requires_grad=True)
    pyramid_glimpse(img, theta_from_window(*win.unbind(1)), (32, 32)).square().sum().backward()
    assert torch.isfinite(win.grad).all() and win.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- thorax boxes
def _thorax_csv(tmp_path, size=(96, 128)):
    """Two images with a bright rectangle exactly on their thorax box."""
    (tmp_path / "im").mkdir()
    h, w = size
    rows, boxes = [], [(20, 10, 48, 60), (60, 30, 40, 40)]
    for k, (x, y, bw, bh) in enumerate(boxes):
        a = np.zeros((h, w), np.uint8)
        a[y:y + bh, x:x + bw] = 255
        Image.fromarray(a).save(tmp_path / f"im/{k}.png")
        rows.append(f"im/{k}.png,{k},P{k},test,,,,,{x},{y},{bw},{bh}")
    head = "path,label,patient_id,split,box_x,box_y,box_w,box_h,thorax_x,thorax_y,thorax_w,thorax_h"
    (tmp_path / "labels.csv").write_text("\n".join([head, *rows]) + "\n")
    return tmp_path / "labels.csv", boxes


def test_thorax_box_survives_resizing(tmp_path):
    csv, boxes = _thorax_csv(tmp_path)
    ds = CXRDataset(csv, "test", image_size=(48, 64))
    assert ds.has_thorax
    for i in range(len(ds)):
        img = ds[i][0][0]
        x, y, bw, bh = ds.thorax_box(i).tolist()
        assert np.allclose([x, y, bw, bh], np.array(boxes[i]) / 2)
        bright = (img > 0.5).nonzero()  # the rectangle, found in the resized image
        assert bright[:, 1].min() == math.floor(x) and bright[:, 1].max() + 1 == math.ceil(x + bw)
        assert bright[:, 0].min() == math.floor(y) and bright[:, 0].max() + 1 == math.ceil(y + bh)


def test_bad_thorax_cells_are_named(tmp_path):
    csv, _ = _thorax_csv(tmp_path)
    text = csv.read_text().replace(",60,30,40,40", ",60,30,abc,40")
    csv.write_text(text)
    with pytest.raises(ValueError, match="line 3"):
        CXRDataset(csv, "test")


def test_oracle_crop_is_the_thorax(tmp_path):
    csv, _ = _thorax_csv(tmp_path)
    crops = ThoraxCrops(CXRDataset(csv, "test"), (16, 16))
    assert crops.images.shape == (2, 1, 16, 16)
    assert crops.images[..., 3:-3, 3:-3].min() > 0.99  # the bright rectangle fills the crop ...
    assert crops.images.mean() > 0.85  # ... up to the pyramid's smoothing at its edges
    assert crops[1][0].shape == (1, 16, 16) and crops[1][1] == 1 and crops[1][2] == 1


# ----------------------------------------------------------------------------- metrics
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
