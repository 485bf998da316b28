"""ChestX-ray14 (NIH) Data_Entry_2017 (+ BBox_List_2017, official split lists) -> the kit's
label CSV.

Reads Data_Entry_2017.csv and Data_Entry_2017_v2020.csv alike (the older file ends every
line with a comma), and BBox_List_2017.csv with its split header
("Bbox [x,y,w,h]" over four columns, three empty trailing columns). Checks what the files
promise: known finding names, one Patient ID per Image Index prefix, boxes with positive
size inside their image. Not an image reader beyond the size in a PNG header.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from stkit.data.cxr_labels import BOX
from stkit.data.images import image_size

from .csvtools import fail_at, no_patient_in_two, not_blank, numbers, one_of, read_source, rel_many, split_patients, write_labels

FINDINGS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis",
            "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax")
NO_FINDING = "No Finding"
BBOX_FINDINGS = {"Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Effusion": "Effusion",
                 "Infiltrate": "Infiltration", "Mass": "Mass", "Nodule": "Nodule", "Pneumonia": "Pneumonia",
                 "Pneumothorax": "Pneumothorax"}   # BBox_List spelling -> Data_Entry spelling
BBOX_COLS = ("Bbox [x", "y", "w", "h]")
RELEASE_SIZE = (1024, 1024)                        # (H, W) of the released PNGs
NAME = re.compile(r"(\d{8})_(\d{3})\.png")


def _find_images(image_dir: Path, names) -> tuple[dict, int]:
    """name -> path relative to image_dir ("/"-separated) of the file, found directly in
    image_dir or in its subfolders (the release's images_*/images/); and how many are missing."""
    found = {n: n for n in names if (image_dir / n).is_file()}
    if len(found) < len(names) and image_dir.is_dir():
        wanted = set(names) - set(found)
        for folder, _, files in os.walk(image_dir):
            sub = Path(os.path.relpath(folder, image_dir)).as_posix()
            for f in wanted.intersection(files):
                found[f] = f if sub == "." else f"{sub}/{f}"
    return found, len(names) - len(found)


def _read_list(path) -> set:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split list not found")
    return {ln.strip() for ln in path.read_text().splitlines() if ln.strip()}


def read_data_entry(src) -> pd.DataFrame:
    """Data_Entry_2017(_v2020).csv, checked: names, findings, views, Patient ID vs name."""
    df = read_source(src, ["Image Index", "Finding Labels", "Patient ID"], "ChestX-ray14 Data_Entry_2017.csv")
    not_blank(df, ["Image Index", "Finding Labels", "Patient ID"], src)
    m = df["Image Index"].str.fullmatch(NAME.pattern)
    fail_at(src, ~m, df, "Image Index", "is not a file name like 00000001_000.png")
    fail_at(src, ~df["Patient ID"].str.fullmatch(r"\d+"), df, "Patient ID", "is not a number")
    prefix = df["Image Index"].str[:8].astype(int)
    fail_at(src, prefix != df["Patient ID"].astype(int), df, "Patient ID",
            "differs from the patient number that starts its Image Index")
    fail_at(src, df["Image Index"].duplicated(), df, "Image Index", "is listed twice")
    items = df["Finding Labels"].str.split("|")
    known = set(FINDINGS)
    bad = items.map(lambda xs: xs != [NO_FINDING] and not set(xs) <= known)
    fail_at(src, bad, df, "Finding Labels", f"is not 'No Finding' nor '|'-separated names from {list(FINDINGS)}")
    if "View Position" in df.columns:
        one_of(df, "View Position", src, ("PA", "AP"))
    df["patient"] = df["Patient ID"].astype(int).astype(str)   # "00012" and "12" are one patient
    return df


def _split(df, src, train_val_list, test_list, val_fraction, test_fraction, seed) -> dict:
    """Patient -> split, official lists when given."""
    names, patient = df["Image Index"].tolist(), dict(zip(df["Image Index"], df.patient))
    if (train_val_list is None) != (test_list is None):
        raise ValueError("give both train_val_list and test_list (the official split), or neither")
    if test_list is None:
        return split_patients(patient.values(), {"val": val_fraction, "test": test_fraction, "train": 1.0}, seed)
    tv, te = _read_list(train_val_list), _read_list(test_list)
    both, neither = tv & te, [n for n in names if n not in tv and n not in te]
    if both:
        raise ValueError(f"{sorted(both)[:3]} listed in both {train_val_list} and {test_list}")
    if neither:
        raise ValueError(f"{len(neither)} images of {src} (e.g. {neither[0]!r}) are in neither "
                         f"{train_val_list} nor {test_list}")
    test_pat = {patient[n] for n in te if n in patient}
    tv_pat = {patient[n] for n in tv if n in patient}
    no_patient_in_two({str(train_val_list): tv_pat, str(test_list): test_pat})
    return {**split_patients(tv_pat, {"val": val_fraction, "train": 1.0}, seed), **dict.fromkeys(test_pat, "test")}


def read_bboxes(bsrc, entries: pd.DataFrame, src, image_dir: Path, found: dict, notes: list) -> pd.DataFrame:
    """BBox_List_2017.csv -> name, finding (Data_Entry spelling), box_x..box_h, checked."""
    bb = read_source(bsrc, ["Image Index", "Finding Label", *BBOX_COLS], "ChestX-ray14 BBox_List_2017.csv")
    for c in bb.columns:
        if c.startswith("Unnamed: "):
            fail_at(bsrc, bb[c] != "", bb, c, "should be empty (a trailing column of the release's file)")
    not_blank(bb, ["Image Index", "Finding Label", *BBOX_COLS], bsrc)
    label_of = dict(zip(entries["Image Index"], entries["Finding Labels"]))
    fail_at(bsrc, ~bb["Image Index"].isin(label_of), bb, "Image Index", f"is not in {src}")
    fail_at(bsrc, bb["Image Index"].map(label_of) == NO_FINDING, bb, "Image Index",
            f"has a box but is 'No Finding' in {src}")
    one_of(bb, "Finding Label", bsrc, BBOX_FINDINGS)
    x, y, w, h = (numbers(bb, c, bsrc) for c in BBOX_COLS)
    fail_at(bsrc, w <= 0, bb, "w", "is not a positive width")
    fail_at(bsrc, h <= 0, bb, "h]", "is not a positive height")
    fail_at(bsrc, x < -1, bb, "Bbox [x", "lies left of the image")
    fail_at(bsrc, y < -1, bb, "y", "lies above the image")
    size = {n: image_size(image_dir / found[n]) if n in found else RELEASE_SIZE for n in set(bb["Image Index"])}
    H, W = (bb["Image Index"].map(lambda n: size[n][k]) for k in (0, 1))
    fail_at(bsrc, x + w > W + 1, bb, "w", "takes the box past the image's right edge (x + w > image width)")
    fail_at(bsrc, y + h > H + 1, bb, "h]", "takes the box past the image's bottom edge (y + h > image height)")
    if not all(n in found for n in size):
        notes.append(f"{bsrc}: boxes of {sum(n not in found for n in size)} images not found were checked "
                     f"against the release size {RELEASE_SIZE[1]}x{RELEASE_SIZE[0]}")
    finding = bb["Finding Label"].map(BBOX_FINDINGS)
    n_infil = int((bb["Finding Label"] == "Infiltrate").sum())
    if n_infil:
        notes.append(f"{bsrc}: {n_infil} 'Infiltrate' boxes named 'Infiltration' as in {src}")
    absent = [f not in label_of[n].split("|") for n, f in zip(bb["Image Index"], finding)]
    if any(absent):
        notes.append(f"{bsrc}: {sum(absent)} boxes name a finding that their image's Finding Labels lack (kept)")
    return pd.DataFrame({"name": bb["Image Index"].to_numpy(), "finding": finding.to_numpy(),
                         **{c: v.to_numpy() for c, v in zip(BOX, (x, y, w, h))}})


def convert_nih(data_entry_csv, out_csv, *, image_dir, bbox_csv=None, train_val_list=None, test_list=None,
                val_fraction=0.1, test_fraction=0.2, seed=0, verbose=True) -> Path:
    """ChestX-ray14 Data_Entry_2017.csv (+ BBox_List_2017.csv, official split lists) -> kit CSV.

    Label: normal iff Finding Labels is "No Finding". Boxes: BBox_List_2017.csv's
    'Bbox [x', 'y', 'w', 'h]' (pixels of the 1024x1024 image), one row each, finding
    named as in Data_Entry ("Infiltrate" -> "Infiltration"). Splits, by patient: with
    train_val_list and test_list, the official test list is the test split and
    val_fraction of the train_val patients become val; without them, val_fraction and
    test_fraction of all patients are drawn with `seed`. Images are looked up in image_dir
    and its subfolders (the release's images_001/images/...); ones not found keep the
    path image_dir/<name> and are counted, so that CXRDataset names them if used.
    """
    src = Path(data_entry_csv)
    df = read_data_entry(src)
    names = df["Image Index"].tolist()
    split = _split(df, src, train_val_list, test_list, val_fraction, test_fraction, seed)
    notes = []
    image_dir = Path(image_dir)
    found, n_missing = _find_images(image_dir, names)
    if n_missing:
        notes.append(f"{n_missing} of {len(names)} images not found under {image_dir} (paths kept as {image_dir}/<name>)")
    base = pd.DataFrame({"path": rel_many(image_dir, [found.get(n, n) for n in names], out_csv),
                         "label": (df["Finding Labels"] != NO_FINDING).astype(int).to_numpy(),
                         "patient_id": df.patient.to_numpy(), "split": df.patient.map(split).to_numpy(),
                         "finding": "", "name": names})
    for c in BOX:
        base[c] = np.nan
    rows = base
    if bbox_csv is not None:
        boxes = read_bboxes(Path(bbox_csv), df, src, image_dir, found, notes)
        has = base.name.isin(set(boxes.name))
        boxed = base[has].drop(columns=["finding", *BOX]).merge(boxes, on="name")
        rows = pd.concat([base[~has], boxed], ignore_index=True)
        rows["order"] = rows.name.map({n: k for k, n in enumerate(names)})
        rows = rows.sort_values("order", kind="stable").drop(columns="order")
    return write_labels(rows.drop(columns="name"), out_csv, verbose, notes)
