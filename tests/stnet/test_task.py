"""Tests of stkit.stnet.task: learning rates, frozen parts, exact resume, refused checkpoints, 2 gloo processes = 1."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from stkit.engine import checkpoint
from stkit.engine.recipe import Recipe
from stkit.stnet import build_model
from stkit.stnet.experiment import load_splits, load_trained, recipe, train_variant
from stkit.stnet.task import STNetTask, param_groups


HERE = Path(__file__).resolve().parent


def tiny(epochs: int = 2, **model) -> Recipe:
    """Smoke STNet with a random global frame and flips (so resume must restore the RNG),
    on every third key frame (a few steps per epoch)."""
    r = recipe("smoke")
    return replace(r, model=replace(r.model, n_global=1, **model),
                   stages=[replace(r.stages[0], epochs=epochs, lr_drop_epoch=1)],
                   data=replace(r.data, n_global=1, key_stride=3))


def test_optimizer_groups_and_frozen_stem(smoke_buv):
    r = tiny()
    sets = load_splits(smoke_buv, r.data)
    model = build_model(r.model)
    assert "pyramid.body.stem" in r.stages[0].freeze and "pyramid.body.layer1" in r.stages[0].freeze
    task = STNetTask(sets["train"], sets["val"], r.model)
    opt = task.optimizer(model, replace(r.stages[0], lr=1e-3))
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["main"] == 1e-3 and lrs["linear_proj"] == pytest.approx(1e-3 * r.stages[0].lr_linear_proj_mult)
    assert lrs["backbone"] == pytest.approx(1e-3 * r.stages[0].lr_backbone_mult)
    assert opt.defaults["weight_decay"] == r.stages[0].weight_decay and r.stages[0].clip_grad == 0.1
    with pytest.raises(ValueError, match="clips of 3 frames"):  # smoke model 3 frames, clips of 4
        STNetTask(sets["train"], sets["val"], replace(r.model, n_global=0))


def test_param_groups(smoke):
    cfg, model = smoke
    stage = replace(recipe("smoke").stages[0], lr_backbone_mult=0.5)
    groups = {g["name"]: g for g in param_groups(model, stage)}
    assert groups["backbone"]["lr"] == stage.lr * 0.5 and groups["linear_proj"]["lr"] == stage.lr * 0.1
    named = {id(p): n for n, p in model.named_parameters()}
    assert all(named[id(p)].startswith("pyramid.body.") for p in groups["backbone"]["params"])
    assert {named[id(p)].split(".")[-2] for p in groups["linear_proj"]["params"]} >= {
        "sampling_offsets", "temporal_offsets", "reference_points"}
    total = sum(len(g["params"]) for g in groups.values())
    assert total == sum(p.requires_grad for p in model.parameters())
    frozen = param_groups(model, replace(stage, lr_backbone_mult=0.0))
    assert "backbone" not in {g["name"] for g in frozen}


def test_training_keeps_stem_fixed_and_moves_the_rest(smoke_buv, tmp_path):
    r = tiny(epochs=1)
    torch.manual_seed(0)
    before = build_model(r.model).state_dict()
    model, res = train_variant(r, "stnet", load_splits(smoke_buv, r.data), tmp_path, progress=False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in after if k.startswith(("pyramid.body.stem", "pyramid.body.layer1")))
    moved = [k for k in after if not torch.equal(before[k], after[k])]
    assert any(k.startswith("pyramid.body.layer4") for k in moved) and any(k.startswith("decoder") for k in moved)
    assert res.history[0]["train_loss"] > 0 and 0 <= res.history[0]["val_ap50"] <= 1


def test_resume_is_exact_and_checkpoints_load_weights_only(smoke_buv, tmp_path, monkeypatch):
    r = tiny(epochs=2)
    sets = load_splits(smoke_buv, r.data)
    train_variant(r, "stnet", sets, tmp_path / "full", progress=False)
    calls = {"n": 0}
    real = STNetTask.validate

    def crash_in_second_epoch(self, model):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, model)

    monkeypatch.setattr(STNetTask, "validate", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_variant(r, "stnet", sets, tmp_path / "cut", progress=False)
    monkeypatch.setattr(STNetTask, "validate", real)
    _, res = train_variant(r, "stnet", sets, tmp_path / "cut", progress=False)
    assert len(res.history) == 2
    full = torch.load(tmp_path / "full" / "stnet" / "train_last.pt", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "stnet" / "train_last.pt", weights_only=True)
    for k, v in full["model"].items():
        assert torch.equal(v, cut["model"][k]), k
    for k, v in full["optimizer"]["state"].items():  # Adam moments too
        assert all(torch.equal(a, b) for a, b in zip(v.values(), cut["optimizer"]["state"][k].values()))
    files = sorted((tmp_path / "cut" / "stnet").glob("*.pt"))
    assert [f.name for f in files] == ["train_best.pt", "train_last.pt"]
    for f in files:
        torch.load(f, weights_only=True)


def test_foreign_checkpoint_is_refused_and_left_untouched(smoke_buv, tmp_path):
    r = tiny(epochs=1)
    sets = load_splits(smoke_buv, r.data)
    train_variant(r, "stnet", sets, tmp_path, progress=False)
    folder = tmp_path / "stnet"
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    other = tiny(epochs=1, d_model=16, n_heads=2)
    with pytest.raises(checkpoint.CheckpointMismatch, match="d_model"):
        train_variant(other, "stnet", sets, tmp_path, progress=False)
    with pytest.raises(checkpoint.CheckpointMismatch, match="d_model"):
        load_trained(other, "stnet", tmp_path)
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before


def test_boxes_outside_the_image_are_a_clear_error(smoke_buv):
    r = tiny()
    sets = load_splits(smoke_buv, r.data)
    task = STNetTask(sets["train"], sets["val"], r.model)
    batch = next(iter(task.batches(r.stages[0], 0, 0)))
    h, w = (int(v) for v in batch["targets"][0][0]["size"])
    batch["targets"][0][0]["boxes"] = torch.tensor([[10.0, 10.0, w + 30.0, 20.0]])
    with pytest.raises(ValueError, match="outside the image"):
        task.loss(build_model(r.model), batch, r.stages[0])


def _ddp(buv: Path, out: Path, nproc: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STKIT_OPS_BACKEND": "reference"}
    worker = [str(HERE / "ddp_worker.py"), str(buv), str(out), "4"]
    launch = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                  "--nproc_per_node", str(nproc)]
    res = subprocess.run(launch + worker, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    return torch.load(out / "final.pt", weights_only=True)


def test_two_gloo_processes_match_one_process(smoke_buv, tmp_path):
    one = _ddp(smoke_buv, tmp_path / "one", 1)
    two = _ddp(smoke_buv, tmp_path / "two", 2)
    torch.manual_seed(0)
    init = build_model(recipe("smoke").model).state_dict()
    moved = 0
    for k in one:
        assert torch.allclose(one[k], two[k], rtol=1e-4, atol=1e-6), k  # moves are ~1e-4..5e-4
        moved += int(not torch.equal(one[k], init[k]))
    assert moved > 20  # they trained, and agree
