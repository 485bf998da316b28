"""Worker for tests/stnet/test_task.py: train a smoke-size STNet for a few steps, save its weights.

Run as ``torchrun --nproc_per_node N tests/stnet/ddp_worker.py BUV_DIR OUT_DIR GLOBAL_BATCH``
(or plain python for one process). Every process reads the same clips; the trainer gives
each its share of every global batch.
"""

import sys
from dataclasses import replace

import torch

from stkit.engine import distributed
from stkit.engine.recipe import Recipe
from stkit.stnet.experiment import load_splits, recipe as stnet_recipe, train_variant
from stkit.stnet.task import STNetTask, param_groups


def sgd(self, model, stage):
    """SGD on the task's parameter groups. AdamW's first steps move every weight by about
    +-lr whatever its gradient's size, so float rounding in near-zero gradients flips
    signs: a one-process rerun with 2 threads instead of 1 already differs on half the
    weights. An update linear in the gradient keeps rounding at rounding size, and shows a
    wrong gradient scale (e.g. a box count not averaged over processes), which Adam hides."""
    return torch.optim.SGD(param_groups(model, stage), lr=stage.lr, momentum=0.9)


def recipe(batch: int) -> Recipe:
    """Smoke STNet with what depends on the number of processes switched off: the clip's
    random flip and short side (drawn per process from its own RNG) and dropout (smoke: 0).
    The backbone's batch norm is frozen (FrozenBatchNorm2d), GroupNorm is per sample."""
    r = stnet_recipe("smoke")
    clip = replace(r.data, hflip=0.0, train_short_sides=(64,), crop=0.0, key_stride=2)
    return replace(r, model=replace(r.model, dropout=0.0),
                   stages=[replace(r.stages[0], epochs=1, batch_size=batch, lr=1e-2)], data=clip)


def main(buv_dir: str, out_dir: str, batch: int) -> None:
    world = distributed.setup("cpu")
    STNetTask.optimizer = sgd
    r = recipe(batch)
    sets = load_splits(buv_dir, r.data)
    model, _ = train_variant(r, "stnet", sets, out_dir, seed=0, progress=False, world=world)
    if world.main:
        torch.save(model.state_dict(), f"{out_dir}/final.pt")
    distributed.teardown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
