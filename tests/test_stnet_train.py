"""STNet on the generic trainer: learning rates, frozen parts, exact resume, foreign
checkpoints refused, weights-only checkpoints, the command line, and 2 gloo processes = 1."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from data_prep.synthetic_buv import ensure_buv
from stkit import checkpoint
from stkit.stnet import build_stnet
from stkit.stnet.experiment import Recipe, load_clip_sets, load_trained, stnet_recipe, train_variant
from stkit.stnet.train import STNetTask

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def buv(tmp_path_factory):
    return ensure_buv(tmp_path_factory.mktemp("buv"), "smoke", seed=0)


def tiny(epochs: int = 2, **model) -> Recipe:
    """Smoke STNet with a random global frame and flips (so resume must restore the RNG),
    on every third key frame (a few steps per epoch)."""
    r = stnet_recipe("smoke", n_global=1, **model)
    return Recipe(r.model, replace(r.stage, epochs=epochs, lr_drop_epoch=1), replace(r.clip, key_stride=3))


def test_optimizer_groups_and_frozen_stem(buv):
    r = tiny()
    sets = load_clip_sets(buv, r.clip)
    model = build_stnet(r.model)
    assert "pyramid.body.stem" in r.stage.freeze and "pyramid.body.layer1" in r.stage.freeze
    task = STNetTask(sets["train"], sets["val"], r.model)
    opt = task.optimizer(model, replace(r.stage, lr=1e-3))
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["main"] == 1e-3 and lrs["linear_proj"] == pytest.approx(1e-3 * r.model.lr_linear_proj_mult)
    assert lrs["backbone"] == pytest.approx(1e-3 * r.model.lr_backbone_mult)
    assert opt.defaults["weight_decay"] == r.stage.weight_decay and r.stage.clip_grad == 0.1
    with pytest.raises(ValueError, match="clips of 3 frames"):  # smoke model 3 frames, clips of 4
        STNetTask(sets["train"], sets["val"], replace(r.model, n_global=0))


def test_training_keeps_stem_fixed_and_moves_the_rest(buv, tmp_path):
    r = tiny(epochs=1)
    torch.manual_seed(0)
    before = build_stnet(r.model).state_dict()
    model, res = train_variant(r, "stnet", load_clip_sets(buv, r.clip), tmp_path, progress=False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in after if k.startswith(("pyramid.body.stem", "pyramid.body.layer1")))
    moved = [k for k in after if not torch.equal(before[k], after[k])]
    assert any(k.startswith("pyramid.body.layer4") for k in moved) and any(k.startswith("decoder") for k in moved)
    assert res.history[0]["train_loss"] > 0 and 0 <= res.history[0]["val_ap50"] <= 1


def test_resume_is_exact_and_checkpoints_load_weights_only(buv, tmp_path, monkeypatch):
    r = tiny(epochs=2)
    sets = load_clip_sets(buv, r.clip)
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


def test_foreign_checkpoint_is_refused_and_left_untouched(buv, tmp_path):
    r = tiny(epochs=1)
    sets = load_clip_sets(buv, r.clip)
    train_variant(r, "stnet", sets, tmp_path, progress=False)
    folder = tmp_path / "stnet"
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    other = tiny(epochs=1, d_model=16, n_heads=2)
    with pytest.raises(checkpoint.CheckpointMismatch, match="d_model"):
        train_variant(other, "stnet", sets, tmp_path, progress=False)
    with pytest.raises(checkpoint.CheckpointMismatch, match="d_model"):
        load_trained(other, "stnet", tmp_path)
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before


def test_boxes_outside_the_image_are_a_clear_error(buv):
    r = tiny()
    sets = load_clip_sets(buv, r.clip)
    task = STNetTask(sets["train"], sets["val"], r.model)
    batch = next(iter(task.batches(r.stage, 0, 0)))
    h, w = (int(v) for v in batch["targets"][0][0]["size"])
    batch["targets"][0][0]["boxes"] = torch.tensor([[10.0, 10.0, w + 30.0, 20.0]])
    with pytest.raises(ValueError, match="outside the image"):
        task.loss(build_stnet(r.model), batch, r.stage)


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "stkit", "stnet", *args], capture_output=True, text=True,
                          env=env or {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}, timeout=600)


def test_cli_train_then_eval(buv, tmp_path):
    out = _cli("train", "--data", str(buv), "--out", str(tmp_path), "--size", "smoke", "--variants", "baseline")
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"val_ap50", "key_ap50", "fps_shuffle", "fps_per_frame"} <= set(results["baseline"])
    ev = _cli("eval", "--data", str(buv), "--out", str(tmp_path), "--size", "smoke", "--variants", "baseline")
    assert ev.returncode == 0, ev.stderr[-3000:]
    again = json.loads((tmp_path / "eval.json").read_text())["baseline"]
    assert again["val_ap50"] == pytest.approx(results["baseline"]["val_ap50"])  # same weights, same frames
    bad = _cli("eval", "--data", str(buv), "--out", str(tmp_path), "--size", "quick", "--variants", "baseline")
    assert bad.returncode == 2 and "different configuration" in bad.stderr


def _ddp(buv: Path, out: Path, nproc: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STKIT_OPS_BACKEND": "reference"}
    worker = [str(HERE / "ddp_stnet_worker.py"), str(buv), str(out), "4"]
    launch = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                  "--nproc_per_node", str(nproc)]
    res = subprocess.run(launch + worker, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    return torch.load(out / "final.pt", weights_only=True)


def test_two_gloo_processes_match_one_process(buv, tmp_path):
    one = _ddp(buv, tmp_path / "one", 1)
    two = _ddp(buv, tmp_path / "two", 2)
    torch.manual_seed(0)
    init = build_stnet(stnet_recipe("smoke").model).state_dict()
    moved = 0
    for k in one:
        assert torch.allclose(one[k], two[k], rtol=1e-4, atol=1e-6), k  # moves are ~1e-4..5e-4
        moved += int(not torch.equal(one[k], init[k]))
    assert moved > 20  # they trained, and agree
