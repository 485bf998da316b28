"""STNet experiments end to end: BUV folder -> clip datasets -> STNet and the single-frame
baseline trained -> COCO AP under both protocols and inference speed.

    recipe = stnet_recipe("quick")                  # model config, training stage, clip settings
    results = run_stnet(buv_root, run_dir, "quick")  # {"stnet": {...}, "baseline": {...}}

The run sizes: ``smoke`` (seconds, CI), ``quick`` (the 2-core CPU job on the synthetic
videos), ``paper`` (``stkit/configs/stnet_buv.yaml``: the official defaults, real data,
GPUs); a recipe file path stands in for a size. Notebook 05 and
``python -m stkit stnet train|eval`` follow this one code path. Each variant trains in
its own folder ``run_dir/<variant>`` (checkpoints resume there; another configuration's
checkpoint is refused). No model or loss code here.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..data.video import BUVClipDataset, ClipConfig
from .. import checkpoint
from ..trainer import Stage, run_stage
from .config import STNetConfig, stnet_config
from .detector import build_stnet
from .evaluate import evaluate_detector
from .train import STNetTask, stnet_stage, with_frozen

__all__ = ["Recipe", "stnet_recipe", "load_clip_sets", "train_variant", "evaluate_variant", "run_stnet",
           "load_trained", "evaluate_run", "VARIANTS"]

VARIANTS = ("stnet", "baseline", "faithful")


@dataclass(frozen=True)
class Recipe:
    model: STNetConfig  # the STNet variant; the baseline/faithful flags are set per variant
    stage: Stage        # the training stage (global batch, lr, schedule, clipping, frozen parts)
    clip: ClipConfig    # clip length (from the model), sizes and augmentation of the frames


# Model settings per run size beyond stnet_config's presets (the kit's choices for the CPU).
# quick: measured on the synthetic set (see notebook 05 for the numbers of a run).
_MODEL = {
    "smoke": dict(),
    "quick": dict(num_queries=16, lr=4e-4, epochs=6, lr_drop=5, batch_size=2),
}

# Frame sizes: the synthetic videos are 128x160 (smoke 64x80).
_CLIP = {
    "smoke": dict(train_short_sides=(64,), test_short_side=64, max_size=80, hflip=0.5),
    "quick": dict(train_short_sides=(96, 112, 128), test_short_side=112, max_size=200, hflip=0.5),
}


def stnet_recipe(size: str = "quick", **model_overrides) -> Recipe:
    """Model, stage and clip settings of a run size, or of a recipe file (``.yaml``)."""
    if str(size).endswith((".yaml", ".yml")) or size == "paper":
        from ..configs import load_stnet_recipe

        r = load_stnet_recipe("stnet_buv" if size == "paper" else size)
        cfg = replace(r.model, **model_overrides).check()
        stage = with_frozen(replace(r.stage, epochs=cfg.epochs, lr=cfg.lr, lr_drop_epoch=cfg.lr_drop,
                                    batch_size=cfg.batch_size), cfg)
        return Recipe(cfg, stage, replace(r.clip, n_support=cfg.n_support, n_global=cfg.n_global))
    if size not in _MODEL:
        raise ValueError(f"STNet run size must be smoke, quick, paper or a recipe file (.yaml), got {size!r}")
    cfg = stnet_config(size, **{**_MODEL[size], **model_overrides})
    clip = ClipConfig(n_support=cfg.n_support, n_global=cfg.n_global, **_CLIP[size])
    return Recipe(cfg, stnet_stage(cfg), clip)


def variant_config(cfg: STNetConfig, variant: str) -> STNetConfig:
    """stnet (the kit's default), baseline (no temporal points), faithful (as released)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown STNet variant {variant!r}; expected one of {VARIANTS}")
    return replace(cfg, baseline=variant == "baseline", faithful=variant == "faithful").check()


def load_clip_sets(root, clip: ClipConfig, cache: bool = True) -> dict:
    """{"train": training clips (random transform), "val": every val frame a key frame}."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"BUV folder {root} not found (expected rawframes/ and the split JSONs)")
    return {"train": BUVClipDataset(root, "train", clip, cache=cache),
            "val": BUVClipDataset(root, "val", replace(clip, key_stride=1), cache=cache)}


def train_variant(recipe: Recipe, variant: str, sets: dict, run_dir, seed: int = 0, device="cpu",
                  progress: bool = True, world=None, precision: str | None = None):
    """Train one variant in ``run_dir/<variant>`` (resumes; skips when done) -> (model, result)."""
    cfg = variant_config(recipe.model, variant)
    stage = replace(recipe.stage, precision=precision or recipe.stage.precision)
    device = world.device if world is not None else torch.device(device)
    torch.manual_seed(seed)
    model = build_stnet(cfg)
    task = STNetTask(sets["train"], sets["val"], cfg, device, world)
    result = run_stage(model, task, stage, Path(run_dir) / variant, seed, device, progress, world)
    return model, result


def evaluate_variant(model, val_set, per_frame_items: int | None = None, progress: bool = False) -> dict:
    """COCO AP under both protocols (val_* all frames, key_* key frames) and fps of both modes."""
    m = evaluate_detector(model, val_set, per_frame_items=per_frame_items, progress=progress)
    m["shuffle_speedup"] = m["fps_shuffle"] / max(m["fps_per_frame"], 1e-9)
    return m


def run_stnet(root, run_dir, size: str = "quick", variants=("stnet", "baseline"), seed: int = 0,
              device="cpu", progress: bool = True, world=None, precision: str | None = None,
              **model_overrides) -> dict:
    """Train and evaluate each variant; write ``run_dir/results.json`` (main process)."""
    recipe = stnet_recipe(size, **model_overrides)
    sets = load_clip_sets(root, recipe.clip)
    results = {}
    for variant in variants:
        t0 = time.perf_counter()
        model, result = train_variant(recipe, variant, sets, run_dir, seed, device, progress, world, precision)
        m = evaluate_variant(model, sets["val"], progress=progress and (world is None or world.main))
        m.update(train_seconds=result.seconds, best_epoch=result.best_epoch,
                 seconds=time.perf_counter() - t0, history=result.history)
        results[variant] = m
    if world is None or world.main:
        _write_json(Path(run_dir) / "results.json", results)
    return results


def load_trained(recipe: Recipe, variant: str, run_dir, device="cpu"):
    """The best weights of a trained variant (``run_dir/<variant>/train_best.pt``); a checkpoint
    of another model configuration is refused with the differences."""
    cfg = variant_config(recipe.model, variant)
    path = Path(run_dir) / variant / f"{recipe.stage.name}_best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train the {variant!r} variant first (python -m stkit stnet train)")
    ckpt = checkpoint.load(path, device)
    saved = ckpt["record"]["model_config"]
    checkpoint.check_record(path, {"model_config": saved}, {"model_config": json.loads(json.dumps(cfg.to_dict()))})
    model = build_stnet(cfg).to(device)
    model.load_state_dict(ckpt["model"])
    return model.eval()


def evaluate_run(root, run_dir, size: str = "quick", variants=("stnet", "baseline"), device="cpu",
                 progress: bool = True, **model_overrides) -> dict:
    """Evaluate trained variants again (no training); write ``run_dir/eval.json``."""
    recipe = stnet_recipe(size, **model_overrides)
    sets = load_clip_sets(root, recipe.clip)
    out = {v: evaluate_variant(load_trained(recipe, v, run_dir, device), sets["val"], progress=progress)
           for v in variants}
    _write_json(Path(run_dir) / "eval.json", out)
    return out


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    os.replace(tmp, path)
