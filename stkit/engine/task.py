"""What the trainer asks of a paper: the :class:`Task` protocol, and the parts both tasks share.

``stkit.engine.trainer`` runs epochs, checkpoints and resume for any model; a *task*
tells it what is model-specific. The protocol (checked by type checkers, documented here
once):

    task.score_key                              validation number that picks best.pt (higher is better)
    task.record(model, stage, seed) -> dict     what a checkpoint must agree with to be resumed
    task.optimizer(model, stage) -> Optimizer   parameter groups and learning rates
    task.steps_per_epoch(stage) -> int          optimiser steps per epoch (the schedule's unit)
    task.batches(stage, epoch, seed, world)     this process's batches, order fixed by (seed, epoch)
    task.loss(model, batch, stage)              -> (loss tensor, {name: float} parts, batch size)
    task.validate(model) -> dict                numbers, including score_key
    task.describe(row) -> str                   one progress line after an epoch

:class:`DatasetTask` implements the first five for a (train, val) pair of datasets; a
paper's task (``stkit.stern.task.STERNTask``, ``stkit.stnet.task.STNetTask``) adds its
parameter groups, loss, validation and progress line. Nothing here knows a paper.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Iterable, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .checkpoint import plain
from .distributed import ShardedBatches, World

__all__ = ["Task", "DatasetTask"]


class Task(Protocol):
    score_key: str

    def record(self, model: nn.Module, stage, seed: int) -> dict: ...

    def optimizer(self, model: nn.Module, stage) -> torch.optim.Optimizer: ...

    def steps_per_epoch(self, stage) -> int: ...

    def batches(self, stage, epoch: int, seed: int, world: World) -> Iterable: ...

    def loss(self, model: nn.Module, batch, stage) -> tuple[torch.Tensor, dict, int]: ...

    def validate(self, model: nn.Module) -> dict: ...

    def describe(self, row: dict) -> str: ...


class DatasetTask:
    """The shared half of a task over a training and a validation dataset.

    Subclasses set ``score_key`` and ``collate`` (None: PyTorch's default) and implement
    ``param_groups``, ``data_record``, ``loss``, ``validate`` and ``describe``."""

    score_key = ""
    collate = None

    def __init__(self, train_set: Dataset, val_set: Dataset, device: str | torch.device = "cpu",
                 world: World | None = None):
        self.train_set, self.val_set = train_set, val_set
        self.world = world or World(device=torch.device(device))
        self.device = self.world.device

    def data_record(self) -> dict:
        """What identifies the data in a checkpoint's record."""
        raise NotImplementedError

    def param_groups(self, model: nn.Module, stage) -> list[dict]:
        """AdamW parameter groups of the trainable parameters, each with its ``lr``."""
        raise NotImplementedError

    def record(self, model: nn.Module, stage, seed: int) -> dict:
        """What a checkpoint must agree with to be resumed: stage, seed, model settings, data."""
        return plain({"stage": asdict(stage), "seed": seed, "model": type(model).__name__,
                      "model_config": model.config.to_dict(),
                      "n_params": sum(p.numel() for p in model.parameters()),
                      "data": self.data_record()})

    def optimizer(self, model: nn.Module, stage) -> torch.optim.Optimizer:
        groups = self.param_groups(model, stage)
        if not groups:
            raise ValueError(f"stage {stage.name!r} freezes every parameter: nothing to train")
        return torch.optim.AdamW(groups, lr=stage.lr, weight_decay=stage.weight_decay)

    def steps_per_epoch(self, stage) -> int:
        return math.ceil(len(self.train_set) / stage.batch_size)

    def batches(self, stage, epoch: int, seed: int, world: World = World()) -> DataLoader:
        # The order depends only on (seed, epoch), so a resumed run sees the same batches;
        # with several processes each takes its share of every global batch.
        sampler = ShardedBatches(len(self.train_set), stage.batch_size, seed, epoch, world)
        return DataLoader(self.train_set, batch_sampler=sampler, collate_fn=type(self).collate,
                          num_workers=stage.num_workers)
