"""Data-parallel training with torch.distributed: one code path for 1 and N processes.

Launch N processes with ``torchrun --nproc_per_node N ...`` (on SLURM through
``stkit/recipes/slurm_torchrun.sbatch``, which starts torchrun); every process runs the same training code. This
module turns torchrun's environment into a :class:`World` (rank, size, device), wraps a
model in ``DistributedDataParallel`` when there is more than one process, and cuts each
epoch's data into per-process shares of one *global* batch, so N processes with batch
B/N each take exactly the optimiser steps one process takes with batch B.

Backends: ``nccl`` on GPUs, ``gloo`` on CPU processes (what the tests use). Batch norm:
on GPUs the layers become ``SyncBatchNorm`` (statistics over the global batch); on CPU
PyTorch has no synchronised batch norm, so each process normalises with its own share's
statistics, and the trainer says so once.

Not here: what to train (``stkit.engine.trainer``), or how to launch on a cluster (README).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import Sampler

__all__ = ["World", "setup", "single", "wrap", "unwrap", "ShardedBatches", "teardown"]


@dataclass(frozen=True)
class World:
    rank: int = 0  # this process's index among all processes
    size: int = 1  # number of processes
    local_rank: int = 0  # index on this machine (selects the GPU)
    device: torch.device = torch.device("cpu")  # where this process's model and batches live

    @property
    def main(self) -> bool:
        """The process that writes checkpoints, logs and metrics."""
        return self.rank == 0


def single(device: str | torch.device = "cpu") -> World:
    """The one-process world (no torch.distributed)."""
    return World(device=torch.device(device))


def setup(device: str = "auto") -> World:
    """The world torchrun describes in the environment (one process without it).

    ``device``: "auto" (this process's GPU when CUDA is available, else CPU), "cpu" or "cuda".
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but torch sees no CUDA device")
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return World(rank, size, local, dev)


def wrap(model: nn.Module, world: World) -> nn.Module:
    """``model`` itself for one process; ``DistributedDataParallel(model)`` for several."""
    if world.size == 1:
        return model
    if world.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif any(isinstance(m, nn.modules.batchnorm._BatchNorm) and any(p.requires_grad for p in m.parameters()) for m in model.modules()):
        warnings.warn("batch norm on CPU processes uses each process's share of the batch (no SyncBatchNorm on CPU)", stacklevel=2)
    ids = [world.device.index] if world.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP wrapper (what checkpoints store)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class ShardedBatches(Sampler):
    """Index batches of one epoch, this process's share of each global batch.

    The order is a permutation drawn from ``(seed, epoch)`` alone (the same as
    ``RandomSampler`` with a generator seeded ``seed * 1000 + epoch``), cut into global
    batches of ``batch_size``; process r of N takes the r-th contiguous share of each.
    With several processes the global batch must divide evenly; the last, short batch of
    the epoch is split as evenly as possible (dropped if it has fewer items than processes).
    """

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, world: World = World()):
        if world.size > 1 and batch_size % world.size:
            raise ValueError(f"the global batch size {batch_size} must divide by the {world.size} processes")
        self.n, self.batch_size, self.world = n, batch_size, world
        self.order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()

    def _global_batches(self) -> list[list[int]]:
        batches = [self.order[s:s + self.batch_size] for s in range(0, self.n, self.batch_size)]
        # every process must take part in every step: a last batch with fewer items than
        # processes is dropped on all of them alike
        return [b for b in batches if len(b) >= self.world.size]

    def __iter__(self):
        for batch in self._global_batches():
            share = -(-len(batch) // self.world.size)  # ceil
            yield batch[self.world.rank * share:(self.world.rank + 1) * share]

    def __len__(self) -> int:
        return len(self._global_batches())


def all_mean(value: float, world: World) -> float:
    """Mean of a number over all processes (the number itself for one process)."""
    if world.size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return t.item() / world.size


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
