"""STERN's loss: BCE, plus in stage 2 a hinge on the window's aspect ratio sx/sy.

    loss = STERNLoss(aspect_lambda=1.0, sf=1.25)(logit, label, aspect)

    L = BCE(p, y) + aspect_lambda * mean_i relu(sx_i / sy_i - Sf)

The aspect ratio comes from the same forward pass as the logit (``STERNOutput.aspect``),
so the term needs no second STN pass (the official README runs one). Not here: the
smoothed window search's surrogate term (``stkit.stern.window_search``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["STERNLoss"]


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
