"""Figures for multi-scale deformable attention (notebook 04).

- :func:`plot_bilinear_sampling`: one sampling point on a tiny grid, the -0.5 pixel shift
  of ``align_corners=False`` and the four bilinear weights.
- :func:`toy_pyramid`: a small synthetic image and its feature pyramid to draw on.
- :func:`render_query_points`: one query's sampling points on every level, coloured by
  attention weight (pure: the notebook's ipywidgets explorer calls it too).
- :func:`plot_attention_weights`: the softmax over the L*P points of each head.
- :func:`plot_op_speed`: benchmark rows of :func:`stkit.ops.bench.run_ops_benchmark` as bars.

Every plotting function draws a new matplotlib figure and returns it.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle

__all__ = ["plot_bilinear_sampling", "bilinear_corners", "toy_pyramid", "render_query_points",
           "plot_attention_weights", "plot_op_speed"]


def bilinear_corners(loc_x: float, loc_y: float, H: int, W: int):
    """The pixel position of a normalised location and its 4 corners with weights.

    Returns ``(px, py, [(x, y, weight, inside), ...])``; px = loc_x * W - 0.5.
    """
    px, py = loc_x * W - 0.5, loc_y * H - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    fx, fy = px - x0, py - y0
    corners = []
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            x, y = x0 + dx, y0 + dy
            corners.append((x, y, wx * wy, 0 <= x < W and 0 <= y < H))
    return px, py, corners


def plot_bilinear_sampling(values, loc=(0.43, 0.62)):
    """Left: normalised [0, 1] coordinates over pixel cells; right: the 4 corners of one
    sampling point and their weights. ``values`` is an (H, W) array shown as the map."""
    v = np.asarray(values, dtype=float)
    H, W = v.shape
    px, py, corners = bilinear_corners(loc[0], loc[1], H, W)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    # Left: a 1-D row of W pixels with both coordinate systems.
    for i in range(W):
        a.add_patch(Rectangle((i - 0.5, -0.5), 1, 1, fill=False, edgecolor="0.5"))
        a.text(i, 0, f"pixel {i}\ncentre {i}", ha="center", va="center", fontsize=8)
    for u in np.linspace(0, 1, 5):
        a.plot([u * W - 0.5] * 2, [-0.75, -0.55], color="tab:blue")
        a.text(u * W - 0.5, -0.9, f"loc {u:.2f}", ha="center", fontsize=8, color="tab:blue")
    a.plot(px, 0.62, "o", color="tab:red")
    a.annotate(f"loc {loc[0]:.2f} -> {loc[0]:.2f} x {W} - 0.5 = {px:.2f}", (px, 0.62),
               (px, 0.95), ha="center", fontsize=8, color="tab:red",
               arrowprops=dict(arrowstyle="->", color="tab:red"))
    a.set_xlim(-0.9, W - 0.1)
    a.set_ylim(-1.1, 1.15)
    a.set_aspect("equal")
    a.axis("off")
    a.set_title("loc 0 and 1 are the outer edges of the border pixels", fontsize=9)
    # Right: the 2-D map, the point, its corners.
    span = float(v.max() - v.min()) or 1.0  # even the smallest value gets a visible shade
    b.imshow(v, cmap="Blues", vmin=v.min() - 0.35 * span, vmax=v.max() + 0.1 * span)
    for k in range(W + 1):
        b.axvline(k - 0.5, color="white", lw=1)
    for k in range(H + 1):
        b.axhline(k - 0.5, color="white", lw=1)
    for (y, x), val in np.ndenumerate(v):
        b.text(x - 0.42, y + 0.4, f"V={val:g}", fontsize=8, color="black")
    for x, y, wgt, inside in corners:
        colour = "tab:orange" if inside else "0.6"
        b.plot(x, y, "s", color=colour, ms=9)
        b.text(x + 0.08, y - 0.12, f"w={wgt:.2f}" + ("" if inside else " (outside: 0)"),
               fontsize=8, color="black", bbox=dict(facecolor="white", alpha=0.85, lw=0, pad=1))
    b.plot(px, py, "o", color="tab:red", ms=8)
    sample = sum(wgt * v[y, x] for x, y, wgt, inside in corners if inside)
    b.set_title(f"sample at pixel ({px:.2f}, {py:.2f}) = {sample:.3f}", fontsize=9)
    b.set_xticks(range(W))
    b.set_yticks(range(H))
    b.set_xlim(-1, W)
    b.set_ylim(H, -1)
    fig.tight_layout()
    return fig


def toy_pyramid(size: int = 64, levels: int = 3, seed: int = 0):
    """A synthetic image (bright ellipse, dark cyst, speckle) and its 2x-pooled pyramid.

    Returns a list of L tensors (H_l, W_l), finest first.
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size),
                            indexing="ij")
    img = torch.exp(-(((xx - 0.25) / 0.35) ** 2 + ((yy + 0.1) / 0.22) ** 2) * 2)
    img = img - 0.6 * torch.exp(-(((xx + 0.45) ** 2 + (yy - 0.4) ** 2) / 0.02))
    img = (img + 0.15 * torch.rand(size, size, generator=g)).clamp(0, 1)
    pyramid = [img]
    for _ in range(levels - 1):
        pyramid.append(F.avg_pool2d(pyramid[-1][None, None], 2)[0, 0])
    return pyramid


def render_query_points(pyramid, query_xy, locations, weights, title: str = ""):
    """One query's sampling points on every level.

    Args:
        pyramid: list of L (H_l, W_l) tensors (drawn as images).
        query_xy: the reference point, normalised (x, y) in [0, 1].
        locations: (M, L, P, 2) normalised sampling locations of the query.
        weights: (M, L, P) attention weights (each head sums to 1 over L*P).
    """
    loc = torch.as_tensor(locations).detach().cpu().float()
    w = torch.as_tensor(weights).detach().cpu().float()
    M, L, P, _ = loc.shape
    fig, axes = plt.subplots(1, L, figsize=(3.6 * L, 3.8), squeeze=False)
    norm = plt.Normalize(0, float(w.max()))
    markers = "os^Dv<>p"
    for lvl, ax in enumerate(axes[0]):
        img = pyramid[lvl]
        H, W = img.shape
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.plot(query_xy[0] * W - 0.5, query_xy[1] * H - 0.5, "+", color="cyan", ms=14, mew=2)
        for m in range(M):
            pts = loc[m, lvl] * torch.tensor([W, H]) - 0.5  # pixel coordinates
            sc = ax.scatter(pts[:, 0], pts[:, 1], c=w[m, lvl], cmap="plasma", norm=norm,
                            s=30 + 400 * w[m, lvl], marker=markers[m % len(markers)],
                            edgecolors="white", linewidths=0.5)
        ax.set_xlim(-0.5, W - 0.5)
        ax.set_ylim(H - 0.5, -0.5)
        ax.set_title(f"level {lvl}: {H}x{W}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(sc, ax=axes[0].tolist(), shrink=0.8, label="attention weight")
    fig.suptitle(title or f"query at ({query_xy[0]:.2f}, {query_xy[1]:.2f}); "
                 f"marker = head, colour and size = weight", fontsize=10)
    return fig


def plot_attention_weights(weights):
    """Heat map of (M, L, P) attention weights: one row per head, L*P columns."""
    w = torch.as_tensor(weights).detach().cpu().float()
    M, L, P = w.shape
    fig, ax = plt.subplots(figsize=(0.45 * L * P + 2, 0.45 * M + 1.4))
    im = ax.imshow(w.reshape(M, L * P), cmap="plasma", vmin=0)
    for lvl in range(1, L):
        ax.axvline(lvl * P - 0.5, color="white", lw=2)
    ax.set_xticks(range(L * P), [f"l{lvl}p{p}" for lvl in range(L) for p in range(P)],
                  rotation=90, fontsize=7)
    ax.set_yticks(range(M), [f"head {m}" for m in range(M)], fontsize=8)
    ax.set_title("softmax over the L*P points of each head (rows sum to 1)", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


def plot_op_speed(rows: list[dict]):
    """Forward and forward+backward times per shape and backend (log scale), with the
    speedup over the reference written on the compiled bars."""
    keys = sorted({(r["shape"], r["dtype"]) for r in rows})
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=False)
    width = 0.8 / max(len(backends), 1)
    for ax, (field, speed, label) in zip(axes, (("fwd_ms", "speedup_fwd", "forward"),
                                                ("fwd_bwd_ms", "speedup_fwd_bwd",
                                                 "forward + backward"))):
        for i, backend in enumerate(backends):
            for k, key in enumerate(keys):
                row = next((r for r in rows if (r["shape"], r["dtype"]) == key
                            and r["backend"] == backend), None)
                if row is None:
                    continue
                x = k + (i - (len(backends) - 1) / 2) * width
                ax.bar(x, row[field], width, color=f"C{i}", label=backend if k == 0 else None)
                if backend != "reference":
                    ax.text(x, row[field], f"{row[speed]:.0f}x", ha="center", va="bottom",
                            fontsize=8)
        ax.set_yscale("log")
        lows = [r[field] for r in rows]
        if lows:
            ax.set_ylim(bottom=min(lows) / 4)
        ax.set_xticks(range(len(keys)), [f"{s}\n{d}" for s, d in keys], fontsize=8)
        ax.set_ylabel("ms (median)")
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
