"""Training STNet on the kit's generic stage trainer (``stkit.trainer``).

    task = STNetTask(train_set, val_set, cfg, device)
    stage = stnet_stage(cfg)                           # AdamW, step drop, clip 0.1, frozen stem
    result = run_stage(model, task, stage, out_dir, seed)

:class:`STNetTask` tells the generic loop how to batch clips (``ShardedBatches`` over the
clip dataset, ``collate_clips``), compute the loss (Hungarian matching, focal + L1 + GIoU
on the key frames, the box count averaged over all processes as Deformable DETR does) and
score validation; ``stkit.trainer`` does the epochs, gradient clipping, checkpoints,
exact resume, refusing another configuration's checkpoint and data parallelism.

Validation after every epoch (the score that picks ``best.pt``): COCO AP50 on every frame
of the validation set given to the task, from encoder-feature-shuffle predictions only
(one encoder pass per three frames; the frame-by-frame pass and its timing are left to
the final evaluation, ``stkit.stnet.evaluate_detector``). On the quick synthetic set that
is the whole validation split (~190 frames, a few seconds).

The stage's ``batch_size`` is the GLOBAL batch: with N torchrun processes each takes
``batch_size / N`` clips of every step (``stkit.distributed.ShardedBatches``).
No model, no data reading and no metrics are defined here.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from ..data.video import collate_clips
from ..distributed import ShardedBatches, World
from ..trainer import Stage
from .config import STNetConfig
from .criterion import SetCriterion, normalise_targets
from .detector import param_groups
from .evaluate import evaluate_detector

__all__ = ["STNetTask", "stnet_stage", "frozen_prefixes", "with_frozen"]

# Parameters ResNetBody freezes when it is built (stem and layer1, as Deformable DETR).
# The trainer re-applies a stage's ``freeze`` list to every parameter, so the list must say so.
BACKBONE_FROZEN = ("pyramid.body.stem", "pyramid.body.layer1")


def frozen_prefixes(cfg: STNetConfig) -> tuple[str, ...]:
    """What never trains: the stem and layer1, or the whole backbone when its lr multiplier is 0."""
    return ("pyramid.body",) if cfg.lr_backbone_mult == 0 else BACKBONE_FROZEN


def with_frozen(stage: Stage, cfg: STNetConfig) -> Stage:
    """``stage`` with the backbone's frozen parts added to its ``freeze`` list."""
    extra = [p for p in frozen_prefixes(cfg) if p not in stage.freeze]
    return replace(stage, freeze=tuple(stage.freeze) + tuple(extra))


def stnet_stage(cfg: STNetConfig, name: str = "train", precision: str = "fp32", num_workers: int = 0,
                **overrides) -> Stage:
    """The training stage of a config: AdamW at ``cfg.lr``, the rate x0.1 after ``cfg.lr_drop``
    epochs, gradient clipping at ``cfg.clip_max_norm``, the backbone's frozen parts frozen."""
    stage = Stage(name=name, epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
                  batch_size=cfg.batch_size, schedule="step", lr_drop_epoch=cfg.lr_drop,
                  lr_drop_factor=0.1, clip_grad=cfg.clip_max_norm, precision=precision,
                  num_workers=num_workers)
    return with_frozen(replace(stage, **overrides), cfg)


def _plain(obj):
    """Tuples -> lists etc., so a record compares equal after a checkpoint round trip."""
    return json.loads(json.dumps(obj, default=str))


def _data_record(ds) -> dict:
    clip = getattr(ds, "clip", None)
    return {"root": str(Path(ds.root).resolve()) if hasattr(ds, "root") else None,
            "split": getattr(ds, "split", None), "items": len(ds),
            "clip": asdict(clip) if clip is not None else None}


class STNetTask:
    """What the generic trainer needs to know about STNet on a pair of clip datasets.

    train_set / val_set: ``stkit.data.video.BUVClipDataset`` (or anything with the same
    items); val_set enumerates every validation frame as a key frame (key stride 1).
    """

    score_key = "val_ap50"

    def __init__(self, train_set, val_set, cfg: STNetConfig, device: str | torch.device = "cpu",
                 world: World | None = None):
        self.train_set, self.val_set, self.cfg = train_set, val_set, cfg
        self.world = world or World(device=torch.device(device))
        self.device = self.world.device
        self.criterion = SetCriterion(cfg)
        T = getattr(getattr(train_set, "clip", None), "T", cfg.n_frames)
        if T != cfg.n_frames:
            raise ValueError(f"STNetTask: the model is built for clips of {cfg.n_frames} frames, "
                             f"the training set makes clips of {T} (ClipConfig n_support/n_global)")

    def record(self, model: nn.Module, stage: Stage, seed: int) -> dict:
        """What a checkpoint must agree with to be resumed: stage, seed, model config, data."""
        return _plain({"stage": asdict(stage), "seed": seed, "model": type(model).__name__,
                       "model_config": model.cfg.to_dict(),
                       "n_params": sum(p.numel() for p in model.parameters()),
                       "data": {"train": _data_record(self.train_set), "val": _data_record(self.val_set)}})

    def optimizer(self, model: nn.Module, stage: Stage) -> torch.optim.Optimizer:
        """AdamW over ``param_groups``: the stage's lr, backbone and offset heads scaled."""
        groups = param_groups(model, replace(self.cfg, lr=stage.lr))
        if not groups:
            raise ValueError(f"stage {stage.name!r} freezes every parameter: nothing to train")
        return torch.optim.AdamW(groups, lr=stage.lr, weight_decay=stage.weight_decay)

    def steps_per_epoch(self, stage: Stage) -> int:
        return math.ceil(len(self.train_set) / stage.batch_size)

    def batches(self, stage: Stage, epoch: int, seed: int, world: World = World()) -> DataLoader:
        # The order depends only on (seed, epoch); the clip's random frames and transform are
        # drawn from the global RNG in this process (num_workers=0), which checkpoints keep.
        sampler = ShardedBatches(len(self.train_set), stage.batch_size, seed, epoch, world)
        return DataLoader(self.train_set, batch_sampler=sampler, collate_fn=collate_clips,
                          num_workers=stage.num_workers)

    def _num_boxes(self, targets: list[dict]) -> float:
        """Target boxes per process, averaged over all processes (so N shares weigh as one batch)."""
        n = torch.tensor([float(sum(len(t["labels"]) for t in targets))], dtype=torch.float64, device=self.device)
        if self.world.size > 1:
            dist.all_reduce(n)
            n /= self.world.size
        return max(float(n), 1.0)

    def loss(self, net: nn.Module, batch: dict, stage: Stage):
        """Loss of the key frames of a collated clip batch -> (loss, parts, clips)."""
        keys = [clip[0] for clip in batch["targets"]]
        targets = [{k: v.to(self.device) if torch.is_tensor(v) else v for k, v in t.items()}
                   for t in normalise_targets(keys, "training batch ")]
        out = net(batch["frames"].to(self.device), batch["mask"].to(self.device))  # DDP-wrapped when N > 1
        loss, parts = self.criterion(out, targets, self._num_boxes(targets))
        parts.pop("loss", None)
        return loss, parts, len(keys)

    def validate(self, model: nn.Module) -> dict:
        """COCO AP of shuffle predictions on every validation frame (no frame-by-frame pass)."""
        m = evaluate_detector(model, self.val_set, per_frame_items=0)
        return {k: m[k] for k in ("val_ap", "val_ap50", "val_ap75", "key_ap50")}

    @staticmethod
    def describe(row: dict) -> str:
        return (f"loss {row['train_loss']:.3f} (cls {row.get('train_cls', float('nan')):.3f} "
                f"l1 {row.get('train_l1', float('nan')):.3f} giou {row.get('train_giou', float('nan')):.3f})  "
                f"val AP50 {row['val_ap50']:.3f}  AP {row['val_ap']:.3f}  (all frames)")
