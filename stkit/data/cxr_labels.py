"""The kit's chest X-ray label format, and a strict CSV reader. Imports no torch.

The format (written by data_prep.synthetic_cxr and by the converters of CheXpert,
ChestX-ray14 and VinDr-CXR in data_prep.cxr_datasets) is one CSV row per lesion box:

    path        image file, relative to the CSV's folder or absolute (PNG, JPEG, DICOM)
    label       0 normal, 1 abnormal (per image)
    patient_id  patients never straddle two splits
    split       train, val or test
    box_x, box_y, box_w, box_h   optional: a lesion box in pixels, top-left origin,
                pixel-edge coordinates (pixel i spans [i, i+1)). An abnormal image with
                3 boxes has 3 rows; an image without a box (every normal image) has one
                row with the box cells empty.

`read_text_csv` reads any CSV as strings and refuses a row with more or fewer fields than
the header (a line cut short must not pass as empty cells); `read_cxr_labels` validates
a label CSV and says which file, line and column are wrong. Image decoding is in
stkit.data.images, the torch dataset in stkit.data.cxr; this module is neither.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

REQUIRED = ("path", "label", "patient_id", "split")
BOX = ("box_x", "box_y", "box_w", "box_h")
SPLITS = ("train", "val", "test")


def read_text_csv(path, what: str, empty_hint: str = "") -> pd.DataFrame:
    """A CSV as a DataFrame of stripped strings whose index is the CSV line of each row
    (header = line 1). UTF-8 with or without BOM, LF or CRLF, quoted fields as in RFC 4180.
    Blank lines are skipped (line numbers stay true). Header cells are stripped; empty
    ones (the trailing commas of ChestX-ray14's BBox_List_2017.csv) are named
    "Unnamed: k" (k = 0-based field number). Errors name ``path`` and say what the file
    should be (``what``): a missing or empty file, a repeated column name, and a row
    with more or fewer fields than the header, with its line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    rows, lines = [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, strict=True)
            header, prev = None, 0
            for fields in reader:
                start, prev = prev + 1, reader.line_num     # a quoted field may span lines
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue                                 # blank line
                if header is None:
                    header = [c.strip() or f"Unnamed: {k}" for k, c in enumerate(fields)]
                    continue
                if len(fields) != len(header):
                    raise ValueError(f"{path}, line {start}: {len(fields)} fields where the header has "
                                     f"{len(header)} ({', '.join(header)}); a row cut short or with "
                                     "extra commas")
                rows.append([c.strip() for c in fields])
                lines.append(start)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: the {what} is not UTF-8 text ({e})") from e
    except csv.Error as e:
        raise ValueError(f"{path}, line {reader.line_num}: the {what} is not a readable CSV ({e})") from e
    if header is None:
        raise ValueError(f"{path}: the {what} is empty" + (f" ({empty_hint})" if empty_hint else ""))
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise ValueError(f"{path}: the {what} names column(s) {dup} more than once")
    return pd.DataFrame(rows, columns=header, index=pd.Index(lines, name="line"), dtype=object)


def first_bad(mask: pd.Series):
    """Index label (the CSV line) of the first False in a boolean Series."""
    return mask.index[~mask.to_numpy()][0]


def read_cxr_labels(csv_path) -> pd.DataFrame:
    """Read and validate a label CSV. Returns one row per CSV row with typed columns
    (label int, box_* float with NaN for empty) plus `csv_line` (header = line 1).
    Raises FileNotFoundError or ValueError naming the file and the line or column."""
    src = Path(csv_path)
    raw = read_text_csv(src, "label CSV", empty_hint=f"expected a header: {', '.join(REQUIRED)}")
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise ValueError(f"{src}: missing required column(s) {missing}; found columns {list(raw.columns)}")
    has_box = [c in raw.columns for c in BOX]
    if any(has_box) and not all(has_box):
        raise ValueError(f"{src}: box columns come together; found {[c for c in BOX if c in raw.columns]}, "
                         f"missing {[c for c in BOX if c not in raw.columns]}")
    raw = raw[(raw != "").any(axis=1)]                  # a row of empty cells is a blank line
    if raw.empty:
        raise ValueError(f"{src}: the label CSV has a header but no rows")
    line = raw.index.to_series()

    def fail(mask, what):
        if not mask.all():
            i = first_bad(mask)
            raise ValueError(f"{src}, line {line[i]}: {what(i)}")

    fail(raw.path != "", lambda i: "empty path")
    fail(raw.patient_id != "", lambda i: "empty patient_id")
    lab = pd.to_numeric(raw.label, errors="coerce")
    fail(lab.isin([0, 1]), lambda i: f"label {raw.label[i]!r} is not 0 (normal) or 1 (abnormal)")
    fail(raw.split.isin(SPLITS), lambda i: f"split {raw.split[i]!r} is not one of {', '.join(SPLITS)}")

    df = raw.copy()
    df["label"] = lab.astype("int64")
    if all(has_box):
        filled = raw[list(BOX)] != ""
        some, every = filled.any(axis=1), filled.all(axis=1)
        fail(~some | every, lambda i: "box partly filled: empty " +
             ", ".join(c for c in BOX if not filled.at[i, c]) + " (fill all four box columns or none)")
        for c in BOX:
            num = pd.to_numeric(raw[c].where(filled[c]), errors="coerce")
            fail(~filled[c] | np.isfinite(num), lambda i: f"{c} {raw.at[i, c]!r} is not a finite number")
            df[c] = num.astype("float64")
        for c in ("box_w", "box_h"):
            fail(~every | (df[c] > 0), lambda i: f"{c} = {df.at[i, c]:g}, a box needs a positive width and height")
        fail(~every | (df.label == 1), lambda i: "a normal image (label 0) has a lesion box")
    else:
        for c in BOX:
            df[c] = np.nan
    df["csv_line"] = line
    _check_images_and_patients(df, src)
    return df.reset_index(drop=True)


def _check_images_and_patients(df: pd.DataFrame, src: Path):
    """One image = one label, patient and split, and either one row without a box or one
    row per box; a patient is in one split only."""
    g = df.groupby("path", sort=False)
    for col in ("label", "patient_id", "split"):
        bad = g[col].nunique() > 1
        if bad.any():
            p = bad.index[bad.to_numpy()][0]
            rows = df[df.path == p]
            raise ValueError(f"{src}, lines {rows.csv_line.tolist()}: image {p!r} has conflicting {col} "
                             f"values {sorted(rows[col].astype(str).unique())}")
    n = g.path.transform("size")
    ok = (n == 1) | df.box_x.notna()
    if not ok.all():
        i = first_bad(ok)
        raise ValueError(f"{src}, line {df.csv_line[i]}: image {df.path[i]!r} has {n[i]} rows but this one has "
                         "no box (an image has either one row without a box or one row per box)")
    per_patient = df.groupby("patient_id", sort=False).split.nunique()
    if (per_patient > 1).any():
        pid = per_patient.index[(per_patient > 1).to_numpy()][0]
        rows = df[df.patient_id == pid].groupby("split", sort=False).csv_line.first()
        where = ", ".join(f"{s} (line {ln})" for s, ln in rows.items())
        raise ValueError(f"{src}: patient {pid!r} is in more than one split: {where}. "
                         "Split by patient, or the test set leaks into training.")
