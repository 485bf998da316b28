"""Build a torchvision model, with ImageNet weights only when asked (nothing downloads otherwise).

    net = torchvision_model("resnet50", pretrained=False, norm_layer=FrozenBatchNorm2d)

With ``pretrained=True`` torchvision loads the weight file from its cache, downloading it
if needed; offline and uncached, a clear error says where to put the file. This module
knows nothing about the models' heads: callers replace or drop layers themselves.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["torchvision_model", "IMAGENET_WEIGHTS"]

# The ImageNet weight set each supported architecture loads when pretrained=True.
IMAGENET_WEIGHTS = {"vgg16": "IMAGENET1K_V1", "resnet18": "IMAGENET1K_V1",
                    "resnet50": "IMAGENET1K_V2", "densenet121": "IMAGENET1K_V1"}


def torchvision_model(name: str, pretrained: bool, weight_set: str | None = None, **kwargs) -> nn.Module:
    """``torchvision.models.<name>(weights=..., **kwargs)``; ImageNet weights only if asked
    (``weight_set``, e.g. "IMAGENET1K_V1", replaces the default of :data:`IMAGENET_WEIGHTS`)."""
    import torchvision.models as tvm

    if name not in IMAGENET_WEIGHTS:
        raise ValueError(f"unknown torchvision model {name!r}; expected one of "
                         f"{', '.join(IMAGENET_WEIGHTS)}")
    weights = (weight_set or IMAGENET_WEIGHTS[name]) if pretrained else None
    try:
        return getattr(tvm, name)(weights=weights, **kwargs)
    except Exception as err:  # urllib / socket errors when offline
        if not pretrained:
            raise
        raise RuntimeError(
            f"could not load ImageNet weights for {name} ({type(err).__name__}: {err}). "
            "The kit downloads nothing unless asked; with no network, put the torchvision "
            f"weight file in {torch.hub.get_dir()}/checkpoints/ or use pretrained=False."
        ) from err
