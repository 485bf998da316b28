"""STERN on the kit's engine: its training stage, its task, and what each variant trains.

A STERN stage (:class:`StageConfig`) is a :class:`stkit.engine.Stage` plus what STERN
adds: the loss (stage 1 plain BCE, stage 2 BCE + aspect_lambda * relu(sx/sy - Sf)), a
separate learning rate for the STN, the smoothed window search that moves the window
(``search_sigma``, ``stkit.stern.window_search``), and left-right flips. :class:`STERNTask`
tells the engine how to compute the loss and score validation (ROC AUC); the engine does
the batches, epochs, checkpoints and exact resume.

    train_stages(model, train_set, val_set, stages, out_dir, seed)  # run the stages in order

Random draws (flips, the search's window perturbations) come from each process's own
generator, so a run on N torchrun processes is as valid as one on a single process but
equal to it only with both switched off (``hflip=0``, ``search_sigma=0``), as the
distributed tests run it.

What the official code leaves open (frozen layers, optimiser, epochs) is a field here,
with the kit's documented choices in the recipe files (``stkit/recipes/stern_*.yaml``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..engine.distributed import unwrap
from ..engine.task import DatasetTask
from ..engine.trainer import Stage, StageResult, run_stages
from .evaluate import box_iou, predict, roc_auc, window_area_fraction
from .loss import STERNLoss
from .model import STERN
from .stn import window_from_theta, window_to_pixels
from .window_search import search_surrogate, smoothed_window_grad

__all__ = ["StageConfig", "STERNTask", "train_stages", "track_windows", "variant_stages", "WARMUP"]

WARMUP = "warmup"  # name of a recipe's classifier warm-up stage (localiser frozen), if it has one


@dataclass
class StageConfig(Stage):
    """One STERN stage: the generic :class:`~stkit.engine.trainer.Stage` fields plus these."""

    stn_lr: float | None = None  # learning rate of the STN's parameters (None: same as lr)
    aspect_lambda: float = 0.0  # weight of relu(sx/sy - sf); 0 = stage 1
    sf: float = 1.25  # the aspect ratio above which stage 2 penalises (official: 1.25)
    faithful_loss: bool = False  # the official loss: BCE on probabilities, unit-weight hinge
    hflip: float = 0.5  # probability of a left-right flip per training image (0: no augmentation)
    search_sigma: float = 0.0  # > 0: the window learns from the smoothed search gradient at this scale
    #                            (stkit.stern.window_search), not the sampler's local one; 0: plain STN
    search_pairs: int = 2  # antithetic window pairs per image for that estimate (2 classifier passes each)

    def loss(self) -> STERNLoss:
        return STERNLoss(self.aspect_lambda, self.sf, self.faithful_loss)


class STERNTask(DatasetTask):
    """What the engine needs to know about STERN on a pair of (train, val) image sets."""

    score_key = "val_auc"

    def __init__(self, train_set: Dataset, val_set: Dataset, device: str | torch.device = "cpu",
                 track: torch.Tensor | None = None, world=None):
        super().__init__(train_set, val_set, device, world)
        self.track = track  # (K, C, H, W) images whose windows are recorded after every epoch (no effect on training)

    def data_record(self) -> dict:
        data = {"n_train": len(self.train_set), "n_val": len(self.val_set), "image": list(self.train_set[0][0].shape)}
        if hasattr(self.train_set, "csv_path"):
            data["labels"] = str(Path(self.train_set.csv_path).resolve())
        return data

    def param_groups(self, model: nn.Module, stage: StageConfig) -> list[dict]:
        """The classifier at ``lr``, the STN at ``stn_lr``; frozen parameters left out."""
        stn = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("stn.")]
        other = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("stn.")]
        stn_lr = stage.lr if stage.stn_lr is None else stage.stn_lr
        return [g for g in ({"params": other, "lr": stage.lr}, {"params": stn, "lr": stn_lr}) if g["params"]]

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
        """The smoothed window gradient of the mean BCE, as a surrogate term (stkit.stern.window_search)."""
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
                row["track_windows"] = track_windows(model, self.track, self.device)
        return row


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
    task = STERNTask(train_set, val_set, device, track, world)
    return run_stages(model, task, stages, out_dir, seed, task.device, progress, world)


def variant_stages(stages: list[StageConfig], variant: str) -> list[StageConfig]:
    """The training stages of a variant (``stkit.stern.config.VARIANTS``) from a recipe's stages.

    ``bounded``: as the recipe says (quick: a classifier warm-up with the localiser frozen,
    stage 1, stage 2). ``baseline`` / ``oracle``: no window, so one stage with the first
    stage's settings and every stage's epochs (the same budget). ``faithful``: the official
    training, i.e. no warm-up (its epochs go to stage 1), the official loss (BCE on
    probabilities, unit-weight hinge) and the sampler's own gradient at a tenth of the
    classifier's rate.
    """
    stages = [replace(s) for s in stages]
    if variant in ("baseline", "oracle"):
        s1 = stages[0]
        return [replace(s1, name="stage1", epochs=sum(s.epochs for s in stages), stn_lr=None, search_sigma=0.0, freeze=(),
                        until_score=None)]
    if variant == "faithful":
        warm = sum(s.epochs for s in stages if s.name == WARMUP)
        stages = [s for s in stages if s.name != WARMUP]
        stages[0] = replace(stages[0], epochs=stages[0].epochs + warm)
        stages = [replace(s, faithful_loss=True, search_sigma=0.0, stn_lr=s.lr / 10) for s in stages]
    return stages
