"""Tests of ``stkit.ops.MSDeformAttn``: against a float64 hand-written loop, padding mask,
Deformable DETR's initialisation, and input errors that name the tensor."""

from __future__ import annotations

import math

import pytest
import torch

from stkit.ops import MSDeformAttn, level_start_index
from stkit.ops.module import ring_offset_bias

SHAPES = [(4, 5), (2, 3), (1, 2)]


def bilinear(vmap, x, y):
    """Sample vmap (H, W, D) at normalised (x, y): pixel = loc*size - 0.5, zero outside."""
    H, W, D = vmap.shape
    px, py = x * W - 0.5, y * H - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(D, dtype=vmap.dtype)
    for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
            if 0 <= yy < H and 0 <= xx < W:
                out += (1 - abs(px - xx)) * (1 - abs(py - yy)) * vmap[yy, xx]
    return out


@torch.no_grad()
def loop_forward(mod, query, ref, value_input, shapes, mask=None):
    """The module's computation written as plain loops over query/head/level/point."""
    N, Lq, C = query.shape
    M, L, P = mod.n_heads, mod.n_levels, mod.n_points
    D = C // M
    value = value_input @ mod.value_proj.weight.T + mod.value_proj.bias
    if mask is not None:
        value = value * (~mask)[..., None]
    out = torch.zeros(N, Lq, C, dtype=query.dtype)
    for n in range(N):
        for q in range(Lq):
            off = (mod.sampling_offsets.weight @ query[n, q] + mod.sampling_offsets.bias)
            off = off.view(M, L, P, 2)
            logit = (mod.attention_weights.weight @ query[n, q] + mod.attention_weights.bias)
            w = torch.softmax(logit.view(M, L * P), -1).view(M, L, P)
            for m in range(M):
                start = 0
                for lvl, (h, wd) in enumerate(shapes):
                    vmap = value[n, start:start + h * wd, m * D:(m + 1) * D].reshape(h, wd, D)
                    start += h * wd
                    for p in range(P):
                        r = ref[n, q, lvl]
                        if ref.shape[-1] == 2:
                            x = r[0] + off[m, lvl, p, 0] / wd
                            y = r[1] + off[m, lvl, p, 1] / h
                        else:
                            x = r[0] + off[m, lvl, p, 0] / P * r[2] * 0.5
                            y = r[1] + off[m, lvl, p, 1] / P * r[3] * 0.5
                        out[n, q, m * D:(m + 1) * D] += w[m, lvl, p] * bilinear(
                            vmap, float(x), float(y))
    return out @ mod.output_proj.weight.T + mod.output_proj.bias


def random_case(box: bool, seed: int, C=8, M=2, P=3, N=2, Lq=4):
    gen = torch.Generator().manual_seed(seed)
    mod = MSDeformAttn(C, len(SHAPES), M, P, init="default").double()
    with torch.no_grad():  # large random offsets so points land off the reference
        mod.sampling_offsets.weight.normal_(0, 1.0, generator=gen)
        mod.sampling_offsets.bias.normal_(0, 2.0, generator=gen)
    ss = torch.tensor(SHAPES)
    S = sum(h * w for h, w in SHAPES)
    query = torch.randn(N, Lq, C, generator=gen, dtype=torch.float64)
    value_input = torch.randn(N, S, C, generator=gen, dtype=torch.float64)
    ref = torch.rand(N, Lq, len(SHAPES), 4 if box else 2, generator=gen, dtype=torch.float64)
    return mod, query, ref, value_input, ss


@pytest.mark.parametrize("box", [False, True], ids=["points", "boxes"])
def test_matches_hand_loop_float64(box):
    mod, query, ref, value_input, ss = random_case(box, seed=3 + box)
    out, loc, attn = mod(query, ref, value_input, ss, level_start_index(ss),
                         return_attention=True)
    expected = loop_forward(mod, query, ref, value_input, SHAPES)
    torch.testing.assert_close(out, expected)
    assert loc.shape == (2, 4, 2, 3, 3, 2) and attn.shape == (2, 4, 2, 3, 3)
    torch.testing.assert_close(attn.sum((-1, -2)), torch.ones(2, 4, 2, dtype=torch.float64))


def test_padding_mask_zeroes_value_rows():
    mod, query, ref, value_input, ss = random_case(False, seed=7)
    gen = torch.Generator().manual_seed(8)
    mask = torch.rand(value_input.shape[:2], generator=gen) < 0.4
    out = mod(query, ref, value_input, ss, level_start_index(ss), padding_mask=mask)
    torch.testing.assert_close(out, loop_forward(mod, query, ref, value_input, SHAPES, mask))
    # Changing masked rows changes nothing.
    noisy = value_input + 100 * mask[..., None]
    torch.testing.assert_close(out, mod(query, ref, noisy, ss, level_start_index(ss),
                                        padding_mask=mask))


def test_level_start_index():
    ss = torch.tensor([[4, 5], [2, 3], [1, 1]])
    assert level_start_index(ss).tolist() == [0, 20, 26]
    assert level_start_index(ss).dtype == torch.int64


def test_detr_init_places_offsets_on_rings():
    M, L, P = 8, 4, 4
    mod = MSDeformAttn(32, L, M, P, init="detr")
    assert mod.sampling_offsets.weight.abs().sum() == 0
    assert mod.attention_weights.weight.abs().sum() == 0
    assert mod.attention_weights.bias.abs().sum() == 0
    bias = mod.sampling_offsets.bias.view(M, L, P, 2)
    # Head 0 looks right, head 2 down, head 4 left (angles 2*pi*m/8); point p at p+1 px.
    for p in range(P):
        torch.testing.assert_close(bias[0, :, p], torch.tensor([[p + 1.0, 0.0]] * L))
        torch.testing.assert_close(bias[2, :, p], torch.tensor([[0.0, p + 1.0]] * L),
                                   atol=1e-6, rtol=0)
        torch.testing.assert_close(bias[4, :, p], torch.tensor([[-(p + 1.0), 0.0]] * L),
                                   atol=1e-6, rtol=0)
        torch.testing.assert_close(bias[1, :, p], torch.tensor([[p + 1.0, p + 1.0]] * L))
    assert bias.abs().amax(-1).amin() >= 1.0 - 1e-6  # every offset on a square ring
    torch.testing.assert_close(bias, ring_offset_bias(M, L, P))
    # Xavier uniform bound for the projections, zero biases.
    bound = math.sqrt(6 / 64)
    assert mod.value_proj.weight.abs().max() <= bound and mod.value_proj.bias.abs().sum() == 0
    # With zero offset weights, every query's attention is uniform over L*P points.
    ss = torch.tensor([[4, 4], [2, 2], [1, 1], [1, 1]])
    q = torch.randn(1, 3, 32)
    _, loc, attn = mod(q, torch.full((1, 3, L, 2), 0.5), torch.randn(1, 22, 32), ss,
                       level_start_index(ss), return_attention=True)
    torch.testing.assert_close(attn, torch.full_like(attn, 1 / (L * P)))
    torch.testing.assert_close(loc[0, 0, 0, 0, 1], torch.tensor([0.5 + 2 / 4, 0.5]))


def test_default_init_differs_from_detr():
    torch.manual_seed(0)
    mod = MSDeformAttn(16, 2, 2, 2, init="default")
    assert mod.sampling_offsets.weight.abs().sum() > 0
    with pytest.raises(ValueError, match="init"):
        MSDeformAttn(16, 2, 2, 2, init="zeros")


def test_errors_name_the_tensor():
    mod = MSDeformAttn(8, 3, 2, 2)
    ss = torch.tensor(SHAPES)
    lsi = level_start_index(ss)
    q, v = torch.randn(1, 4, 8), torch.randn(1, 28, 8)
    ref = torch.rand(1, 4, 3, 2)
    with pytest.raises(ValueError, match="query"):
        mod(torch.randn(1, 4, 7), ref, v, ss, lsi)
    with pytest.raises(ValueError, match="reference_points"):
        mod(q, torch.rand(1, 4, 2, 2), v, ss, lsi)
    with pytest.raises(ValueError, match="value_input"):
        mod(q, ref, torch.randn(2, 28, 8), ss, lsi)
    with pytest.raises(ValueError, match="padding_mask"):
        mod(q, ref, v, ss, lsi, padding_mask=torch.zeros(1, 28))
    with pytest.raises(ValueError, match="spatial_shapes"):
        mod(q, ref, v, ss.float(), lsi)
    with pytest.raises(ValueError, match="value has S=27"):
        mod(q, ref, v[:, :27], ss, lsi)


def test_autocast_bf16_samples_in_float32():
    torch.manual_seed(0)
    mod = MSDeformAttn(16, 3, 2, 2)
    ss = torch.tensor(SHAPES)
    q, v, ref = torch.randn(1, 5, 16), torch.randn(1, 28, 16), torch.rand(1, 5, 3, 2)
    full = mod(q, ref, v, ss, level_start_index(ss))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, loc, _ = mod(q, ref, v, ss, level_start_index(ss), return_attention=True)
    assert loc.dtype == torch.float32  # locations never rounded to bf16
    torch.testing.assert_close(out.float(), full, atol=0.05, rtol=0.05)
