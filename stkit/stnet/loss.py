"""STNet's training loss: Hungarian matching, then sigmoid focal + L1 + GIoU (2 / 5 / 2).

    crit = SetCriterion(cfg)
    loss, parts = crit(outputs, targets)       # targets: per decoded frame, normalised
    loss, parts = loss_on_batch(model, crit, batch)   # a clip batch straight from the loader

Which frames are supervised is ``cfg.objective`` (``stkit.stnet.config.OBJECTIVES``):
the key frame (the kit), the mean over the three decoded frames key, key-1, key+1 each
against its own boxes (the released clip engine), or the key frame predicted by T query
groups (the released main.py; the grouping is the model's, the loss is the key frame's).
Per decoder layer (every layer by default; the last only with ``cfg.faithful``, as the
released code): focal loss summed over queries and classes, L1 and 1 - GIoU summed over
matched pairs, each divided by the number of target boxes (at least 1). Also here:
:func:`normalise_targets`, which checks pixel boxes against the frame and converts them
to the normalised cxcywh the model predicts. No optimiser, no loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

from .config import STNetConfig
from .matcher import match

__all__ = ["SetCriterion", "sigmoid_focal_loss", "normalise_targets", "loss_on_batch", "decoded_frames",
           "frame_outputs"]


def sigmoid_focal_loss(logits: torch.Tensor, onehot: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Elementwise focal loss (Lin et al.) of logits against 0/1 targets (same shape)."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    p_t = p * onehot + (1 - p) * (1 - onehot)
    a_t = alpha * onehot + (1 - alpha) * (1 - onehot)
    return a_t * ce * (1 - p_t) ** gamma


def normalise_targets(targets: list[dict], where: str = "") -> list[dict]:
    """Pixel xyxy boxes of frames ("size" (h, w) after the transform) -> normalised cxcywh,
    labels (category ids 1..C) -> channels 0..C-1. Boxes outside the frame are an error."""
    out = []
    for i, t in enumerate(targets):
        boxes, labels = t["boxes"], t["labels"]
        h, w = (int(v) for v in t["size"])
        name = f"{where}targets[{i}] (image_id {t.get('image_id')}, size {h}x{w})"
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or len(labels) != len(boxes):
            raise ValueError(f"{name}: boxes must be (n, 4) with n labels, got "
                             f"{tuple(boxes.shape)} and {tuple(labels.shape)}")
        if not torch.isfinite(boxes).all():
            raise ValueError(f"{name}: boxes contain NaN or inf")
        tol = 1e-3 * max(h, w)
        bad = ((boxes[:, 0] < -tol) | (boxes[:, 1] < -tol) | (boxes[:, 2] > w + tol)
               | (boxes[:, 3] > h + tol) | (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
        if bad.any():
            j = int(bad.nonzero()[0, 0])
            raise ValueError(f"{name}: box {j} = {boxes[j].tolist()} (xyxy pixels) lies outside "
                             "the image or has x2 < x1 / y2 < y1")
        if len(labels) and (labels.min() < 1):
            raise ValueError(f"{name}: labels must be category ids >= 1, got {labels.tolist()}")
        scale = boxes.new_tensor([w, h, w, h])
        xyxy = (boxes / scale).clamp(0, 1)
        out.append({"boxes": box_convert(xyxy, "xyxy", "cxcywh"), "labels": labels.long() - 1})
    return out


class SetCriterion(nn.Module):
    def __init__(self, cfg: STNetConfig):
        super().__init__()
        self.cfg = cfg

    def layer_loss(self, logits, boxes, targets, num_boxes: float) -> dict:
        """Loss parts of one decoder layer's outputs (N, Q, C), (N, Q, 4)."""
        c = self.cfg
        pairs = match(logits, boxes, targets, cost_class=c.cost_class, cost_bbox=c.cost_bbox,
                      cost_giou=c.cost_giou, alpha=c.focal_alpha, gamma=c.focal_gamma)
        onehot = torch.zeros_like(logits)
        for n, (qi, ti) in enumerate(pairs):
            onehot[n, qi, targets[n]["labels"][ti]] = 1.0
        cls = sigmoid_focal_loss(logits, onehot, c.focal_alpha, c.focal_gamma).sum() / num_boxes
        src = torch.cat([boxes[n, qi] for n, (qi, _) in enumerate(pairs)])
        tgt = torch.cat([targets[n]["boxes"][ti] for n, (_, ti) in enumerate(pairs)]).to(src)
        l1 = F.l1_loss(src, tgt, reduction="sum") / num_boxes
        giou = torch.diag(generalized_box_iou(box_convert(src, "cxcywh", "xyxy"),
                                              box_convert(tgt, "cxcywh", "xyxy")))
        giou = (1 - giou).sum() / num_boxes
        return {"cls": cls, "l1": l1, "giou": giou}

    def forward(self, outputs: dict, targets: list[dict], num_boxes: float | None = None):
        """outputs from ``STNet.decode``; targets normalised (:func:`normalise_targets`).
        Returns (weighted total, dict of float parts of the last layer and the total)."""
        c = self.cfg
        if num_boxes is None:
            num_boxes = sum(len(t["labels"]) for t in targets)
        num_boxes = max(float(num_boxes), 1.0)
        layers = (outputs["aux"] if c.aux_loss else []) + [outputs]
        total = 0.0
        for out in layers:
            p = self.layer_loss(out["logits"], out["boxes"], targets, num_boxes)
            total = total + c.cls_weight * p["cls"] + c.l1_weight * p["l1"] + c.giou_weight * p["giou"]
        parts = {k: float(v.detach()) for k, v in p.items()}
        parts["loss"] = float(total.detach())
        return total, parts


def decoded_frames(cfg: STNetConfig) -> int:
    """Frames of every clip the training loss decodes: 3 with ``three_frames`` (key, key-1,
    key+1; fewer in a shorter clip), else 1 (the key)."""
    return min(3, cfg.n_frames) if cfg.objective == "three_frames" else 1


def frame_outputs(outputs: dict, f: int, K: int) -> dict:
    """Frame f of every clip from outputs decoded clip-major with K frames per clip."""
    pick = {k: v[f::K] for k, v in outputs.items() if k != "aux"}
    pick["aux"] = [{k: v[f::K] for k, v in layer.items()} for layer in outputs.get("aux", [])]
    return pick


def loss_on_batch(model, criterion: SetCriterion, batch: dict, num_boxes=None):
    """One clip batch (the clip contract) -> (loss, parts) of the objective (module docstring).

    ``num_boxes``: a function of one frame's targets giving its normaliser (default their
    count; the trainer's averages it over processes). The parts are the key frame's."""
    device = next(model.parameters()).device
    K = decoded_frames(criterion.cfg)
    outputs = model(batch["frames"].to(device), batch["mask"].to(device), n_decode=K)
    total, key_parts = 0.0, None
    for f in range(K):
        frame = [clip[f] for clip in batch["targets"]]
        targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()}
                   for t in normalise_targets(frame, "batch " if f == 0 else f"batch frame {f} ")]
        n = None if num_boxes is None else num_boxes(targets)
        loss, parts = criterion(frame_outputs(outputs, f, K) if K > 1 else outputs, targets, n)
        total = total + loss / K
        key_parts = key_parts or parts
    key_parts["loss"] = float(total.detach())
    return total, key_parts
