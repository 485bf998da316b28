"""Training STERN's two stages (and the no-STN baseline) on the kit's generic stage trainer.

A STERN stage (:class:`StageConfig`) is a :class:`stkit.trainer.Stage` plus what STERN
adds: the loss (stage 1 plain BCE, stage 2 BCE + aspect_lambda * relu(sx/sy - Sf)), a
separate learning rate for the STN, the smoothed window search that moves the window
(``search_sigma``, ``stkit.window_search``), and left-right flips. :class:`STERNTask` tells the
generic loop how to batch the data, compute the loss and score validation (ROC AUC);
``stkit.trainer`` does the epochs, checkpoints and exact resume.

    train_stages(model, train_set, val_set, stages, out_dir, seed)  # run the stages in order

Random draws (flips, the search's window perturbations) come from each process's own
generator, so a run on N torchrun processes is as valid as one on a single process but
equal to it only with both switched off (``hflip=0``, ``search_sigma=0``), as the
distributed tests run it.

What the official code leaves open (frozen layers, optimiser, epochs) is a field here,
with the kit's documented choices in ``stkit.recipes``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .distributed import ShardedBatches, World, unwrap
from .evaluate import box_iou, predict, roc_auc, window_area_fraction
from .stern import STERN, STERNLoss
from .stn import window_from_theta, window_to_pixels
from .trainer import Stage, StageResult, run_stages, set_frozen
from .window_search import search_surrogate, smoothed_window_grad

__all__ = ["StageConfig", "StageResult", "STERNTask", "train_stages", "track_windows", "set_frozen"]


@dataclass
class StageConfig(Stage):
    """One STERN stage: the generic :class:`~stkit.trainer.Stage` fields plus these."""

    stn_lr: float | None = None  # learning rate of the STN's parameters (None: same as lr)
    aspect_lambda: float = 0.0  # weight of relu(sx/sy - sf); 0 = stage 1
    sf: float = 1.25  # the aspect ratio above which stage 2 penalises (official: 1.25)
    faithful_loss: bool = False  # the official loss: BCE on probabilities, unit-weight hinge
    hflip: float = 0.5  # probability of a left-right flip per training image (0: no augmentation)
    search_sigma: float = 0.0  # > 0: the window learns from the smoothed search gradient at this scale
    #                            (stkit.window_search), not the sampler's local one; 0: plain STN
    search_pairs: int = 2  # antithetic window pairs per image for that estimate (2 classifier passes each)

    def loss(self) -> STERNLoss:
        return STERNLoss(self.aspect_lambda, self.sf, self.faithful_loss)


def _data_record(train_set: Dataset, val_set: Dataset) -> dict:
    data = {"n_train": len(train_set), "n_val": len(val_set), "image": list(train_set[0][0].shape)}
    if hasattr(train_set, "csv_path"):
        data["labels"] = str(Path(train_set.csv_path).resolve())
    return data


class STERNTask:
    """What the generic trainer needs to know about STERN on a pair of (train, val) sets."""

    score_key = "val_auc"

    def __init__(self, train_set: Dataset, val_set: Dataset, device: str | torch.device = "cpu", track: torch.Tensor | None = None):
        self.train_set, self.val_set, self.device = train_set, val_set, torch.device(device)
        self.track = track  # (K, C, H, W) images whose windows are recorded after every epoch (no effect on training)

    def record(self, model: STERN, stage: StageConfig, seed: int) -> dict:
        """What a checkpoint must agree with to be resumed: stage, seed, model settings, data."""
        config = model.config.to_dict() if hasattr(model.config, "to_dict") else None
        return {
            "stage": asdict(stage) | {"freeze": list(stage.freeze)},
            "seed": seed,
            "model": type(model).__name__,
            "model_config": config,
            "n_params": sum(p.numel() for p in model.parameters()),
            "data": _data_record(self.train_set, self.val_set),
        }

    def optimizer(self, model: nn.Module, stage: StageConfig) -> torch.optim.Optimizer:
        stn = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("stn.")]
        other = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("stn.")]
        stn_lr = stage.lr if stage.stn_lr is None else stage.stn_lr
        groups = [g for g in ({"params": other, "lr": stage.lr}, {"params": stn, "lr": stn_lr}) if g["params"]]
        if not groups:
            raise ValueError(f"stage {stage.name!r} freezes every parameter: nothing to train")
        return torch.optim.AdamW(groups, weight_decay=stage.weight_decay)

    def steps_per_epoch(self, stage: StageConfig) -> int:
        return math.ceil(len(self.train_set) / stage.batch_size)

    def batches(self, stage: StageConfig, epoch: int, seed: int, world: World = World()) -> DataLoader:
        # The data order depends only on (seed, epoch), so a resumed run sees the same batches;
        # with several processes each takes its share of every global batch.
        sampler = ShardedBatches(len(self.train_set), stage.batch_size, seed, epoch, world)
        return DataLoader(self.train_set, batch_sampler=sampler, num_workers=stage.num_workers)

    def loss(self, model: STERN, batch, stage: StageConfig):
        images, labels, _ = batch
        images, labels = images.to(self.device), labels.to(self.device)
        if stage.hflip > 0:  # drawn from the global RNG, whose state the checkpoint keeps
            flip = torch.rand(len(images)) < stage.hflip
            images = torch.where(flip.to(self.device)[:, None, None, None], images.flip(-1), images)
        search = stage.search_sigma > 0 and unwrap(model).stn is not None
        out = model(images, detach_window=search)
        loss_fn = stage.loss()
        loss = loss_fn(out.logit, labels, out.aspect)
        aspect = loss_fn.aspect_term(out.aspect.detach()).item() if out.aspect is not None else 0.0
        if search:
            loss = loss + self._search_term(unwrap(model), images, labels, window_from_theta(out.theta), stage)
        return loss, {"aspect_term": aspect}, len(labels)

    @staticmethod
    def _search_term(model: STERN, images, labels, window, stage: StageConfig) -> torch.Tensor:
        """The smoothed window gradient of the mean BCE, as a surrogate term (stkit.window_search)."""
        def loss_of(w):
            return F.binary_cross_entropy_with_logits(model.classify_windows(images, w).float(), labels.float(), reduction="none")

        grad = smoothed_window_grad(loss_of, window, stage.search_sigma, stage.search_pairs, model.stn.s_min, model.stn.s_max)
        return search_surrogate(window, grad / len(labels))

    def validate(self, model: STERN) -> dict:
        val = predict(model, self.val_set, device=self.device)
        row = {"val_auc": roc_auc(val["labels"], val["scores"]), "val_mean_aspect": None, "val_window_area": None}
        if val["window_px"] is not None:
            h, w = self.val_set[0][0].shape[-2:]
            row["val_mean_aspect"] = float(val["aspect"].mean())
            row["val_window_area"] = float(window_area_fraction(val["window_px"], h, w).mean())
            if getattr(self.val_set, "has_thorax", False):
                thorax = torch.stack([self.val_set.thorax_box(int(i)) for i in val["indices"]]).numpy()
                row["val_thorax_iou"] = float(box_iou(val["window_px"], thorax).mean())
            if self.track is not None:
                row["track_windows"] = self._track_windows(model)
        return row

    def _track_windows(self, model: STERN) -> list:
        return track_windows(model, self.track, self.device)

    @staticmethod
    def describe(row: dict) -> str:
        area = f"  window area {row['val_window_area']:.2f}" if row.get("val_window_area") is not None else ""
        iou = f"  thorax IoU {row['val_thorax_iou']:.2f}" if row.get("val_thorax_iou") is not None else ""
        return f"loss {row['train_loss']:.4f}  val AUC {row['val_auc']:.4f}{area}{iou}"


@torch.no_grad()
def track_windows(model: STERN, images: torch.Tensor, device: str | torch.device = "cpu") -> list:
    """The STN windows of ``images`` (K, C, H, W) in eval mode, as a (K, 4) list of (x0, y0, x1, y1) pixels."""
    was_training = model.training
    model.eval()
    theta = model(images.to(device)).theta.cpu()  # (K, 2, 3)
    model.train(was_training)
    return window_to_pixels(theta, *images.shape[-2:]).tolist()


def train_stages(model: STERN, train_set: Dataset, val_set: Dataset, stages: list[StageConfig], out_dir: str | Path,
                 seed: int = 0, device: str | torch.device = "cpu", progress: bool = True,
                 track: torch.Tensor | None = None, world=None) -> list[StageResult]:
    """Train ``model`` through ``stages`` in order (each resumes, or is skipped when done).

    ``track`` (K, C, H, W): images whose STN windows each epoch's history row records
    (``track_windows``), to draw the window's path during training."""
    device = world.device if world is not None else device
    return run_stages(model, STERNTask(train_set, val_set, device, track), stages, out_dir, seed, device, progress, world)
