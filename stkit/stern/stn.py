"""Spatial-transformer geometry and the attention STN used by STERN.

An *attention* spatial transformer predicts a window, not a general warp:

    theta = [[sx, 0, tx],
             [0, sy, ty]]

maps each output (glimpse) grid point (u, v) in [-1, 1]^2 to the input point
(x, y) = (sx*u + tx, sy*v + ty). The glimpse therefore shows the input window
x in [tx - sx, tx + sx], y in [ty - sy, ty + sy] (normalised coordinates), and
sx/sy is that window's aspect ratio (width / height). Sampling is bilinear with
``align_corners=False``: -1 and +1 are the outer *edges* of the border pixels.

Two parameterisations of the four numbers are offered:

- ``faithful``: the official STERN code. The regressor's raw outputs are
  (sx, sy, tx, ty) with no constraint; its last layer starts with zero weights and
  bias (1, 0.1, 0, 0), i.e. a full-width, 10 %-high strip with aspect ratio 10.
- ``bounded`` (default): each scale lives in (s_min, s_max) through a sigmoid, and
  each centre is squashed into |t| < 1 - s by t = (1 - s) tanh(r / (1 - s)), so the
  window never leaves the image. Centre and scale are decoupled: dt/dr = 1 at r = 0
  whatever the scale, and the starting scale ``init_scale`` sits inside the range, so
  the gradient does not vanish at the start (a window started at 0.95 of a (0.2, 1)
  range has ds/dr = 0.05 and can barely move). Since s >= s_min on each axis, sx/sy
  stays within [s_min / s_max, s_max / s_min]: no collapse to a strip.

The glimpse can be sampled from an image pyramid (``STNConfig.pyramid``): each window
is read from the level whose pixel spacing matches the glimpse's sample spacing, so a
large window seen through a small glimpse does not alias (small lesions falling between
samples) and its bilinear gradient reaches further.

This module knows nothing about classifiers; ``stkit.stern.model`` puts a classifier
behind it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import LOC_KERNELS, STNConfig


# ----------------------------------------------------------------------------- geometry
def theta_from_window(sx, sy, tx, ty) -> torch.Tensor:
    """(B,) tensors (or floats) -> theta (B, 2, 3) of the window centred at (tx, ty)."""
    sx, sy, tx, ty = (v if torch.is_tensor(v) else torch.tensor(float(v)) for v in (sx, sy, tx, ty))
    sx, sy, tx, ty = torch.broadcast_tensors(sx.reshape(-1), sy.reshape(-1), tx.reshape(-1), ty.reshape(-1))
    zero = torch.zeros_like(sx)
    return torch.stack([torch.stack([sx, zero, tx], -1), torch.stack([zero, sy, ty], -1)], 1)


def window_from_theta(theta: torch.Tensor) -> torch.Tensor:
    """theta (B, 2, 3) -> (B, 4) as (sx, sy, tx, ty). Off-diagonal terms are ignored."""
    return torch.stack([theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2]], -1)


def window_to_pixels(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """theta (B, 2, 3) -> attended window (B, 4) as (x0, y0, x1, y1) in pixel-edge coordinates.

    With align_corners=False the normalised coordinate -1 is the left edge of pixel 0
    (pixel coordinate 0) and +1 the right edge of the last pixel (coordinate W), so
    x_pixel = (x_norm + 1) / 2 * W. Negative scales (possible in faithful mode) flip
    the glimpse; the window is the same set of points, so edges are sorted.
    """
    sx, sy, tx, ty = window_from_theta(theta).unbind(-1)
    xa, xb = (tx - sx + 1) / 2 * width, (tx + sx + 1) / 2 * width
    ya, yb = (ty - sy + 1) / 2 * height, (ty + sy + 1) / 2 * height
    return torch.stack([torch.minimum(xa, xb), torch.minimum(ya, yb), torch.maximum(xa, xb), torch.maximum(ya, yb)], -1)


def pixels_to_theta(box_xyxy: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_to_pixels`: (B, 4) pixel window -> theta (B, 2, 3)."""
    box = box_xyxy if box_xyxy.is_floating_point() else box_xyxy.float()
    x0, y0, x1, y1 = box.unbind(-1)
    sx, sy = (x1 - x0) / width, (y1 - y0) / height
    tx, ty = (x0 + x1) / width - 1, (y0 + y1) / height - 1
    return theta_from_window(sx, sy, tx, ty)


def glimpse(image: torch.Tensor, theta: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Sample the window ``theta`` of ``image`` (B, C, H, W) onto a (B, C, *size) grid.

    ``size=None`` keeps the input size, as the official STERN code does. A smaller
    size looks at a crop of a large image at higher effective resolution than
    resizing the whole image to that size would.
    """
    b, c, h, w = image.shape
    oh, ow = (h, w) if size is None else size
    grid = F.affine_grid(theta.to(image.dtype), [b, c, oh, ow], align_corners=False)  # (B, oh, ow, 2)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def pyramid_glimpse(image: torch.Tensor, theta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """:func:`glimpse` read from the image-pyramid level matched to each window's sample spacing.

    A window of scale s seen through an ``size`` glimpse samples the image every
    stride = s * W / w pixels. Level l of the pyramid is the image halved l times
    (antialiased), so its pixels are 2^l apart; each window is sampled from the level
    l = round(log2(stride)) (level 0 when stride <= sqrt(2)), where neighbouring samples
    are about one pixel apart: no pixel is skipped, nothing aliases. With no
    downscale needed (stride <= sqrt(2) for every window) this *is* :func:`glimpse`.
    The level is chosen without gradient; the gradient reaches the window through the
    bilinear sampling of the chosen level.
    """
    b, c, h, w = image.shape
    oh, ow = size
    stride = torch.maximum(theta[:, 0, 0].abs() * w / ow, theta[:, 1, 1].abs() * h / oh).detach()  # (B,)
    level = torch.log2(stride.clamp_min(1.0)).round().long()  # (B,) 0, 1, 2, ...
    out = glimpse(image, theta, size)  # (B, C, oh, ow) from level 0
    src = image
    for lvl in range(1, int(level.max()) + 1):
        src = F.interpolate(src, size=(max(1, src.shape[-2] // 2), max(1, src.shape[-1] // 2)),
                            mode="bilinear", align_corners=False, antialias=True)  # level lvl
        if (level == lvl).any():
            out = torch.where((level == lvl)[:, None, None, None], glimpse(src, theta, size), out)
    return out


def resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """Antialiased bilinear resize of (B, C, H, W) to a square ``size`` (None or same size: unchanged)."""
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


# ----------------------------------------------------------------------------- networks
class LocalisationNet(nn.Module):
    """The official STERN localisation network, made size-agnostic.

    Four unpadded conv blocks (Conv -> MaxPool(2) -> ReLU; 3->16 7x7, then 5x5 to 32,
    64, 128 channels) and a 2-layer regressor to 4 numbers. The official code
    flattens a hard-coded 128x12x12 map (inputs of 254..269 px only); here an
    adaptive average pool to ``pool x pool`` sits before the flatten, which is the
    identity at 256 px with pool=12, so the official network is a special case.
    """

    def __init__(self, in_channels: int = 1, pool: int = 12, hidden: int = 32, width: int = 16, init: str = "kaiming"):
        super().__init__()
        chans = [in_channels, width, 2 * width, 4 * width, 8 * width]
        kernels = LOC_KERNELS
        blocks = []
        for cin, cout, k in zip(chans[:-1], chans[1:], kernels):
            blocks += [nn.Conv2d(cin, cout, k), nn.MaxPool2d(2), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.regressor = nn.Sequential(nn.Linear(chans[-1] * pool * pool, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 4))
        if init == "kaiming":
            # PyTorch's default init shrinks the activations of this bias-free-of-BN stack about
            # tenfold per block: the hidden features then barely differ between images and the
            # window cannot depend on the image. He init keeps their spread.
            for m in [*self.features, self.regressor[0]]:
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)
        elif init != "default":
            raise ValueError(f"init must be 'kaiming' or 'default', got {init!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 4)
        return self.regressor(self.pool(self.features(x)).flatten(1))


class STNOutput(NamedTuple):
    glimpse: torch.Tensor  # (B, C, h, w) the attended crop
    theta: torch.Tensor  # (B, 2, 3)
    aspect: torch.Tensor  # (B,) sx / sy, the window's width / height
    sx: torch.Tensor  # (B,)
    sy: torch.Tensor  # (B,)


class AttentionSTN(nn.Module):
    """Scale + translation spatial transformer (the "where to look" half of STERN).

    Args:
        cfg: the parameterisation and localisation-net settings (:class:`STNConfig`).
        in_channels: image channels.
        glimpse_size: (h, w) of the sampled crop; None keeps the input size.

    Why a smaller localisation input and a resized source: finding a thorax needs no
    detail, so a small ``loc_input_size`` saves most of the compute on a CPU; and
    bilinear sampling at a stride of several pixels aliases (small lesions fall between
    samples), so with a ``source_size`` of twice the glimpse size the stride stays at
    most 2 for any window.
    """

    def __init__(self, cfg: STNConfig = STNConfig(), in_channels: int = 1, glimpse_size: tuple[int, int] | None = None):
        super().__init__()
        if not isinstance(cfg, STNConfig):
            raise TypeError(f"AttentionSTN takes an STNConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.parameterisation, self.s_min, self.s_max = cfg.parameterisation, cfg.s_min, cfg.s_max
        self.glimpse_size = tuple(glimpse_size) if glimpse_size is not None else None
        self.loc_input_size, self.source_size = cfg.loc_input_size, cfg.source_size
        faithful = cfg.parameterisation == "faithful"  # faithful: PyTorch's default init, as the official code
        self.loc = LocalisationNet(in_channels, pool=cfg.loc_pool, width=cfg.loc_width, init="default" if faithful else "kaiming")
        last = self.loc.regressor[-1]
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            if faithful:
                last.bias.copy_(torch.tensor([1.0, 0.1, 0.0, 0.0]))
            else:  # sigmoid^-1 of the starting scale, no translation
                a = math.log((cfg.init_scale - cfg.s_min) / (cfg.s_max - cfg.init_scale))
                last.bias.copy_(torch.tensor([a, a, 0.0, 0.0]))

    def window(self, raw: torch.Tensor) -> torch.Tensor:
        """Regressor output (B, 4) -> (B, 4) window (sx, sy, tx, ty)."""
        if self.parameterisation == "faithful":
            return raw
        s = self.s_min + (self.s_max - self.s_min) * torch.sigmoid(raw[:, :2])  # (B, 2) in (s_min, s_max)
        room = 1 - s  # the centre may move this far before the window leaves the image
        t = room * torch.tanh(raw[:, 2:] / room.clamp_min(1e-4))  # |t| < 1 - s, and dt/draw = 1 at raw = 0
        return torch.cat([s, t], 1)

    def sample(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """The glimpse (B, C, h, w) of window ``theta`` exactly as the classifier sees it."""
        src = resize(x, self.source_size)
        size = self.glimpse_size or tuple(x.shape[-2:])
        return pyramid_glimpse(src, theta, size) if self.cfg.pyramid else glimpse(src, theta, size)

    def forward(self, x: torch.Tensor, detach_window: bool = False) -> STNOutput:
        """``detach_window``: sample the glimpse from a detached window, so the sampler's own
        (local) gradient does not reach the localiser; it then learns from what the caller
        adds (``stkit.stern.window_search``) and from terms on the returned window (aspect)."""
        sx, sy, tx, ty = self.window(self.loc(resize(x, self.loc_input_size))).unbind(1)
        theta = theta_from_window(sx, sy, tx, ty)
        return STNOutput(self.sample(x, theta.detach() if detach_window else theta), theta, sx / sy, sx, sy)


# ----------------------------------------------------------------------------- teaching
def fit_window(image: torch.Tensor, target: torch.Tensor, init=(1.0, 1.0, 0.0, 0.0), steps: int = 200, lr: float = 0.02) -> torch.Tensor:
    """Find (sx, sy, tx, ty) whose glimpse of ``image`` matches ``target`` by gradient descent.

    Shows that the sampled glimpse is differentiable with respect to the window: the STN
    learns where to look from this gradient alone. ``image`` (1, C, H, W), ``target``
    (1, C, h, w). Returns the trajectory (steps + 1, 4).
    """
    win = torch.tensor([init], dtype=image.dtype, requires_grad=True)  # (1, 4)
    opt = torch.optim.Adam([win], lr=lr)
    path = [win.detach().clone()]
    for _ in range(steps):
        out = glimpse(image, theta_from_window(*win.unbind(1)), tuple(target.shape[-2:]))
        loss = F.mse_loss(out, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        path.append(win.detach().clone())
    return torch.cat(path)
