"""Tests of stkit.stern.task: stage training, freezing, exact resume, refused checkpoints, the window search term."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

import stkit.stern.task as train_mod
from stkit.stern import STERN, STERNConfig
from stkit.stern.config import STNConfig
from stkit.engine.trainer import set_frozen
from stkit.stern.task import StageConfig, train_stages


TINY = STERNConfig("small", in_channels=1, backbone_width=8, glimpse_size=(32, 32),
                   stn=STNConfig(loc_input_size=80, loc_pool=1, loc_width=4))


def train_stage(model, data, val, cfg, out_dir, **kw):
    """One stage through the kit's only stage runner."""
    return train_stages(model, data, val, [cfg], out_dir, **kw)[0]


class SquareData(Dataset):
    """Label 1 = a bright square somewhere in noise: learnable in a few epochs."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 1, 80, 80, generator=g) * 0.3
        self.labels = (torch.arange(n) % 2).float()
        for i in range(n):
            if self.labels[i]:
                y, x = torch.randint(10, 60, (2,), generator=g).tolist()
                self.images[i, :, y : y + 10, x : x + 10] += 0.6

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i], i


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return STERN(TINY)


CFG = StageConfig("s1", epochs=2, lr=3e-3, batch_size=16)


def test_stage_learns_and_keeps_best(tmp_path):
    data, val = SquareData(96, 0), SquareData(48, 1)
    model = tiny_model()
    res = train_stage(model, data, val, replace(CFG, epochs=6), tmp_path, progress=False)
    assert len(res.history) == 6 and res.best_score == max(r["val_auc"] for r in res.history)
    assert res.best_score > 0.9
    assert (tmp_path / "s1_best.pt").exists() and (tmp_path / "s1_history.json").exists()


@pytest.mark.parametrize("search_sigma", [0.0, 0.1], ids=["sampler", "search"])
def test_resume_is_exact(tmp_path, monkeypatch, search_sigma):
    # with the search on, its random window perturbations must also replay exactly
    cfg = replace(CFG, search_sigma=search_sigma)
    data, val = SquareData(48, 0), SquareData(24, 1)
    full = tiny_model()
    train_stage(full, data, val, cfg, tmp_path / "full", progress=False)
    last_full = torch.load(tmp_path / "full" / "s1_last.pt", weights_only=True)

    calls = {"n": 0}
    real = train_mod.roc_auc

    def crash_in_second_epoch(*a):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(train_mod, "roc_auc", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_stage(tiny_model(), data, val, cfg, tmp_path / "cut", progress=False)
    monkeypatch.setattr(train_mod, "roc_auc", real)
    res = train_stage(tiny_model(), data, val, cfg, tmp_path / "cut", progress=False)
    last_cut = torch.load(tmp_path / "cut" / "s1_last.pt", weights_only=True)
    assert len(res.history) == 2
    for k, v in last_full["model"].items():
        assert torch.equal(v, last_cut["model"][k]), k


def test_finished_stage_is_not_retrained(tmp_path, monkeypatch):
    data, val = SquareData(32, 0), SquareData(16, 1)
    first = train_stage(tiny_model(), data, val, CFG, tmp_path, progress=False)
    monkeypatch.setattr(train_mod.torch.optim.AdamW, "step", lambda *a, **k: pytest.fail("trained again"))
    again = train_stage(tiny_model(), data, val, CFG, tmp_path, progress=False)
    assert again.history == first.history


def test_foreign_checkpoint_is_not_overwritten(tmp_path):
    data, val = SquareData(32, 0), SquareData(16, 1)
    train_stage(tiny_model(), data, val, CFG, tmp_path, progress=False)
    before = (tmp_path / "s1_last.pt").read_bytes()
    with pytest.raises(FileExistsError, match="s1_last.pt"):
        train_stage(tiny_model(), data, val, replace(CFG, lr=1e-4), tmp_path, progress=False)
    assert (tmp_path / "s1_last.pt").read_bytes() == before


def test_freeze_keeps_parameters_fixed(tmp_path):
    data, val = SquareData(32, 0), SquareData(16, 1)
    model = tiny_model()
    stn_before = {k: v.clone() for k, v in model.stn.state_dict().items()}
    cls_before = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    train_stage(model, data, val, replace(CFG, epochs=1, freeze=("stn",)), tmp_path, progress=False)
    assert all(torch.equal(v, model.stn.state_dict()[k]) for k, v in stn_before.items())
    assert not all(torch.equal(v, model.classifier.state_dict()[k]) for k, v in cls_before.items())
    with pytest.raises(ValueError, match="matches no parameter"):
        set_frozen(model, ("stm",))


def test_stage2_moves_aspect_below_threshold(tmp_path):
    # Start from the faithful init (sx/sy = 10): the hinge alone must pull the aspect down.
    data, val = SquareData(64, 0), SquareData(32, 1)
    torch.manual_seed(0)
    model = STERN(replace(TINY, stn=replace(TINY.stn, parameterisation="faithful")))
    cfg = StageConfig("s2", epochs=4, lr=3e-3, batch_size=16, aspect_lambda=1.0, faithful_loss=True)
    res = train_stage(model, data, val, cfg, tmp_path, progress=False)
    aspects = [r["val_mean_aspect"] for r in res.history]
    assert 10.0 > aspects[0] > cfg.sf  # moving, not there after one epoch
    assert aspects[-1] < cfg.sf, aspects  # the hinge brought the window's width/height below Sf


def test_changed_model_settings_are_not_resumed(tmp_path):
    # Settings without parameters of their own (here the STN's start scale) still count.
    data, val = SquareData(32, 0), SquareData(16, 1)
    train_stage(tiny_model(), data, val, CFG, tmp_path, progress=False)
    torch.manual_seed(0)
    other = STERN(replace(TINY, stn=replace(TINY.stn, init_scale=0.6)))
    with pytest.raises(FileExistsError, match="different configuration"):
        train_stage(other, data, val, CFG, tmp_path, progress=False)


def test_stray_best_checkpoint_is_not_overwritten(tmp_path):
    data, val = SquareData(32, 0), SquareData(16, 1)
    (tmp_path / "s1_best.pt").write_bytes(b"someone else's")
    with pytest.raises(FileExistsError, match="s1_best.pt"):
        train_stage(tiny_model(), data, val, CFG, tmp_path, progress=False)
    assert (tmp_path / "s1_best.pt").read_bytes() == b"someone else's"


def test_every_checkpoint_loads_with_weights_only(tmp_path):
    # A checkpoint is something users download and share: no pickled objects in it.
    from stkit.engine import checkpoint

    data, val = SquareData(32, 0), SquareData(16, 1)
    train_stages(tiny_model(), data, val, [CFG, replace(CFG, name="s2", aspect_lambda=1.0)], tmp_path, progress=False)
    written = sorted(tmp_path.glob("*.pt"))
    assert [p.name for p in written] == ["s1_best.pt", "s1_last.pt", "s2_best.pt", "s2_last.pt"]
    for path in written:
        ckpt = torch.load(path, weights_only=True)
        assert ckpt["record"]["model_config"] == checkpoint.plain(TINY.to_dict())  # a record is plain: tuples are lists
    assert not list(tmp_path.glob(".*partial"))  # nothing half-written left behind
    with pytest.raises(TypeError, match=r"checkpoint\['bad'\] is a StageConfig"):
        checkpoint.save(tmp_path / "x.pt", {"record": {}, "bad": CFG})
    assert not (tmp_path / "x.pt").exists()


def test_corrupt_checkpoint_error_names_the_file(tmp_path):
    data, val = SquareData(32, 0), SquareData(16, 1)
    (tmp_path / "s1_last.pt").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"s1_last.pt: not a readable stkit checkpoint"):
        train_stage(tiny_model(), data, val, CFG, tmp_path, progress=False)


def test_step_schedule_drops_once():
    from stkit.engine.trainer import Stage, schedule

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = schedule(opt, Stage(epochs=5, schedule="step", lr_drop_epoch=3), steps_per_epoch=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == [1.0] * 6 + [0.1] * 4


def test_localisation_net_has_its_own_learning_rate():
    model = tiny_model()
    opt = train_mod.STERNTask(SquareData(8, 0), SquareData(8, 1)).optimizer(model, replace(CFG, lr=1e-3, stn_lr=1e-4))
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in opt.param_groups}
    assert by_lr[1e-4] == {id(p) for p in model.stn.parameters()}
    assert by_lr[1e-3] == {id(p) for p in model.classifier.parameters()}


def test_tracking_windows_changes_no_weight(tmp_path):
    data, val = SquareData(32, 0), SquareData(16, 1)
    a, b = tiny_model(), tiny_model()
    track = val.images[:3]
    torch.manual_seed(5)  # the flips draw from the global generator: the same state for both runs
    plain = train_stage(a, data, val, replace(CFG, epochs=2), tmp_path / "a", progress=False)
    torch.manual_seed(5)
    tracked = train_stage(b, data, val, replace(CFG, epochs=2), tmp_path / "b", progress=False, track=track)
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), n
    assert [r["val_auc"] for r in plain.history] == [r["val_auc"] for r in tracked.history]
    wins = np.asarray([r["track_windows"] for r in tracked.history])  # (epochs, 3, 4)
    assert wins.shape == (2, 3, 4)
    want = train_mod.track_windows(b, track)  # the best epoch's weights are loaded back at the end
    assert np.allclose(wins[tracked.best_epoch - 1], want, atol=1e-4)


def test_stage_ends_once_the_score_is_reached_and_stays_ended(tmp_path):
    data, val = SquareData(96, 0), SquareData(48, 1)
    full = train_stage(tiny_model(), data, val, replace(CFG, epochs=8), tmp_path / "full", progress=False)
    scores = [r["val_auc"] for r in full.history]
    target = scores[2]  # reached at the third epoch at the latest
    first = next(k for k, v in enumerate(scores) if v >= target) + 1
    cfg = replace(CFG, epochs=8, until_score=target)
    early = train_stage(tiny_model(), data, val, cfg, tmp_path / "early", progress=False)
    assert len(early.history) == first and early.history[-1]["val_auc"] >= target
    assert [r["val_auc"] for r in early.history] == scores[:first]  # the same epochs as the full run
    again = train_stage(tiny_model(), data, val, cfg, tmp_path / "early", progress=False)  # resumes: nothing to do
    assert len(again.history) == first


def _smoke_batch(n=8):
    torch.manual_seed(0)
    return torch.rand(n, 1, 128, 128), torch.tensor([0, 1] * (n // 2)), torch.arange(n)


def _localiser_grad(model, stage):
    from stkit.stern.task import STERNTask

    model.zero_grad()
    loss, _, _ = STERNTask(None, None).loss(model, _smoke_batch(), stage)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.stn.loc.regressor.parameters()])


def test_search_stage_trains_the_localiser_from_the_search_alone():
    from stkit.stern import experiment
    from stkit.stern.task import StageConfig

    model = experiment.build(experiment.recipe("smoke"), "bounded", 0)
    plain = _localiser_grad(model, StageConfig(hflip=0.0))
    assert plain.abs().max() > 0  # the sampler's gradient reaches the localiser
    searched = _localiser_grad(model, StageConfig(hflip=0.0, search_sigma=0.1))
    assert searched.abs().max() > 0 and not torch.allclose(searched, plain)
    # with the window detached and no search term, nothing reaches the localiser
    model.zero_grad()
    images, labels, _ = _smoke_batch()
    out = model(images, detach_window=True)
    F.binary_cross_entropy_with_logits(out.logit, labels.float()).backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.stn.loc.regressor.parameters())
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in model.classifier.parameters())
