"""Drawing helpers shared by the kit's figure modules (images as arrays, boxes on axes).

Not a plotting library: only the two conventions every figure must agree on, kept in one
place. Images are (H, W) or (1, H, W) arrays or tensors; boxes are in pixel-edge
coordinates (pixel i spans [i, i+1)), while ``imshow`` puts pixel centres at integers.
"""

from __future__ import annotations

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
