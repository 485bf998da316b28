"""Tests of stkit.stnet.postprocess: top-k detections scaled to the image, and their COCO rows."""

from __future__ import annotations

import pytest
import torch

from stkit.stnet.postprocess import postprocess, coco_detections


def test_postprocess_topk_scaling_and_coco_rows():
    logits = torch.tensor([[[0.0, 3.0], [-1.0, -2.0], [2.0, -5.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1], [0.25, 0.75, 0.5, 0.5]]])
    (det,) = postprocess(logits, boxes, torch.tensor([[100, 200]]), k=2)
    torch.testing.assert_close(det["scores"], torch.sigmoid(torch.tensor([3.0, 2.0])))
    assert det["labels"].tolist() == [2, 1]
    torch.testing.assert_close(det["boxes"], torch.tensor([[80.0, 30.0, 120.0, 70.0],
                                                           [0.0, 50.0, 100.0, 100.0]]))
    rows = coco_detections([det], [9])
    assert rows[0]["bbox"] == pytest.approx([80.0, 30.0, 40.0, 40.0]) and rows[0]["category_id"] == 2
