"""CheXpert train.csv (+ valid.csv) -> the kit's label CSV (frontal images, normal vs abnormal).

The label policy (what makes an image normal, abnormal, or left out) and the patient
split are here; the CSV mechanics are in data_prep.csvtools. Images are not read or
copied: data_prep.prepare_images makes small PNGs afterwards if wanted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .csvtools import fail_at, no_patient_in_two, not_blank, numbers, one_of, read_source, rel_many, split_patients, write_labels
from stkit.data.cxr_labels import BOX

PATHOLOGIES = [  # the 14 observations minus "No Finding" and "Support Devices"
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture",
]
UNCERTAIN_POLICIES = ("abnormal", "normal", "exclude")
UNLABELLED_POLICIES = ("exclude", "normal")
VIEWS = ("Frontal", "Lateral")


def _labels(df, src, uncertain, unlabelled, notes) -> pd.Series:
    """Per row: 1 abnormal, 0 normal, NaN left out (policies in convert_chexpert)."""
    obs = pd.DataFrame({c: numbers(df, c, src, allowed=[1, 0, -1]) for c in ["No Finding", *PATHOLOGIES]})
    positive = (obs[PATHOLOGIES] == 1).any(axis=1)
    unsure = (obs[PATHOLOGIES] == -1).any(axis=1)
    label = pd.Series(np.nan, index=df.index)
    label[positive] = 1
    label[~positive & (obs["No Finding"] == 1)] = 0
    undecided = label.isna() & unsure
    if uncertain != "exclude":
        label[undecided] = 1 if uncertain == "abnormal" else 0
    notes.append(f"{src}: {int(undecided.sum())} frontal images with only uncertain findings -> "
                 + ("left out" if uncertain == "exclude" else uncertain))
    none = label.isna() & ~unsure
    if unlabelled == "normal":
        label[none] = 0
    notes.append(f"{src}: {int(none.sum())} frontal images with no positive, no uncertain and no 'No Finding' "
                 f"label -> {'left out' if unlabelled == 'exclude' else 'normal'} (--unlabelled {unlabelled})")
    return label


def convert_chexpert(train_csv, out_csv, *, valid_csv=None, image_root=None, uncertain="abnormal",
                     unlabelled="exclude", valid_as="test", val_fraction=0.1, test_fraction=0.1, seed=0,
                     verbose=True) -> Path:
    """CheXpert train.csv (+ valid.csv) -> kit CSV. Frontal images only.

    Label: abnormal (1) if any of the 12 pathologies is positive (1); else normal (0) if
    "No Finding" is 1; else, when some pathology is uncertain (-1), `uncertain` decides:
    "abnormal" (default: the image is not "No Finding", the definition of normal used by
    STERN), "normal", or "exclude". Images with no positive, no uncertain and no
    "No Finding" label (all blank or 0; 4,184 frontal images of the real train.csv):
    `unlabelled` = "exclude" (default: nobody said they are normal) or "normal".
    "Support Devices" never makes an image abnormal. `Frontal/Lateral` must read
    exactly Frontal or Lateral (anything else is an error, not a silent lateral).
    Patient: "patientNNNNN" from the Path. Splits, by patient: valid.csv (radiologist
    labels) becomes `valid_as` ("test" by default, or "val"); the other split(s) are drawn
    from train.csv's patients with `seed` (val_fraction and/or test_fraction of patients).
    image_root: the folder that the Path column is relative to (default: the parent of the
    folder holding train.csv, as in the official download).
    """
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be one of {UNCERTAIN_POLICIES}, got {uncertain!r}")
    if unlabelled not in UNLABELLED_POLICIES:
        raise ValueError(f"unlabelled must be one of {UNLABELLED_POLICIES}, got {unlabelled!r}")
    if valid_as not in ("test", "val"):
        raise ValueError(f"valid_as must be 'test' or 'val', got {valid_as!r}")
    train_csv = Path(train_csv)
    root = Path(image_root) if image_root is not None else train_csv.parent.parent
    need = ["Path", "Frontal/Lateral", "No Finding", *PATHOLOGIES]
    parts = [("train.csv", train_csv)] + ([("valid.csv", Path(valid_csv))] if valid_csv is not None else [])
    frames, notes = [], []
    for name, src in parts:
        df = read_source(src, need, f"CheXpert {name}")
        not_blank(df, ["Path"], src)
        fail_at(src, df.Path.duplicated(), df, "Path", "is listed twice")
        one_of(df, "Frontal/Lateral", src, VIEWS)
        frontal = df["Frontal/Lateral"] == "Frontal"
        notes.append(f"{src}: {int((~frontal).sum())} lateral images left out")
        df = df[frontal]
        pid = df.Path.str.extract(r"(patient\d+)", expand=False)
        if pid.isna().any():
            i = pid.index[pid.isna().to_numpy()][0]
            raise ValueError(f"{src}, line {i}, column 'Path': no patient id (patientNNNNN) in {df.at[i, 'Path']!r}")
        label = _labels(df, src, uncertain, unlabelled, notes)
        keep = label.notna()
        frames.append(pd.DataFrame({"path": rel_many(root, df.Path[keep], out_csv),
                                    "label": label[keep].astype(int).to_numpy(),
                                    "patient_id": pid[keep].to_numpy(), "source": name}))
    rows = pd.concat(frames, ignore_index=True)
    train_pat = set(rows.patient_id[rows.source == "train.csv"])
    if valid_csv is not None:
        no_patient_in_two({str(train_csv): train_pat, str(valid_csv): set(rows.patient_id[rows.source == "valid.csv"])})
        other = {"val": val_fraction} if valid_as == "test" else {"test": test_fraction}
    else:
        other = {"val": val_fraction, "test": test_fraction}
    split = split_patients(train_pat, {**other, "train": 1.0}, seed)
    rows["split"] = [split.get(p, valid_as) for p in rows.patient_id]
    for c in BOX:
        rows[c] = np.nan
    return write_labels(rows.drop(columns="source"), out_csv, verbose, notes)
