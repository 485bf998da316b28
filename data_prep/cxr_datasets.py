"""Converters: the label files of real chest X-ray data sets -> the kit's label CSV.

    python -m data_prep.cxr_datasets chexpert --train-csv CheXpert-v1.0-small/train.csv \\
        --valid-csv CheXpert-v1.0-small/valid.csv --out data/chexpert_labels.csv
    python -m data_prep.cxr_datasets nih --data-entry Data_Entry_2017.csv --image-dir NIH \\
        --bbox BBox_List_2017.csv --train-val-list train_val_list.txt --test-list test_list.txt \\
        --out data/nih_labels.csv
    python -m data_prep.cxr_datasets vindr --train-csv vindr/train.csv --image-dir vindr \\
        --out data/vindr_labels.csv

Each writes a NEW CSV in the format of stkit.data.read_cxr_labels (it refuses to replace
an existing file), with image paths relative to the CSV's folder, and prints what it kept
and what it left out. The images stay where the user downloaded them: the kit never ships
them (all three data sets need a registration). Labelling and split policies are in
data_prep/README.md and in each function's docstring.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd

from stkit.data.cxr import BOX, read_cxr_labels, read_text_csv

CHEXPERT_PATHOLOGIES = [  # the 14 observations minus "No Finding" and "Support Devices"
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture",
]
UNCERTAIN_POLICIES = ("abnormal", "normal", "exclude")
VINDR_NO_FINDING = 14


# --------------------------------------------------------------------------- helpers

def _read(path, required, what) -> pd.DataFrame:
    """A source CSV as strings; errors name the file and the missing columns."""
    path = Path(path)
    df = read_text_csv(path, what)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: {what} lacks column(s) {missing}; found {list(df.columns)}")
    df = df.apply(lambda col: col.str.strip())
    df.index = df.index + 2                              # index = CSV line (header = line 1)
    return df


def _numbers(df, col, src, allowed=None) -> pd.Series:
    """Column as floats (blank -> NaN); anything else non-numeric or not allowed is an error."""
    num = pd.to_numeric(df[col].where(df[col] != ""), errors="coerce")
    bad = (df[col] != "") & (num.isna() if allowed is None else ~num.isin(allowed))
    if bad.any():
        i = bad.index[bad.to_numpy()][0]
        raise ValueError(f"{src}, line {i}: column {col!r} has {df.at[i, col]!r}"
                         + (f"; expected blank or one of {allowed}" if allowed is not None else "; expected a number"))
    return num


def split_patients(patients, fractions: dict, seed: int) -> dict:
    """Patient id -> split, drawn with `seed`: fractions like {"val": 0.1, "train": 0.9}
    (of patients; the last name takes the rest). Same ids and seed, same answer."""
    ids = sorted(set(patients))
    order = np.random.default_rng(seed).permutation(len(ids))
    out, start = {}, 0
    names = list(fractions)
    for k, name in enumerate(names):
        n = len(ids) - start if k == len(names) - 1 else int(round(fractions[name] * len(ids)))
        for j in order[start:start + n]:
            out[ids[j]] = name
        start += n
    return out


def _rel(image_path, out_csv: Path) -> str:
    """Image path as the label CSV will hold it: relative to the CSV's folder."""
    a = os.path.abspath(image_path)
    try:
        return Path(os.path.relpath(a, os.path.abspath(out_csv.parent))).as_posix()
    except ValueError:                                   # another drive (Windows): keep absolute
        return Path(a).as_posix()


def _write(rows: pd.DataFrame, out_csv, verbose: bool, notes: list) -> Path:
    """Write a new label CSV (never replacing a file), check it with the kit's reader."""
    out = Path(out_csv)
    if out.exists():
        raise FileExistsError(f"{out} exists; the converters never overwrite a file. Choose another --out.")
    out.parent.mkdir(parents=True, exist_ok=True)
    cols = ["path", "label", "patient_id", "split", *BOX] + [c for c in rows.columns if c not in
                                                              ("path", "label", "patient_id", "split", *BOX)]
    rows = rows[cols]
    tmp = out.parent / f".{out.name}.{os.getpid()}.partial"   # ours alone: "x" refuses an existing file
    try:
        with open(tmp, "x", newline="") as f:
            rows.to_csv(f, index=False, float_format="%.2f", lineterminator="\n")
        read_cxr_labels(tmp)                             # the kit's own checks, before it is visible
        try:
            os.link(tmp, out)                            # fails, rather than replaces, if out appeared
        except FileExistsError:
            raise FileExistsError(f"{out} appeared while converting; nothing was overwritten") from None
        except OSError:                                  # no hard links on this file system
            if out.exists():
                raise FileExistsError(f"{out} appeared while converting; nothing was overwritten") from None
            os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if verbose:
        img = rows.drop_duplicates("path")
        per = ", ".join(f"{s} {int((img.split == s).sum())} ({int(((img.split == s) & (img.label == 1)).sum())} abnormal)"
                        for s in ("train", "val", "test"))
        print(f"wrote {out}: {len(img)} images of {img.patient_id.nunique()} patients, "
              f"{int(rows.box_x.notna().sum())} boxes; {per}")
        for n in notes:
            print("  note:", n)
    return out


def _no_patient_in_two(sources: dict):
    """sources: name -> set of patient ids; raise if one patient is in two of them."""
    names = list(sources)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            both = sources[names[a]] & sources[names[b]]
            if both:
                raise ValueError(f"patient(s) {sorted(both)[:5]} appear in both {names[a]} and {names[b]}: "
                                 "the splits would leak")


# --------------------------------------------------------------------------- CheXpert

def convert_chexpert(train_csv, out_csv, *, valid_csv=None, image_root=None, uncertain="abnormal",
                     valid_as="test", val_fraction=0.1, test_fraction=0.1, seed=0, verbose=True) -> Path:
    """CheXpert train.csv (+ valid.csv) -> kit CSV. Frontal images only.

    Label: abnormal (1) if any of the 12 pathologies is positive (1); else normal (0) if
    "No Finding" is 1; else, when some pathology is uncertain (-1), `uncertain` decides:
    "abnormal" (default: the image is not "No Finding", the definition of normal used by
    STERN), "normal", or "exclude". Images with no positive, uncertain or "No Finding"
    label are left out (and counted). "Support Devices" never makes an image abnormal.
    Patient: "patientNNNNN" from the Path. Splits, by patient: valid.csv (radiologist
    labels) becomes `valid_as` ("test" by default, or "val"); the other split(s) are drawn
    from train.csv's patients with `seed` (val_fraction and/or test_fraction of patients).
    image_root: the folder that the Path column is relative to (default: the parent of the
    folder holding train.csv, as in the official download).
    """
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be one of {UNCERTAIN_POLICIES}, got {uncertain!r}")
    if valid_as not in ("test", "val"):
        raise ValueError(f"valid_as must be 'test' or 'val', got {valid_as!r}")
    train_csv = Path(train_csv)
    root = Path(image_root) if image_root is not None else train_csv.parent.parent
    need = ["Path", "Frontal/Lateral", "No Finding", *CHEXPERT_PATHOLOGIES]
    parts = [("train.csv", train_csv)] + ([("valid.csv", Path(valid_csv))] if valid_csv is not None else [])
    frames, notes = [], []
    for name, src in parts:
        df = _read(src, need, f"CheXpert {name}")
        frontal = df["Frontal/Lateral"].str.lower() == "frontal"
        notes.append(f"{src}: {int((~frontal).sum())} lateral images left out")
        df = df[frontal]
        pid = df.Path.str.extract(r"(patient\d+)", expand=False)
        if pid.isna().any():
            i = pid.index[pid.isna().to_numpy()][0]
            raise ValueError(f"{src}, line {i}: no patient id (patientNNNNN) in Path {df.at[i, 'Path']!r}")
        obs = pd.DataFrame({c: _numbers(df, c, src, allowed=[1, 0, -1]) for c in ["No Finding", *CHEXPERT_PATHOLOGIES]})
        positive = (obs[CHEXPERT_PATHOLOGIES] == 1).any(axis=1)
        unsure = (obs[CHEXPERT_PATHOLOGIES] == -1).any(axis=1)
        label = pd.Series(np.nan, index=df.index)
        label[positive] = 1
        label[~positive & (obs["No Finding"] == 1)] = 0
        undecided = label.isna() & unsure
        if uncertain != "exclude":
            label[undecided] = 1 if uncertain == "abnormal" else 0
        n_unsure, n_none = int(undecided.sum()), int((label.isna() & ~unsure).sum())
        notes.append(f"{src}: {n_unsure} images with only uncertain findings -> "
                     + ("left out" if uncertain == "exclude" else uncertain))
        if n_none:
            notes.append(f"{src}: {n_none} images without any positive, uncertain or 'No Finding' label left out")
        keep = label.notna()
        frames.append(pd.DataFrame({"path": [_rel(root / p, Path(out_csv)) for p in df.Path[keep]],
                                    "label": label[keep].astype(int).to_numpy(),
                                    "patient_id": pid[keep].to_numpy(), "source": name}))
    rows = pd.concat(frames, ignore_index=True)
    train_pat = set(rows.patient_id[rows.source == "train.csv"])
    if valid_csv is not None:
        _no_patient_in_two({str(train_csv): train_pat, str(valid_csv): set(rows.patient_id[rows.source == "valid.csv"])})
        other = {"val": val_fraction} if valid_as == "test" else {"test": test_fraction}
    else:
        other = {"val": val_fraction, "test": test_fraction}
    split = split_patients(train_pat, {**other, "train": 1.0}, seed)
    rows["split"] = [split.get(p, valid_as) for p in rows.patient_id]
    for c in BOX:
        rows[c] = np.nan
    return _write(rows.drop(columns="source"), out_csv, verbose, notes)


# --------------------------------------------------------------------------- ChestX-ray14

def _find_images(image_dir: Path, names) -> tuple[dict, int]:
    """name -> file under image_dir (directly, or in the release's images_*/images/ folders)."""
    found = {n: image_dir / n for n in names if (image_dir / n).is_file()}
    if len(found) < len(names) and image_dir.is_dir():
        wanted = set(names) - set(found)
        for folder, _, files in os.walk(image_dir):
            for f in wanted.intersection(files):
                found[f] = Path(folder) / f
    return found, len(names) - len(found)


def _read_list(path) -> set:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split list not found")
    return {ln.strip() for ln in path.read_text().splitlines() if ln.strip()}


def convert_nih(data_entry_csv, out_csv, *, image_dir, bbox_csv=None, train_val_list=None, test_list=None,
                val_fraction=0.1, test_fraction=0.2, seed=0, verbose=True) -> Path:
    """ChestX-ray14 Data_Entry_2017.csv (+ BBox_List_2017.csv, official split lists) -> kit CSV.

    Label: normal iff Finding Labels is "No Finding". Boxes: BBox_List_2017.csv's
    'Bbox [x', 'y', 'w', 'h]' (pixels of the 1024x1024 image), one row each. Splits, by
    patient: with train_val_list and test_list, the official test list is the test split
    and val_fraction of the train_val patients become val; without them, val_fraction and
    test_fraction of all patients are drawn with `seed`. Images are looked up in image_dir
    and its subfolders (the release's images_001/images/...); ones not found keep the
    path image_dir/<name> and are counted, so that CXRDataset names them if used.
    """
    src = Path(data_entry_csv)
    df = _read(src, ["Image Index", "Finding Labels", "Patient ID"], "ChestX-ray14 Data_Entry_2017.csv")
    for col in ("Image Index", "Finding Labels", "Patient ID"):
        if (df[col] == "").any():
            i = df.index[(df[col] == "").to_numpy()][0]
            raise ValueError(f"{src}, line {i}: empty {col!r}")
    dup = df["Image Index"].duplicated()
    if dup.any():
        i = dup.index[dup.to_numpy()][0]
        raise ValueError(f"{src}, line {i}: image {df.at[i, 'Image Index']!r} listed twice")
    names = df["Image Index"].tolist()
    label = (df["Finding Labels"] != "No Finding").astype(int)
    patient = dict(zip(names, df["Patient ID"]))
    notes = []

    if (train_val_list is None) != (test_list is None):
        raise ValueError("give both train_val_list and test_list (the official split), or neither")
    if test_list is not None:
        tv, te = _read_list(train_val_list), _read_list(test_list)
        both, neither = tv & te, [n for n in names if n not in tv and n not in te]
        if both:
            raise ValueError(f"{sorted(both)[:3]} listed in both {train_val_list} and {test_list}")
        if neither:
            raise ValueError(f"{len(neither)} images of {src} (e.g. {neither[0]!r}) are in neither "
                             f"{train_val_list} nor {test_list}")
        test_pat = {patient[n] for n in te if n in patient}
        tv_pat = {patient[n] for n in tv if n in patient}
        _no_patient_in_two({str(train_val_list): tv_pat, str(test_list): test_pat})
        split = {**split_patients(tv_pat, {"val": val_fraction, "train": 1.0}, seed), **dict.fromkeys(test_pat, "test")}
    else:
        split = split_patients(patient.values(), {"val": val_fraction, "test": test_fraction, "train": 1.0}, seed)

    image_dir = Path(image_dir)
    found, n_missing = _find_images(image_dir, names)
    if n_missing:
        notes.append(f"{n_missing} of {len(names)} images not found under {image_dir} (paths kept as {image_dir}/<name>)")
    base = pd.DataFrame({"path": [_rel(found.get(n, image_dir / n), Path(out_csv)) for n in names],
                         "label": label.to_numpy(), "patient_id": [patient[n] for n in names],
                         "split": [split[patient[n]] for n in names], "finding": "", "name": names})
    for c in BOX:
        base[c] = np.nan
    rows = base
    if bbox_csv is not None:
        bsrc = Path(bbox_csv)
        bb = _read(bsrc, ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"], "ChestX-ray14 BBox_List_2017.csv")
        lab_of = dict(zip(names, label))
        for i, n in bb["Image Index"].items():
            if n not in lab_of:
                raise ValueError(f"{bsrc}, line {i}: image {n!r} is not in {src}")
            if lab_of[n] == 0:
                raise ValueError(f"{bsrc}, line {i}: image {n!r} has a box but is 'No Finding' in {src}")
        xywh = [_numbers(bb, c, bsrc) for c in ("Bbox [x", "y", "w", "h]")]
        boxes = pd.DataFrame({"name": bb["Image Index"].to_numpy(), "finding": bb["Finding Label"].to_numpy(),
                              **{c: v.to_numpy() for c, v in zip(BOX, xywh)}})
        bad = boxes[list(BOX)].isna().any(axis=1) | (boxes.box_w <= 0) | (boxes.box_h <= 0)
        if bad.any():
            i = bb.index[bad.to_numpy()][0]
            raise ValueError(f"{bsrc}, line {i}: box needs four numbers with positive w and h")
        boxed = base[base.name.isin(set(boxes.name))].drop(columns=["finding", *BOX]).merge(boxes, on="name")
        rows = pd.concat([base[~base.name.isin(set(boxes.name))], boxed], ignore_index=True)
        rows["order"] = rows.name.map({n: k for k, n in enumerate(names)})
        rows = rows.sort_values("order", kind="stable").drop(columns="order")
    return _write(rows.drop(columns="name"), out_csv, verbose, notes)


# --------------------------------------------------------------------------- VinDr-CXR

def convert_vindr(train_csv, out_csv, *, image_dir, test_csv=None, val_fraction=0.1, test_fraction=0.1,
                  seed=0, verbose=True) -> Path:
    """VinDr-CXR train.csv (+ the test annotations) -> kit CSV; images are the DICOMs
    image_dir/train/<image_id>.dicom (and image_dir/test/... for test_csv).

    Label: abnormal if ANY radiologist marked a finding (class_id != 14 "No finding";
    without a class_id column, as in the PhysioNet annotation files, class_name decides).
    Boxes: every finding box of every radiologist, (x_min, y_min, x_max - x_min,
    y_max - y_min) in pixels of the DICOM, with its class_name in the extra column
    `finding`; degenerate boxes are left out and counted. VinDr-CXR publishes no patient
    ids, so each image is its own patient. Splits: test_csv's images are the test split and
    val_fraction of train.csv's images become val; without test_csv, val_fraction and
    test_fraction of train.csv's images are drawn with `seed`.
    """
    need = ["image_id", "class_name", "x_min", "y_min", "x_max", "y_max"]
    image_dir = Path(image_dir)
    parts = [("train", Path(train_csv))] + ([("test", Path(test_csv))] if test_csv is not None else [])
    frames, notes, ids = [], [], {}
    for folder, src in parts:
        df = _read(src, need, f"VinDr-CXR {src.name}")
        if (df.image_id == "").any():
            raise ValueError(f"{src}, line {df.index[(df.image_id == '').to_numpy()][0]}: empty image_id")
        if "class_id" in df.columns:
            cls = _numbers(df, "class_id", src, allowed=list(range(15)))
            if cls.isna().any():
                raise ValueError(f"{src}, line {cls.index[cls.isna().to_numpy()][0]}: empty class_id")
            finding = cls != VINDR_NO_FINDING
        else:
            if (df.class_name == "").any():
                raise ValueError(f"{src}, line {df.index[(df.class_name == '').to_numpy()][0]}: empty class_name")
            finding = df.class_name.str.lower() != "no finding"
        x0, y0, x1, y1 = (_numbers(df, c, src) for c in ("x_min", "y_min", "x_max", "y_max"))
        abnormal = finding.groupby(df.image_id).any()
        has_box = finding & x0.notna() & y0.notna() & x1.notna() & y1.notna()
        good = has_box & (x1 > x0) & (y1 > y0)
        if (has_box & ~good).any():
            notes.append(f"{src}: {int((has_box & ~good).sum())} degenerate boxes (x_max <= x_min or y_max <= y_min) left out")
        if (finding & ~has_box).any():
            notes.append(f"{src}: {int((finding & ~has_box).sum())} findings without a box (the image stays abnormal)")
        ids[str(src)] = set(abnormal.index)
        order = list(dict.fromkeys(df.image_id))
        boxes = pd.DataFrame({"image_id": df.image_id[good], "box_x": x0[good], "box_y": y0[good],
                              "box_w": (x1 - x0)[good], "box_h": (y1 - y0)[good], "finding": df.class_name[good]})
        plain = pd.DataFrame({"image_id": [i for i in order if i not in set(boxes.image_id)]})
        img = pd.concat([plain, boxes], ignore_index=True)
        img["order"] = img.image_id.map({i: k for k, i in enumerate(order)})
        img = img.sort_values("order", kind="stable").drop(columns="order")
        img["label"] = img.image_id.map(abnormal).astype(int)
        img["path"] = [_rel(image_dir / folder / f"{i}.dicom", Path(out_csv)) for i in img.image_id]
        img["part"] = folder
        frames.append(img)
    if len(ids) == 2:
        _no_patient_in_two(ids)
    rows = pd.concat(frames, ignore_index=True)
    rows["finding"] = rows.finding.fillna("")
    rows["patient_id"] = rows.image_id
    train_ids = rows.image_id[rows.part == "train"]
    fr = {"val": val_fraction, "train": 1.0} if test_csv is not None else {"val": val_fraction, "test": test_fraction, "train": 1.0}
    split = split_patients(train_ids, fr, seed)
    rows["split"] = [split.get(i, "test") for i in rows.image_id]
    return _write(rows.drop(columns=["image_id", "part"]), out_csv, verbose, notes)


# --------------------------------------------------------------------------- CLI

def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m data_prep.cxr_datasets",
                                 description="Convert a real chest X-ray data set's labels to the kit's label CSV.")
    sub = ap.add_subparsers(dest="dataset", required=True)
    c = sub.add_parser("chexpert", help="CheXpert train.csv / valid.csv")
    c.add_argument("--train-csv", required=True)
    c.add_argument("--valid-csv")
    c.add_argument("--image-root", help="folder the Path column is relative to (default: parent of train.csv's folder)")
    c.add_argument("--uncertain", choices=UNCERTAIN_POLICIES, default="abnormal")
    c.add_argument("--valid-as", choices=("test", "val"), default="test")
    n = sub.add_parser("nih", help="ChestX-ray14 Data_Entry_2017.csv")
    n.add_argument("--data-entry", required=True)
    n.add_argument("--image-dir", required=True)
    n.add_argument("--bbox")
    n.add_argument("--train-val-list")
    n.add_argument("--test-list")
    v = sub.add_parser("vindr", help="VinDr-CXR train.csv")
    v.add_argument("--train-csv", required=True)
    v.add_argument("--test-csv")
    v.add_argument("--image-dir", required=True)
    for p, val, test in ((c, 0.1, 0.1), (n, 0.1, 0.2), (v, 0.1, 0.1)):
        p.add_argument("--out", required=True, help="the new label CSV (never overwritten)")
        p.add_argument("--val-fraction", type=float, default=val)
        p.add_argument("--test-fraction", type=float, default=test)
        p.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    common = dict(val_fraction=a.val_fraction, test_fraction=a.test_fraction, seed=a.seed)
    try:
        if a.dataset == "chexpert":
            convert_chexpert(a.train_csv, a.out, valid_csv=a.valid_csv, image_root=a.image_root,
                             uncertain=a.uncertain, valid_as=a.valid_as, **common)
        elif a.dataset == "nih":
            convert_nih(a.data_entry, a.out, image_dir=a.image_dir, bbox_csv=a.bbox,
                        train_val_list=a.train_val_list, test_list=a.test_list, **common)
        else:
            convert_vindr(a.train_csv, a.out, image_dir=a.image_dir, test_csv=a.test_csv, **common)
    except (OSError, ValueError) as e:
        ap.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    main()
