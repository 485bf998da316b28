"""Figures of chest X-ray data: samples with lesion boxes, a case with and without lesions,
and what a classifier sees of the whole canvas vs of the thorax at the same pixel budget."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from .common import draw_box, to_image


def show_cxr_samples(dataset, indices, title: str | None = None, cols: int = 4):
    """Grid of images with label and lesion boxes (red) from a :class:`~stkit.data.CXRDataset`."""
    rows = int(np.ceil(len(indices) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, indices):
        img, label, _ = dataset[i]
        ax.imshow(to_image(img), cmap="gray", vmin=0, vmax=1)
        for x, y, w, h in dataset.boxes(i).tolist():
            draw_box(ax, x, y, x + w, y + h, color="red")
        ax.set_title("abnormal" if label > 0.5 else "normal", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_case_pair(normal, abnormal):
    """One synthetic case drawn without and with lesions (``data_prep.synthetic_cxr.Rendered``),
    the difference image, and the lung field where lesions may lie."""
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    diff = abnormal.image.astype(float) - normal.image.astype(float)
    panels = [(normal.image, "normal", "gray"), (abnormal.image, "abnormal", "gray"), (diff, "difference", "magma"), (abnormal.lung_field, "lung field (lesions lie here)", "gray")]
    for ax, (im, title, cmap) in zip(axes, panels):
        ax.imshow(im, cmap=cmap)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    for x, y, w, h in abnormal.boxes:
        draw_box(axes[1], x, y, x + w, y + h, color="red")
    x, y, w, h = abnormal.thorax_box
    draw_box(axes[3], x, y, x + w, y + h, color="tab:orange")
    fig.tight_layout()
    return fig


def show_pixel_budget(image, thorax_box, boxes, size: int = 64):
    """The whole canvas resized to ``size`` px (the no-STN baseline's view) next to the thorax
    sampled at ``size`` px (what a well-placed attention window gives the classifier)."""
    img = torch.as_tensor(to_image(image), dtype=torch.float32)[None, None]
    h, w = img.shape[-2:]
    x, y, bw, bh = thorax_box
    whole = F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    crop = F.interpolate(img[..., int(y) : int(np.ceil(y + bh)), int(x) : int(np.ceil(x + bw))], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    axes[0].imshow(img[0, 0], cmap="gray", vmin=0, vmax=1)
    draw_box(axes[0], x, y, x + bw, y + bh)
    for bx, by, bww, bhh in boxes:
        draw_box(axes[0], bx, by, bx + bww, by + bhh, color="red", lw=1)
    axes[0].set_title(f"{h}x{w} original, thorax in orange", fontsize=9)
    axes[1].imshow(whole[0, 0], cmap="gray", vmin=0, vmax=1)
    axes[1].set_title(f"whole canvas at {size}x{size}", fontsize=9)
    axes[2].imshow(crop[0, 0], cmap="gray", vmin=0, vmax=1)
    axes[2].set_title(f"thorax at {size}x{size}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig
