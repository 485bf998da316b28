"""Tests of stkit.stern.model: STERN's forward pass, the baseline, its backbone and classify_windows."""

import pytest
import torch
import torch.nn.functional as F

from stkit.stern import STERN, STERNConfig
from stkit.stern.model import Backbone
from stkit.stern.config import STNConfig
from tests.stern.test_task import _smoke_batch


@pytest.mark.parametrize("size", [(96, 96), (130, 200)])
def test_stern_forward_any_input_size(size):
    m = STERN(STERNConfig("small", in_channels=1, backbone_width=8, glimpse_size=(32, 32),
                          stn=STNConfig(loc_input_size=80, loc_pool=1, loc_width=4)))
    out = m(torch.rand(2, 1, *size))
    assert out.logit.shape == (2,) and out.glimpse.shape == (2, 1, 32, 32)
    assert out.theta.shape == (2, 2, 3) and torch.allclose(out.aspect, out.sx / out.sy)
    out.logit.sum().backward()
    assert m.stn.loc.regressor[-1].weight.grad is not None


def test_baseline_sees_the_resized_image():
    m = STERN(STERNConfig("small", in_channels=1, backbone_width=8, glimpse_size=(32, 32), stn=None))
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


def test_classify_windows_is_the_forward_at_the_localisers_window():
    from stkit.stern import experiment
    from stkit.stern.stn import window_from_theta

    model = experiment.build(experiment.recipe("smoke"), "bounded", 0).eval()
    images = _smoke_batch()[0]
    out = model(images)
    assert torch.allclose(model.classify_windows(images, window_from_theta(out.theta)), out.logit, atol=1e-6)
