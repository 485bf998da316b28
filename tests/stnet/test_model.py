"""Tests of stkit.stnet.model: shapes and levels, clip and input errors, temporal vs baseline, a real clip batch."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from stkit.stnet import build_model, predict_clip
from stkit.stnet.experiment import recipe
from stkit.stnet.loss import SetCriterion, loss_on_batch


SMOKE = recipe("smoke").model  # the smoke-size STNetConfig


def fake_batch(cfg, B=2, H=64, W=80, seed=0, pad_second=True):
    """A clip batch following the clip contract, with one box per frame."""
    gen = torch.Generator().manual_seed(seed)
    T = cfg.n_frames
    frames = torch.rand(B, T, 3, H, W, generator=gen)
    mask = torch.zeros(B, T, H, W, dtype=torch.bool)
    sizes = [(H, W), (H - 16, W)] if pad_second else [(H, W)] * 2
    targets = []
    for b in range(B):
        h, w = sizes[b % 2]
        mask[b, :, h:] = True
        frames[b, :, :, h:] = 0
        clip = []
        for t in range(T):
            x0, y0 = float(torch.randint(0, w // 2, (1,), generator=gen)), float(torch.randint(0, h // 2, (1,), generator=gen))
            clip.append({"boxes": torch.tensor([[x0, y0, x0 + 20, y0 + 12]]), "labels": torch.tensor([1 + b % 2]),
                         "image_id": 100 * b + t, "orig_size": torch.tensor([h, w]), "size": torch.tensor([h, w])})
        targets.append(clip)
    return {"frames": frames, "mask": mask, "targets": targets, "video": ["v"] * B, "key_index": [0] * B}


def test_shapes_and_levels(smoke):
    cfg, model = smoke
    batch = fake_batch(cfg)
    with torch.no_grad():
        out = model(batch["frames"], batch["mask"])
        mem = model.encode(batch["frames"], batch["mask"])
    assert out["logits"].shape == (2, cfg.num_queries, cfg.num_classes)
    assert out["boxes"].shape == (2, cfg.num_queries, 4) and len(out["aux"]) == cfg.dec_layers - 1
    assert ((out["boxes"] > 0) & (out["boxes"] < 1)).all()
    assert mem.shapes.tolist() == [[8, 10], [4, 5], [2, 3], [1, 2]]  # strides 8, 16, 32, 64
    assert mem.tokens.shape == (2, cfg.n_frames, 80 + 20 + 6 + 2, cfg.d_model)
    # The padded clip's valid fraction: 48 of 64 rows.
    torch.testing.assert_close(mem.ratios[1, 0, 0], torch.tensor([1.0, 0.75]))


def test_clip_length_and_input_errors(smoke):
    cfg, model = smoke
    batch = fake_batch(cfg)
    with pytest.raises(ValueError, match=rf"built for clips of {cfg.n_frames} frames.*T=2"):
        model(batch["frames"][:, :2], batch["mask"][:, :2])
    with pytest.raises(ValueError, match="mask must be bool"):
        model(batch["frames"], batch["mask"].float())
    with pytest.raises(ValueError, match="frames must be"):
        model(batch["frames"][:, :, :1], batch["mask"])
    with pytest.raises(ValueError, match="outside the image"):
        bad = fake_batch(cfg)
        bad["targets"][0][0]["boxes"] = torch.tensor([[10.0, 10.0, 90.0, 20.0]])  # x2 > W = 80
        loss_on_batch(model, SetCriterion(cfg), bad)


def test_temporal_attention_uses_other_frames_and_baseline_does_not():
    torch.manual_seed(0)
    batch = fake_batch(SMOKE)
    changed = batch["frames"].clone()
    changed[:, 1:] = torch.rand_like(changed[:, 1:])
    for baseline in (False, True):
        model = build_model(replace(SMOKE, baseline=baseline)).eval()
        with torch.no_grad():
            a = model(batch["frames"], batch["mask"])["logits"]  # boxes start input-free
            b = model(changed, batch["mask"])["logits"]
        assert torch.equal(a, b) == baseline
    assert not any("temporal" in n for n, _ in model.named_parameters())


def test_real_synthetic_buv_clip_batch(smoke_buv):
    from stkit.data.video import BUVClipDataset, ClipConfig, collate_clips

    root = smoke_buv
    cfg = SMOKE
    clip = ClipConfig(n_support=cfg.n_support, n_global=cfg.n_global, train_short_sides=(64,),
                      test_short_side=64)
    ds = BUVClipDataset(root, "train", clip)
    batch = collate_clips([ds[0], ds[1]])
    torch.manual_seed(0)
    model = build_model(cfg)
    loss, parts = loss_on_batch(model, SetCriterion(cfg), batch)
    loss.backward()
    assert math.isfinite(parts["loss"])
    val = BUVClipDataset(root, "val", clip)
    preds = predict_clip(model.eval(), collate_clips([val[0]]), "shuffle")
    assert len(preds) == cfg.shuffle_frames and all(p["image_id"] >= 0 for p in preds)
