"""Figures for spatial transformers and STERN: grids, windows, ROC, attention.

Every function draws into a new matplotlib figure and returns it (notebooks display it
inline); images are (H, W) or (1, H, W) arrays/tensors in [0, 1].
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..stern.stn import glimpse, pyramid_glimpse, theta_from_window, window_to_pixels
from .common import draw_box, to_image


def plot_sampling_grid(image, theta: torch.Tensor, out_size=(8, 8), title: str = ""):
    """Where an affine grid samples: the output grid's points drawn on the input image,
    next to the resulting glimpse. Shows that theta maps *output* to *input* coordinates."""
    img = torch.as_tensor(to_image(image), dtype=torch.float32)[None, None]
    h, w = img.shape[-2:]
    grid = torch.nn.functional.affine_grid(theta.reshape(1, 2, 3), [1, 1, *out_size], align_corners=False)[0]
    px = (grid[..., 0] + 1) / 2 * w - 0.5  # pixel-centre coordinates for plotting
    py = (grid[..., 1] + 1) / 2 * h - 0.5
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 4))
    a.imshow(img[0, 0], cmap="gray", vmin=0, vmax=1)
    a.scatter(px.flatten(), py.flatten(), s=10, c=np.arange(px.numel()), cmap="viridis")
    x0, y0, x1, y1 = window_to_pixels(theta.reshape(1, 2, 3), h, w)[0].tolist()
    draw_box(a, x0, y0, x1, y1)
    a.set_title("input: where the grid samples")
    b.imshow(glimpse(img, theta.reshape(1, 2, 3), (64, 64))[0, 0], cmap="gray", vmin=0, vmax=1)
    b.set_title("output (glimpse)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_align_corners(size: int = 4):
    """The same normalised coordinates under align_corners=False (kit, STERN) and True.

    Pixel centres of a ``size``-pixel row in normalised coordinates: with False, -1 and +1
    are the outer edges of the border pixels; with True they are the border pixels' centres.
    """
    fig, axes = plt.subplots(2, 1, figsize=(7, 2.8), sharex=True)
    centres = np.arange(size)
    for ax, ac in zip(axes, (False, True)):
        norm = (2 * centres + 1) / size - 1 if not ac else 2 * centres / (size - 1) - 1
        for c in range(size + 1):
            edge = (2 * c) / size - 1 if not ac else (2 * c - 1) / (size - 1) - 1
            ax.axvline(edge, color="0.8")
        ax.scatter(norm, np.zeros(size), s=80, zorder=3)
        for c, n in zip(centres, norm):
            ax.annotate(f"pixel {c}\n{n:+.2f}", (n, 0), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
        ax.axvline(-1, color="tab:red", ls="--")
        ax.axvline(1, color="tab:red", ls="--")
        ax.set_yticks([])
        ax.set_title(f"align_corners={ac}: red dashes at normalised -1 and +1", fontsize=9)
        ax.set_ylim(-0.5, 1.2)
    axes[-1].set_xlabel("normalised coordinate")
    fig.tight_layout()
    return fig


def render_window(image, sx: float = 0.5, sy: float = 0.5, tx: float = 0.0, ty: float = 0.0, glimpse_size=(64, 64)):
    """The STERN window of (sx, sy, tx, ty) on ``image`` and the glimpse it produces.

    Pure: used once directly by notebooks and by the ipywidgets explorer.
    """
    img = torch.as_tensor(to_image(image), dtype=torch.float32)[None, None]
    h, w = img.shape[-2:]
    theta = theta_from_window(sx, sy, tx, ty)
    x0, y0, x1, y1 = window_to_pixels(theta, h, w)[0].tolist()
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 4))
    a.imshow(img[0, 0], cmap="gray", vmin=0, vmax=1)
    draw_box(a, x0, y0, x1, y1, lw=2)
    a.set_xlim(-0.5, w - 0.5)
    a.set_ylim(h - 0.5, -0.5)
    a.set_title(f"window x in [{tx - sx:+.2f}, {tx + sx:+.2f}], y in [{ty - sy:+.2f}, {ty + sy:+.2f}]", fontsize=9)
    b.imshow(glimpse(img, theta, glimpse_size)[0, 0], cmap="gray", vmin=0, vmax=1)
    b.set_title(f"glimpse {glimpse_size[0]}x{glimpse_size[1]}, sx/sy = {sx / sy:.2f}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_roc(curves: dict):
    """ROC curves: ``curves`` maps a name to (fpr, tpr, auc)."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="0.7", ls="--")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title("ROC, test split")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def show_attention(dataset, predictions: dict, n: int = 8, abnormal_only: bool = True, cols: int = 4, stn=None):
    """Test images with the attended window (orange) and lesion boxes (red), glimpses below.

    Pass the model's ``stn`` to show exactly what the classifier saw (same sampling source
    and glimpse size); without it the window is resampled from the image at 64x64.
    """
    labels, idx = predictions["labels"], predictions["indices"]
    order = np.flatnonzero(labels == 1) if abnormal_only else np.arange(len(labels))
    order = order[:n]
    rows = int(np.ceil(len(order) / cols))
    fig, axes = plt.subplots(2 * rows, cols, figsize=(2.5 * cols, 5.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, j in enumerate(order):
        img, _, _ = dataset[int(idx[j])]
        top, bottom = axes[2 * (k // cols), k % cols], axes[2 * (k // cols) + 1, k % cols]
        top.imshow(to_image(img), cmap="gray", vmin=0, vmax=1)
        for x, y, w, h in dataset.boxes(int(idx[j])).tolist():
            draw_box(top, x, y, x + w, y + h, color="red", lw=1)
        draw_box(top, *predictions["window_px"][j], lw=2)
        top.set_title(f"p(abnormal) = {predictions['scores'][j]:.2f}", fontsize=8)
        x = torch.as_tensor(to_image(img))[None, None].float()
        theta = torch.as_tensor(predictions["theta"][j])[None].float()
        g = stn.sample(x, theta) if stn is not None else glimpse(x, theta, (64, 64))
        bottom.imshow(g[0, 0], cmap="gray", vmin=0, vmax=1)
        bottom.set_title(f"glimpse, sx/sy = {predictions['aspect'][j]:.2f}", fontsize=8)
    fig.tight_layout()
    return fig


def _per_image_hist(fig, ax, xlabel: str):
    """The finish of a histogram over test images: labels, legend, layout."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test images")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_aspect_hist(aspects: dict, sf: float = 1.25):
    """Distributions of sx/sy (e.g. after stage 1 and after stage 2) with the threshold Sf."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    allv = np.concatenate([np.asarray(v) for v in aspects.values()])
    bins = np.linspace(min(allv.min(), sf) * 0.95, max(allv.max(), sf) * 1.05, 40)
    for (name, v), ls in zip(aspects.items(), ("-", "--", ":", "-.")):  # outlines: no set hides another
        ax.hist(v, bins=bins, histtype="step", lw=2, ls=ls, label=f"{name} (mean {np.mean(v):.2f})")
    ax.axvline(sf, color="k", ls="--", label=f"Sf = {sf}")
    return _per_image_hist(fig, ax, "window aspect ratio sx/sy")


def plot_window_trajectory(image, trajectory: torch.Tensor, target_window, every: int = 20):
    """Windows visited while fitting (sx, sy, tx, ty) by gradient descent, light to dark,
    with the target window dashed; right: the distance to the target per step."""
    img = to_image(image)
    h, w = img.shape
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4))
    a.imshow(img, cmap="gray", vmin=0, vmax=1)
    steps = list(range(0, len(trajectory), every)) + [len(trajectory) - 1]
    colors = plt.cm.viridis(np.linspace(0.15, 1, len(steps)))
    for c, k in zip(colors, steps):
        draw_box(a, *window_to_pixels(theta_from_window(*trajectory[k]), h, w)[0].tolist(), color=c, lw=1.2)
    draw_box(a, *window_to_pixels(theta_from_window(*torch.as_tensor(target_window)), h, w)[0].tolist(), color="red", lw=2, ls="--")
    a.set_title("windows during descent (dashed red: target)", fontsize=9)
    dist = (trajectory - torch.as_tensor(target_window, dtype=trajectory.dtype)).norm(dim=1)
    b.plot(dist.numpy())
    b.set_xlabel("step")
    b.set_ylabel("|window - target|")
    b.set_yscale("log")
    b.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_window_paths(dataset, indices, windows_per_epoch, cols: int = 4):
    """The learned window of a few images after every epoch, light (first) to dark (last),
    with the true thorax box dashed in red when the dataset has one.

    ``windows_per_epoch``: (E, K, 4) windows (x0, y0, x1, y1) in pixels, K = len(indices).
    """
    wins = np.asarray(windows_per_epoch, dtype=float)
    rows = int(np.ceil(len(indices) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 2.9 * rows), squeeze=False)
    colors = plt.cm.viridis(np.linspace(0.1, 1, len(wins)))
    for ax in axes.flat:
        ax.axis("off")
    for k, (ax, i) in enumerate(zip(axes.flat, indices)):
        ax.imshow(to_image(dataset[int(i)][0]), cmap="gray", vmin=0, vmax=1)
        for c, w in zip(colors, wins[:, k]):
            draw_box(ax, *w, color=c, lw=1)
        if getattr(dataset, "has_thorax", False):
            x, y, bw, bh = dataset.thorax_box(int(i)).tolist()
            draw_box(ax, x, y, x + bw, y + bh, color="red", lw=1.5, ls="--")
        ax.set_title(f"test image {int(i)}: {len(wins)} epochs", fontsize=8)
    fig.tight_layout()
    return fig


def plot_iou_hist(ious, fixed_iou: float):
    """Distribution of the window-thorax IoU over test images, with the best fixed window's mean."""
    ious = np.asarray(ious, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.hist(ious, bins=np.linspace(0, 1, 26), histtype="stepfilled", alpha=0.6, label=f"STERN (mean {ious.mean():.2f})")
    ax.axvline(ious.mean(), color="tab:blue", lw=2)
    ax.axvline(fixed_iou, color="k", ls="--", label=f"best fixed window (mean {fixed_iou:.2f})")
    return _per_image_hist(fig, ax, "IoU of the attended window with the thorax box")


def plot_comparison(results: dict, key: str = "test_auc", title: str = "test ROC AUC"):
    """One bar per model (``results`` maps a name to a dict holding ``key``), value printed on it."""
    names = list(results)
    vals = [results[n][key] for n in names]
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.2))
    bars = ax.bar(names, vals, color=plt.cm.tab10(np.arange(len(names))))
    for b, v in zip(bars, vals):
        ax.annotate(f"{v:.3f}", (b.get_x() + b.get_width() / 2, v), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=9)
    ax.set_ylim(max(0.0, min(vals) - 0.1), 1.0)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_pyramid_sampling(image, theta: torch.Tensor, size=(48, 48)):
    """One large window read two ways at a small glimpse size: plain bilinear sampling
    (point samples several pixels apart: fine detail aliases or vanishes between samples)
    and sampling from the pyramid level matched to the sample spacing (each sample
    averages the pixels around it)."""

    img = torch.as_tensor(to_image(image), dtype=torch.float32)[None, None]
    h, w = img.shape[-2:]
    theta = theta.reshape(1, 2, 3).float()
    stride = max(theta[0, 0, 0].abs().item() * w / size[1], theta[0, 1, 1].abs().item() * h / size[0])
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    axes[0].imshow(img[0, 0], cmap="gray", vmin=0, vmax=1)
    draw_box(axes[0], *window_to_pixels(theta, h, w)[0].tolist(), lw=2)
    axes[0].set_title(f"window: a sample every {stride:.1f} px", fontsize=9)
    axes[1].imshow(glimpse(img, theta, size)[0, 0], cmap="gray", vmin=0, vmax=1)
    axes[1].set_title("plain bilinear glimpse", fontsize=9)
    axes[2].imshow(pyramid_glimpse(img, theta, size)[0, 0], cmap="gray", vmin=0, vmax=1)
    axes[2].set_title(f"pyramid level {max(0, round(np.log2(max(stride, 1))))} glimpse", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig
