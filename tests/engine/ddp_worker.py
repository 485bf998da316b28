"""Worker for tests/engine/test_distributed.py: train a tiny STERN for a few steps, save its weights.

Run as ``torchrun --nproc_per_node N tests/engine/ddp_worker.py OUT_DIR GLOBAL_BATCH`` (or plain
python for one process). Every process draws the same data; the trainer gives each its
share of every global batch.
"""

import sys

import torch
from torch.utils.data import TensorDataset

from stkit.engine import distributed
from stkit.stern import STERN, STERNConfig
from stkit.stern.config import STNConfig
from stkit.stern.task import StageConfig, train_stages

TINY = STERNConfig("small", in_channels=1, backbone_width=8, glimpse_size=(32, 32), stn=STNConfig(loc_input_size=80, loc_pool=1, loc_width=4))


class Triples(TensorDataset):
    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return x, y, i


def data(n: int, seed: int) -> Triples:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 80, 80, generator=g) * 0.3
    y = (torch.arange(n) % 2).float()
    x[y == 1, :, 30:40, 30:40] += 0.6
    return Triples(x, y)


def main(out_dir: str, batch: int) -> None:
    world = distributed.setup("cpu")
    torch.manual_seed(0)
    model = STERN(TINY)
    # What depends on the number of processes is switched off so the runs are comparable:
    # dropout masks (drawn per process) and batch statistics (no synchronised batch norm on
    # CPU: the BN layers are frozen, i.e. kept in eval mode).
    for name, m in list(model.named_modules()):
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    bn = tuple(n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
    stage = StageConfig("s1", epochs=2, lr=3e-3, batch_size=batch, hflip=0.0, freeze=bn)
    train_stages(model, data(48, 0), data(16, 1), [stage], out_dir, progress=False, world=world)
    if world.main:
        torch.save(model.state_dict(), f"{out_dir}/final.pt")
    distributed.teardown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
