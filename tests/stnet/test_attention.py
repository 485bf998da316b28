"""Tests of stkit.stnet.attention: STDA (spatial-temporal deformable attention) vs a float64 loop over frames.

The loop samples every frame's levels with ``F.grid_sample`` directly (no op, no folding
of frames into pseudo-levels) and applies one softmax over the own frame's and the other
frames' points, so it checks the folding, the frame order and the joint softmax.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stkit.ops import MSDeformAttn, level_start_index
from stkit.stnet.attention import STDA, arrange_frames, frame_order

SHAPES = [(5, 6), (3, 3), (2, 2), (1, 1)]


def grid_sample_level(vmap, loc):
    """vmap (M, D, H, W), loc (Lq, M, P, 2) normalised -> (Lq, M, P, D), zero outside."""
    g = (2 * loc - 1).permute(1, 0, 2, 3)  # (M, Lq, P, 2)
    out = F.grid_sample(vmap, g, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.permute(2, 0, 3, 1)  # (Lq, M, P, D)


def loop_stda(mod, query, ref, frames_value, current):
    """One clip: query (Lq, C) of frame ``current``, frames_value (T, S, C) raw inputs."""
    T, S, C = frames_value.shape
    M, L, Kc, Kt = mod.n_heads, mod.n_levels, mod.n_points, mod.n_temporal_points
    D = C // M
    Lq = query.shape[0]
    values = frames_value @ mod.value_proj.weight.T + mod.value_proj.bias  # (T, S, C)
    others = [j for j in range(T) if j != current]
    off_c = (query @ mod.sampling_offsets.weight.T + mod.sampling_offsets.bias).view(Lq, M, L, Kc, 2)
    log_c = (query @ mod.attention_weights.weight.T + mod.attention_weights.bias).view(Lq, M, L * Kc)
    off_t = (query @ mod.temporal_offsets.weight.T + mod.temporal_offsets.bias).view(
        Lq, M, len(others), L, Kt, 2)
    log_t = (query @ mod.temporal_weights.weight.T + mod.temporal_weights.bias).view(
        Lq, M, len(others) * L * Kt)
    w = torch.softmax(torch.cat([log_c, log_t], -1), -1)
    w_c = w[..., :L * Kc].view(Lq, M, L, Kc)
    w_t = w[..., L * Kc:].view(Lq, M, len(others), L, Kt)
    out = torch.zeros(Lq, M, D, dtype=query.dtype)
    for j in range(T):  # the plain loop over frames
        start = 0
        for lvl, (h, wd) in enumerate(SHAPES):
            vmap = values[j, start:start + h * wd].T.reshape(M, D, h, wd)
            start += h * wd
            norm = torch.tensor([wd, h], dtype=query.dtype)
            if j == current:
                loc = ref[:, None, lvl, None, :] + off_c[:, :, lvl] / norm
                out += (grid_sample_level(vmap, loc) * w_c[:, :, lvl, :, None]).sum(2)
            else:
                o = others.index(j)
                loc = ref[:, None, lvl, None, :] + off_t[:, :, o, lvl] / norm
                out += (grid_sample_level(vmap, loc) * w_t[:, :, o, lvl, :, None]).sum(2)
    return out.reshape(Lq, C) @ mod.output_proj.weight.T + mod.output_proj.bias


def random_stda(Kc, Kt, T=3, C=8, M=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mod = STDA(C, len(SHAPES), M, Kc, T, Kt, init="default").double()
    with torch.no_grad():
        for lin in (mod.sampling_offsets, mod.temporal_offsets):
            lin.weight.normal_(0, 0.7, generator=gen)
            lin.bias.normal_(0, 1.5, generator=gen)
    return mod, gen


@pytest.mark.parametrize("Kc,Kt", [(3, 2), (2, 2)], ids=["two-calls", "one-call"])
def test_stda_matches_loop_over_frames_float64(Kc, Kt):
    T, C, B, Lq = 3, 8, 2, 5
    mod, gen = random_stda(Kc, Kt, T, C)
    S = sum(h * w for h, w in SHAPES)
    ss = torch.tensor(SHAPES)
    frames_value = torch.randn(B, T, S, C, generator=gen, dtype=torch.float64)
    # Every (clip, current frame) pair in one batch, as the encoder / shuffle decoder do.
    clip = torch.arange(B).repeat_interleave(T)
    current = torch.arange(T).repeat(B)
    N = B * T
    query = torch.randn(N, Lq, C, generator=gen, dtype=torch.float64)
    ref = torch.rand(N, Lq, len(SHAPES), 2, generator=gen, dtype=torch.float64)
    v = mod.project_value(frames_value.flatten(0, 1), None).view(B, T, S, 2, C // 2)
    out, att = mod(query, ref, arrange_frames(v, clip, current), ss, level_start_index(ss),
                   return_attention=True)
    for n in range(N):
        expected = loop_stda(mod, query[n], ref[n], frames_value[clip[n]], int(current[n]))
        torch.testing.assert_close(out[n], expected)
    total = att["attn"].sum((-1, -2)) + att["attn_t"].sum((-1, -2))  # ONE softmax per head
    torch.testing.assert_close(total, torch.ones_like(total))
    assert att["loc_t"].shape == (N, Lq, 2, (T - 1) * len(SHAPES), Kt, 2)


def test_frame_order_and_arrange():
    assert frame_order(4).tolist() == [[0, 1, 2, 3], [1, 0, 2, 3], [2, 0, 1, 3], [3, 0, 1, 2]]
    v = torch.arange(2 * 3).view(2, 3, 1).float()  # value of clip b, frame t = 3b + t
    got = arrange_frames(v, torch.tensor([1, 0]), torch.tensor([2, 1]))[..., 0]
    assert got.tolist() == [[5, 3, 4], [1, 0, 2]]


def test_no_temporal_points_is_msdeformattn():
    torch.manual_seed(1)
    stda = STDA(8, 4, 2, 3, n_frames=3, n_temporal_points=0).double()
    plain = MSDeformAttn(8, 4, 2, 3).double()
    plain.load_state_dict(stda.state_dict())
    ss = torch.tensor(SHAPES)
    q, ref = torch.randn(2, 5, 8, dtype=torch.float64), torch.rand(2, 5, 4, 2, dtype=torch.float64)
    x = torch.randn(2, 44, 8, dtype=torch.float64)
    v = stda.project_value(x, None)[:, None]
    torch.testing.assert_close(stda(q, ref, v, ss, level_start_index(ss)),
                               plain(q, ref, x, ss, level_start_index(ss)))


def test_detr_init_of_temporal_heads_and_clip_length_error():
    mod = STDA(16, 4, 4, 4, n_frames=3, n_temporal_points=2, init="detr")
    assert mod.temporal_offsets.weight.abs().sum() == 0 and mod.temporal_weights.bias.abs().sum() == 0
    bias = mod.temporal_offsets.bias.view(4, 8, 2, 2)  # (M, (T-1)*L, Kt, 2)
    torch.testing.assert_close(bias[0, :, 1], torch.tensor([[2.0, 0.0]] * 8))
    faithful = STDA(16, 4, 4, 4, n_frames=3, n_temporal_points=2, init="default")
    assert faithful.temporal_offsets.weight.abs().sum() > 0
    ss = torch.tensor(SHAPES)
    with pytest.raises(ValueError, match="built for clips of 3 frames"):
        mod(torch.randn(1, 2, 16), torch.rand(1, 2, 4, 2), torch.randn(1, 4, 44, 4, 4), ss,
            level_start_index(ss))
