"""Figures of ultrasound video data: one clip frame by frame, and a contact sheet of videos.

Boxes are drawn in pixel-edge coordinates (pixel i spans [i, i+1)), red for lesions.
Inputs are the kit's BUV clip items (stkit.data.video) or a BUV-format folder.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from ..data.buv import CATEGORIES, frame_path, read_split
from .common import draw_box as _box


def clip_roles(n_support: int, n_global: int) -> list[str]:
    """Names of a clip's frames in clip order: key, key-1, key+1, key-2, ..., global 1, ..."""
    roles = ["key"]
    for k in range(n_support):
        roles.append(f"key{'-' if k % 2 == 0 else '+'}{k // 2 + 1}")
    return roles + [f"global {g + 1}" for g in range(n_global)]


def show_clip(item: dict, numbers=None, n_support: int = 2, title: str | None = None):
    """The T frames of one clip item side by side with their boxes; ``numbers`` (the frame
    numbers, e.g. ``dataset.frame_numbers(i)``) go into the titles when given."""
    frames, targets = item["frames"], item["targets"]
    T = frames.shape[0]
    roles = clip_roles(n_support, T - 1 - n_support)
    fig, axes = plt.subplots(1, T, figsize=(2.2 * T, 2.4), squeeze=False)
    for t, ax in enumerate(axes[0]):
        ax.imshow(frames[t, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        for x0, y0, x1, y1 in targets[t]["boxes"].tolist():
            _box(ax, x0, y0, x1, y1, color="red", lw=1.2)
        n = "" if numbers is None else f" · #{numbers[t]}"
        listed = "" if targets[t]["image_id"] >= 0 else " (no label)"
        ax.set_title(f"{roles[t]}{n}{listed}", fontsize=8)
        ax.axis("off")
    h, w = frames.shape[-2:]
    fig.suptitle(title or f"{item['video']}, key frame {item['key_index']}: {T} frames, {h}x{w} px", fontsize=9)
    fig.tight_layout()
    return fig


def contact_sheet(root, split: str, videos: list[str], n_frames: int = 6, boxes: bool = True):
    """Evenly spaced frames (columns) of each video (rows) of a BUV-format folder, with the
    JSON's boxes. Returns the figure."""
    info = read_split(root, split)
    fig, axes = plt.subplots(len(videos), n_frames, figsize=(2.1 * n_frames, 1.9 * len(videos)), squeeze=False)
    for row, name in zip(axes, videos):
        video = info.videos[name]
        idx = video.indices
        picks = [idx[int(round(k * (len(idx) - 1) / max(1, n_frames - 1)))] for k in range(n_frames)]
        for ax, i in zip(row, picks):
            ax.imshow(np.asarray(Image.open(frame_path(root, name, i)).convert("L")), cmap="gray", vmin=0, vmax=255)
            if boxes:
                for x, y, w, h in video.frames[i].boxes:
                    _box(ax, x, y, x + w, y + h, color="red", lw=1)
            ax.set_title(f"{name.split('/')[-1]} #{i}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(CATEGORIES[video.label], fontsize=9)
    fig.tight_layout()
    return fig


def lesion_contrast(root, split: str, name: str) -> np.ndarray:
    """Per listed frame of a video: mean grey level beside and above the (first) box minus
    the mean inside it, in [0, 1] units (below is left out: shadow or enhancement lie
    there). Low where the lesion fades into the speckle."""
    video = read_split(root, split).videos[name]
    out = []
    for i in video.indices:
        a = np.asarray(Image.open(frame_path(root, name, i)).convert("L"), np.float32) / 255
        x, y, w, h = (int(round(v)) for v in video.frames[i].boxes[0])
        ring = a[max(0, y - h // 2): y + h, max(0, x - w // 2): x + w + w // 2]
        box = a[y:y + h, x:x + w]
        out.append((ring.sum() - box.sum()) / max(1, ring.size - box.size) - box.mean())
    return np.array(out)


def plot_lesion_contrast(root, split: str, name: str):
    """`lesion_contrast` of one video against the frame number. Returns (figure, contrast)."""
    c = lesion_contrast(root, split, name)
    idx = read_split(root, split).videos[name].indices
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.plot(idx, c, "o-")
    ax.axhline(float(np.median(c)), color="gray", ls="--", lw=1, label="median")
    ax.set_xlabel("frame")
    ax.set_ylabel("ring minus box (grey)")
    ax.set_title(f"{name}: how well the lesion stands out, frame by frame", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, c
