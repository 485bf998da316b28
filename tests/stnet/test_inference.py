"""Tests of stkit.stnet.inference: encoder feature shuffle vs per-frame decoding, the decoder's attention figures."""

from __future__ import annotations

import math

import torch

from stkit.stnet import build_model, predict_clip
from stkit.stnet.experiment import recipe
from stkit.stnet.inference import shuffle_items
from tests.stnet.test_evaluate import FakeVideos
from tests.stnet.test_model import fake_batch


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


def test_figures_render(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from stkit.stnet.evaluate import single_batch
    from stkit.stnet.inference import decoder_attention, predict_clip
    from stkit.viz.stnet import attention_per_frame, plot_clip_detections, plot_shuffle_speed, render_query_points

    torch.manual_seed(0)
    model = build_model(recipe("smoke").model).eval()
    item = FakeVideos()[2]
    batch = single_batch(item)
    layers = decoder_attention(model, batch, current=1)
    per = attention_per_frame({k: v[0] for k, v in layers[-1]["attention"].items()}, 1, 3)
    assert math.isclose(sum(float(w.sum()) for _, w in per), model.config.n_heads, rel_tol=1e-5)
    assert all(loc.shape[-1] == 2 for loc, _ in per)
    fig = render_query_points(item["frames"], layers, query=0, head=None, current=1)
    assert len(fig.axes) == 4  # 3 frames and a colour bar
    render_query_points(item["frames"], layers, query=1, layer=0, head=1)
    preds = predict_clip(model, batch, "shuffle")
    plot_clip_detections(item["frames"], item["targets"], preds, score_threshold=0.0)
    plot_shuffle_speed({"shuffle": 3.0, "per frame": 1.0}).savefig(tmp_path / "speed.png")
