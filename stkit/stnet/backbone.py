"""STNet's backbone: a torchvision ResNet with frozen batch norm, turned into a 4-level pyramid.

    pyramid = Pyramid(cfg)
    feats, masks = pyramid(images, mask)  # 4 x (N, d_model, H_l, W_l), 4 x (N, H_l, W_l) bool

C3, C4, C5 (strides 8, 16, 32) each get a 1x1 conv + GroupNorm(32) projection to
``d_model``; a fourth level (stride 64) is a 3x3 stride-2 conv + GroupNorm on C5, as in
Deformable DETR. Batch norm is frozen (fixed affine from the running statistics), the
stem and layer1 are frozen. Images come in as [0, 1] RGB and are normalised with the
ImageNet statistics here. Random init by default; ImageNet weights via ``stkit.engine.weights``.
This module has no position encoding and no transformer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.weights import torchvision_model
from .config import STNetConfig

__all__ = ["FrozenBatchNorm2d", "ResNetBody", "Pyramid"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters (buffers, never trained)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)  # BatchNorm2d's counter
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Inference-mode batch norm: one fused pass (a separate multiply and add cost as
        # much as the convolutions on a CPU); gradients flow to x only.
        stats = [t.to(x.dtype) for t in (self.running_mean, self.running_var, self.weight, self.bias)]
        return F.batch_norm(x, *stats, training=False, eps=self.eps)


class ResNetBody(nn.Module):
    """ResNet stem and layers 1-4; returns C3, C4, C5. Stem and layer1 are frozen."""

    def __init__(self, name: str = "resnet18", pretrained: bool = False, weight_set: str | None = None):
        super().__init__()
        net = torchvision_model(name, pretrained, weight_set, norm_layer=FrozenBatchNorm2d)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (net.layer1, net.layer2,
                                                              net.layer3, net.layer4)
        for p in [*self.stem.parameters(), *self.layer1.parameters()]:
            p.requires_grad_(False)
        wide = name == "resnet50"
        self.channels = [512, 1024, 2048] if wide else [128, 256, 512]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std
        c2 = self.layer1(self.stem(x))       # (N, 64|256, H/4, W/4)
        c3 = self.layer2(c2)                 # stride 8
        c4 = self.layer3(c3)                 # stride 16
        c5 = self.layer4(c4)                 # stride 32
        return [c3, c4, c5]


def _proj(cin: int, d: int, kernel: int = 1, stride: int = 1) -> nn.Sequential:
    conv = nn.Conv2d(cin, d, kernel, stride=stride, padding=kernel // 2)
    nn.init.xavier_uniform_(conv.weight, gain=1)
    nn.init.zeros_(conv.bias)
    return nn.Sequential(conv, nn.GroupNorm(min(32, d), d))


class Pyramid(nn.Module):
    """Backbone + projections: images (N, 3, H, W), mask (N, H, W) -> 4 levels of d_model."""

    def __init__(self, cfg: STNetConfig):
        super().__init__()
        self.body = ResNetBody(cfg.backbone, cfg.pretrained, cfg.imagenet_weights)
        d = cfg.d_model
        chans = self.body.channels
        self.proj = nn.ModuleList([_proj(c, d) for c in chans] + [_proj(chans[-1], d, 3, 2)])

    def forward(self, images: torch.Tensor, mask: torch.Tensor):
        c3, c4, c5 = self.body(images)
        feats = [self.proj[0](c3), self.proj[1](c4), self.proj[2](c5), self.proj[3](c5)]
        masks = [F.interpolate(mask[:, None].float(), size=f.shape[-2:])[:, 0].bool()
                 for f in feats]  # nearest: True on padding at each level
        return feats, masks
