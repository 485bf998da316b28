"""STNet experiments end to end: recipe -> BUV clip sets -> STNet and the single-frame
baseline trained -> COCO AP under each protocol (all frames, the kit's key frames, the
released test) and inference speed.

    r = recipe("quick")                                    # or "smoke", "paper", a .yaml path
    sets = load_splits(buv_root, r.data)                   # train clips, every val frame a key
    model, result = train_variant(r, "stnet", sets, run_dir)
    results = run(buv_root, run_dir, "quick", ("stnet", "baseline"))   # -> results.json

What notebook 05 runs is what ``python -m stkit stnet train|eval`` runs. A variant's
checkpoints go to ``run_dir/<variant>``, where a second run resumes them and a checkpoint
of another configuration is refused. Models, losses and metrics live in their own modules.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

from ..data.video import BUVClipDataset, ClipConfig, released_clip
from ..engine import checkpoint
from ..engine.recipe import Recipe, load_recipe, with_stages
from ..engine.trainer import StageResult, run_stage
from .config import STNetConfig, variant_config
from .evaluate import evaluate_model
from .model import STNet, build_model
from .task import StageConfig, STNetTask

__all__ = ["recipe", "variant_recipe", "variant_splits", "load_splits", "build", "train_variant", "run", "load_trained",
           "evaluate_run"]


def recipe(size: str | Path = "quick") -> Recipe:
    """A run size (``stkit/recipes/stnet_<size>.yaml``) or a recipe file, read strictly; the
    clip length of the data section follows from the model's ``n_support`` and ``n_global``."""
    r = load_recipe("stnet", size, STNetConfig, StageConfig, ClipConfig,
                    data_fixed=lambda m: {"n_support": m.n_support, "n_global": m.n_global})
    if len(r.stages) != 1:
        raise ValueError(f"{r.path}: an STNet recipe has one training stage, got {len(r.stages)}")
    return r


def variant_recipe(r: Recipe, variant: str) -> Recipe:
    """The recipe of a variant (``stkit.stnet.config.VARIANTS``): the same stages for all;
    ``faithful`` also reads its clips as the release does (``stkit.data.video.released_clip``)."""
    data = released_clip(r.data) if variant == "faithful" else r.data
    return replace(r, model=variant_config(r.model, variant), data=data)


def variant_splits(root, r: Recipe, variants) -> dict:
    """{variant: load_splits(...)} for each variant's data, loading each distinct data config once."""
    loaded, out = {}, {}
    for variant in variants:
        data = variant_recipe(r, variant).data
        key = repr(data)
        if key not in loaded:
            loaded[key] = load_splits(root, data)
        out[variant] = loaded[key]
    return out


def load_splits(root, clip: ClipConfig) -> dict:
    """{"train": training clips (random transform), "val": every val frame a key frame}."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"BUV folder {root} not found (expected rawframes/ and the split JSONs)")
    return {"train": BUVClipDataset(root, "train", clip, cache=True),
            "val": BUVClipDataset(root, "val", replace(clip, key_stride=1), cache=True)}


def build(r: Recipe, variant: str = "stnet", seed: int = 0) -> STNet:
    """A freshly initialised detector of a recipe's variant; the seed fixes the init."""
    torch.manual_seed(seed)
    return build_model(variant_config(r.model, variant))


def train_variant(r: Recipe, variant: str, sets: dict, run_dir, seed: int = 0, device="cpu",
                  progress: bool = True, world=None) -> tuple[STNet, StageResult]:
    """Train one variant in ``run_dir/<variant>`` (resumes; skips when done) -> (model, result)."""
    device = world.device if world is not None else torch.device(device)
    model = build(r, variant, seed)
    task = STNetTask(sets["train"], sets["val"], model.config, device, world)
    result = run_stage(model, task, r.stages[0], Path(run_dir) / variant, seed, device, progress, world)
    return model, result


def run(root, run_dir, size: str | Path = "quick", variants=("stnet", "baseline"), seed: int = 0,
        device="cpu", progress: bool = True, world=None, precision: str | None = None,
        batch_size: int | None = None) -> dict:
    """Train and evaluate each variant; write ``run_dir/results.json`` (main process).

    ``precision`` ("bf16" | "fp32") and ``batch_size`` (global clips) replace the recipe's."""
    r = with_stages(recipe(size), precision=precision, batch_size=batch_size)
    splits = variant_splits(root, r, variants)
    results = {}
    for variant in variants:
        t0 = time.perf_counter()
        sets = splits[variant]
        model, result = train_variant(r, variant, sets, run_dir, seed, device, progress, world)
        m = evaluate_model(model, sets["val"], progress=progress and (world is None or world.main))
        m.update(train_seconds=result.seconds, best_epoch=result.best_epoch,
                 seconds=time.perf_counter() - t0, history=result.history)
        results[variant] = m
    if world is None or world.main:
        checkpoint.write_json(Path(run_dir) / "results.json", results)
    return results


def load_trained(r: Recipe, variant: str, run_dir, device="cpu") -> STNet:
    """The best weights of a trained variant (``run_dir/<variant>/train_best.pt``); a checkpoint
    of another model configuration is refused with the differences."""
    cfg = variant_config(r.model, variant)
    path = Path(run_dir) / variant / f"{r.stages[0].name}_best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train the {variant!r} variant first (python -m stkit stnet train)")
    ckpt = checkpoint.load(path, device)
    saved = ckpt["record"]["model_config"]
    checkpoint.check_record(path, {"model_config": saved}, {"model_config": checkpoint.plain(cfg.to_dict())})
    model = build_model(cfg).to(device)
    model.load_state_dict(ckpt["model"])
    return model.eval()


def evaluate_run(root, run_dir, size: str | Path = "quick", variants=("stnet", "baseline"), device="cpu",
                 progress: bool = True) -> dict:
    """Evaluate trained variants again (no training); write ``run_dir/eval.json``."""
    r = recipe(size)
    splits = variant_splits(root, r, variants)
    out = {v: evaluate_model(load_trained(r, v, run_dir, device), splits[v]["val"], progress=progress) for v in variants}
    checkpoint.write_json(Path(run_dir) / "eval.json", out)
    return out
