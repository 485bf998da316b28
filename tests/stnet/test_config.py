"""Tests of stkit.stnet.config: the STNetConfig defaults are the released network; the recipes built on them."""

from __future__ import annotations

import math

import pytest

from stkit.engine.recipe import RecipeError
from stkit.stnet import STNetConfig, variant_config
from stkit.stnet.experiment import recipe


def test_presets(tmp_path):
    """The STNetConfig defaults are the released network, the paper recipe uses them as they
    are; the quick recipe is the CPU detector."""
    paper_recipe = recipe("paper")
    paper, stage = paper_recipe.model, paper_recipe.stages[0]
    assert paper == STNetConfig()
    assert (paper.backbone, paper.pretrained, paper.n_frames, paper.num_queries, paper.enc_layers,
            paper.dec_layers, paper.d_model, paper.n_heads, paper.ffn_dim, paper.dropout) == (
        "resnet50", True, 6, 300, 6, 6, 256, 8, 1024, 0.1)
    assert (paper.enc_points, paper.enc_temporal_points, paper.dec_points, paper.dec_temporal_points) == (4, 2, 4, 4)
    assert (paper.cls_weight, paper.l1_weight, paper.giou_weight) == (2, 5, 2)
    assert math.isclose(stage.lr * stage.lr_backbone_mult, 2e-5) and stage.clip_grad == 0.1
    assert (stage.epochs, stage.lr_drop_epoch, stage.batch_size) == (50, 40, 1)
    assert (paper_recipe.data.n_support, paper_recipe.data.n_global) == (paper.n_support, paper.n_global)
    quick = recipe("quick").model
    assert (quick.backbone, quick.d_model, quick.n_heads, quick.n_frames, quick.num_queries) == (
        "resnet18", 64, 4, 4, 16)
    assert variant_config(quick, "baseline").temporal is False
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: {kind: stnet, base: quick}\nmodel: {n_frames: 5}\n")
    with pytest.raises(RecipeError, match=r"unknown field\(s\) \['n_frames'\]"):
        recipe(bad)
    with pytest.raises(ValueError, match="no stnet recipe 'huge'"):
        recipe("huge")


def test_faithful_variant_is_the_release_in_model_and_data():
    """faithful: the release's ImageNet weights (V1), the clip engine's objective, the
    last-layer loss, and the data read as released; the default departs in each."""
    from dataclasses import replace

    from stkit.stnet.experiment import variant_recipe

    r = recipe("paper")
    faithful, default = variant_recipe(r, "faithful"), variant_recipe(r, "stnet")
    assert (faithful.model.imagenet_weights, default.model.imagenet_weights) == ("IMAGENET1K_V1", "IMAGENET1K_V2")
    assert (faithful.model.objective, default.model.objective) == ("three_frames", "key_frame")
    assert faithful.model.aux_loss is False and default.model.aux_loss is True
    assert faithful.data != default.data == r.data
    assert (faithful.data.color, faithful.data.negative_boxes) == ("rgb", "drop")
    assert (default.data.color, default.data.negative_boxes) == ("grey", "flip")
    assert replace(r.model, pretrained=False).imagenet_weights is None
    with pytest.raises(ValueError, match="objective"):
        STNetConfig(objective="every_frame")
