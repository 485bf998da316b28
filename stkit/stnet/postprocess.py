"""From STNet's outputs to detections: top-k (query, class) pairs, boxes in pixels, COCO dicts.

    dets = postprocess(logits, boxes, sizes, k=100)  # per frame: scores, labels, boxes xyxy px
    coco = coco_detections(dets, image_ids)                    # [{"image_id", "category_id", "bbox", "score"}]

Scores are sigmoid probabilities; label = channel + 1 (the category id); normalised boxes
are scaled by the (h, w) given, normally the frame's original size ("orig_size"), because
the evaluation transform only resizes. No evaluation here (see ``evaluate.py``).
"""

from __future__ import annotations

import torch
from torchvision.ops import box_convert

__all__ = ["postprocess", "coco_detections"]


@torch.no_grad()
def postprocess(logits: torch.Tensor, boxes: torch.Tensor, sizes: torch.Tensor, k: int = 100):
    """logits (N, Q, C), boxes (N, Q, 4) cxcywh in [0, 1], sizes (N, 2) rows (h, w) ->
    list of N dicts: "scores" (k,), "labels" (k,) category ids, "boxes" (k, 4) xyxy px."""
    N, Q, C = logits.shape
    prob = logits.float().sigmoid().flatten(1)  # (N, Q*C)
    k = min(k, Q * C)
    scores, idx = prob.topk(k, dim=1)  # (N, k)
    query, channel = idx // C, idx % C
    xyxy = box_convert(boxes.float(), "cxcywh", "xyxy")
    xyxy = torch.gather(xyxy, 1, query[..., None].expand(-1, -1, 4))  # (N, k, 4)
    h, w = sizes[:, 0].float(), sizes[:, 1].float()
    xyxy = xyxy * torch.stack([w, h, w, h], -1)[:, None].to(xyxy.device)
    return [{"scores": scores[n].cpu(), "labels": channel[n].cpu() + 1, "boxes": xyxy[n].cpu()}
            for n in range(N)]


def coco_detections(dets: list[dict], image_ids: list[int]) -> list[dict]:
    """Per-frame detections -> COCO result entries (bbox [x, y, w, h])."""
    rows = []
    for det, image_id in zip(dets, image_ids):
        for s, lab, b in zip(det["scores"].tolist(), det["labels"].tolist(), det["boxes"].tolist()):
            rows.append({"image_id": int(image_id), "category_id": int(lab),
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": float(s)})
    return rows
