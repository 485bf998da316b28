"""Inference on clip batches: encoder feature shuffle, and plain frame-by-frame.

    preds = predict_clip(model, batch, mode="shuffle")    # K frames per clip, one encoder pass
    preds = predict_clip(model, batch, mode="per_frame")  # the key frame only, one pass per frame

Encoder feature shuffle (STNet): the backbone and the ST-encoder run once over the clip;
then the decoder runs for each of the first K = ``cfg.shuffle_frames`` frames of the clip
(key, key-1, key+1), each time with that frame's memory as "current" and the rest as the
other frames. The K decodes are batched into one decoder call. Frame-by-frame inference
runs the whole network per key frame, decoding only the key. Each prediction is a dict:
clip, frame (position in the clip), image_id, and the post-processed "scores", "labels",
"boxes" (xyxy pixels of the frame's original size). No metrics here (``evaluate.py``).
"""

from __future__ import annotations

import torch

from .model import STNet, check_clip, shuffle_items
from .postprocess import postprocess

__all__ = ["predict_clip", "shuffle_items", "decoder_attention", "MODES"]

MODES = ("shuffle", "per_frame")


def _sizes(batch: dict, clip: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    rows = []
    for b, t in zip(clip.tolist(), current.tolist()):
        tgt = batch["targets"][b][t]
        rows.append(torch.as_tensor(tgt.get("orig_size", tgt["size"])).long())
    return torch.stack(rows)  # (N, 2) rows (h, w)


@torch.no_grad()
def predict_clip(model: STNet, batch: dict, mode: str = "shuffle", k: int | None = None) -> list[dict]:
    """Detections of a clip batch (the clip contract); see the module docstring."""
    if mode not in MODES:
        raise ValueError(f"predict_clip: mode={mode!r}; expected one of {MODES}")
    cfg = model.config
    device = next(model.parameters()).device
    frames, mask = batch["frames"].to(device), batch["mask"].to(device)
    check_clip(frames, mask, cfg.n_frames)
    B = frames.shape[0]
    if mode == "per_frame":
        out = model(frames, mask)
        clip, current = torch.arange(B), torch.zeros(B, dtype=torch.long)
    else:
        mem = model.encode(frames, mask)
        clip, current = shuffle_items(B, cfg.shuffle_frames, device)
        out = model.decode(mem, clip, current)
        clip, current = clip.cpu(), current.cpu()
    dets = postprocess(out["logits"], out["boxes"], _sizes(batch, clip, current),
                       k or cfg.num_detections)
    preds = []
    for det, b, t in zip(dets, clip.tolist(), current.tolist()):
        det.update(clip=b, frame=t, image_id=int(batch["targets"][b][t]["image_id"]))
        preds.append(det)
    return preds


@torch.no_grad()
def decoder_attention(model: STNet, batch: dict, clip: int = 0, current: int = 0) -> list[dict]:
    """Per decoder layer, where frame ``current`` of clip ``clip`` looked: a dict with
    "boxes" (Q, 4), "logits" (Q, C), "reference" (Q, L, 2|4) and the STDA dict "attention"
    ("loc"/"attn" on the frame itself, "loc_t"/"attn_t" on the others, see ``STDA``),
    all for that one item. For the figures of ``stkit.viz.stnet``."""
    device = next(model.parameters()).device
    frames, mask = batch["frames"].to(device), batch["mask"].to(device)
    check_clip(frames, mask, model.config.n_frames)
    mem = model.encode(frames, mask)
    out = model.decode(mem, torch.tensor([clip], device=device), torch.tensor([current], device=device),
                       return_attention=True)
    layers = []
    for layer in [*out["aux"], out]:
        layers.append({"boxes": layer["boxes"][0].cpu(), "logits": layer["logits"][0].cpu(),
                       "reference": layer["reference"][0].cpu(),
                       "attention": {k: v[0].cpu() for k, v in layer["attention"].items()}})
    return layers
