"""STERN: an attention spatial transformer in front of a normal-vs-abnormal classifier.

    image (B, C, H, W) --AttentionSTN--> glimpse (B, C, h, w) --backbone--> logit (B,)

One forward pass returns the logit *and* the STN outputs (glimpse, theta, sx/sy), so the
stage-2 aspect-ratio term needs no second STN pass (the official README runs one).

Backbones: ``vgg16`` (the paper's, last layer -> 1 logit), ``resnet18``, ``resnet50``,
``densenet121`` (torchvision, random init unless ``pretrained=True``), and ``small``, a
four-block CNN sized for CPU runs of the synthetic data. ``stn=None`` in the config gives the
no-STN baseline: the whole image is resized to the glimpse size, so both models see the
same number of pixels and spend the same classifier compute.

    model = build_model(STERNConfig())   # the paper's network; settings in stkit.stern.config

The loss is in ``stkit.stern.loss``, the official weights' layout in ``stkit.stern.official``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..engine.weights import torchvision_model
from .config import BACKBONES, STERNConfig
from .stn import AttentionSTN, theta_from_window

__all__ = ["STERN", "STERNOutput", "Backbone", "small_cnn", "build_model"]


# ----------------------------------------------------------------------------- backbones
def small_cnn(in_channels: int = 1, width: int = 32, pool: str = "max") -> nn.Sequential:
    """Four Conv-BN-ReLU-MaxPool blocks, a pooled head, one logit (~0.24 M parameters at width 32).

    ``pool``: ``"max"`` (default; an image is abnormal if a lesion is present anywhere, so the
    strongest local response should decide), ``"avg"``, or ``"flatten"`` (a 4x4 map into the
    linear layer, position-aware like VGG's fully connected head).
    """
    if pool not in ("max", "avg", "flatten"):
        raise ValueError(f"pool must be 'max', 'avg' or 'flatten', got {pool!r}")
    chans = [in_channels, width, 2 * width, 4 * width, 4 * width]
    layers: list[nn.Module] = []
    for cin, cout in zip(chans[:-1], chans[1:]):
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
    if pool == "flatten":  # a 4x4 map into a linear layer: where a feature is matters, as in VGG's FC head
        layers += [nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Dropout(0.3), nn.Linear(chans[-1] * 16, 1)]
    else:
        layers += [nn.AdaptiveMaxPool2d(1) if pool == "max" else nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(chans[-1], 1)]
    return nn.Sequential(*layers)


def _torchvision_backbone(name: str, pretrained: bool) -> nn.Module:
    """A torchvision classifier with its last layer replaced by a single-logit Linear."""
    net = torchvision_model(name, pretrained)
    if name == "vgg16":
        net.classifier[-1] = nn.Linear(net.classifier[-1].in_features, 1)
    elif name.startswith("resnet"):
        net.fc = nn.Linear(net.fc.in_features, 1)
    else:
        net.classifier = nn.Linear(net.classifier.in_features, 1)
    return net


class Backbone(nn.Module):
    """Wraps a classifier so it takes ``in_channels`` images and returns logits (B,)."""

    def __init__(self, name: str = "small", in_channels: int = 1, pretrained: bool = False, width: int = 32, pool: str = "max"):
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {name!r}")
        if name == "small":
            if pretrained:
                raise ValueError("the 'small' backbone has no pretrained weights")
            self.net, self.net_channels = small_cnn(in_channels, width, pool), in_channels
        else:
            self.net, self.net_channels = _torchvision_backbone(name, pretrained), 3
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.net_channels:  # grey images into an RGB network: repeat the channel
            if x.shape[1] != 1:
                raise ValueError(f"backbone {self.name} takes 1 or {self.net_channels} channels, got {x.shape[1]}")
            x = x.expand(-1, self.net_channels, -1, -1)
        return self.net(x).squeeze(1)


class STERNOutput(NamedTuple):
    logit: torch.Tensor  # (B,)
    glimpse: torch.Tensor  # (B, C, h, w) what the classifier saw
    theta: torch.Tensor | None  # (B, 2, 3); None for the no-STN baseline
    aspect: torch.Tensor | None  # (B,) sx / sy
    sx: torch.Tensor | None
    sy: torch.Tensor | None


class STERN(nn.Module):
    """STN + classifier, built from a :class:`STERNConfig` (see the module docstring)."""

    def __init__(self, cfg: STERNConfig = STERNConfig()):
        super().__init__()
        if not isinstance(cfg, STERNConfig):
            raise TypeError(f"STERN takes a STERNConfig, got {type(cfg).__name__}")
        self.config = cfg
        self.use_stn = cfg.stn is not None
        self.glimpse_size = cfg.glimpse_size
        self.stn = AttentionSTN(cfg.stn, cfg.in_channels, cfg.glimpse_size) if self.use_stn else None
        self.classifier = Backbone(cfg.backbone, cfg.in_channels, cfg.pretrained, cfg.backbone_width, cfg.backbone_pool)

    def forward(self, x: torch.Tensor, detach_window: bool = False) -> STERNOutput:
        """``detach_window``: see :meth:`stkit.stern.stn.AttentionSTN.forward` (training with the
        smoothed window search, ``stkit.stern.task.StageConfig.search_sigma``)."""
        if x.ndim != 4:
            raise ValueError(f"STERN expects images (B, C, H, W), got shape {tuple(x.shape)}")
        x = self._channels(x)
        if self.stn is None:
            g = x if self.glimpse_size is None else F.interpolate(x, size=self.glimpse_size, mode="bilinear", align_corners=False, antialias=True)
            return STERNOutput(self.classifier(g), g, None, None, None, None)
        s = self.stn(x, detach_window)
        return STERNOutput(self.classifier(s.glimpse), s.glimpse, s.theta, s.aspect, s.sx, s.sy)

    def classify_windows(self, x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        """Logits (B,) of the classifier looking at given windows (B, 4) as (sx, sy, tx, ty)
        instead of the localiser's: what the smoothed window search scores."""
        if self.stn is None:
            raise ValueError("the no-STN baseline has no window to move")
        theta = theta_from_window(*window.unbind(1))
        return self.classifier(self.stn.sample(self._channels(x), theta))

    def _channels(self, x: torch.Tensor) -> torch.Tensor:
        """A grey radiograph into a 3-channel net (official layout): (B, 1, H, W) -> (B, 3, H, W), the channel copied."""
        return x.expand(-1, self.config.in_channels, -1, -1) if x.shape[1] == 1 and self.config.in_channels > 1 else x


def build_model(cfg: STERNConfig) -> STERN:
    """The network of a config (random init unless ``cfg.pretrained``; seed the RNG first)."""
    return STERN(cfg)
