"""STN geometry, the two parameterisations, STERN's forward pass and its loss."""

import pytest
import torch
import torch.nn.functional as F

from stkit.stern import STERN, STERNConfig, STERNLoss, Backbone
from stkit.stn import AttentionSTN, LocalisationNet, STNConfig, glimpse, pixels_to_theta, theta_from_window, window_from_theta, window_to_pixels


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


@pytest.mark.parametrize("size", [(96, 96), (130, 200)])
def test_stern_forward_any_input_size(size):
    m = STERN(STERNConfig("small", backbone_width=8, glimpse_size=(32, 32), stn=STNConfig(loc_input_size=80, loc_pool=1, loc_width=4)))
    out = m(torch.rand(2, 1, *size))
    assert out.logit.shape == (2,) and out.glimpse.shape == (2, 1, 32, 32)
    assert out.theta.shape == (2, 2, 3) and torch.allclose(out.aspect, out.sx / out.sy)
    out.logit.sum().backward()
    assert m.stn.loc.regressor[-1].weight.grad is not None


def test_baseline_sees_the_resized_image():
    m = STERN(STERNConfig("small", backbone_width=8, glimpse_size=(32, 32), stn=None))
    x = torch.rand(2, 1, 64, 64)
    out = m(x)
    assert out.theta is None and out.aspect is None
    assert torch.allclose(out.glimpse, F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True))


def test_grey_images_into_rgb_backbone():
    # A grey image must reach the RGB network as three identical channels, nothing else.
    torch.manual_seed(0)
    b = Backbone("resnet18", in_channels=1).eval()
    x = torch.rand(2, 1, 64, 64)
    out = b(x)
    assert out.shape == (2,)
    assert torch.equal(out, b.net(x.repeat(1, 3, 1, 1)).squeeze(1))
    assert not torch.allclose(out, b.net(torch.cat([x, x, torch.zeros_like(x)], 1)).squeeze(1))


def test_configs_are_checked_and_round_trip():
    with pytest.raises(ValueError, match="backbone"):
        STERNConfig("alexnet")
    with pytest.raises(ValueError, match="s_min"):
        STNConfig(s_min=0.99)
    with pytest.raises(TypeError, match="STERNConfig"):
        STERN("small")
    cfg = STERNConfig("small", glimpse_size=[32, 32], stn=STNConfig("faithful", loc_pool=2))
    assert cfg.glimpse_size == (32, 32)
    assert STERNConfig.from_dict(cfg.to_dict()) == cfg
    assert STERNConfig.from_dict(STERNConfig(stn=None).to_dict()).stn is None


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


def test_pretrained_weights_offline_error_is_clear(monkeypatch):
    import urllib.error

    import torchvision.models as tvm

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tvm, "resnet18", offline)
    with pytest.raises(RuntimeError, match=r"ImageNet weights for resnet18.*pretrained=False"):
        Backbone("resnet18", pretrained=True)


def test_bad_label_csv_fails_before_a_run_folder_exists(tmp_path):
    from stkit.experiment import run_stern

    bad = tmp_path / "labels.csv"
    bad.write_text("path,label,patient_id\nimages/a.png,0,P1\n")  # no split column
    with pytest.raises(ValueError, match=r"labels.csv.*split"):
        run_stern(bad, tmp_path / "run", size="smoke")
    assert not (tmp_path / "run").exists()
