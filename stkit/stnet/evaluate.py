"""COCO AP / AP50 / AP75 of STNet with pycocotools, under three protocols, named in every key.

* ``val_*`` "all frames" (CVA-Net's protocol): every validation frame is scored, from
  the encoder-feature-shuffle sweep's predictions.
* ``key_*`` "kit key frames": only the frames the sweep decodes as a clip's key (index %
  K == (K-1)//2 within each video, plus frames left over at a video's end).
* ``released_*`` "released test" (the released STNet evaluator): the image ids of the
  split sorted, every (n_support+1)-th from n_support//2 ([1::3]: across video
  boundaries, not per video), each scored by its OWN clip's key-frame output.

    metrics = evaluate_model(model, val_set)   # val_ap.., key_ap.., released_ap.., fps_shuffle, fps_per_frame, shuffle_speedup

``val_set`` enumerates every frame as a key frame (the clip dataset with key stride 1).
The shuffle sweep decodes K frames per encoder pass from the keys with index % K ==
(K-1)//2 (so with K=3 the triplets (0,1,2), (3,4,5), ... are covered) plus any frame left
uncovered at a video's end; the first two protocols use those shuffle predictions. The
released one uses what the release scores: the key frame decoded from that frame's own clip
(its global frames drawn as the val set's ``ClipConfig`` says). Frame-by-frame
inference runs in the same call, for speed (and for its own all-frames AP when it covers
every item). Ground truth is scaled from the transformed frame to the original size.
"""

from __future__ import annotations

import contextlib
import io
import time

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm.auto import tqdm

from ..data.buv import released_test_ids
from .inference import predict_clip
from .postprocess import coco_detections

__all__ = ["coco_eval", "coco_ground_truth", "evaluate_model", "single_batch"]


def coco_ground_truth(frames: dict) -> dict:
    """{image_id: (orig (h, w), boxes xyxy px (n, 4), labels (n,))} -> a COCO dataset dict."""
    images, anns = [], []
    for image_id, ((h, w), boxes, labels) in sorted(frames.items()):
        images.append({"id": int(image_id), "height": int(h), "width": int(w)})
        for b, lab in zip(boxes.tolist(), labels.tolist()):
            bw, bh = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": int(image_id), "category_id": int(lab),
                         "bbox": [b[0], b[1], bw, bh], "area": bw * bh, "iscrowd": 0})
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "benign"}, {"id": 2, "name": "malignant"}]}


def coco_eval(gt: dict, dets: list[dict], image_ids=None) -> dict:
    """AP, AP50, AP75 (pycocotools bbox) of COCO result rows on ``image_ids`` (default all)."""

    ids = sorted(int(i) for i in (image_ids if image_ids is not None else [im["id"] for im in gt["images"]]))
    dets = [d for d in dets if d["image_id"] in set(ids)]
    if not dets:
        return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {k: list(v) for k, v in gt.items()}
        coco.createIndex()
        E = COCOeval(coco, coco.loadRes(dets), "bbox")
        E.params.imgIds = ids
        E.evaluate()
        E.accumulate()
        E.summarize()
    s = [float(v) if v >= 0 else float("nan") for v in E.stats[:3]]
    return {"ap": s[0], "ap50": s[1], "ap75": s[2]}


def single_batch(item: dict) -> dict:
    """One dataset item as a batch of one clip (no padding)."""
    frames = item["frames"][None]
    return {"frames": frames, "mask": torch.zeros(frames.shape[:2] + frames.shape[3:], dtype=torch.bool),
            "targets": [item["targets"]], "video": [item["video"]], "key_index": [item["key_index"]]}


def _gt_entry(t: dict):
    h, w = (int(v) for v in t["size"])
    oh, ow = (int(v) for v in t.get("orig_size", t["size"]))
    scale = torch.tensor([ow / w, oh / h, ow / w, oh / h])
    return (oh, ow), t["boxes"].float() * scale, t["labels"]


def _timed(model, batch, mode):
    t0 = time.perf_counter()
    preds = predict_clip(model, batch, mode)
    return preds, time.perf_counter() - t0


@torch.no_grad()
def evaluate_model(model, dataset, per_frame_items: int | None = None, progress: bool = False,
                   released: bool = True) -> dict:
    """Metrics of ``model`` on ``dataset`` (every frame a key frame); see the module docstring.

    per_frame_items: run frame-by-frame inference on this many items only (timing);
    None runs it on all items and adds ``per_frame_ap``/``_ap50``/``_ap75`` (all frames).
    released: also score the released test protocol (``released_*``).
    """
    model.eval()
    K = model.config.shuffle_frames
    gt, where, shuffle_preds, per_frame_preds, keys, own = {}, {}, {}, [], set(), {}
    t_shuffle = t_frame = 0.0
    n_frame = 0
    for i in tqdm(range(len(dataset)), desc="evaluate", disable=not progress):
        item = dataset[i]
        key = item["targets"][0]
        gt[int(key["image_id"])] = _gt_entry(key)
        where[int(key["image_id"])] = i
        batch = single_batch(item)
        if int(item["key_index"]) % K == (K - 1) // 2:
            preds, dt = _timed(model, batch, "shuffle")
            t_shuffle += dt
            keys.add(int(key["image_id"]))
            own[int(key["image_id"])] = preds[0]
            for p in (p for p in preds if p["image_id"] >= 0):  # -1: frame not in the JSON
                shuffle_preds.setdefault(p["image_id"], p)
                gt.setdefault(p["image_id"], _gt_entry(item["targets"][p["frame"]]))
        if per_frame_items is None or n_frame < per_frame_items:
            preds, dt = _timed(model, batch, "per_frame")
            t_frame, n_frame = t_frame + dt, n_frame + 1
            per_frame_preds += preds
            own.setdefault(int(key["image_id"]), preds[0])
    for image_id in sorted(set(gt) - set(shuffle_preds)):  # a video's last frames
        preds, dt = _timed(model, single_batch(dataset[where[image_id]]), "shuffle")
        t_shuffle += dt
        keys.add(image_id)
        own[image_id] = preds[0]
        for p in (p for p in preds if p["image_id"] >= 0):
            shuffle_preds.setdefault(p["image_id"], p)
    coco_gt = coco_ground_truth(gt)
    rows = coco_detections([shuffle_preds[i] for i in gt], list(gt))
    all_frames, key_frames = coco_eval(coco_gt, rows), coco_eval(coco_gt, rows, sorted(keys))
    out = {f"val_{k}": v for k, v in all_frames.items()}          # protocol: all frames
    out.update({f"key_{k}": v for k, v in key_frames.items()})    # protocol: the kit's key frames
    out.update(n_frames=len(gt), n_key_frames=len(keys),
               fps_shuffle=len(gt) / max(t_shuffle, 1e-9), fps_per_frame=n_frame / max(t_frame, 1e-9))
    out["shuffle_speedup"] = out["fps_shuffle"] / max(out["fps_per_frame"], 1e-9)
    if per_frame_items is None:
        ids = [p["image_id"] for p in per_frame_preds]
        pf = coco_eval(coco_gt, coco_detections(per_frame_preds, ids), ids)
        out.update({f"per_frame_{k}": v for k, v in pf.items()})  # all frames, no shuffle
    if released:
        out.update(_released_protocol(model, dataset, coco_gt, where, own))
    return out


def _released_protocol(model, dataset, coco_gt: dict, where: dict, own: dict) -> dict:
    """``released_*``: the released test's frames, each scored by its own clip's key output
    (``where``: image id -> item of the dataset, every frame of the split a key item)."""
    ids = released_test_ids(where, model.config.n_support)  # every listed frame is a key item
    for image_id in (i for i in ids if i not in own):
        own[image_id] = predict_clip(model, single_batch(dataset[where[image_id]]), "per_frame")[0]
    scores = coco_eval(coco_gt, coco_detections([own[i] for i in ids], ids), ids)
    return {**{f"released_{k}": v for k, v in scores.items()}, "n_released_frames": len(ids)}
