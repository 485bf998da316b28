"""Hungarian matching of predicted boxes to ground truth (DETR's matcher, STNet's costs).

    pairs = match(logits, boxes, targets, cost_class=2, cost_bbox=5, cost_giou=2)
    # list over images of (query indices, target indices), both int64 (n_matched,)

Cost of query i for target j: cost_class * focal_cost(p_i[c_j]) + cost_bbox * L1(box_i,
box_j) + cost_giou * (-GIoU(box_i, box_j)), boxes cxcywh normalised; the assignment with
the least total cost is found by scipy's ``linear_sum_assignment``. No gradients.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, generalized_box_iou

__all__ = ["match", "cost_matrix", "focal_cost"]


def focal_cost(prob: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Classification cost of probabilities: focal loss as positive minus as negative."""
    eps = 1e-8
    pos = alpha * (1 - prob) ** gamma * -(prob + eps).log()
    neg = (1 - alpha) * prob ** gamma * -(1 - prob + eps).log()
    return pos - neg


def cost_matrix(logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                tgt_boxes: torch.Tensor, cost_class: float = 2.0, cost_bbox: float = 5.0,
                cost_giou: float = 2.0, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """(Q, C) logits, (Q, 4) boxes vs (n,) labels (0-based channels), (n, 4) boxes -> (Q, n)."""
    prob = logits.float().sigmoid()
    c_cls = focal_cost(prob[:, labels], alpha, gamma)                  # (Q, n)
    c_l1 = torch.cdist(boxes.float(), tgt_boxes.float(), p=1)          # (Q, n)
    c_giou = -generalized_box_iou(box_convert(boxes.float(), "cxcywh", "xyxy"),
                                  box_convert(tgt_boxes.float(), "cxcywh", "xyxy"))
    return cost_bbox * c_l1 + cost_class * c_cls + cost_giou * c_giou


@torch.no_grad()
def match(logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict], **costs):
    """logits (N, Q, C), boxes (N, Q, 4); targets[n] has "labels" (n,), "boxes" (n, 4)."""
    pairs = []
    for n, tgt in enumerate(targets):
        if len(tgt["labels"]) == 0:
            empty = torch.zeros(0, dtype=torch.long)
            pairs.append((empty, empty))
            continue
        c = cost_matrix(logits[n], boxes[n], tgt["labels"], tgt["boxes"], **costs)
        rows, cols = linear_sum_assignment(c.cpu().numpy())
        pairs.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
    return pairs
