"""Recipe files (stkit/recipes, stkit.engine.recipe): what they build, how they refuse bad
fields, how a recipe states only what differs (dataclass defaults, ``recipe.base``), the
SLURM script, and STERN's command line under torchrun (2 gloo processes take the steps 1
process takes)."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stkit.engine import checkpoint
from stkit.engine.recipe import HERE, SIZES, RecipeError, with_stages
from stkit.stern import STERN, STERNConfig
from stkit.stern import experiment as stern
from stkit.stern.config import variant_config
from stkit.stern.task import variant_stages
from stkit.stnet import STNetConfig
from stkit.stnet import experiment as stnet
from stkit.stnet.task import StageConfig as STNetStage

ROOT = Path(__file__).resolve().parents[2]


def test_every_size_has_a_recipe_per_paper():
    assert sorted(p.name for p in HERE.glob("*.yaml")) == sorted(f"{k}_{s}.yaml" for k in ("stern", "stnet") for s in SIZES)
    for s in SIZES:
        assert stern.recipe(s).name == f"stern_{s}" and stnet.recipe(s).name == f"stnet_{s}"


def test_stnet_paper_recipe_is_the_released_defaults():
    r = stnet.recipe("paper")
    assert dataclasses.asdict(r.model) == dataclasses.asdict(STNetConfig())  # the model section states nothing
    [s] = r.stages
    assert (s.epochs, s.lr, s.lr_drop_epoch, s.lr_drop_factor, s.clip_grad, s.batch_size, s.schedule) == (50, 5e-5, 40, 0.1, 0.1, 1, "step")
    assert s.lr * s.lr_backbone_mult == pytest.approx(2e-5)
    assert dataclasses.replace(s, precision="fp32", num_workers=0) == STNetStage()  # the stage states only those two
    assert (r.data.T, r.data.test_short_side, r.model.num_queries, r.model.enc_layers, r.model.dec_layers) == (6, 512, 300, 6, 6)
    assert r.dataset == "buv"


def test_stern_paper_recipe_is_the_official_network():
    r = stern.recipe("paper")
    assert r.model == STERNConfig() and r.data.image_size == 256 and r.dataset == "chexpert"
    assert r.model.in_channels == 3 and r.model.backbone == "vgg16" and r.model.stn.loc_pool == 12
    assert [s.sf for s in r.stages] == [1.25, 1.25] and [s.aspect_lambda for s in r.stages] == [0.0, 1.0]
    faithful = variant_stages(r.stages, "faithful")
    assert all(s.faithful_loss for s in faithful) and variant_config(r.model, "faithful").stn.parameterisation == "faithful"


def _write(tmp_path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


HEAD = "recipe: {name: t, kind: stern}\n"


@pytest.mark.parametrize("body, match", [
    ("model: {backbone: small, widht: 3}\nstages: [{name: s}]\n", r"model: unknown field\(s\) \['widht'\]"),
    ("model: {backbone: small}\nstages: [{name: s, lr: fast}]\n", r"stages\[0\]\.lr: expected float"),
    ("model: {backbone: small}\nstages: [{name: s, epochs: 2.5}]\n", r"stages\[0\]\.epochs: expected int"),
    ("model: {backbone: small}\nstages: [{name: s}]\nextras: {}\n", r"unknown section\(s\) \['extras'\]"),
    ("model: {backbone: small}\nstages: []\n", "non-empty list"),
    ("model: {backbone: small}\nstages: [{name: s}, {name: s}]\n", "unique"),
    ("model: {backbone: lenet}\nstages: [{name: s}]\n", "backbone must be one of"),
])
def test_bad_recipes_name_file_and_field(tmp_path, body, match):
    path = _write(tmp_path, HEAD + body)
    with pytest.raises(RecipeError, match=match) as err:
        stern.recipe(path)
    assert str(path) in str(err.value)


def test_recipe_kind_and_one_place_per_number(tmp_path):
    with pytest.raises(RecipeError, match="expected 'stern'"):
        stern.recipe(HERE / "stnet_paper.yaml")
    text = (HERE / "stnet_paper.yaml").read_text().replace("data:", "data:\n  n_global: 1", 1)
    with pytest.raises(RecipeError, match=r"\['n_global'\] are set elsewhere"):  # the clip length is the model's
        stnet.recipe(_write(tmp_path, text))
    with pytest.raises(ValueError, match="stern_paper"):  # the message lists the kit's recipes
        stern.recipe("no_such_recipe")
    with pytest.raises(FileNotFoundError, match="gone.yaml"):
        stern.recipe(tmp_path / "gone.yaml")


def test_a_recipe_file_stands_in_for_a_run_size(tmp_path):
    text = (HERE / "stern_paper.yaml").read_text().replace("epochs: 30", "epochs: 2")
    r = stern.recipe(_write(tmp_path, text))
    assert r.stages[0].epochs == 2 and r.model == stern.recipe("paper").model
    assert variant_stages(r.stages, "baseline")[0].epochs == 12  # the baseline gets both stages' budget


def test_a_recipe_over_a_base_states_only_its_changes(tmp_path):
    path = _write(tmp_path, "recipe: {name: mine, kind: stern, base: quick}\n"
                            "model: {stn: {loc_width: 4}}\n"
                            "stages: [{name: stage2, lr: 1.0e-4}, {name: stage3, epochs: 1}]\n")
    mine, quick = stern.recipe(path), stern.recipe("quick")
    assert mine.name == "mine" and mine.model == dataclasses.replace(quick.model, stn=dataclasses.replace(quick.model.stn, loc_width=4))
    assert [s.name for s in mine.stages] == ["warmup", "stage1", "stage2", "stage3"]
    assert mine.stages[:2] == quick.stages[:2] and mine.stages[2] == dataclasses.replace(quick.stages[2], lr=1e-4)
    assert mine.data == quick.data
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(f"recipe: {{name: a, kind: stern, base: {b}}}\n")
    b.write_text(f"recipe: {{name: b, kind: stern, base: {a}}}\n")
    with pytest.raises(RecipeError, match="leads back to itself"):
        stern.recipe(a)


def test_with_stages_replaces_only_what_is_given():
    r = stnet.recipe("quick")
    assert with_stages(r, precision=None, batch_size=None) == r
    assert with_stages(r, batch_size=8).stages[0] == dataclasses.replace(r.stages[0], batch_size=8)


def test_slurm_script_passes_slurms_rendezvous_to_torchrun(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho node-a\necho node-b\n")
    (bin_dir / "srun").write_text("#!/bin/sh\necho \"$@\"\n")  # prints what each node would run
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NUM_NODES": "2", "SLURM_GPUS_ON_NODE": "4",
           "SLURM_JOB_NODELIST": "node-[a-b]", "SLURM_JOB_ID": "77", "STKIT_PYTHON": "py"}
    out = subprocess.run(["bash", str(HERE / "slurm_torchrun.sbatch"), "stern", "train", "--out", "r"], env=env,
                         capture_output=True, text=True, check=True).stdout
    cmd = out.strip().splitlines()[-1]
    assert cmd.startswith("--kill-on-bad-exit=1 py -m torch.distributed.run --nnodes 2 --nproc_per_node 4")
    assert "--rdzv_id 77 --rdzv_backend c10d --rdzv_endpoint node-a:29500 -m stkit stern train --out r" in cmd
    env.pop("SLURM_JOB_NUM_NODES")
    bad = subprocess.run(["bash", str(HERE / "slurm_torchrun.sbatch")], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "sbatch" in bad.stderr


# ----------------------------------------------------------------------------- torchrun CLI
TINY = """recipe: {name: tiny, kind: stern, dataset: chexpert}
model: {backbone: small, in_channels: 1, backbone_width: 4, glimpse_size: [32, 32],
        stn: {loc_input_size: 80, loc_pool: 1, loc_width: 4}}
# Only the STN trains; the classifier is frozen, i.e. in eval mode: no dropout masks and
# no batch statistics, the two things that depend on how a batch is split among processes.
stages: [{name: s1, epochs: 2, lr: 3.0e-3, stn_lr: 3.0e-3, batch_size: 16, hflip: 0.0, freeze: [classifier]}]
"""


def _tiny_cxr(root: Path) -> Path:
    """32 train, 8 val, 8 test 80-px grey images; abnormal ones carry a bright square."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    rows = ["path,label,patient_id,split,box_x,box_y,box_w,box_h"]
    for i in range(48):
        y = i % 2
        x = (rng.random((80, 80)) * 80).astype(np.uint8)
        if y:
            r, c = rng.integers(10, 60, 2)
            x[r:r + 10, c:c + 10] = 230
        Image.fromarray(x).save(root / "img" / f"{i}.png")
        split = "train" if i < 32 else "val" if i < 40 else "test"
        rows.append(f"img/{i}.png,{y},p{i},{split},,,,")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def _cli(tmp: Path, nproc: int, labels: Path, recipe: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STKIT_OPS_BACKEND": "reference"}
    args = ["stern", "train", "--labels", str(labels), "--out", str(tmp), "--config", str(recipe), "--variants", "bounded"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m", "stkit"]
    cmd = [sys.executable, "-m", "stkit"] if nproc == 1 else launch
    out = subprocess.run(cmd + args, capture_output=True, text=True, env=env, timeout=400, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-4000:]
    assert (tmp / "results.json").exists()
    ckpt = checkpoint.load(tmp / "bounded" / "s1_last.pt", "cpu")
    assert ckpt["record"]["processes"] == nproc
    return ckpt["model"]


def test_torchrun_cli_two_gloo_processes_match_one(tmp_path):
    labels = _tiny_cxr(tmp_path / "data")
    recipe = _write(tmp_path, TINY)
    one = _cli(tmp_path / "one", 1, labels, recipe)
    two = _cli(tmp_path / "two", 2, labels, recipe)
    torch.manual_seed(0)
    init = STERN(stern.recipe(recipe).model).state_dict()
    assert one.keys() == two.keys() == init.keys()
    for k in one:
        assert torch.allclose(one[k], two[k], rtol=1e-4, atol=1e-6), k
    moved = [k for k in one if k.startswith("stn.") and not torch.equal(one[k], init[k])]
    assert len(moved) >= 10  # the STN trained (and both runs agree), rather than agreeing by standing still
    assert all(torch.equal(one[k], init[k]) for k in one if k.startswith("classifier.") and "running" not in k)


def test_variants_share_the_budget_and_only_the_kits_stern_searches():
    for size in ("smoke", "quick"):
        stages = stern.recipe(size).stages
        bounded, faithful = variant_stages(stages, "bounded"), variant_stages(stages, "faithful")
        budget = sum(s.epochs for s in bounded)
        for v in ("baseline", "oracle"):
            [one] = variant_stages(stages, v)
            assert one.epochs == budget and one.until_score is None and one.freeze == () and one.search_sigma == 0
        assert sum(s.epochs for s in faithful) == budget and all(s.name != "warmup" and s.search_sigma == 0 for s in faithful)
        assert any(s.search_sigma > 0 for s in bounded)
    warm = variant_stages(stern.recipe("quick").stages, "bounded")[0]
    assert warm.name == "warmup" and warm.freeze == ("stn",) and warm.until_score is not None
