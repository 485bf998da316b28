"""Tests of stkit.stnet.official: the released clip model's weights land strictly in the faithful
STNet (names, shapes, channel 0, aliases, the file's format), and ``stnet eval --official-weights``."""

import argparse
import json
from dataclasses import replace

import pytest
import torch

from stkit.cli import main as cli_main
from stkit.stnet import build_model, evaluate_model, variant_config
from stkit.stnet.experiment import load_splits, recipe, variant_recipe
from stkit.stnet.official import (BACKGROUND_LOGIT, check_official_model, kit_key_to_official,
                                  load_official_state_dict, official_key, official_sizes, to_official_state_dict)

# the released layout's own names (models/clip_output/triple_branch_baseline, --with_box_refine)
RELEASED_NAMES = [
    "backbone.0.body.conv1.weight", "backbone.0.body.bn1.running_var", "backbone.0.body.layer1.0.conv3.weight",
    "backbone.0.body.layer1.0.downsample.1.running_mean", "backbone.0.body.layer4.2.bn3.bias",
    "input_proj.0.0.weight", "input_proj.3.1.bias", "transformer.level_embed", "transformer.reference_points.weight",
    "transformer.encoder.layers.0.self_attn.temporal_sampling_offsets.weight",
    "transformer.encoder.layers.0.self_attn.temporal_attention_weights.bias", "transformer.encoder.layers.0.norm2.weight",
    "transformer.decoder.layers.1.self_attn.in_proj_weight", "transformer.decoder.layers.1.cross_attn.value_proj.bias",
    "transformer.decoder.layers.1.norm3.bias", "query_embed.weight", "class_embed.1.bias", "bbox_embed.1.layers.2.weight",
    "transformer.decoder.bbox_embed.1.layers.2.weight"]


def small(backbone="resnet50"):
    """A faithful model of the released layout, tiny."""
    cfg = variant_config(recipe("smoke").model, "faithful")
    return replace(cfg, backbone=backbone, n_heads=8, dec_layers=2)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """(model, its weights in the released layout with a random channel 0, that file)."""
    torch.manual_seed(0)
    model = build_model(small()).eval()
    state = to_official_state_dict(model)
    for i in range(2):
        state[f"class_embed.{i}.weight"][0] = torch.randn(32)
        state[f"class_embed.{i}.bias"][0] = 3.0
    path = tmp_path_factory.mktemp("official") / "checkpoint.pth"
    torch.save({"model": state, "epoch": 27}, path)
    return model, state, path


def test_every_tensor_lands_where_the_map_says(official):
    model, state, path = official
    assert set(RELEASED_NAMES) <= set(state)
    assert official_sizes(state) == {"backbone": "resnet50", "n_levels": 4, "d_model": 32, "num_queries": 8,
                                     "enc_layers": 1, "dec_layers": 2, "ffn_dim": 64, "num_classes": 2}
    torch.manual_seed(1)
    other = build_model(small()).eval()
    load_official_state_dict(other, path)
    ours = other.state_dict()
    assert {official_key(k) for k in state} == set(ours)
    for k, v in state.items():
        expect = v[1:] if k.startswith("class_embed.") else v  # channel 0 dropped
        assert torch.equal(ours[official_key(k)], expect), k
    frames = torch.rand(1, 3, 3, 64, 64)
    mask = torch.zeros(1, 3, 64, 64, dtype=torch.bool)
    with torch.no_grad():
        a, b = model(frames, mask, n_decode=3), other(frames, mask, n_decode=3)
    assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["boxes"], b["boxes"])


def test_the_inverse_writes_the_release_layout():
    torch.manual_seed(0)
    model = build_model(small("resnet18"))
    state = to_official_state_dict(model)
    assert state["class_embed.0.weight"].shape == (3, 32) and float(state["class_embed.0.bias"][0]) == BACKGROUND_LOGIT
    assert torch.equal(state["bbox_embed.1.layers.0.bias"], state["transformer.decoder.bbox_embed.1.layers.0.bias"])
    assert all(official_key(kit_key_to_official(k)) == k for k in model.state_dict())
    with pytest.raises(KeyError, match="transformer.foo"):
        official_key("transformer.foo.weight")


def _load_error(state, match, cfg=None):
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=match):
        load_official_state_dict(build_model(cfg or small("resnet18")), state)


def test_unknown_missing_misshaped_and_unequal_tensors_are_errors_naming_them():
    torch.manual_seed(0)
    good = to_official_state_dict(build_model(small("resnet18")))
    _load_error({**good, "transformer.decoder.layers.0.extra.weight": torch.zeros(1)}, r"unknown keys.*extra\.weight")
    _load_error({k: v for k, v in good.items() if k != "transformer.decoder.layers.1.norm3.weight"},
                r"missing keys.*transformer\.decoder\.layers\.1\.norm3\.weight")
    key = "transformer.encoder.layers.0.self_attn.temporal_sampling_offsets.weight"
    rows = good[key].shape[0]
    _load_error({**good, key: torch.zeros(7, 32)}, rf"{key}: \(7, 32\) \(official\) vs .*: \({rows}, 32\) \(kit\)")
    alias = "transformer.decoder.bbox_embed.0.layers.1.weight"
    _load_error({**good, alias: good[alias] + 1}, r"bbox_embed\.0\.layers\.1\.weight.*differ from their aliases")
    _load_error({k: v for k, v in good.items() if k != alias}, rf"missing keys.*{alias}")
    _load_error({**good, "class_embed.1.weight": torch.zeros(5, 32)}, r"class_embed\.1\.weight: \(5, 32\)")
    _load_error({**good, "class_embed.0.weight": torch.zeros(5, 32)}, "num_classes: weights 4, model 2")
    _load_error(good, "backbone: weights resnet18, model resnet50", small("resnet50"))
    _load_error(good, "d_model: weights 32, model 64", replace(small("resnet18"), d_model=64))
    load_official_state_dict(build_model(small("resnet18")), {"model": {f"module.{k}": v for k, v in good.items()}})


def test_a_model_other_than_the_released_network_is_refused():
    with pytest.raises(ValueError, match="'faithful' variant"):
        check_official_model(replace(small(), faithful=False))
    with pytest.raises(ValueError, match="multiple of 32"):
        check_official_model(replace(small(), d_model=40))
    with pytest.raises(ValueError, match="one query set"):
        check_official_model(replace(small(), objective="split_queries", num_queries=9, shuffle_frames=1))


def test_a_checkpoint_that_pickles_more_than_tensors_gets_a_fix(tmp_path):
    torch.manual_seed(0)
    model = build_model(small("resnet18"))
    path = tmp_path / "checkpoint0027.pth"
    torch.save({"model": to_official_state_dict(model), "args": argparse.Namespace(lr=5e-5)}, path)
    with pytest.raises(ValueError, match=r"(?s)weights_only=True.*torch\.save\(ck\['model'\]"):
        load_official_state_dict(model, path)
    torch.save({"model": {"a": "not a tensor"}}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="state dict of tensors"):
        load_official_state_dict(model, tmp_path / "bad.pth")


def test_cli_evaluates_official_weights(smoke_buv, tmp_path, capsys):
    r = variant_recipe(recipe("smoke"), "faithful")
    torch.manual_seed(0)
    model = build_model(r.model).eval()
    weights = tmp_path / "official.pth"
    torch.save(to_official_state_dict(model), weights)
    args = ["stnet", "eval", "--data", str(smoke_buv), "--out", str(tmp_path / "run"), "--official-weights", str(weights)]
    assert cli_main(args + ["--size", "smoke"]) == 0
    record = json.loads((tmp_path / "run" / "official_eval.json").read_text())
    assert record["weights"] == str(weights) and record["model_config"]["faithful"]
    printed = json.loads(capsys.readouterr().out)
    assert printed["val_ap50"] == record["metrics"]["val_ap50"]
    direct = evaluate_model(model, load_splits(smoke_buv, r.data)["val"])
    for k in ("val_ap", "val_ap50", "key_ap50", "released_ap50"):
        assert record["metrics"][k] == pytest.approx(direct[k], nan_ok=True), k
    assert cli_main(args + ["--size", "quick"]) == 2  # weights of the smoke size in the quick model
    assert "weights" in capsys.readouterr().err
