"""Tests of stkit.stnet.evaluate: COCO AP on perfect and hand cases, both protocols and their frame coverage."""

from __future__ import annotations

import math

import torch

from stkit.stnet import build_model
from stkit.stnet.experiment import recipe
from stkit.stnet.evaluate import coco_eval, coco_ground_truth, evaluate_model


def gt_frames():
    return {1: ((100, 120), torch.tensor([[10.0, 20.0, 60.0, 70.0]]), torch.tensor([1])),
            2: ((100, 120), torch.tensor([[0.0, 0.0, 100.0, 100.0], [5.0, 5.0, 30.0, 40.0]]),
                torch.tensor([2, 1]))}


def test_perfect_predictions_score_one():
    gt = coco_ground_truth(gt_frames())
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 0.9} for a in gt["annotations"]]
    assert coco_eval(gt, dets) == {"ap": 1.0, "ap50": 1.0, "ap75": 1.0}
    wrong_class = [{**d, "category_id": 3 - d["category_id"]} for d in dets]
    assert coco_eval(gt, wrong_class)["ap50"] == 0.0
    assert coco_eval(gt, []) == {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}


def test_hand_case():
    """One box; a loose detection (IoU 0.62) ranked above an exact one.
    AP50 = 1 (the loose one already matches); AP75 = 0.5 (precision 1/2 at recall 1);
    AP over IoU 0.50:0.95 = (3 thresholds at 1 + 7 at 0.5) / 10 = 0.65."""
    gt = coco_ground_truth({5: ((200, 200), torch.tensor([[0.0, 0.0, 100.0, 100.0]]), torch.tensor([1]))})
    dets = [{"image_id": 5, "category_id": 1, "bbox": [0.0, 0.0, 62.0, 100.0], "score": 0.9},
            {"image_id": 5, "category_id": 1, "bbox": [0.0, 0.0, 100.0, 100.0], "score": 0.5}]
    got = coco_eval(gt, dets)
    assert math.isclose(got["ap50"], 1.0) and math.isclose(got["ap75"], 0.5)
    assert math.isclose(got["ap"], 0.65, abs_tol=1e-9)
    # Restricted to image 5 among others, the same numbers.
    gt2 = coco_ground_truth({**gt_frames(), 5: ((200, 200), torch.tensor([[0.0, 0.0, 100.0, 100.0]]),
                                                 torch.tensor([1]))})
    assert math.isclose(coco_eval(gt2, dets, image_ids=[5])["ap75"], 0.5)


class FakeVideos:
    """Clip items of two videos (7 and 5 frames) following the clip contract, T = 3
    (key, key-1, key+1 clamped); frame f of video v has image id 100*v + f."""

    def __init__(self, lengths=(7, 5), H=64, W=80):
        self.keys = [(v, f) for v, n in enumerate(lengths) for f in range(n)]
        self.lengths, self.H, self.W = lengths, H, W

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, i):
        v, key = self.keys[i]
        idx = [key, max(key - 1, 0), min(key + 1, self.lengths[v] - 1)]
        gen = torch.Generator().manual_seed(i)
        targets = [{"boxes": torch.tensor([[8.0 + f, 10.0, 40.0 + f, 30.0]]), "labels": torch.tensor([1]),
                    "image_id": 100 * v + f, "orig_size": torch.tensor([2 * self.H, 2 * self.W]),
                    "size": torch.tensor([self.H, self.W])} for f in idx]
        return {"frames": torch.rand(3, 3, self.H, self.W, generator=gen), "targets": targets,
                "video": f"benign/v{v}", "key_index": key}


def test_evaluate_model_covers_every_frame_and_labels_protocols():
    torch.manual_seed(0)
    model = build_model(recipe("smoke").model)
    m = evaluate_model(model, FakeVideos(), per_frame_items=3)
    # Shuffle keys: video 0 -> 1, 4 and 6 (its last frame was left over); video 1 -> 1, 4.
    assert m["n_frames"] == 12 and m["n_key_frames"] == 5
    for k in ("val_ap", "val_ap50", "val_ap75", "key_ap", "key_ap50", "key_ap75"):
        assert 0.0 <= m[k] <= 1.0
    assert m["fps_shuffle"] > 0 and m["fps_per_frame"] > 0 and "per_frame_ap" not in m
    # Released test: sorted ids 0..6, 100..104, every third from the second -> 1, 4, 100, 103.
    assert m["n_released_frames"] == 4 and all(0.0 <= m[f"released_{k}"] <= 1.0 for k in ("ap", "ap50", "ap75"))


def test_released_protocol_scores_each_frame_from_its_own_clip(monkeypatch):
    """Every released frame's detections are its own clip's key-frame output: a model that
    only finds the lesion when a frame is decoded as the key of its clip scores 1 there,
    while the kit's sweep (which decodes frames 0 and 2 of a triplet as neighbours) does not."""
    from stkit.stnet import evaluate as ev

    def fake_predict(model, batch, mode="shuffle", k=None):
        K = 3 if mode == "shuffle" else 1
        out = []
        for f in range(K):
            t = batch["targets"][0][f]
            box = t["boxes"][0] * 2 if f == 0 else torch.tensor([0.0, 0.0, 2.0, 2.0])  # orig = 2 x size
            out.append({"scores": torch.tensor([0.9]), "labels": torch.tensor([1]), "boxes": box[None],
                        "clip": 0, "frame": f, "image_id": int(t["image_id"])})
        return out

    monkeypatch.setattr(ev, "predict_clip", fake_predict)
    torch.manual_seed(0)
    m = ev.evaluate_model(build_model(recipe("smoke").model), FakeVideos(), per_frame_items=0)
    assert m["released_ap50"] == 1.0 and m["key_ap50"] == 1.0
    assert m["val_ap50"] < 0.9  # neighbours decoded by the sweep got the wrong box
