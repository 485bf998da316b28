"""STNet model: shapes, clip-length errors, the baseline, encoder feature shuffle against
a per-frame decoder loop, optimiser groups, the backbone pieces, and a real clip batch."""

from __future__ import annotations

import math
import urllib.error

import pytest
import torch
from torch import nn

from stkit.stnet import build_stnet, param_groups, predict_clip, stnet_config
from stkit.stnet.backbone import FrozenBatchNorm2d, ResNetBody
from stkit.stnet.criterion import SetCriterion, loss_on_batch
from stkit.stnet.inference import shuffle_items
from stkit.stnet.position import sine_position


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


@pytest.fixture(scope="module")
def smoke():
    torch.manual_seed(0)
    cfg = stnet_config("smoke")
    return cfg, build_stnet(cfg).eval()


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
    batch = fake_batch(stnet_config("smoke"))
    changed = batch["frames"].clone()
    changed[:, 1:] = torch.rand_like(changed[:, 1:])
    for baseline in (False, True):
        model = build_stnet(stnet_config("smoke", baseline=baseline)).eval()
        with torch.no_grad():
            a = model(batch["frames"], batch["mask"])["logits"]  # boxes start input-free
            b = model(changed, batch["mask"])["logits"]
        assert torch.equal(a, b) == baseline
    assert not any("temporal" in n for n, _ in model.named_parameters())


def test_shuffle_equals_decoder_per_frame_on_the_same_memory(smoke):
    cfg, model = smoke
    batch = fake_batch(cfg, B=2, seed=3)
    K = cfg.shuffle_frames
    with torch.no_grad():
        mem = model.encode(batch["frames"], batch["mask"])
        clip, current = shuffle_items(2, K)
        together = model.decode(mem, clip, current)
        for n, (b, t) in enumerate(zip(clip.tolist(), current.tolist())):
            alone = model.decode(mem, torch.tensor([b]), torch.tensor([t]))
            torch.testing.assert_close(together["logits"][n], alone["logits"][0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(together["boxes"][n], alone["boxes"][0], rtol=1e-5, atol=1e-5)
    shuffled = predict_clip(model, batch, "shuffle")
    per_frame = predict_clip(model, batch, "per_frame")
    assert [(p["clip"], p["frame"]) for p in shuffled] == list(zip(clip.tolist(), current.tolist()))
    assert [p["image_id"] for p in shuffled] == [0, 1, 2, 100, 101, 102][:2 * K]
    for pf in per_frame:  # the key frame's detections agree between the two modes
        sh = next(p for p in shuffled if p["clip"] == pf["clip"] and p["frame"] == 0)
        torch.testing.assert_close(sh["boxes"], pf["boxes"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(sh["scores"], pf["scores"], rtol=1e-4, atol=1e-5)


def test_loss_backward_reaches_every_trainable_parameter(smoke):
    cfg, _ = smoke
    torch.manual_seed(1)
    model = build_stnet(cfg).train()
    loss, parts = loss_on_batch(model, SetCriterion(cfg), fake_batch(cfg))
    loss.backward()
    assert math.isfinite(parts["loss"]) and set(parts) == {"cls", "l1", "giou", "loss"}
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    # The last decoder layer's self-attention sees only its own queries; everything gets a gradient.
    assert missing == [], missing


def test_param_groups(smoke):
    cfg, model = smoke
    groups = {g["name"]: g for g in param_groups(model, stnet_config("smoke", lr_backbone_mult=0.5))}
    assert groups["backbone"]["lr"] == cfg.lr * 0.5 and groups["linear_proj"]["lr"] == cfg.lr * 0.1
    named = {id(p): n for n, p in model.named_parameters()}
    assert all(named[id(p)].startswith("pyramid.body.") for p in groups["backbone"]["params"])
    assert {named[id(p)].split(".")[-2] for p in groups["linear_proj"]["params"]} >= {
        "sampling_offsets", "temporal_offsets", "reference_points"}
    total = sum(len(g["params"]) for g in groups.values())
    assert total == sum(p.requires_grad for p in model.parameters())
    frozen = param_groups(model, stnet_config("smoke", lr_backbone_mult=0.0))
    assert "backbone" not in {g["name"] for g in frozen}


def test_faithful_skips_detr_init():
    torch.manual_seed(0)
    faithful = build_stnet(stnet_config("smoke", faithful=True))
    improved = build_stnet(stnet_config("smoke"))
    assert faithful.encoder[0].attn.sampling_offsets.weight.abs().sum() > 0
    assert improved.encoder[0].attn.sampling_offsets.weight.abs().sum() == 0


def test_frozen_batchnorm_matches_batchnorm_eval():
    bn = nn.BatchNorm2d(5).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.normal_()
        bn.bias.normal_()
    frozen = FrozenBatchNorm2d(5)
    frozen.load_state_dict(bn.state_dict())  # num_batches_tracked is dropped
    x = torch.randn(2, 5, 3, 3)
    torch.testing.assert_close(frozen(x), bn(x))
    assert not list(frozen.parameters())


def test_backbone_channels_and_frozen_stem():
    body = ResNetBody("resnet50", pretrained=False)
    feats = body(torch.rand(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [512, 1024, 2048]
    assert [f.shape[-1] for f in feats] == [8, 4, 2]
    assert not any(p.requires_grad for p in body.stem.parameters())
    assert all(p.requires_grad for p in body.layer2.parameters())


def test_pretrained_weights_offline_error_is_clear(monkeypatch):
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"ImageNet weights for resnet18.*pretrained=False"):
        ResNetBody("resnet18", pretrained=True)


def test_sine_position_by_formula():
    mask = torch.zeros(1, 2, 3, dtype=torch.bool)
    mask[:, :, 2] = True  # last column is padding
    pos = sine_position(mask, 8)  # 4 channels for y, then 4 for x
    # x of pixel (0, 1): cumulative valid 2 of 2 -> (2 - 0.5) / 2 * 2 pi; channel pair i uses 10000^(2*(i//2)/4).
    x = 1.5 / 2 * 2 * math.pi
    torch.testing.assert_close(pos[0, 4:, 0, 1], torch.tensor(
        [math.sin(x), math.cos(x), math.sin(x / 100), math.cos(x / 100)]))
    y = 0.5 / 2 * 2 * math.pi
    torch.testing.assert_close(pos[0, :2, 0, 0], torch.tensor([math.sin(y), math.cos(y)]))


def test_real_synthetic_buv_clip_batch(tmp_path):
    from data_prep.synthetic_buv import generate_synthetic_buv
    from stkit.data.video import BUVClipDataset, ClipConfig, collate_clips

    root = generate_synthetic_buv(tmp_path / "buv", size="smoke", verbose=False)
    cfg = stnet_config("smoke")
    clip = ClipConfig(n_support=cfg.n_support, n_global=cfg.n_global, train_short_sides=(64,),
                      test_short_side=64)
    ds = BUVClipDataset(root, "train", clip)
    batch = collate_clips([ds[0], ds[1]])
    torch.manual_seed(0)
    model = build_stnet(cfg)
    loss, parts = loss_on_batch(model, SetCriterion(cfg), batch)
    loss.backward()
    assert math.isfinite(parts["loss"])
    val = BUVClipDataset(root, "val", clip)
    preds = predict_clip(model.eval(), collate_clips([val[0]]), "shuffle")
    assert len(preds) == cfg.shuffle_frames and all(p["image_id"] >= 0 for p in preds)


def test_presets():
    paper = stnet_config("paper")
    assert (paper.backbone, paper.n_frames, paper.num_queries, paper.enc_layers, paper.dec_layers,
            paper.d_model, paper.n_heads, paper.ffn_dim, paper.dropout) == (
        "resnet50", 6, 300, 6, 6, 256, 8, 1024, 0.1)
    assert (paper.enc_points, paper.enc_temporal_points, paper.dec_points, paper.dec_temporal_points) == (4, 2, 4, 4)
    assert (paper.cls_weight, paper.l1_weight, paper.giou_weight) == (2, 5, 2)
    assert math.isclose(paper.lr * paper.lr_backbone_mult, 2e-5) and paper.clip_max_norm == 0.1
    quick = stnet_config("quick")
    assert (quick.backbone, quick.d_model, quick.n_heads, quick.n_frames, quick.num_queries) == (
        "resnet18", 64, 4, 4, 30)
    assert stnet_config("quick", baseline=True).temporal is False
    with pytest.raises(ValueError, match="unknown STNetConfig field"):
        stnet_config("quick", n_frames=5)
    with pytest.raises(ValueError, match="unknown STNet size"):
        stnet_config("huge")
