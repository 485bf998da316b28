"""STERN experiments end to end: data splits -> model -> stages -> test metrics.

The pieces live in their own modules (``stern``, ``train``, ``evaluate``, ``recipes``);
this module strings them together the way notebook 03 and ``python -m stkit stern train``
do, so both follow one code path.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .evaluate import localisation_metrics, predict, roc_auc, thorax_metrics, window_area_fraction
from .recipes import image_size, stern_config, stern_stages
from .stern import STERN
from .stn import pixels_to_theta, pyramid_glimpse
from .train import StageResult, train_stages

SPLITS = ("train", "val", "test")


def load_cxr_splits(labels_csv: str | Path, image_size=None) -> dict:
    """The train/val/test :class:`~stkit.data.CXRDataset` of a kit-format label CSV.

    Every image is decoded here, so a missing or corrupt file fails before training starts.
    """
    from .data import CXRDataset

    splits = {s: CXRDataset(labels_csv, s, image_size=image_size) for s in SPLITS}
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


def build_stern(size: str, variant: str = "bounded", seed: int = 0, **overrides) -> STERN:
    """A freshly initialised STERN (or baseline) for a run size; the seed fixes the init.

    ``overrides`` replace fields of the size's :class:`~stkit.stern.STERNConfig`.
    """
    torch.manual_seed(seed)
    return STERN(replace(stern_config(size, variant), **overrides))


def evaluate_stern(model: STERN, test_set, device="cpu") -> dict:
    """Test ROC AUC and, for models with an STN, where the attention looked.

    Returns the numbers plus ``predictions`` (the raw output of :func:`stkit.evaluate.predict`).
    """
    pred = predict(model, test_set, device=device)
    out = {"test_auc": roc_auc(pred["labels"], pred["scores"]), "predictions": pred}
    if pred["theta"] is not None:
        h, w = test_set[0][0].shape[-2:]
        out |= _window_vs_thorax(model, test_set, pred, h, w)
        abnormal = np.flatnonzero(pred["labels"] == 1)
        boxes = [test_set.boxes(int(pred["indices"][i])).numpy() for i in abnormal]
        if sum(len(b) for b in boxes):
            loc = localisation_metrics(pred["window_px"][abnormal], boxes)
        else:  # e.g. CheXpert: no lesion boxes, nothing to score the window against
            loc = {"center_in_window": None, "area_in_window": None, "n_boxes": 0}
        out |= {
            "lesion_center_in_window": loc["center_in_window"],
            "lesion_area_in_window": loc["area_in_window"],
            "n_lesion_boxes": loc["n_boxes"],
            "mean_window_area": float(window_area_fraction(pred["window_px"], h, w).mean()),
            "mean_aspect": float(pred["aspect"].mean()),
        }
    return out


def _window_vs_thorax(model: STERN, test_set, pred: dict, h: int, w: int) -> dict:
    """Thorax IoU / coverage / best fixed window (when the data has thorax boxes) and the
    share of windows within 0.01 of the smallest scale on either axis (bounded STN only)."""
    out = {}
    cfg = model.stn.cfg
    if cfg.parameterisation == "bounded":
        s_small = np.minimum(pred["theta"][:, 0, 0], pred["theta"][:, 1, 1])
        out["windows_at_min_scale"] = float((s_small <= cfg.s_min + 0.01).mean())
    if getattr(test_set, "has_thorax", False):
        thorax = np.stack([test_set.thorax_box(int(i)).numpy() for i in pred["indices"]])
        out |= thorax_metrics(pred["window_px"], thorax, h, w)
    return out


def train_variant(size: str, variant: str, splits: dict, run_dir: str | Path, seed: int = 0, device="cpu", progress: bool = True,
                  world=None, precision: str | None = None, **model_overrides) -> tuple[STERN, list[StageResult]]:
    """Build and train one variant through all its stages (checkpoints in ``run_dir/<variant>``).

    The ``oracle`` variant needs ``splits`` of :class:`ThoraxCrops` (:func:`oracle_splits`)."""
    model = build_stern(size, variant, seed, **model_overrides)
    stages = [replace(s, precision=precision or s.precision) for s in stern_stages(size, variant)]
    results = train_stages(model, splits["train"], splits["val"], stages, Path(run_dir) / variant, seed, device, progress, world=world)
    return model, results


def run_stern(labels_csv: str | Path, run_dir: str | Path, size: str = "quick", variants=("bounded", "baseline"), seed: int = 0, device="cpu", progress=True,
              world=None, precision: str | None = None) -> dict:
    """Train and test each variant; writes ``run_dir/results.json`` and returns it.

    ``size``: a run size or a recipe file (``stkit/configs``). ``world``: the torchrun
    processes (``stkit.distributed.setup``); only the main one writes results.json.
    ``precision``: "bf16" or "fp32" for every stage (None: as the recipe says)."""
    device = world.device if world is not None else device
    splits = load_cxr_splits(labels_csv, image_size(size))  # fails on bad data before writing anything
    results = {}
    for variant in variants:
        t0 = time.perf_counter()
        data = oracle_splits(splits, stern_config(size).glimpse_size) if variant == "oracle" else splits
        model, stages = train_variant(size, variant, data, run_dir, seed, device, progress, world, precision)
        ev = evaluate_stern(model, data["test"], device)
        ev.pop("predictions")
        results[variant] = ev | {"best_val_auc": [s.best_score for s in stages], "seconds": time.perf_counter() - t0}
        if world is None or world.main:
            (Path(run_dir) / "results.json").write_text(json.dumps(results, indent=2))  # after each variant
    return results


def seeds_table(labels_csv: str | Path, run_dir: str | Path, size: str = "quick", seeds=(0, 1, 2), device="cpu") -> list[dict]:
    """Train STERN, the baseline and the oracle crop once per training seed on one data set;
    one row of test numbers per seed (checkpoints in ``run_dir/seed<k>``, reused when done)."""
    rows = []
    for seed in seeds:
        r = run_stern(labels_csv, Path(run_dir) / f"seed{seed}", size, ("bounded", "baseline", "oracle"), seed, device, progress=False)
        st = r["bounded"]
        rows.append({"seed": seed, "stern_auc": st["test_auc"], "baseline_auc": r["baseline"]["test_auc"],
                     "oracle_auc": r["oracle"]["test_auc"], "iou": st.get("window_thorax_iou"),
                     "fixed_iou": st.get("fixed_window_thorax_iou"), "coverage": st.get("thorax_coverage"),
                     "lesions_in": st["lesion_center_in_window"], "area": st["mean_window_area"],
                     "at_min": st.get("windows_at_min_scale"), "seconds": sum(v["seconds"] for v in r.values())})
    return rows


def main(argv=None) -> None:
    """``python -m stkit.experiment seeds --labels L.csv --out DIR --size quick --seeds 0 1 2``: prints the table."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m stkit.experiment", description="STERN experiments over several seeds.")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("seeds", help="STERN vs baseline vs oracle crop, one row per training seed")
    s.add_argument("--labels", required=True, help="kit-format label CSV (e.g. data/cxr_quick_seed0/labels.csv)")
    s.add_argument("--out", required=True, help="run folder (checkpoints per seed; finished runs are reused)")
    s.add_argument("--size", default="quick", choices=("smoke", "quick", "paper"))
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    s.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    rows = seeds_table(a.labels, a.out, a.size, a.seeds, a.device)
    cols = list(rows[0])
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    means = {c: np.mean([r[c] for r in rows]) for c in cols[1:] if all(isinstance(r[c], (int, float)) for r in rows)}
    print("mean | " + " | ".join(f"{means[c]:.3f}" if c in means else "-" for c in cols[1:]))


if __name__ == "__main__":
    main()
