"""STERN experiments end to end: recipe -> data splits -> model -> stages -> test metrics.

    r = recipe("quick")                                   # or "smoke", "paper", a .yaml path
    sets = load_splits(labels_csv, r.data)                # train / val / test CXRDataset
    model, stages = train_variant(r, "bounded", sets, run_dir)
    results = run(labels_csv, run_dir, "quick", ("bounded", "baseline"))   # -> results.json

Notebook 03 and ``python -m stkit stern train|seeds`` follow this one code path. Each
variant trains in its own folder ``run_dir/<variant>`` (checkpoints resume there; another
configuration's checkpoint is refused). No model, loss or metric code here.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..data.cxr import CXRDataset
from ..engine import checkpoint
from ..engine.recipe import Recipe, load_recipe, with_stages
from ..engine.trainer import StageResult
from .config import DataConfig, STERNConfig, variant_config
from .evaluate import evaluate_model
from .model import STERN, build_model
from .stn import pixels_to_theta, pyramid_glimpse
from .task import StageConfig, train_stages, variant_stages

__all__ = ["recipe", "variant_recipe", "load_splits", "ThoraxCrops", "oracle_splits", "build", "train_variant",
           "run", "final_checkpoints", "evaluate_run", "seeds_table", "seeds_summary", "SPLITS", "RESULT_KEYS"]

SPLITS = ("train", "val", "test")
# results.json key of each variant's test AUC in the report's metrics (stkit.report.catalog)
RESULT_KEYS = {"bounded": "test_auc", "faithful": "faithful_test_auc", "baseline": "baseline_test_auc",
               "oracle": "oracle_crop_test_auc"}


def recipe(size: str | Path = "quick") -> Recipe:
    """A run size (``stkit/recipes/stern_<size>.yaml``) or a recipe file, read strictly."""
    return load_recipe("stern", size, STERNConfig, StageConfig, DataConfig)


def variant_recipe(r: Recipe, variant: str) -> Recipe:
    """The recipe of a variant (``stkit.stern.config.VARIANTS``): its model and its stages."""
    return replace(r, model=variant_config(r.model, variant), stages=variant_stages(r.stages, variant))


def load_splits(labels_csv: str | Path, data: DataConfig = DataConfig()) -> dict:
    """The train/val/test :class:`~stkit.data.CXRDataset` of a kit-format label CSV.

    Every image is decoded here, so a missing or corrupt file fails before training starts.
    """
    splits = {s: CXRDataset(labels_csv, s, image_size=data.image_size) for s in SPLITS}
    empty = [s for s, d in splits.items() if len(d) == 0]
    if empty:
        raise ValueError(f"{labels_csv}: split(s) {empty} have no images")
    return splits


class ThoraxCrops(torch.utils.data.Dataset):
    """Step one of a detect-then-classify pipeline, done by an oracle: every image of a
    :class:`~stkit.data.CXRDataset` cropped to its *true* thorax box and sampled at
    ``size`` (h, w) through the image pyramid, as STERN's glimpse is. Items as the
    dataset's: (crop (C, h, w) float32, label, index). It stands in for the paper's
    YOLO crop with a perfect detector, so it is an upper reference for STERN's window.
    """

    def __init__(self, dataset, size: tuple[int, int]):
        if not getattr(dataset, "has_thorax", False):
            raise ValueError(f"{getattr(dataset, 'csv_path', 'the dataset')} has no thorax boxes to crop to")
        crops = []
        for start in range(0, len(dataset), 64):
            items = [dataset[i] for i in range(start, min(start + 64, len(dataset)))]
            x = torch.stack([it[0] for it in items])  # (b, C, H, W)
            box = torch.stack([dataset.thorax_box(it[2]) for it in items])  # (b, 4) x, y, w, h
            theta = pixels_to_theta(torch.cat([box[:, :2], box[:, :2] + box[:, 2:]], 1), *x.shape[-2:])
            crops.append(pyramid_glimpse(x, theta, tuple(size)))  # (b, C, h, w)
        self.images, self.labels, self.csv_path = torch.cat(crops), dataset.labels, dataset.csv_path

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i], i


def oracle_splits(splits: dict, size: tuple[int, int]) -> dict:
    """:class:`ThoraxCrops` of every split."""
    return {name: ThoraxCrops(ds, size) for name, ds in splits.items()}


def build(r: Recipe, variant: str = "bounded", seed: int = 0) -> STERN:
    """A freshly initialised network of a recipe's variant; the seed fixes the init."""
    torch.manual_seed(seed)
    return build_model(variant_config(r.model, variant))


def train_variant(r: Recipe, variant: str, sets: dict, run_dir: str | Path, seed: int = 0, device="cpu",
                  progress: bool = True, world=None) -> tuple[STERN, list[StageResult]]:
    """Build and train one variant through all its stages (checkpoints in ``run_dir/<variant>``).

    The ``oracle`` variant needs ``sets`` of :class:`ThoraxCrops` (:func:`oracle_splits`)."""
    model = build(r, variant, seed)
    stages = variant_stages(r.stages, variant)
    results = train_stages(model, sets["train"], sets["val"], stages, Path(run_dir) / variant, seed, device, progress,
                           world=world)
    return model, results


def run(labels_csv: str | Path, run_dir: str | Path, size: str | Path = "quick", variants=("bounded", "baseline"),
        seed: int = 0, device="cpu", progress=True, world=None, precision: str | None = None,
        batch_size: int | None = None) -> dict:
    """Train and test each variant; writes ``run_dir/results.json`` (main process) and returns it.

    ``world``: the torchrun processes (``stkit.engine.distributed.setup``). ``precision``
    ("bf16" | "fp32") and ``batch_size`` (global) replace every stage's (None: the recipe's)."""
    device = world.device if world is not None else device
    r = with_stages(recipe(size), precision=precision, batch_size=batch_size)
    splits = load_splits(labels_csv, r.data)  # fails on bad data before writing anything
    results = {}
    for variant in variants:
        t0 = time.perf_counter()
        data = oracle_splits(splits, r.model.glimpse_size) if variant == "oracle" else splits
        model, stages = train_variant(r, variant, data, run_dir, seed, device, progress, world)
        ev = evaluate_model(model, data["test"], device)
        ev.pop("predictions")
        results[variant] = ev | {"best_val_auc": [s.best_score for s in stages], "seconds": time.perf_counter() - t0}
        if world is None or world.main:
            checkpoint.write_json(Path(run_dir) / "results.json", results, indent=2)  # after each variant
    return results


def final_checkpoints(run_dir: str | Path) -> dict:
    """{variant: its last stage's best checkpoint} of a run folder (stages in name order)."""
    out = {}
    for v in RESULT_KEYS:
        best = sorted((Path(run_dir) / v).glob("*_best.pt"))
        if best:
            out[v] = best[-1]
    if not out:
        raise FileNotFoundError(f"{run_dir}: no <variant>/<stage>_best.pt checkpoints (variants {sorted(RESULT_KEYS)})")
    return out


def evaluate_run(labels_csv: str | Path, run_dir: str | Path, device="cpu") -> dict:
    """Each trained variant's final best checkpoint, rebuilt from its recorded config and
    evaluated afresh on the CSV's test split -> {variant: test AUC}."""
    out, splits = {}, None
    for variant, path in final_checkpoints(run_dir).items():
        ckpt = checkpoint.load(path, device)
        model = build_model(STERNConfig.from_dict(ckpt["record"]["model_config"]))
        model.load_state_dict(ckpt["model"])
        size = ckpt["record"]["data"]["image"][-1]
        splits = splits or load_splits(labels_csv, DataConfig(size))
        data = oracle_splits(splits, model.config.glimpse_size) if variant == "oracle" else splits
        out[variant] = evaluate_model(model.to(device), data["test"], device)["test_auc"]
    return out


def seeds_table(labels_csv: str | Path, run_dir: str | Path, size: str = "quick", seeds=(0, 1, 2), device="cpu") -> list[dict]:
    """Train STERN, the baseline and the oracle crop once per training seed on one data set;
    one row of test numbers per seed (checkpoints in ``run_dir/seed<k>``, reused when done)."""
    rows = []
    for seed in seeds:
        r = run(labels_csv, Path(run_dir) / f"seed{seed}", size, ("bounded", "baseline", "oracle"), seed, device, progress=False)
        st = r["bounded"]
        rows.append({"seed": seed, "stern_auc": st["test_auc"], "baseline_auc": r["baseline"]["test_auc"],
                     "oracle_auc": r["oracle"]["test_auc"], "iou": st.get("window_thorax_iou"),
                     "fixed_iou": st.get("fixed_window_thorax_iou"), "coverage": st.get("thorax_coverage"),
                     "lesions_in": st["lesion_center_in_window"], "area": st["mean_window_area"],
                     "at_min": st.get("windows_at_min_scale"), "seconds": sum(v["seconds"] for v in r.values())})
    return rows


def seeds_summary(rows: list[dict]) -> str:
    """The seeds table as text: one line per seed and a line of means."""
    cols = list(rows[0])
    lines = [" | ".join(cols)]
    lines += [" | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) for r in rows]
    means = {c: np.mean([r[c] for r in rows]) for c in cols[1:] if all(isinstance(r[c], (int, float)) for r in rows)}
    lines.append("mean | " + " | ".join(f"{means[c]:.3f}" if c in means else "-" for c in cols[1:]))
    return "\n".join(lines)
