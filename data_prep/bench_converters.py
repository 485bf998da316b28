"""Benchmark: each label conversion on CSVs of the real files' sizes, in one run.

    python -m data_prep.bench_converters [--dir /tmp/somewhere]

Generates, in a temporary folder, a VinDr-CXR-shaped train.csv (67,914 rows: 15,000
images, 3 readers each, 4,394 abnormal with overlapping boxes), a ChestX-ray14-shaped
Data_Entry_2017_v2020.csv (112,120 images of 30,805 patients) with a 984-row
BBox_List_2017.csv and the official split lists, and a CheXpert-shaped train.csv (223,414
rows); then times each conversion once and prints seconds and rows per second. The images
are absent (stand-ins are not needed to convert labels). A script, not a test: numbers
depend on the machine.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .chexpert import PATHOLOGIES
from .cxr_datasets import convert_chexpert, convert_nih, convert_vindr
from .nih import BBOX_FINDINGS, FINDINGS
from .vindr import CLASSES

VINDR_ROWS, VINDR_IMAGES, VINDR_ABNORMAL = 67_914, 15_000, 4_394
NIH_IMAGES, NIH_PATIENTS, NIH_BOXES = 112_120, 30_805, 984
CHEXPERT_ROWS, CHEXPERT_PATIENTS = 223_414, 64_540


def _write(path: Path, header, rows) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def make_vindr(folder: Path, rng) -> Path:
    """Normal images: 3 'No finding' rows; abnormal: lesions boxed by 1-3 of 3 readers."""
    rows, ids = [], [f"{k:032x}" for k in rng.integers(0, 2**62, VINDR_IMAGES)]
    for i in ids[VINDR_ABNORMAL:]:
        rows += [[i, "No finding", 14, f"R{r}", "", "", "", ""] for r in (8, 9, 10)]
    n_box = VINDR_ROWS - len(rows)
    box_rows = []
    while len(box_rows) < n_box:
        i = ids[len(box_rows) % VINDR_ABNORMAL]
        c = int(rng.integers(0, 14))
        x, y = rng.uniform(200, 2400, 2)
        w, h = rng.uniform(40, 600, 2)
        for r in rng.choice([8, 9, 10], int(rng.integers(1, 4)), replace=False):
            j = rng.normal(0, 0.05 * min(w, h), 4)
            box_rows.append([i, CLASSES[c], c, f"R{r}", *np.round([x + j[0], y + j[1], x + w + j[2], y + h + j[3]], 1)])
    rows += box_rows[:n_box]
    return _write(folder / "train.csv", ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max",
                                         "y_max"], rows)


def make_nih(folder: Path, rng) -> tuple:
    per = np.full(NIH_PATIENTS, NIH_IMAGES // NIH_PATIENTS)
    per[: NIH_IMAGES - per.sum()] += 1
    names, rows = [], []
    for p, n in enumerate(per, start=1):
        for k in range(n):
            lab = "No Finding" if rng.random() < 0.54 else "|".join(sorted(set(rng.choice(FINDINGS, int(rng.integers(1, 4))))))
            names.append(f"{p:08d}_{k:03d}.png")
            rows.append([names[-1], lab, k, p, 50, "M", "PA", 2500, 2048, 0.143, 0.143])
    entry = _write(folder / "Data_Entry_2017_v2020.csv", ["Image Index", "Finding Labels", "Follow-up #", "Patient ID",
                   "Patient Age", "Patient Gender", "View Position", "OriginalImage[Width", "Height]",
                   "OriginalImagePixelSpacing[x", "y]"], rows)
    sick = [r for r in rows if r[1] != "No Finding"][:NIH_BOXES]
    bbox = _write(folder / "BBox_List_2017.csv", ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]", "", "", ""],
                  [[r[0], rng.choice(list(BBOX_FINDINGS)), *np.round(rng.uniform(0, 500, 2), 3),
                    *np.round(rng.uniform(20, 400, 2), 3), "", "", ""] for r in sick])
    test_pat = set(rng.choice(np.arange(1, NIH_PATIENTS + 1), NIH_PATIENTS // 4, replace=False).tolist())
    is_test = [int(n[:8]) in test_pat for n in names]
    (folder / "test_list.txt").write_text("".join(n + "\n" for n, t in zip(names, is_test) if t))
    (folder / "train_val_list.txt").write_text("".join(n + "\n" for n, t in zip(names, is_test) if not t))
    return entry, bbox, folder / "train_val_list.txt", folder / "test_list.txt"


def make_chexpert(folder: Path, rng) -> Path:
    obs_cols = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                "Fracture", "Support Devices"]
    values = np.array(["", "", "", "0.0", "1.0", "-1.0"])
    rows = []
    for k in range(CHEXPERT_ROWS):
        p = k * CHEXPERT_PATIENTS // CHEXPERT_ROWS + 1
        view = "Lateral" if rng.random() < 0.145 else "Frontal"
        obs = values[rng.integers(0, len(values), len(obs_cols))].tolist()
        obs[0] = "1.0" if not any(o == "1.0" for o in obs[1:13]) and rng.random() < 0.5 else ""
        rows.append([f"CheXpert-v1.0/train/patient{p:05d}/study{k}/view1_{view.lower()}.jpg", "Male", 60,
                     view, "AP" if view == "Frontal" else "", *obs])
    assert set(PATHOLOGIES) <= set(obs_cols)
    return _write(folder / "train.csv", ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *obs_cols], rows)


def run(folder: Path) -> dict:
    rng = np.random.default_rng(0)
    (folder / "vindr").mkdir(parents=True)
    (folder / "nih").mkdir()
    (folder / "chexpert" / "CheXpert-v1.0").mkdir(parents=True)
    t0 = time.perf_counter()
    vindr = make_vindr(folder / "vindr", rng)
    entry, bbox, tv, te = make_nih(folder / "nih", rng)
    chex = make_chexpert(folder / "chexpert" / "CheXpert-v1.0", rng)
    print(f"generated the CSVs in {time.perf_counter() - t0:.1f} s under {folder}")
    jobs = {
        "VinDr-CXR train.csv, boxes merged": (VINDR_ROWS, lambda: convert_vindr(
            vindr, folder / "o_vindr.csv", image_dir=folder / "vindr", verbose=False)),
        "VinDr-CXR train.csv, all boxes": (VINDR_ROWS, lambda: convert_vindr(
            vindr, folder / "o_vindr_all.csv", image_dir=folder / "vindr", boxes="all", verbose=False)),
        "ChestX-ray14 Data_Entry + BBox + lists": (NIH_IMAGES, lambda: convert_nih(
            entry, folder / "o_nih.csv", image_dir=folder / "nih", bbox_csv=bbox, train_val_list=tv, test_list=te,
            verbose=False)),
        "CheXpert train.csv": (CHEXPERT_ROWS, lambda: convert_chexpert(chex, folder / "o_chex.csv", verbose=False)),
    }
    times = {}
    for name, (n, fn) in jobs.items():
        t = time.perf_counter()
        fn()
        times[name] = time.perf_counter() - t
        print(f"{name:<40} {n:>8,} rows  {times[name]:6.2f} s  {n / times[name]:>9,.0f} rows/s")
    print("torch imported:", "torch" in sys.modules)
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m data_prep.bench_converters", description=__doc__.split("\n")[0])
    ap.add_argument("--dir", help="where to write the CSVs (default: a temporary folder, removed after)")
    a = ap.parse_args(argv)
    if a.dir:
        run(Path(a.dir))
    else:
        with tempfile.TemporaryDirectory() as d:
            run(Path(d))


if __name__ == "__main__":
    main()
