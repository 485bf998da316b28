"""VinDr-CXR annotations (Kaggle train.csv, or PhysioNet annotations_*.csv) -> the kit's
label CSV, with the radiologists' boxes merged (data_prep.boxfusion) or all kept.

Checks what the file promises: class_id in 0..14 and class_name matching it (or a known
class_name when there is no class_id column), a rad_id on every row (a file without the
column, such as a consensus test file, gets rad_id "consensus"), four coordinates on
every finding and none on "No finding", boxes inside the DICOM's Rows x Columns when the
image is there. Not an image reader beyond the DICOM header.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stkit.data.images import image_size

from .boxfusion import FusionConfig, fuse
from .csvtools import fail_at, no_patient_in_two, not_blank, numbers, read_source, rel_many, split_patients, write_labels

CLASSES = ("Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD",
           "Infiltration", "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion",
           "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", "No finding")   # class_id = index
NO_FINDING = 14
LOCAL_LABELS = CLASSES + ("Clavicle fracture", "Edema", "Emphysema", "Enlarged PA", "Lung cavity", "Lung cyst",
                          "Mediastinal shift", "Rib fracture")   # PhysioNet files' extra local labels
COORDS = ("x_min", "y_min", "x_max", "y_max")
BOX_MODES = ("merged", "all")
CONSENSUS = "consensus"      # rad_id of files without one (consensus annotations)


def read_annotations(src, what) -> tuple[pd.DataFrame, pd.Series]:
    """The checked annotation rows and a boolean Series: is this row a finding?"""
    df = read_source(src, ["image_id", "class_name", *COORDS], what)
    if "rad_id" in df.columns:
        not_blank(df, ["rad_id"], src)
        fail_at(src, ~df.rad_id.str.fullmatch(r"R\d+"), df, "rad_id", "is not a reader id like R8")
    else:                                                # a consensus file: one "reader", nothing to merge
        df["rad_id"] = CONSENSUS
    not_blank(df, ["image_id", "class_name"], src)
    if "class_id" in df.columns:
        cls = numbers(df, "class_id", src, allowed=list(range(len(CLASSES))))
        fail_at(src, cls.isna(), df, "class_id", "is empty")
        expected = cls.astype(int).map(dict(enumerate(CLASSES)))
        fail_at(src, df.class_name != expected, df, "class_name",
                "does not match its class_id (" + ", ".join(f"{k} {n}" for k, n in enumerate(CLASSES)) + ")")
        finding = cls != NO_FINDING
    else:
        known = {n.lower() for n in LOCAL_LABELS}
        fail_at(src, ~df.class_name.str.lower().isin(known), df, "class_name",
                f"is not a VinDr-CXR class ({', '.join(LOCAL_LABELS)})")
        finding = df.class_name.str.lower() != "no finding"
    filled = df[list(COORDS)] != ""
    for c in COORDS:
        fail_at(src, finding & ~filled[c], df, c, "is empty on a finding row (a finding has a box)")
        fail_at(src, ~finding & filled[c], df, c, "is not empty on a 'No finding' row")
    return df, finding


def _image_sizes(ids, folder: Path) -> dict:
    """image_id -> (H, W) from the DICOM headers that exist."""
    out = {}
    for i in ids:
        p = folder / f"{i}.dicom"
        if p.is_file():
            out[i] = image_size(p)
    return out


def _boxes(df, finding, src, folder: Path, mode: str, cfg: FusionConfig, notes: list) -> pd.DataFrame:
    """One row per kept (merged or raw) box: image_id, box_*, finding, rad_id, n_readers."""
    xy = np.stack([numbers(df, c, src).to_numpy() for c in COORDS], axis=1)     # (R, 4)
    good = finding.to_numpy() & (xy[:, 2] > xy[:, 0]) & (xy[:, 3] > xy[:, 1])
    n_bad = int((finding.to_numpy() & ~good).sum())
    if n_bad:
        notes.append(f"{src}: {n_bad} degenerate boxes (x_max <= x_min or y_max <= y_min) left out")
    b = df[good].assign(x0=xy[good, 0], y0=xy[good, 1], x1=xy[good, 2], y1=xy[good, 3])
    sizes = _image_sizes(dict.fromkeys(b.image_id), folder)
    if len(sizes) < b.image_id.nunique():
        notes.append(f"{src}: {b.image_id.nunique() - len(sizes)} images with boxes not found under {folder}: "
                     "their boxes were not checked against the image size")
    H = b.image_id.map(lambda i: sizes.get(i, (np.inf, np.inf))[0])
    W = b.image_id.map(lambda i: sizes.get(i, (np.inf, np.inf))[1])
    for c, bad in (("x_min", b.x0 < -1), ("y_min", b.y0 < -1), ("x_max", b.x1 > W + 1), ("y_max", b.y1 > H + 1)):
        fail_at(src, bad, b, c, "lies outside the image (DICOM Rows x Columns "
                f"{H[bad].iloc[0] if bad.any() else 0:g} x {W[bad].iloc[0] if bad.any() else 0:g})")
    b = b.sort_values("image_id", key=lambda s: s.map({i: k for k, i in enumerate(dict.fromkeys(s))}), kind="stable")
    ids, boxes = b.image_id.to_numpy(), b[["x0", "y0", "x1", "y1"]].to_numpy()      # (B, 4)
    names, rads = b.class_name.tolist(), b.rad_id.tolist()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1], True])                # image boundaries
    out = []
    for s, e in zip(starts[:-1], starts[1:]):
        if mode == "all":
            kept = [{"box": boxes[k], "finding": names[k], "readers": [rads[k]]} for k in range(s, e)]
        else:
            kept = fuse(boxes[s:e], rads[s:e], names[s:e], cfg)
        out += [(ids[s], k["box"][0], k["box"][1], k["box"][2] - k["box"][0], k["box"][3] - k["box"][1],
                 k["finding"], ";".join(k["readers"]), len(k["readers"])) for k in kept]
    if mode == "merged":
        notes.append(f"{src}: {len(b)} finding boxes of {b.image_id.nunique()} images merged into {len(out)} "
                     f"(IoU > {cfg.iou_threshold}, same class, different readers; kept if marked by "
                     f">= {cfg.min_readers} reader(s))")
    return pd.DataFrame(out, columns=["image_id", "box_x", "box_y", "box_w", "box_h", "finding", "rad_id", "n_readers"])


def _convert_part(src, folder: Path, out_csv, mode, cfg, notes) -> pd.DataFrame:
    """One annotation file -> rows (image_id, box_*, finding, rad_id, n_readers, label, path)."""
    df, finding = read_annotations(src, f"VinDr-CXR {src.name}")
    abnormal = finding.groupby(df.image_id, sort=False).any()
    readers = df.groupby("image_id", sort=False).rad_id.agg(lambda r: ";".join(sorted(set(r))))
    boxes = _boxes(df, finding, src, folder, mode, cfg, notes)
    no_box = abnormal[abnormal].index.difference(boxes.image_id.unique())
    if len(no_box):
        notes.append(f"{src}: {len(no_box)} abnormal images without a kept box (one row, no box)")
    boxed = set(boxes.image_id)
    plain = pd.DataFrame({"image_id": [i for i in abnormal.index if i not in boxed]})
    plain["rad_id"] = plain.image_id.map(readers)
    plain["n_readers"] = plain.rad_id.str.count(";") + 1
    img = pd.concat([plain, boxes], ignore_index=True)
    order = {i: k for k, i in enumerate(abnormal.index)}
    img = img.sort_values("image_id", key=lambda s: s.map(order), kind="stable")
    img["label"] = img.image_id.map(abnormal).astype(int)
    img["path"] = rel_many(folder, img.image_id + ".dicom", out_csv)
    return img


def convert_vindr(train_csv, out_csv, *, image_dir, test_csv=None, boxes="merged", iou_threshold=0.5,
                  min_readers=1, val_fraction=0.1, test_fraction=0.1, seed=0, verbose=True) -> Path:
    """VinDr-CXR train.csv (+ the test annotations) -> kit CSV; images are the DICOMs
    image_dir/train/<image_id>.dicom (and image_dir/test/... for test_csv).

    Label: abnormal if ANY radiologist marked a finding (class_id != 14 "No finding";
    without a class_id column, as in the PhysioNet files, class_name decides).
    Boxes, (x_min, y_min, x_max - x_min, y_max - y_min) in DICOM pixels with the class in
    `finding`: boxes="merged" (default) fuses the readers' boxes by the rule of
    data_prep.boxfusion (iou_threshold, min_readers), `rad_id` lists the readers of each
    merged box ("R8;R9") and `n_readers` counts them; boxes="all" keeps every box with its
    own rad_id. Degenerate boxes are left out and counted. VinDr-CXR publishes no patient
    ids, so each image is its own patient. Splits: test_csv's images are the test split and
    val_fraction of train.csv's images become val; without test_csv, val_fraction and
    test_fraction of train.csv's images are drawn with `seed`.
    """
    if boxes not in BOX_MODES:
        raise ValueError(f"boxes must be one of {BOX_MODES}, got {boxes!r}")
    if not (0 <= iou_threshold < 1 and int(min_readers) >= 1):
        raise ValueError(f"need 0 <= iou_threshold < 1 and min_readers >= 1; got {iou_threshold}, {min_readers}")
    cfg = FusionConfig(iou_threshold=float(iou_threshold), min_readers=int(min_readers))
    image_dir = Path(image_dir)
    parts = [("train", Path(train_csv))] + ([("test", Path(test_csv))] if test_csv is not None else [])
    frames, notes = [], []
    for folder, src in parts:
        img = _convert_part(src, image_dir / folder, out_csv, boxes, cfg, notes)
        frames.append(img.assign(part=folder))
    if len(frames) == 2:
        no_patient_in_two({str(src): set(f.image_id) for (_, src), f in zip(parts, frames)})
    rows = pd.concat(frames, ignore_index=True)
    rows["finding"] = rows.finding.fillna("")
    rows["n_readers"] = rows.n_readers.astype(int)
    rows["patient_id"] = rows.image_id
    train_ids = rows.image_id[rows.part == "train"]
    fr = {"val": val_fraction, "train": 1.0} if test_csv is not None else {"val": val_fraction, "test": test_fraction, "train": 1.0}
    split = split_patients(train_ids, fr, seed)
    rows["split"] = rows.image_id.map(split).fillna("test")
    return write_labels(rows.drop(columns=["image_id", "part"]), out_csv, verbose, notes)
