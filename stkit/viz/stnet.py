"""Figures for STNet (notebook 05): detections over a clip, and where one decoder query looks.

- :func:`plot_clip_detections`: every frame of a clip with ground truth and detections.
- :func:`render_query_points`: one decoder query's sampling points drawn on every frame of
  its clip, coloured by attention weight, for one layer and one head or all heads (pure:
  the notebook's ipywidgets explorer calls it too). Input: ``decoder_attention`` layers.
- :func:`plot_shuffle_speed`: frames per second of encoder feature shuffle vs frame by frame.

Every function draws a new matplotlib figure and returns it; none runs a model.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import Normalize
from matplotlib.patches import Rectangle

from ..stnet.attention import frame_order

__all__ = ["plot_clip_detections", "render_query_points", "attention_per_frame", "plot_shuffle_speed"]


def _grey(frame) -> np.ndarray:
    return torch.as_tensor(frame).detach().cpu().float().mean(0).numpy()  # (H, W)


def _box(ax, xyxy, colour, text=None, ls="-"):
    x0, y0, x1, y1 = (float(v) for v in xyxy)
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, lw=1.5, ls=ls))
    if text:
        ax.text(x0, y0 - 2, text, color=colour, fontsize=7, va="bottom")


def plot_clip_detections(frames, targets, preds=None, score_threshold: float = 0.3,
                         names=None, scale_to_frame: bool = True):
    """frames (T, 3, H, W); targets: T dicts (boxes xyxy px of the frame, "size",
    "orig_size"); preds: T dicts or None per frame (scores, labels, boxes xyxy px of the
    original size, as ``predict_clip`` returns). Ground truth green, detections red."""
    T = len(frames)
    fig, axes = plt.subplots(1, T, figsize=(3 * T, 3), squeeze=False)
    for t, ax in enumerate(axes[0]):
        ax.imshow(_grey(frames[t]), cmap="gray", vmin=0, vmax=1)
        tgt = targets[t]
        for b in tgt["boxes"]:
            _box(ax, b, "lime")
        det = preds[t] if preds is not None else None
        if det is not None:
            h, w = (int(v) for v in tgt["size"])
            oh, ow = (int(v) for v in tgt.get("orig_size", tgt["size"]))
            s = torch.tensor([w / ow, h / oh, w / ow, h / oh]) if scale_to_frame else torch.ones(4)
            keep = det["scores"] >= score_threshold
            for sc, lab, b in zip(det["scores"][keep], det["labels"][keep], det["boxes"][keep]):
                _box(ax, b * s, "red", f"{int(lab)}: {float(sc):.2f}")
        ax.set_title(names[t] if names else f"frame {t}", fontsize=9)
        ax.axis("off")
    fig.suptitle("ground truth (green) and detections (red, score >= "
                 f"{score_threshold:g})", fontsize=10)
    fig.tight_layout()
    return fig


def attention_per_frame(att: dict, current: int, T: int, head=None):
    """Split one query's STDA dict into per-frame (locations (n, 2), weights (n,)) in clip
    order. ``head``: an index or None (all heads)."""
    sl = slice(None) if head is None else slice(head, head + 1)
    L = att["loc"].shape[-3]  # (M, L, K_c, 2)
    per = {current: (att["loc"][sl].reshape(-1, 2), att["attn"][sl].reshape(-1))}
    if "loc_t" in att:
        others = frame_order(T)[current, 1:].tolist()
        for o, j in enumerate(others):
            loc = att["loc_t"][sl][:, o * L:(o + 1) * L]
            per[j] = (loc.reshape(-1, 2), att["attn_t"][sl][:, o * L:(o + 1) * L].reshape(-1))
    return [per.get(t) for t in range(T)]


def render_query_points(frames, layers, query: int, layer: int = -1, head=None,
                        current: int = 0, names=None):
    """One decoder query's sampling points on every frame of its clip.

    frames (T, 3, H, W) as the model saw them (padded); layers from
    ``stkit.stnet.inference.decoder_attention`` for frame ``current``; ``head`` an index
    or None for all heads. Point colour and size: attention weight (one scale for the
    whole clip); each title gives the frame's share of the query's attention; the
    query's box (cyan) is drawn on its own frame.
    """
    lay = layers[layer]
    att = {k: v[query] for k, v in lay["attention"].items()}
    T = len(frames)
    H, W = frames[0].shape[-2:]
    per = attention_per_frame(att, current, T, head)
    total = sum(float(w.sum()) for p in per if p is not None for w in [p[1]]) or 1.0
    wmax = max(float(p[1].max()) for p in per if p is not None) or 1.0
    norm = Normalize(0, wmax)
    fig, axes = plt.subplots(1, T, figsize=(3 * T, 3.2), squeeze=False)
    for t, ax in enumerate(axes[0]):
        ax.imshow(_grey(frames[t]), cmap="gray", vmin=0, vmax=1)
        if per[t] is not None:
            loc, w = per[t]
            order = torch.argsort(w)  # heavy points on top
            ax.scatter(loc[order, 0] * W, loc[order, 1] * H, c=w[order], cmap="plasma", norm=norm,
                       s=8 + 80 * w[order] / wmax, edgecolors="none")
            share = float(w.sum()) / total
        else:
            share = 0.0
        if t == current:
            cx, cy, bw, bh = (float(v) for v in lay["boxes"][query])
            _box(ax, [(cx - bw / 2) * W, (cy - bh / 2) * H, (cx + bw / 2) * W, (cy + bh / 2) * H], "cyan")
        label = names[t] if names else f"frame {t}"
        ax.set_title(f"{label}{' (current)' if t == current else ''}\n{share:.0%} of attention", fontsize=9)
        ax.set_xlim(0, W)
        ax.set_ylim(H, 0)
        ax.axis("off")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="plasma"), ax=axes[0].tolist(), shrink=0.8,
                 label="attention weight")
    which = "all heads" if head is None else f"head {head}"
    fig.suptitle(f"decoder query {query}, layer {layer % len(layers)}, {which}", fontsize=10)
    return fig


def plot_shuffle_speed(fps: dict):
    """Bars of frames per second, e.g. {"shuffle": 12.0, "per frame": 5.1}."""
    fig, ax = plt.subplots(figsize=(4, 3))
    names = list(fps)
    ax.bar(names, [fps[n] for n in names], color=["tab:orange", "tab:blue", "tab:green"][:len(names)])
    for i, n in enumerate(names):
        ax.text(i, fps[n], f"{fps[n]:.1f}", ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("frames per second")
    ax.set_title("STNet inference speed", fontsize=10)
    fig.tight_layout()
    return fig
