"""A training stage, for any model of the kit: epochs, checkpoints, exact resume, best model.

    run_stage(model, task, stage, out_dir, seed)   # one stage; resumes or skips if done
    run_stages(model, task, stages, out_dir, seed) # several, each from the previous best

What is generic lives here: freezing, the learning-rate schedule, the epoch loop with
gradient clipping, data parallelism over torchrun processes (``stkit.engine.distributed``),
validation after every epoch, ``<stage>_last.pt`` every epoch and ``<stage>_best.pt``
whenever the validation score improves (``stkit.engine.checkpoint`` format), exact resume
(model, optimiser, schedule, RNG state; the data order depends only on (seed, epoch)),
refusing a checkpoint of another configuration, and ending a stage early once its
validation score reaches ``Stage.until_score`` (e.g. a warm-up that lasts until the
classifier works).

What is model-specific comes from a *task*: the protocol :class:`stkit.engine.task.Task`
(STERN: ``stkit.stern.task.STERNTask``; STNet: ``stkit.stnet.task.STNetTask``).

This module does not build models, read data or compute metrics.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from tqdm.auto import tqdm

from . import checkpoint
from .distributed import World, all_mean, barrier, single, unwrap, wrap
from .task import Task


@dataclass
class Stage:
    """Settings every training stage has; a task's own stage type adds fields."""

    name: str = "stage1"  # checkpoint file prefix; unique within a run
    epochs: int = 10  # passes over the training data
    lr: float = 1e-3  # base learning rate (param groups may scale it)
    weight_decay: float = 1e-4  # AdamW weight decay
    batch_size: int = 32  # items per optimiser step, over all processes (each takes its share)
    schedule: str = "cosine"  # "cosine" (after warm-up) or "step" (x lr_drop_factor at lr_drop_epoch)
    warmup_epochs: float = 0.0  # linear warm-up, in epochs, before the cosine decay
    lr_drop_epoch: int | None = None  # "step" schedule: epoch after which the rate drops
    lr_drop_factor: float = 0.1  # "step" schedule: multiplier at the drop
    clip_grad: float | None = None  # max global gradient norm (None: no clipping)
    freeze: tuple[str, ...] = ()  # parameter-name prefixes that do not train, e.g. ("stn",)
    until_score: float | None = None  # end the stage early once an epoch's validation score reaches this
    precision: str = "fp32"  # "fp32", or "bf16": forward and loss under bfloat16 autocast (GPUs)
    num_workers: int = 0  # DataLoader worker processes


@dataclass
class StageResult:
    history: list[dict] = field(default_factory=list)  # one row per epoch
    best_epoch: int = -1  # epoch (1-based) of the best validation score
    best_score: float = float("-inf")  # that score
    seconds: float = 0.0  # training + validation time of this stage


def _matches(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def set_frozen(model: nn.Module, prefixes: tuple[str, ...]) -> list[str]:
    """Freeze every parameter whose name starts with one of ``prefixes``; unfreeze the rest.

    Returns the frozen names. A prefix that matches nothing is an error (a typo would
    otherwise silently train everything).
    """
    names = [n for n, _ in model.named_parameters()]
    for p in prefixes:
        if not any(_matches(n, [p]) for n in names):
            raise ValueError(f"freeze prefix {p!r} matches no parameter; top-level modules: {sorted({n.split('.')[0] for n in names})}")
    for n, param in model.named_parameters():
        param.requires_grad_(not _matches(n, prefixes))
    return [n for n, p in model.named_parameters() if not p.requires_grad]


def _frozen_modules_eval(model: nn.Module, prefixes: tuple[str, ...]) -> None:
    """Keep frozen sub-modules in eval mode so their BatchNorm statistics stay fixed too."""
    for name, module in model.named_modules():
        if name and _matches(name, prefixes):
            module.eval()


def schedule(opt: torch.optim.Optimizer, stage: Stage, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step learning-rate factor: warm-up + cosine, or a step drop."""
    total, warm = stage.epochs * steps_per_epoch, stage.warmup_epochs * steps_per_epoch
    if stage.precision not in ("fp32", "bf16"):
        raise ValueError(f"stage {stage.name!r}: precision must be 'fp32' or 'bf16', got {stage.precision!r}")
    if stage.schedule not in ("cosine", "step"):
        raise ValueError(f"stage {stage.name!r}: schedule must be 'cosine' or 'step', got {stage.schedule!r}")

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if stage.schedule == "step":
            drop = stage.lr_drop_epoch is not None and step >= stage.lr_drop_epoch * steps_per_epoch
            return stage.lr_drop_factor if drop else 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1.0, total - warm))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


class _Paths:
    def __init__(self, out_dir: Path, name: str):
        self.last, self.best, self.history = out_dir / f"{name}_last.pt", out_dir / f"{name}_best.pt", out_dir / f"{name}_history.json"


def _resume(paths: _Paths, record: dict, model, opt, sched, device) -> StageResult:
    """Restore a stage from ``last.pt`` (or start one); refuse checkpoints of another run."""
    if not paths.last.exists():
        strays = [p for p in (paths.best, paths.history) if p.exists()]
        if strays:
            raise FileExistsError(f"{strays[0]} exists without {paths.last.name}; refusing to overwrite it. Use another output folder.")
        return StageResult()
    ckpt = checkpoint.load(paths.last, device)
    checkpoint.check_record(paths.last, ckpt["record"], record)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    checkpoint.set_rng_state(ckpt["rng"])
    return StageResult(**ckpt["result"])


def _train_epoch(net, task, stage: Stage, opt, sched, epoch: int, seed: int, world: World, progress: bool) -> dict:
    """One pass over this process's share of the training batches; mean of each loss part
    (over all processes)."""
    net.train()
    _frozen_modules_eval(unwrap(net), stage.freeze)
    sums: dict[str, float] = {}
    n = 0
    bar_off = not progress or not world.main or os.environ.get("TQDM_DISABLE") == "1"  # the report runner sets it
    params = [p for p in net.parameters() if p.requires_grad]
    batches = task.batches(stage, epoch, seed, world)
    for batch in tqdm(batches, desc=f"{stage.name} epoch {epoch + 1}/{stage.epochs}", disable=bar_off, leave=False):
        with torch.autocast(world.device.type, dtype=torch.bfloat16, enabled=stage.precision == "bf16"):
            loss, parts, size = task.loss(net, batch, stage)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{stage.name} epoch {epoch + 1}: loss is {loss.item()} (check learning rate / inputs)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if stage.clip_grad:
            torch.nn.utils.clip_grad_norm_(params, stage.clip_grad)
        opt.step()
        sched.step()
        for k, v in {"loss": loss.item(), **parts}.items():
            sums[k] = sums.get(k, 0.0) + v * size
        n += size
    return {f"train_{k}": all_mean(v / max(n, 1), world) for k, v in sums.items()}


def _save_epoch(paths: _Paths, model, opt, sched, record: dict, result: StageResult, row: dict, score_key: str, world: World) -> None:
    """``last.pt`` every epoch and ``best.pt`` when the score improved (main process only)."""
    epoch = row["epoch"]
    if world.main and result.best_epoch == epoch:
        checkpoint.save(paths.best, {"model": model.state_dict(), "record": record, "epoch": epoch, score_key: row[score_key]})
    if world.main:
        checkpoint.save(paths.last, {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                     "rng": checkpoint.rng_state(), "record": record, "result": asdict(result)})
    barrier(world)  # nobody reads a checkpoint before it is complete


def _reached(result: StageResult, stage: Stage, score_key: str) -> bool:
    """Whether the stage's last epoch reached ``stage.until_score`` (the same on every process)."""
    return stage.until_score is not None and bool(result.history) and result.history[-1][score_key] >= stage.until_score


def run_stage(model: nn.Module, task: Task, stage: Stage, out_dir: str | Path, seed: int = 0,
              device: str | torch.device = "cpu", progress: bool = True, world: World | None = None) -> StageResult:
    """Train ``model`` for one stage; resume or skip if ``out_dir`` holds this stage already.

    ``world`` (``stkit.engine.distributed``): the processes of a torchrun launch; None is one
    process on ``device``. At the end the stage's best weights are loaded into ``model``.
    """
    world = world or single(device)
    out_dir, device = Path(out_dir), world.device
    paths = _Paths(out_dir, stage.name)
    record = task.record(model, stage, seed) | {"processes": world.size}
    model.to(device)
    set_frozen(model, stage.freeze)
    net = wrap(model, world)  # DDP over the trainable parameters when there are several processes
    opt = task.optimizer(model, stage)
    sched = schedule(opt, stage, task.steps_per_epoch(stage))
    result = _resume(paths, record, model, opt, sched, device)
    if world.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    for epoch in range(len(result.history), stage.epochs):
        if _reached(result, stage, task.score_key):  # after the epoch that reached it, or on resume
            if progress and world.main:
                print(f"{stage.name}: {task.score_key} reached {stage.until_score}, the stage ends here")
            break
        t0 = time.perf_counter()
        row = {"epoch": epoch + 1, **_train_epoch(net, task, stage, opt, sched, epoch, seed, world, progress)}
        row |= task.validate(model)
        row["seconds"] = time.perf_counter() - t0
        result.history.append(row)
        result.seconds += row["seconds"]
        if row[task.score_key] > result.best_score:
            result.best_score, result.best_epoch = row[task.score_key], epoch + 1
        _save_epoch(paths, model, opt, sched, record, result, row, task.score_key, world)
        if progress and world.main:
            print(f"{stage.name} epoch {epoch + 1:>3}/{stage.epochs}  {task.describe(row)}  ({row['seconds']:.1f}s)")
    if paths.best.exists():
        model.load_state_dict(checkpoint.load(paths.best, device)["model"])
    for p in model.parameters():  # leave the model trainable for whatever comes next
        p.requires_grad_(True)
    if world.main:
        checkpoint.write_json(paths.history, asdict(result))
    return result


def run_stages(model: nn.Module, task: Task, stages: list[Stage], out_dir: str | Path, seed: int = 0,
               device: str | torch.device = "cpu", progress: bool = True, world: World | None = None) -> list[StageResult]:
    """Run the stages in order; each starts from the previous stage's best weights."""
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be unique, got {names}")
    return [run_stage(model, task, s, out_dir, seed, device, progress, world) for s in stages]
