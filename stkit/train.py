"""Training loops for STERN's two stages (and the no-STN baseline, through the same code).

A *stage* is: which parameters train (the rest are frozen), AdamW with a cosine schedule,
the loss (``STERNLoss``: stage 1 plain BCE, stage 2 BCE + lambda * relu(sx/sy - Sf)),
and a number of epochs. After every epoch the model is scored on the validation split
(ROC AUC); ``last.pt`` is written every epoch and ``best.pt`` whenever validation AUC
improves. Re-running a stage with the same configuration resumes from ``last.pt``
exactly (model, optimiser, schedule, RNG state and data order), and a finished stage is
not trained again. At the end the best weights are loaded back into the model.

What the official code leaves open (frozen layers, optimiser, epochs) is a
``StageConfig`` field here, with documented defaults in ``stkit.recipes``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from .evaluate import predict, roc_auc, window_area_fraction
from .stern import STERN, STERNLoss


@dataclass
class StageConfig:
    """One training stage. ``freeze``: parameter-name prefixes that do not train, e.g. ("stn",)."""

    name: str = "stage1"
    epochs: int = 10
    lr: float = 1e-3
    stn_lr: float | None = None  # learning rate of the STN's parameters (None: same as lr)
    weight_decay: float = 1e-4
    batch_size: int = 32
    aspect_lambda: float = 0.0  # weight of relu(sx/sy - sf); 0 = stage 1
    sf: float = 1.25
    faithful_loss: bool = False
    freeze: tuple[str, ...] = ()
    warmup_epochs: float = 0.0  # linear warm-up before the cosine decay
    hflip: float = 0.5  # probability of a left-right flip per training image (0: no augmentation)
    num_workers: int = 0

    def loss(self) -> STERNLoss:
        return STERNLoss(self.aspect_lambda, self.sf, self.faithful_loss)


@dataclass
class StageResult:
    history: list[dict] = field(default_factory=list)  # one dict per epoch
    best_epoch: int = -1
    best_val_auc: float = float("-inf")
    seconds: float = 0.0


def set_frozen(model: nn.Module, prefixes: tuple[str, ...]) -> list[str]:
    """Freeze every parameter whose name starts with one of ``prefixes``; unfreeze the rest.

    Returns the names of the frozen parameters. A prefix that matches nothing is an error
    (a typo would otherwise silently train everything).
    """
    names = [n for n, _ in model.named_parameters()]
    for p in prefixes:
        if not any(n == p or n.startswith(p + ".") for n in names):
            raise ValueError(f"freeze prefix {p!r} matches no parameter; top-level modules: {sorted({n.split('.')[0] for n in names})}")
    frozen = []
    for n, param in model.named_parameters():
        param.requires_grad_(not any(n == p or n.startswith(p + ".") for p in prefixes))
        if not param.requires_grad:
            frozen.append(n)
    return frozen


def _frozen_modules_eval(model: nn.Module, prefixes: tuple[str, ...]) -> None:
    """Keep frozen sub-modules in eval mode so their BatchNorm statistics stay fixed too."""
    for name, module in model.named_modules():
        if name and any(name == p or name.startswith(p + ".") for p in prefixes):
            module.eval()


def _optimizer(model: nn.Module, cfg: StageConfig) -> torch.optim.Optimizer:
    stn_params = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("stn.")]
    other = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("stn.")]
    stn_lr = cfg.lr if cfg.stn_lr is None else cfg.stn_lr
    groups = [g for g in ({"params": other, "lr": cfg.lr}, {"params": stn_params, "lr": stn_lr}) if g["params"]]
    if not groups:
        raise ValueError(f"stage {cfg.name!r} freezes every parameter: nothing to train")
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def _schedule(opt: torch.optim.Optimizer, cfg: StageConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    total, warm = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1.0, total - warm))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _config_record(model: nn.Module, cfg: StageConfig, seed: int, train_set: Dataset, val_set: Dataset) -> dict:
    """What a checkpoint must agree with to be resumed: stage, seed, model settings, data."""
    n_params = sum(p.numel() for p in model.parameters())
    data = {"n_train": len(train_set), "n_val": len(val_set), "image": list(train_set[0][0].shape)}
    if hasattr(train_set, "csv_path"):
        data["labels"] = str(Path(train_set.csv_path).resolve())
    return {
        "stage": asdict(cfg) | {"freeze": list(cfg.freeze)},
        "seed": seed,
        "model": type(model).__name__,
        "model_config": getattr(model, "config", None),
        "n_params": n_params,
        "data": data,
    }


def _mean_window_area(pred: dict, dataset: Dataset) -> float | None:
    """Mean attended-window area as a fraction of the image (None without an STN)."""
    if pred["window_px"] is None:
        return None
    h, w = dataset[0][0].shape[-2:]
    return float(window_area_fraction(pred["window_px"], h, w).mean())


def train_stage(
    model: STERN,
    train_set: Dataset,
    val_set: Dataset,
    cfg: StageConfig,
    out_dir: str | Path,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> StageResult:
    """Train ``model`` for one stage; resume or skip if ``out_dir`` holds this stage already."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    record = _config_record(model, cfg, seed, train_set, val_set)
    last_path, best_path = out_dir / f"{cfg.name}_last.pt", out_dir / f"{cfg.name}_best.pt"
    device = torch.device(device)
    model.to(device)
    set_frozen(model, cfg.freeze)
    opt = _optimizer(model, cfg)
    loader_len = math.ceil(len(train_set) / cfg.batch_size)
    sched = _schedule(opt, cfg, loader_len)
    loss_fn = cfg.loss()
    result, start_epoch = StageResult(), 0

    if last_path.exists():
        ckpt = torch.load(last_path, map_location=device, weights_only=False)
        if ckpt["config"] != record:
            raise FileExistsError(
                f"{last_path} belongs to a different configuration; refusing to overwrite it. "
                f"Use another output folder or delete it yourself.\n  saved: {ckpt['config']}\n  now:   {record}"
            )
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng_cpu"])
        if ckpt.get("rng_cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["rng_cuda"])
        result = StageResult(**ckpt["result"])
        start_epoch = len(result.history)
    else:
        strays = [p for p in (best_path, out_dir / f"{cfg.name}_history.json") if p.exists()]
        if strays:
            raise FileExistsError(f"{strays[0]} exists without {last_path.name}; refusing to overwrite it. Use another output folder.")
    out_dir.mkdir(parents=True, exist_ok=True)

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        _frozen_modules_eval(model, cfg.freeze)
        # The data order depends only on (seed, epoch), so a resumed run sees the same batches.
        sampler = RandomSampler(train_set, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        loader = DataLoader(train_set, cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers, drop_last=False)
        sums = {"loss": 0.0, "aspect_term": 0.0, "n": 0}
        bar_off = not progress or os.environ.get("TQDM_DISABLE") == "1"  # the report runner sets it: bars clutter HTML
        for images, labels, _ in tqdm(loader, desc=f"{cfg.name} epoch {epoch + 1}/{cfg.epochs}", disable=bar_off, leave=False):
            images, labels = images.to(device), labels.to(device)
            if cfg.hflip > 0:  # drawn from the global RNG, whose state the checkpoint keeps
                flip = torch.rand(len(images)) < cfg.hflip
                images = torch.where(flip.to(device)[:, None, None, None], images.flip(-1), images)
            out = model(images)
            loss = loss_fn(out.logit, labels, out.aspect)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{cfg.name} epoch {epoch + 1}: loss is {loss.item()} (check learning rate / inputs)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            b = len(labels)
            sums["loss"] += loss.item() * b
            if out.aspect is not None:
                sums["aspect_term"] += loss_fn.aspect_term(out.aspect.detach()).item() * b
            sums["n"] += b
        val = predict(model, val_set, device=device)
        val_auc = roc_auc(val["labels"], val["scores"])
        row = {
            "epoch": epoch + 1,
            "train_loss": sums["loss"] / sums["n"],
            "train_aspect_term": sums["aspect_term"] / sums["n"],
            "val_auc": val_auc,
            "val_mean_aspect": float(val["aspect"].mean()) if val["aspect"] is not None else None,
            "val_window_area": _mean_window_area(val, val_set),
            "seconds": time.perf_counter() - t0,
        }
        result.history.append(row)
        result.seconds += row["seconds"]
        if val_auc > result.best_val_auc:
            result.best_val_auc, result.best_epoch = val_auc, epoch + 1
            torch.save({"model": model.state_dict(), "config": record, "epoch": epoch + 1, "val_auc": val_auc}, best_path)
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "config": record,
                "result": asdict(result),
            },
            last_path,
        )
        if progress:
            area = f"  window area {row['val_window_area']:.2f}" if row["val_window_area"] is not None else ""
            print(f"{cfg.name} epoch {epoch + 1:>3}/{cfg.epochs}  loss {row['train_loss']:.4f}  val AUC {val_auc:.4f}{area}  ({row['seconds']:.1f}s)")

    if best_path.exists():
        model.load_state_dict(torch.load(best_path, map_location=device, weights_only=False)["model"])
    for p in model.parameters():  # leave the model trainable for whatever comes next
        p.requires_grad_(True)
    (out_dir / f"{cfg.name}_history.json").write_text(json.dumps(asdict(result), indent=1))
    return result


def train_two_stage(
    model: STERN,
    train_set: Dataset,
    val_set: Dataset,
    stages: list[StageConfig],
    out_dir: str | Path,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[StageResult]:
    """Run the stages in order; each starts from the previous stage's best weights."""
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be unique, got {names}")
    torch.manual_seed(seed)
    return [train_stage(model, train_set, val_set, s, out_dir, seed, device, progress) for s in stages]
