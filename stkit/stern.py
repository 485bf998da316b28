"""STERN: an attention spatial transformer in front of a normal-vs-abnormal classifier.

    image (B, C, H, W) --AttentionSTN--> glimpse (B, C, h, w) --backbone--> logit (B,)

One forward pass returns the logit *and* the STN outputs (glimpse, theta, sx/sy), so the
stage-2 aspect-ratio term needs no second STN pass (the official README runs one).

Backbones: ``vgg16`` (the paper's, last layer -> 1 logit), ``resnet18``, ``resnet50``,
``densenet121`` (torchvision, random init unless ``pretrained=True``), and ``small``, a
four-block CNN sized for CPU runs of the synthetic data. ``stn=None`` in the config gives the
no-STN baseline: the whole image is resized to the glimpse size, so both models see the
same number of pixels and spend the same classifier compute.

The loss (``STERNLoss``) is BCE + aspect_lambda * mean(relu(sx/sy - Sf)); ``faithful=True``
computes it the official way (BCE on the sigmoid, unit-weight hinge).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .stn import AttentionSTN, STNConfig, theta_from_window
from .weights import torchvision_model

BACKBONES = ("small", "vgg16", "resnet18", "resnet50", "densenet121")


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


# ----------------------------------------------------------------------------- STERN
class STERNOutput(NamedTuple):
    logit: torch.Tensor  # (B,)
    glimpse: torch.Tensor  # (B, C, h, w) what the classifier saw
    theta: torch.Tensor | None  # (B, 2, 3); None for the no-STN baseline
    aspect: torch.Tensor | None  # (B,) sx / sy
    sx: torch.Tensor | None
    sy: torch.Tensor | None


@dataclass(frozen=True)
class STERNConfig:
    """Everything that defines a STERN (or no-STN baseline) network; checkpoints store it."""

    backbone: str = "vgg16"  # classifier: one of BACKBONES ("vgg16" is the paper's)
    in_channels: int = 1  # image channels (grey radiographs: 1; RGB networks repeat it)
    pretrained: bool = False  # ImageNet weights for torchvision backbones (downloaded only when True)
    glimpse_size: tuple[int, int] | None = None  # (h, w) the classifier sees; None: the input size
    backbone_width: int = 32  # "small" backbone: channels of the first block
    backbone_pool: str = "max"  # "small" backbone: "max", "avg" or "flatten" head
    stn: STNConfig | None = STNConfig()  # the attention STN; None: the no-STN baseline

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.glimpse_size is not None:
            object.__setattr__(self, "glimpse_size", tuple(self.glimpse_size))

    def to_dict(self) -> dict:
        """Plain nested dict (what a checkpoint stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "STERNConfig":
        d = dict(d)
        if d.get("stn") is not None:
            d["stn"] = STNConfig(**d["stn"])
        return cls(**d)


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
        """``detach_window``: see :meth:`stkit.stn.AttentionSTN.forward` (training with the
        smoothed window search, ``StageConfig.search_sigma``)."""
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


# ----------------------------------------------------------------------------- loss
class STERNLoss(nn.Module):
    """BCE plus the stage-2 aspect-ratio hinge: BCE + aspect_lambda * mean(relu(sx/sy - sf)).

    ``aspect_lambda=0`` is stage 1 (plain BCE). The default computes BCE from logits (stable
    for confident predictions). ``faithful=True`` reproduces the official loss.py: BCELoss on
    sigmoid probabilities plus the hinge with weight 1 (``aspect_lambda`` must then be 0 or 1).
    """

    def __init__(self, aspect_lambda: float = 0.0, sf: float = 1.25, faithful: bool = False):
        super().__init__()
        if faithful and aspect_lambda not in (0.0, 1.0):
            raise ValueError("the official loss has no weight on the aspect term: use aspect_lambda=0 (stage 1) or 1 (stage 2)")
        self.aspect_lambda, self.sf, self.faithful = float(aspect_lambda), float(sf), faithful

    def aspect_term(self, aspect: torch.Tensor) -> torch.Tensor:
        return F.relu(aspect - self.sf).mean()

    def forward(self, logit: torch.Tensor, target: torch.Tensor, aspect: torch.Tensor | None = None) -> torch.Tensor:
        target = target.to(logit.dtype)
        if self.faithful:
            bce = F.binary_cross_entropy(torch.sigmoid(logit), target)
        else:
            bce = F.binary_cross_entropy_with_logits(logit, target)
        if self.aspect_lambda == 0.0:
            return bce
        if aspect is None:
            raise ValueError("the aspect-ratio term needs the STN's sx/sy (a model with an STN)")
        return bce + self.aspect_lambda * self.aspect_term(aspect)


# ----------------------------------------------------------------------------- official weights
# The official models.py names its parts clmodel (torchvision VGG16, last layer Linear(4096, 1)),
# localization (the conv stack, same indices as LocalisationNet.features) and fc_loc (the
# regressor, same indices as LocalisationNet.regressor). Its flatten of the 128x12x12 map is
# the kit's AdaptiveAvgPool2d(12) (the identity at 256 px) followed by flatten.
OFFICIAL_PREFIXES = {"clmodel.": "classifier.net.", "localization.": "stn.loc.features.", "fc_loc.": "stn.loc.regressor."}


def official_key(name: str) -> str:
    """An official parameter name -> the kit's (``clmodel.features.0.weight`` -> ``classifier.net.features.0.weight``)."""
    name = name.removeprefix("module.")  # saved from nn.DataParallel / DDP
    for theirs, ours in OFFICIAL_PREFIXES.items():
        if name.startswith(theirs):
            return ours + name[len(theirs):]
    raise KeyError(f"{name!r} is not a parameter of the official STERN layout (prefixes {sorted(OFFICIAL_PREFIXES)})")


def load_official_state_dict(model: STERN, state_dict: dict) -> None:
    """Load weights saved from the official STERN code into a kit :class:`STERN`.

    The model must have the official architecture: ``stern_config("paper", v)`` (VGG16,
    3 input channels, localisation net with pool 12 and width 16 on the raw image). With
    ``v = "faithful"`` the outputs then equal the official model's (the official forward
    returns sigmoid(logit)); with ``"bounded"`` the same weights read the regressor's
    four numbers through the kit's bounded window instead. Every tensor must match
    (missing, unexpected or mis-shaped tensors are errors naming them).
    """
    cfg = model.config
    if cfg.backbone != "vgg16" or cfg.in_channels != 3 or cfg.stn is None or cfg.stn.loc_input_size is not None:
        raise ValueError("official weights need the official network: stern_config('paper', ...) "
                         f"(vgg16, in_channels=3, STN on the raw image), got {cfg}")
    mapped = {official_key(k): v for k, v in state_dict.items()}
    ours = model.state_dict()
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(ours[k].shape)}" for k, v in mapped.items() if k in ours and v.shape != ours[k].shape]
    if bad:
        raise ValueError(f"official tensors of the wrong shape (theirs vs the kit's): {bad}")
    model.load_state_dict(mapped, strict=True)


def to_official_state_dict(model: STERN) -> dict:
    """The inverse of :func:`load_official_state_dict`: the kit's weights under the official names."""
    back = {ours: theirs for theirs, ours in OFFICIAL_PREFIXES.items()}
    out = {}
    for k, v in model.state_dict().items():
        prefix = next((p for p in back if k.startswith(p)), None)
        if prefix is None:
            raise KeyError(f"{k!r} has no place in the official layout")
        out[back[prefix] + k[len(prefix):]] = v
    return out
