"""Evaluation of STERN-style models: scores, ROC AUC, and where the attention looked.

- ``predict`` runs a model over a dataset and returns probabilities, labels and the STN
  window of every image.
- ``roc_auc`` / ``roc_curve`` wrap scikit-learn (the field's reference implementation).
- ``localisation_metrics`` asks whether the attended window contains the lesions on
  abnormal images: the fraction of lesion boxes whose centre lies inside the window,
  and the mean fraction of each box's area inside it. A window covering the whole image
  scores 1 on both, so the mean window area is reported beside them.
- ``thorax_metrics`` scores the windows against the thorax boxes (synthetic data records
  them): IoU, the share of the thorax inside the window, and the same IoU for the best
  single input-independent window (``best_fixed_window``), so that a window that learned
  nothing about the image cannot look good.
- ``evaluate_model`` puts them together for a trained model on a test set.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve
from torch.utils.data import DataLoader, Dataset

from .stn import window_to_pixels


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: Dataset, device: str | torch.device = "cpu", batch_size: int = 64) -> dict:
    """Run ``model`` over ``dataset`` (items: image, label, index) in eval mode.

    Returns numpy arrays: ``labels`` (K,), ``scores`` (K,) sigmoid probabilities,
    ``indices`` (K,), and for models with an STN ``theta`` (K, 2, 3), ``aspect`` (K,)
    and ``window_px`` (K, 4) as (x0, y0, x1, y1) in the input image's pixels
    (``None`` for the no-STN baseline).
    """
    was_training = model.training
    model.eval()
    labels, scores, indices, thetas, aspects, windows = [], [], [], [], [], []
    for images, y, idx in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        out = model(images.to(device))
        labels.append(y.numpy())
        scores.append(torch.sigmoid(out.logit.float()).cpu().numpy())
        indices.append(np.asarray(idx))
        if out.theta is not None:
            thetas.append(out.theta.cpu().numpy())
            aspects.append(out.aspect.cpu().numpy())
            windows.append(window_to_pixels(out.theta.cpu(), images.shape[-2], images.shape[-1]).numpy())
    model.train(was_training)
    cat = lambda xs: np.concatenate(xs) if xs else None  # noqa: E731
    return {"labels": cat(labels), "scores": cat(scores), "indices": cat(indices), "theta": cat(thetas), "aspect": cat(aspects), "window_px": cat(windows)}


def _check_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels, dtype=float), np.asarray(scores, dtype=float)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D of equal length, got {labels.shape} and {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} scores are NaN or infinite")
    if len(np.unique(labels)) != 2:
        raise ValueError(f"ROC AUC needs both classes among the labels, got {np.unique(labels).tolist()}")
    return labels, scores


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (scikit-learn)."""

    return float(roc_auc_score(*_check_scores(labels, scores)))


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates) of the ROC curve (scikit-learn)."""

    fpr, tpr, _ = sk_roc_curve(*_check_scores(labels, scores))
    return fpr, tpr


def localisation_metrics(windows_px: np.ndarray, boxes: list[np.ndarray]) -> dict:
    """Score attended windows against lesion boxes.

    Args:
        windows_px: (K, 4) windows as (x0, y0, x1, y1) pixels, one per image.
        boxes: K arrays of shape (B_k, 4) as (x, y, w, h) pixels; images without
            boxes (normal ones, or abnormal without annotation) contribute nothing.
    Returns:
        ``center_in_window``: fraction of boxes whose centre lies inside their image's window;
        ``area_in_window``: mean over boxes of (box area inside the window) / (box area);
        ``n_boxes``. Report :func:`window_area_fraction` beside these: a window that
        covers the whole image trivially scores 1.
    """
    windows_px = np.asarray(windows_px, dtype=float)
    if len(windows_px) != len(boxes):
        raise ValueError(f"{len(windows_px)} windows but {len(boxes)} box lists")
    centre_hits, area_fracs = [], []
    for (x0, y0, x1, y1), bxs in zip(windows_px, boxes):
        for bx, by, bw, bh in np.asarray(bxs, dtype=float).reshape(-1, 4):
            cx, cy = bx + bw / 2, by + bh / 2
            centre_hits.append(x0 <= cx <= x1 and y0 <= cy <= y1)
            iw = max(0.0, min(x1, bx + bw) - max(x0, bx))
            ih = max(0.0, min(y1, by + bh) - max(y0, by))
            area_fracs.append(iw * ih / (bw * bh))
    if not centre_hits:
        raise ValueError("no lesion boxes to score: localisation needs abnormal images with boxes")
    return {"center_in_window": float(np.mean(centre_hits)), "area_in_window": float(np.mean(area_fracs)), "n_boxes": len(centre_hits)}


def window_area_fraction(windows_px: np.ndarray, height: int, width: int) -> np.ndarray:
    """(K,) area of each window clipped to the image, as a fraction of the image area."""
    w = np.asarray(windows_px, dtype=float)
    iw = np.clip(np.minimum(w[:, 2], width) - np.maximum(w[:, 0], 0), 0, None)
    ih = np.clip(np.minimum(w[:, 3], height) - np.maximum(w[:, 1], 0), 0, None)
    return iw * ih / (height * width)


def box_iou(windows_px: np.ndarray, boxes_xywh: np.ndarray) -> np.ndarray:
    """(K,) intersection over union of windows (K, 4) (x0, y0, x1, y1) and boxes (K, 4) (x, y, w, h)."""
    w, b = np.asarray(windows_px, dtype=float), np.asarray(boxes_xywh, dtype=float)
    bx0, by0, bx1, by1 = b[..., 0], b[..., 1], b[..., 0] + b[..., 2], b[..., 1] + b[..., 3]
    iw = np.clip(np.minimum(w[..., 2], bx1) - np.maximum(w[..., 0], bx0), 0, None)
    ih = np.clip(np.minimum(w[..., 3], by1) - np.maximum(w[..., 1], by0), 0, None)
    inter = iw * ih
    union = (w[..., 2] - w[..., 0]) * (w[..., 3] - w[..., 1]) + b[..., 2] * b[..., 3] - inter
    return inter / union


def best_fixed_window(thorax_xywh: np.ndarray, height: int, width: int, steps: int = 13) -> tuple[np.ndarray, float]:
    """The single window (same for every image) with the highest mean IoU with the boxes.

    Searches windows inside the image on a grid: ``steps`` sizes and ``steps`` positions per
    axis (from 10 % to all of a side). Chosen on the boxes it is scored on, so it is an
    optimistic reference. Returns the window (4,) as (x0, y0, x1, y1) pixels and its mean IoU.
    """
    t = np.asarray(thorax_xywh, dtype=float)  # (K, 4)
    fx = np.linspace(0.1, 1.0, steps)  # window width / image width
    cands = []
    for a in fx:
        for b in fx:
            for u in np.linspace(0, 1 - a, steps):
                for v in np.linspace(0, 1 - b, steps):
                    cands.append((u * width, v * height, (u + a) * width, (v + b) * height))
    cands = np.asarray(cands)  # (N, 4)
    means = np.concatenate([box_iou(cands[i:i + 512, None, :], t[None]).mean(1) for i in range(0, len(cands), 512)])  # (N,)
    k = int(np.argmax(means))
    return cands[k], float(means[k])


def thorax_metrics(windows_px: np.ndarray, thorax_xywh: np.ndarray, height: int, width: int) -> dict:
    """Attended windows (K, 4) (x0, y0, x1, y1) against the thorax boxes (K, 4) (x, y, w, h).

    ``window_thorax_iou``: mean IoU; ``thorax_coverage``: mean |W n T| / |T| (the share of
    the thorax the classifier sees); ``fixed_window_thorax_iou``: the mean IoU of the best
    input-independent window (:func:`best_fixed_window`) on the same boxes.
    """
    w, t = np.asarray(windows_px, dtype=float), np.asarray(thorax_xywh, dtype=float)
    if w.shape != t.shape or w.ndim != 2 or w.shape[1] != 4:
        raise ValueError(f"windows and thorax boxes must both be (K, 4), got {w.shape} and {t.shape}")
    iw = np.clip(np.minimum(w[:, 2], t[:, 0] + t[:, 2]) - np.maximum(w[:, 0], t[:, 0]), 0, None)
    ih = np.clip(np.minimum(w[:, 3], t[:, 1] + t[:, 3]) - np.maximum(w[:, 1], t[:, 1]), 0, None)
    return {
        "window_thorax_iou": float(box_iou(w, t).mean()),
        "thorax_coverage": float((iw * ih / (t[:, 2] * t[:, 3])).mean()),
        "fixed_window_thorax_iou": best_fixed_window(t, height, width)[1],
    }


def evaluate_model(model, test_set, device="cpu") -> dict:
    """Test ROC AUC and, for models with an STN, where the attention looked.

    Returns the numbers plus ``predictions`` (the raw output of :func:`predict`).
    """
    pred = predict(model, test_set, device=device)
    out = {"test_auc": roc_auc(pred["labels"], pred["scores"]), "predictions": pred}
    if pred["theta"] is not None:
        h, w = test_set[0][0].shape[-2:]
        out |= _window_vs_thorax(model, test_set, pred, h, w)
        abnormal = np.flatnonzero(pred["labels"] == 1)
        boxes = [test_set.boxes(int(pred["indices"][i])).numpy() for i in abnormal]
        if sum(len(b) for b in boxes):
            loc = localisation_metrics(pred["window_px"][abnormal], boxes)
        else:  # e.g. CheXpert: no lesion boxes, nothing to score the window against
            loc = {"center_in_window": None, "area_in_window": None, "n_boxes": 0}
        out |= {
            "lesion_center_in_window": loc["center_in_window"],
            "lesion_area_in_window": loc["area_in_window"],
            "n_lesion_boxes": loc["n_boxes"],
            "mean_window_area": float(window_area_fraction(pred["window_px"], h, w).mean()),
            "mean_aspect": float(pred["aspect"].mean()),
        }
    return out


def _window_vs_thorax(model, test_set, pred: dict, h: int, w: int) -> dict:
    """Thorax IoU / coverage / best fixed window (when the data has thorax boxes) and the
    share of windows within 0.01 of the smallest scale on either axis (bounded STN only)."""
    out = {}
    cfg = model.stn.cfg
    if cfg.parameterisation == "bounded":
        s_small = np.minimum(pred["theta"][:, 0, 0], pred["theta"][:, 1, 1])
        out["windows_at_min_scale"] = float((s_small <= cfg.s_min + 0.01).mean())
    if getattr(test_set, "has_thorax", False):
        thorax = np.stack([test_set.thorax_box(int(i)).numpy() for i in pred["indices"]])
        out |= thorax_metrics(pred["window_px"], thorax, h, w)
    return out
