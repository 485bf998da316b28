"""Tests of stkit.engine.weights: asked for ImageNet weights offline, both papers' backbones say so clearly."""

import urllib.error

import pytest
import torchvision.models._api as api

from stkit.stern.model import Backbone
from stkit.stnet.backbone import ResNetBody


@pytest.mark.parametrize("build", [lambda: Backbone("resnet18", pretrained=True),
                                   lambda: ResNetBody("resnet18", pretrained=True)], ids=["stern", "stnet"])
def test_pretrained_weights_offline_error_is_clear(monkeypatch, build):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"ImageNet weights for resnet18.*pretrained=False"):
        build()
