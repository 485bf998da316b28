"""Data parallelism: N processes on shares of a global batch take the steps one process takes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stkit.engine.distributed import ShardedBatches, World
from stkit.stern import STERN
from tests.engine.ddp_worker import TINY

HERE = Path(__file__).resolve().parent


def test_shards_partition_each_global_batch():
    one = list(ShardedBatches(10, 4, seed=3, epoch=1))
    two = [list(ShardedBatches(10, 4, seed=3, epoch=1, world=World(rank=r, size=2))) for r in range(2)]
    assert [len(b) for b in one] == [4, 4, 2]
    for k, batch in enumerate(one):
        assert two[0][k] + two[1][k] == batch  # rank 0 takes the first half, rank 1 the second
    assert list(ShardedBatches(10, 4, 3, 1)) == one and list(ShardedBatches(10, 4, 3, 2)) != one  # (seed, epoch) fix the order
    order = torch.randperm(10, generator=torch.Generator().manual_seed(3 * 1000 + 1)).tolist()
    assert sum(one, []) == order  # the same order RandomSampler draws with that generator
    with pytest.raises(ValueError, match="divide"):
        ShardedBatches(10, 5, 0, 0, World(rank=0, size=2))
    three = [list(ShardedBatches(9, 6, 0, 0, World(rank=r, size=3))) for r in range(3)]
    assert [len(t) for t in three] == [2, 2, 2]  # the short last batch (3 items) still reaches everyone


def _train(tmp: Path, nproc: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STKIT_OPS_BACKEND": "reference"}
    if nproc == 1:
        cmd = [sys.executable, str(HERE / "ddp_worker.py"), str(tmp), "16"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               str(HERE / "ddp_worker.py"), str(tmp), "16"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    return torch.load(tmp / "final.pt", weights_only=True)


def test_two_gloo_processes_match_one_process(tmp_path):
    one = _train(tmp_path / "one", 1)
    two = _train(tmp_path / "two", 2)
    assert one.keys() == two.keys()
    moved = 0
    for k in one:
        assert torch.allclose(one[k], two[k], rtol=1e-4, atol=1e-5), k
        moved += int(not torch.equal(one[k], STERN_INIT[k])) if k in STERN_INIT else 0
    assert moved > 10  # the runs trained (and agree), rather than agreeing by standing still


def _init_weights() -> dict:
    torch.manual_seed(0)
    return STERN(TINY).state_dict()


STERN_INIT = _init_weights()
