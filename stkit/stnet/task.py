"""STNet on the kit's engine: its training stage, its parameter groups and its task.

    stage = recipe.stages[0]                           # a StageConfig: AdamW, step drop, clip 0.1
    task = STNetTask(train_set, val_set, cfg, device)
    result = run_stage(model, task, stage, out_dir, seed)

:class:`STNetTask` tells the engine how to batch clips (``collate_clips``), compute the
loss (Hungarian matching, focal + L1 + GIoU on the key frames, the box count averaged
over all processes as Deformable DETR does) and score validation; the engine does the
epochs, gradient clipping, checkpoints, exact resume, refusing another configuration's
checkpoint and data parallelism.

Validation after every epoch (the score that picks ``best.pt``): COCO AP50 on every frame
of the validation set given to the task, from encoder-feature-shuffle predictions only
(one encoder pass per three frames; the frame-by-frame pass and its timing are left to
the final evaluation, ``stkit.stnet.evaluate.evaluate_model``).

The stage's ``batch_size`` is the GLOBAL batch: with N torchrun processes each takes
``batch_size / N`` clips of every step (``stkit.engine.distributed.ShardedBatches``).
No model, no data reading and no metrics are defined here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..data.video import collate_clips
from ..engine.distributed import World
from ..engine.task import DatasetTask
from ..engine.trainer import Stage
from .config import STNetConfig
from .evaluate import evaluate_model
from .loss import SetCriterion, loss_on_batch

__all__ = ["StageConfig", "STNetTask", "param_groups", "BACKBONE_FROZEN"]

# Parameters ResNetBody freezes when it is built (stem and layer1, as Deformable DETR).
# The engine re-applies a stage's ``freeze`` list to every parameter, so the list must say so.
BACKBONE_FROZEN = ("pyramid.body.stem", "pyramid.body.layer1")
# Parameters Deformable DETR trains with the reduced "linear projection" learning rate.
LINEAR_PROJ_NAMES = ("reference_points", "sampling_offsets", "temporal_offsets")


@dataclass
class StageConfig(Stage):
    """STNet's training stage: the engine's :class:`~stkit.engine.trainer.Stage` with the
    released STNet code's training as its defaults, plus the learning-rate multipliers."""

    name: str = "train"  # one stage: checkpoints train_last.pt / train_best.pt
    epochs: int = 50  # released: 50
    lr: float = 5e-5  # AdamW learning rate of the transformer and heads (released: 5e-5)
    weight_decay: float = 1e-4  # released: 1e-4
    batch_size: int = 1  # GLOBAL clips per step (released: 1 clip per GPU, its collate takes one clip)
    schedule: str = "step"  # released: the rate x lr_drop_factor after lr_drop_epoch
    lr_drop_epoch: int | None = 40  # released: 40
    clip_grad: float | None = 0.1  # released: gradient clipping at a total norm of 0.1
    lr_backbone_mult: float = 0.4  # backbone lr = lr * this (released: 2e-5 = 0.4 x 5e-5); 0 freezes the backbone
    lr_linear_proj_mult: float = 0.1  # lr multiplier of offset heads and reference points (Deformable DETR: 0.1)

    def __post_init__(self):
        # what never trains: the stem and layer1, or the whole backbone when its multiplier is 0
        own = ("pyramid.body",) if self.lr_backbone_mult == 0 else BACKBONE_FROZEN
        kept = tuple(p for p in self.freeze if p not in (*BACKBONE_FROZEN, "pyramid.body"))
        self.freeze = kept + own


def param_groups(model: nn.Module, stage: StageConfig) -> list[dict]:
    """AdamW groups: the rest at ``lr``, backbone at ``lr * lr_backbone_mult``, offset heads
    and reference points at ``lr * lr_linear_proj_mult``. Frozen parameters are left out."""
    groups = {"main": [], "backbone": [], "linear_proj": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("pyramid.body."):
            groups["backbone"].append(p)
        elif any(key in name for key in LINEAR_PROJ_NAMES):
            groups["linear_proj"].append(p)
        else:
            groups["main"].append(p)
    mult = {"main": 1.0, "backbone": stage.lr_backbone_mult, "linear_proj": stage.lr_linear_proj_mult}
    return [{"params": ps, "lr": stage.lr * mult[k], "name": k} for k, ps in groups.items()
            if ps and mult[k] > 0]


def _data_record(ds) -> dict:
    clip = getattr(ds, "clip", None)
    return {"root": str(Path(ds.root).resolve()) if hasattr(ds, "root") else None,
            "split": getattr(ds, "split", None), "items": len(ds),
            "clip": asdict(clip) if clip is not None else None}


class STNetTask(DatasetTask):
    """What the engine needs to know about STNet on a pair of clip datasets.

    train_set / val_set: ``stkit.data.video.BUVClipDataset`` (or anything with the same
    items); val_set enumerates every validation frame as a key frame (key stride 1).
    """

    score_key = "val_ap50"
    collate = collate_clips

    def __init__(self, train_set, val_set, cfg: STNetConfig, device: str | torch.device = "cpu",
                 world: World | None = None):
        super().__init__(train_set, val_set, device, world)
        self.criterion = SetCriterion(cfg)
        T = getattr(getattr(train_set, "clip", None), "T", cfg.n_frames)
        if T != cfg.n_frames:
            raise ValueError(f"STNetTask: the model is built for clips of {cfg.n_frames} frames, "
                             f"the training set makes clips of {T} (ClipConfig n_support/n_global)")

    def data_record(self) -> dict:
        return {"train": _data_record(self.train_set), "val": _data_record(self.val_set)}

    def param_groups(self, model: nn.Module, stage: StageConfig) -> list[dict]:
        return param_groups(model, stage)

    def _num_boxes(self, targets: list[dict]) -> float:
        """Target boxes per process, averaged over all processes (so N shares weigh as one batch)."""
        n = torch.tensor([float(sum(len(t["labels"]) for t in targets))], dtype=torch.float64, device=self.device)
        if self.world.size > 1:
            dist.all_reduce(n)
            n /= self.world.size
        return max(float(n), 1.0)

    def loss(self, net: nn.Module, batch: dict, stage: Stage):
        """Loss of the objective (``cfg.objective``) on a collated clip batch -> (loss, parts, clips)."""
        loss, parts = loss_on_batch(net, self.criterion, batch, self._num_boxes)  # net: DDP-wrapped when N > 1
        parts.pop("loss", None)
        return loss, parts, len(batch["targets"])

    def validate(self, model: nn.Module) -> dict:
        """COCO AP of shuffle predictions on every validation frame (no frame-by-frame pass)."""
        m = evaluate_model(model, self.val_set, per_frame_items=0, released=False)
        return {k: m[k] for k in ("val_ap", "val_ap50", "val_ap75", "key_ap50")}

    @staticmethod
    def describe(row: dict) -> str:
        return (f"loss {row['train_loss']:.3f} (cls {row.get('train_cls', float('nan')):.3f} "
                f"l1 {row.get('train_l1', float('nan')):.3f} giou {row.get('train_giou', float('nan')):.3f})  "
                f"val AP50 {row['val_ap50']:.3f}  AP {row['val_ap']:.3f}  (all frames)")
