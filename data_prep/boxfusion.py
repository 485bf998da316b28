"""Merging the boxes that several readers drew for the same lesion (VinDr-CXR: three
radiologists per training image, each drawing their own boxes).

The rule, per image and per finding class:
  * boxes are taken in their file order; each joins the cluster, among those holding no
    box of its reader yet, whose merged box overlaps it most, if that IoU exceeds
    `iou_threshold` (default 0.5); otherwise it starts a new cluster;
  * a cluster's merged box is the coordinate-wise mean of its boxes (weighted box fusion
    with equal weights: readers give no confidence);
  * clusters marked by fewer than `min_readers` readers are dropped (default 1: keep
    every finding; 2 keeps only boxes that two radiologists agree on).
Not a detector post-processing (no scores, no NMS); plain numpy, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FusionConfig:
    iou_threshold: float = 0.5   # a box joins a cluster if IoU(box, merged box) > this
    min_readers: int = 1         # keep clusters marked by at least this many readers


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a (4,) against boxes b (K, 4), both (x0, y0, x1, y1) -> (K,)."""
    w = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def cluster_boxes(boxes: np.ndarray, readers: list, iou_threshold: float) -> list[list[int]]:
    """boxes (K, 4) (x0, y0, x1, y1) of ONE image and ONE class, readers (K,) -> clusters
    as lists of box indices (rule in the module docstring), in order of creation."""
    clusters: list[list[int]] = []
    merged = np.zeros((0, 4))                                   # (C, 4) current mean boxes
    for k in range(len(boxes)):
        ok = np.array([readers[k] not in {readers[j] for j in c} for c in clusters], bool)
        overlap = iou(boxes[k], merged) if len(clusters) else np.zeros(0)
        overlap = np.where(ok, overlap, -1.0)
        best = int(np.argmax(overlap)) if len(clusters) else -1
        if best >= 0 and overlap[best] > iou_threshold:
            clusters[best].append(k)
            merged[best] = boxes[clusters[best]].mean(axis=0)
        else:
            clusters.append([k])
            merged = np.vstack([merged, boxes[k][None]])
    return clusters


def fuse(boxes: np.ndarray, readers: list, classes: list, cfg: FusionConfig) -> list[dict]:
    """Boxes of ONE image (K, 4) (x0, y0, x1, y1) with their readers and classes -> merged
    boxes as dicts {box (4,), finding, readers (sorted list), members (indices)}, grouped
    by class in order of first appearance, clusters in order of creation."""
    out = []
    for cls in dict.fromkeys(classes):
        idx = [k for k, c in enumerate(classes) if c == cls]
        for c in cluster_boxes(boxes[idx], [readers[k] for k in idx], cfg.iou_threshold):
            members = [idx[j] for j in c]
            who = sorted({readers[k] for k in members})
            if len(who) >= cfg.min_readers:
                out.append({"box": boxes[members].mean(axis=0), "finding": cls, "readers": who,
                            "members": members})
    return out
