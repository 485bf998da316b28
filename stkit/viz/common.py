"""Drawing helpers shared by the kit's figure modules (images as arrays, boxes on axes), and
the training curves every model's history draws (``plot_history``, ``stage_starts``).

Not a plotting library: only the conventions every figure must agree on, kept in one
place. Images are (H, W) or (1, H, W) arrays or tensors; boxes are in pixel-edge
coordinates (pixel i spans [i, i+1)), while ``imshow`` puts pixel centres at integers.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle


def to_image(x) -> np.ndarray:
    """A (H, W) numpy array from an (H, W) or (1, H, W) array or tensor."""
    x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    return x.reshape(x.shape[-2:]) if x.ndim == 3 else x


def draw_box(ax, x0, y0, x1, y1, color="tab:orange", lw=1.5, ls="-"):
    """Draw a box given in pixel-edge coordinates on an ``imshow`` axis."""
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=lw, linestyle=ls))


def stage_starts(stages, histories) -> list[tuple[int, str]]:
    """(first epoch, stage name) of every stage after the first, for :func:`plot_history`;
    ``histories``: each stage's per-epoch rows, in the order of ``stages``."""
    if len(stages) != len(histories):
        raise ValueError(f"{len(stages)} stages but {len(histories)} histories")
    starts, epoch = [], 1
    for k, (stage, hist) in enumerate(zip(stages, histories)):
        if k:
            starts.append((epoch, stage.name))
        epoch += len(hist)
    return starts


def plot_history(histories: dict, keys=("train_loss", "val_auc"), stage_starts=()):
    """Training curves: ``histories`` maps a name to a list of per-epoch dicts (stages concatenated).

    ``stage_starts``: (epoch, label) pairs, e.g. ``[(19, "stage 2")]``; a dotted line marks
    where each later stage begins (between its first epoch and the one before)."""
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, hist in histories.items():
            pts = [(k, row[key]) for k, row in enumerate(hist, 1) if row.get(key) is not None]
            ax.plot([k for k, _ in pts], [y for _, y in pts], marker=".", label=name)
        for epoch, label in stage_starts:
            ax.axvline(epoch - 0.5, color="0.4", ls=":")
            ax.annotate(label, (epoch - 0.5, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                        textcoords="offset points", fontsize=8, color="0.3")
        ax.set_xlabel("epoch")
        ax.set_title(key.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0, 0].legend()
    fig.tight_layout()
    return fig
