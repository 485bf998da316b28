"""Tests of stkit.stnet.transformer: the faithful variant's init (the released xavier draw, no DETR init of attention, the released box-head bias)."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from stkit.stnet import build_model, variant_config
from tests.stnet.test_model import SMOKE


def test_faithful_skips_detr_init():
    torch.manual_seed(0)
    faithful = build_model(replace(SMOKE, faithful=True))
    improved = build_model(SMOKE)
    assert faithful.encoder[0].attn.sampling_offsets.weight.abs().sum() > 0
    assert improved.encoder[0].attn.sampling_offsets.weight.abs().sum() == 0


def test_box_head_bias_follows_the_release_in_faithful_only():
    """Released (box refinement): the heads are deep copies taken before bias[2:] = -2 is set on
    layer 0's head, so every later head starts at bias 0; the kit's default starts every head at -2."""
    cfg = replace(SMOKE, dec_layers=3)
    for faithful in (True, False):
        heads = build_model(replace(cfg, faithful=faithful)).decoder.box_heads
        biases = torch.stack([h.layers[-1].bias.detach() for h in heads])  # (layers, 4)
        later = 0.0 if faithful else -2.0
        assert torch.equal(biases[0], torch.tensor([0.0, 0.0, -2.0, -2.0])), (faithful, biases)
        assert torch.equal(biases[1:], torch.tensor([[0.0, 0.0, later, later]] * 2)), (faithful, biases)
        assert all(h.layers[-1].weight.abs().sum() == 0 for h in heads)


def _transformer_weights(model):
    """The parameters the released reset draws: every >1-dim tensor of the encoder and decoder layers."""
    for prefix, module in (("encoder", model.encoder), ("decoder.layers", model.decoder.layers)):
        for name, p in module.named_parameters():
            if p.dim() > 1:
                yield f"{prefix}.{name}", p.detach()


def test_faithful_init_is_the_released_xavier_draw():
    """Every transformer weight of ``faithful`` is xavier_uniform_ (a KS test against
    U(-a, a), a = sqrt(6 / (fan_in + fan_out))), biases stay PyTorch's draw (no DETR
    ring of offsets), and the default's DETR-initialised point heads fail the same test."""
    from scipy import stats

    cfg = replace(SMOKE, d_model=64, n_heads=4, ffn_dim=128, enc_layers=2, dec_layers=2)
    for seed in (0, 1):
        torch.manual_seed(seed)
        faithful = build_model(variant_config(cfg, "faithful"))
        names = []
        for name, w in _transformer_weights(faithful):
            a = math.sqrt(6.0 / (w.shape[0] + w[0].numel()))
            assert w.abs().max() <= a + 1e-6, name
            p = stats.kstest(w.flatten().numpy(), stats.uniform(-a, 2 * a).cdf).pvalue
            assert p > 1e-4, (name, p)
            names.append(name)
        assert any("temporal_offsets" in n for n in names) and any("self_attn.out_proj" in n for n in names)
        bias = faithful.encoder[0].attn.sampling_offsets.bias.detach()
        bound = 1 / math.sqrt(cfg.d_model)  # nn.Linear's bias draw
        assert bias.abs().max() <= bound and bias.std() > 0.3 * bound
    torch.manual_seed(0)
    improved = build_model(cfg)
    w = improved.encoder[0].attn.sampling_offsets.weight.detach()
    assert w.abs().max() == 0  # DETR: offsets start at the ring bias only
    ffn = improved.encoder[0].ffn.lin1.weight.detach()  # PyTorch's Linear draw, not xavier
    a = math.sqrt(6.0 / sum(ffn.shape))
    assert stats.kstest(ffn.flatten().numpy(), stats.uniform(-a, 2 * a).cdf).pvalue < 1e-4


def test_faithful_reference_boxes_stay_large_on_every_layer():
    """Released box heads: only layer 0 shrinks the box (bias -2); the later heads add 0, so
    every layer's boxes at init keep about sigmoid(-2) = 0.12 of the image."""
    from tests.stnet.test_model import fake_batch

    cfg = replace(SMOKE, dec_layers=4)
    torch.manual_seed(0)
    model = build_model(variant_config(cfg, "faithful")).eval()
    batch = fake_batch(cfg, B=1, pad_second=False)
    with torch.no_grad():
        out = model(batch["frames"], batch["mask"])
    sizes = [float(layer["boxes"][..., 2:].mean()) for layer in [*out["aux"], out]]
    assert all(abs(s - 0.119) < 0.03 for s in sizes), sizes
