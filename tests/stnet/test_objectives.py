"""Tests of the two released training objectives (stkit.stnet.config.OBJECTIVES) on a two-frame toy.

three_frames: the mean of the decoded frames' losses, each against its own frame's boxes
(hand: decode each frame alone and average the criterion). split_queries: T query groups,
group t decoding frame t with one self-attention over all groups, every prediction the
key frame's (hand: with the self-attention silenced the groups decode independently).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from stkit.stnet import build_model, variant_config
from stkit.stnet.loss import SetCriterion, loss_on_batch, normalise_targets
from tests.stnet.test_model import SMOKE, fake_batch

TWO = replace(SMOKE, n_support=1, n_global=0, shuffle_frames=2)  # T = 2: key, key-1


def _targets(batch, f):
    return normalise_targets([clip[f] for clip in batch["targets"]])


def _model(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def test_three_frames_is_the_mean_of_each_frames_own_loss():
    cfg = replace(TWO, objective="three_frames")
    model, crit = _model(cfg), SetCriterion(cfg)
    batch = fake_batch(cfg, B=2, seed=3)
    loss, _ = loss_on_batch(model, crit, batch)
    mem = model.encode(batch["frames"], batch["mask"])
    hand = []
    for f in (0, 1):
        out = model.decode(mem, torch.arange(2), torch.full((2,), f))
        hand.append(crit(out, _targets(batch, f))[0])
    assert torch.allclose(loss, (hand[0] + hand[1]) / 2, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(hand[0], hand[1])  # the frames' own boxes differ, so the mean is not one frame's
    key_only, _ = loss_on_batch(model, SetCriterion(replace(cfg, objective="key_frame")), batch)
    assert torch.allclose(key_only, hand[0], rtol=1e-5, atol=1e-6)


def test_faithful_variant_trains_with_the_clip_engine_objective():
    assert variant_config(SMOKE, "faithful").objective == "three_frames"
    assert variant_config(SMOKE, "stnet").objective == "key_frame"
    split = replace(TWO, objective="split_queries", shuffle_frames=1)
    assert variant_config(split, "faithful").objective == "split_queries"
    with pytest.raises(ValueError, match="shuffle_frames"):
        replace(TWO, objective="split_queries")
    with pytest.raises(ValueError, match="divide"):
        replace(TWO, objective="split_queries", shuffle_frames=1, num_queries=7)


def _silence_self_attention(model):
    with torch.no_grad():
        for layer in model.decoder.layers:
            layer.self_attn.out_proj.weight.zero_()
            layer.self_attn.out_proj.bias.zero_()


def test_split_queries_decode_group_t_on_frame_t():
    cfg = replace(TWO, objective="split_queries", shuffle_frames=1)  # 8 queries: 2 groups of 4
    split = _model(cfg)
    _silence_self_attention(split)
    plain = build_model(replace(cfg, objective="key_frame")).eval()
    plain.load_state_dict(split.state_dict())
    batch = fake_batch(cfg, B=2, seed=1)
    with torch.no_grad():
        out = split(batch["frames"], batch["mask"])
        mem = plain.encode(batch["frames"], batch["mask"])
        expect = []
        for g in (0, 1):
            with torch.no_grad():  # decode only group g's queries, on frame g
                sub = build_model(replace(cfg, objective="key_frame", num_queries=4)).eval()
                state = dict(split.state_dict())
                state["query_embed.weight"] = split.query_embed.weight[4 * g:4 * g + 4]
                sub.load_state_dict(state)
                expect.append(sub.decode(mem, torch.arange(2), torch.full((2,), g)))
    assert out["logits"].shape == (2, 8, cfg.num_classes)
    for k in ("logits", "boxes"):
        assert torch.allclose(out[k], torch.cat([expect[0][k], expect[1][k]], 1), atol=1e-5), k


def test_split_queries_attend_across_groups_and_match_the_key_boxes():
    cfg = replace(TWO, objective="split_queries", shuffle_frames=1)
    model, crit = _model(cfg), SetCriterion(cfg)
    batch = fake_batch(cfg, B=1, seed=2, pad_second=False)
    with torch.no_grad():
        before = model(batch["frames"], batch["mask"])["logits"][:, :4].clone()
        model.query_embed.weight[4:] += 1.0  # group 1 only
        after = model(batch["frames"], batch["mask"])["logits"][:, :4]
    assert not torch.allclose(before, after)  # group 0 saw group 1 through self-attention
    loss, _ = loss_on_batch(model, crit, batch)
    with torch.no_grad():
        out = model(batch["frames"], batch["mask"])
    assert torch.allclose(loss, crit(out, _targets(batch, 0))[0], rtol=1e-5)
    moved = fake_batch(cfg, B=1, seed=2, pad_second=False)
    moved["targets"][0][1]["boxes"] += 5.0  # frame 1's own boxes are not what split_queries matches
    assert torch.allclose(loss_on_batch(model, crit, moved)[0], loss, rtol=1e-6)
    with pytest.raises(ValueError, match="key frame only"):
        model.decode(model.encode(batch["frames"], batch["mask"]), torch.tensor([0]), torch.tensor([1]))
