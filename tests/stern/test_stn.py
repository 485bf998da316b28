"""Tests of stkit.stern.stn: window geometry, the localisation net, the parameterisations, pyramid sampling."""

import pytest
import torch
import torch.nn.functional as F

from stkit.stern.config import STNConfig
from stkit.stern.stn import (AttentionSTN, LocalisationNet, glimpse, pixels_to_theta, pyramid_glimpse, theta_from_window,
                             window_from_theta, window_to_pixels)


# ----------------------------------------------------------------------------- geometry and the localisation net
def test_window_theta_round_trip():
    g = torch.Generator().manual_seed(0)
    win = torch.rand(16, 4, generator=g) * torch.tensor([0.9, 0.9, 1.0, 1.0]) + torch.tensor([0.1, 0.1, -0.5, -0.5])
    theta = theta_from_window(*win.unbind(1))
    assert theta.shape == (16, 2, 3)
    assert torch.equal(window_from_theta(theta), win)
    px = window_to_pixels(theta, 100, 160)
    assert torch.allclose(pixels_to_theta(px, 100, 160), theta, atol=1e-6)


def test_window_pixels_match_align_corners_false_convention():
    # The identity window covers the whole image: from the left edge of pixel 0 to the right edge of pixel W-1.
    px = window_to_pixels(theta_from_window(1.0, 1.0, 0.0, 0.0), 10, 20)
    assert px.tolist() == [[0.0, 0.0, 20.0, 10.0]]


def test_glimpse_of_integer_window_equals_crop():
    # A window over pixels [4, 12) x [8, 24) sampled at its own resolution is exactly that crop.
    img = torch.rand(2, 3, 32, 40, dtype=torch.float64)
    theta = pixels_to_theta(torch.tensor([[8.0, 4.0, 24.0, 12.0]] * 2, dtype=torch.float64), 32, 40)
    out = glimpse(img, theta, (8, 16))
    assert torch.allclose(out, img[:, :, 4:12, 8:24], atol=1e-10)


def test_bounded_window_stays_inside_image_for_any_regressor_output():
    stn = AttentionSTN(STNConfig("bounded", s_min=0.2))
    raw = torch.randn(1000, 4) * 20
    sx, sy, tx, ty = stn.window(raw).unbind(1)
    for s, t in ((sx, tx), (sy, ty)):
        assert (s > 0.2 - 1e-6).all() and (s <= 1).all()
        assert (t - s >= -1 - 1e-6).all() and (t + s <= 1 + 1e-6).all()


def test_initial_windows():
    x = torch.rand(3, 1, 128, 128)
    bounded = AttentionSTN(STNConfig("bounded", init_scale=0.95, loc_input_size=80, loc_pool=1))(x)
    assert torch.allclose(bounded.sx, torch.full((3,), 0.95)) and torch.allclose(bounded.aspect, torch.ones(3))
    assert torch.allclose(bounded.theta[:, :, 2], torch.zeros(3, 2))
    faithful = AttentionSTN(STNConfig("faithful", loc_input_size=80, loc_pool=1))(x)
    assert torch.allclose(window_from_theta(faithful.theta), torch.tensor([[1.0, 0.1, 0.0, 0.0]] * 3))
    assert torch.allclose(faithful.aspect, torch.full((3,), 10.0))


def test_faithful_localisation_net_matches_official_size():
    # At 256 px and pool 12 the adaptive pool is the identity: the official 128*12*12 = 18432 flatten.
    net = LocalisationNet(3, pool=12)
    assert net.regressor[0].in_features == 18432
    assert net.features(torch.zeros(1, 3, 256, 256)).shape[-2:] == (12, 12)
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(0.86e6, rel=0.01)


def test_localisation_features_differ_between_images():
    # The window can only depend on the image if the regressor's hidden features do. PyTorch's
    # default init (kept in faithful mode) nearly erases that spread; He init keeps it.
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 1, 128, 128, generator=g)
    spread = {}
    for init in ("default", "kaiming"):
        torch.manual_seed(0)
        net = LocalisationNet(1, pool=4, width=8, init=init)
        hidden = net.regressor[:2](net.pool(net.features(x)).flatten(1))
        spread[init] = hidden.std(0).mean().item()
    assert spread["kaiming"] > 10 * spread["default"]
    assert AttentionSTN(STNConfig("faithful")).loc.features[0].bias.abs().sum() > 0  # default init: non-zero conv bias


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
