"""COCO evaluation of STNet detections: perfect predictions, a hand case, post-processing,
and the two protocols (all frames / key frames) with their frame coverage."""

from __future__ import annotations

import math

import pytest
import torch

from stkit.stnet import build_stnet, stnet_config
from stkit.stnet.evaluate import coco_eval, coco_ground_truth, evaluate_detector
from stkit.stnet.postprocess import postprocess, to_coco


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


def test_postprocess_topk_scaling_and_coco_rows():
    logits = torch.tensor([[[0.0, 3.0], [-1.0, -2.0], [2.0, -5.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1], [0.25, 0.75, 0.5, 0.5]]])
    (det,) = postprocess(logits, boxes, torch.tensor([[100, 200]]), k=2)
    torch.testing.assert_close(det["scores"], torch.sigmoid(torch.tensor([3.0, 2.0])))
    assert det["labels"].tolist() == [2, 1]
    torch.testing.assert_close(det["boxes"], torch.tensor([[80.0, 30.0, 120.0, 70.0],
                                                           [0.0, 50.0, 100.0, 100.0]]))
    rows = to_coco([det], [9])
    assert rows[0]["bbox"] == pytest.approx([80.0, 30.0, 40.0, 40.0]) and rows[0]["category_id"] == 2


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


def test_evaluate_detector_covers_every_frame_and_labels_protocols():
    torch.manual_seed(0)
    model = build_stnet(stnet_config("smoke"))
    m = evaluate_detector(model, FakeVideos(), per_frame_items=3)
    # Shuffle keys: video 0 -> 1, 4 and 6 (its last frame was left over); video 1 -> 1, 4.
    assert m["n_frames"] == 12 and m["n_key_frames"] == 5
    for k in ("val_ap", "val_ap50", "val_ap75", "key_ap", "key_ap50", "key_ap75"):
        assert 0.0 <= m[k] <= 1.0
    assert m["fps_shuffle"] > 0 and m["fps_per_frame"] > 0 and "per_frame_ap" not in m


def test_figures_render(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from stkit.stnet.evaluate import single_batch
    from stkit.stnet.inference import decoder_attention, predict_clip
    from stkit.viz.stnet import attention_per_frame, plot_clip_detections, plot_speed, render_query_points

    torch.manual_seed(0)
    model = build_stnet(stnet_config("smoke")).eval()
    item = FakeVideos()[2]
    batch = single_batch(item)
    layers = decoder_attention(model, batch, current=1)
    per = attention_per_frame({k: v[0] for k, v in layers[-1]["attention"].items()}, 1, 3)
    assert math.isclose(sum(float(w.sum()) for _, w in per), model.cfg.n_heads, rel_tol=1e-5)
    assert all(loc.shape[-1] == 2 for loc, _ in per)
    fig = render_query_points(item["frames"], layers, query=0, head=None, current=1)
    assert len(fig.axes) == 4  # 3 frames and a colour bar
    render_query_points(item["frames"], layers, query=1, layer=0, head=1)
    preds = predict_clip(model, batch, "shuffle")
    plot_clip_detections(item["frames"], item["targets"], preds, score_threshold=0.0)
    plot_speed({"shuffle": 3.0, "per frame": 1.0}).savefig(tmp_path / "speed.png")


def test_bench_script_runs_at_smoke_size(capsys):
    from stkit.stnet.bench import main

    out = main(["--size", "smoke", "--steps", "1", "--height", "64", "--width", "80"])
    assert out["fps_shuffle"] > 0 and out["fps_per_frame"] > 0 and "step_s_reference" in out
    assert "train step" in capsys.readouterr().out
