"""Shared pieces of the chest X-ray converters: strict source reading, typed columns,
patient splits, writing a new label CSV, the per-split summary.

Every error names the source file, its CSV line (header = line 1) and the column. Not a
converter itself: data_prep.chexpert, .nih and .vindr are. Imports no torch.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from pathlib import Path

import numpy as np
import pandas as pd

from stkit.data.cxr_labels import BOX, read_cxr_labels, read_text_csv

FIRST = ("path", "label", "patient_id", "split", *BOX)   # column order of the written CSV


def read_source(path, required, what) -> pd.DataFrame:
    """A source CSV as stripped strings indexed by CSV line; errors name the file, the
    missing columns, and any row cut short (or with extra fields)."""
    df = read_text_csv(path, what)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: {what} lacks column(s) {missing}; found {list(df.columns)}")
    return df


def fail_at(src, mask: pd.Series, df: pd.DataFrame, col: str, why: str):
    """Raise for the first row where `mask` is True: file, line, column, value, why."""
    if mask.any():
        i = mask.index[mask.to_numpy()][0]
        raise ValueError(f"{src}, line {i}, column {col!r}: {df.at[i, col]!r} {why}")


def numbers(df, col, src, allowed=None) -> pd.Series:
    """Column as floats (blank -> NaN); anything else non-numeric, non-finite or not in
    `allowed` is an error naming file, line and column."""
    num = pd.to_numeric(df[col].where(df[col] != ""), errors="coerce").astype("float64")
    given = df[col] != ""
    if allowed is None:
        fail_at(src, given & ~np.isfinite(num), df, col, "is not a finite number")
    else:
        fail_at(src, given & ~num.isin(allowed), df, col, f"is not blank or one of {allowed}")
    return num


def one_of(df, col, src, allowed, blank_ok=False):
    """Check an enumerated text column (exact spelling)."""
    ok = df[col].isin(list(allowed)) | ((df[col] == "") if blank_ok else False)
    fail_at(src, ~ok, df, col, f"is not {'blank or ' if blank_ok else ''}one of {sorted(allowed)}")


def not_blank(df, cols, src):
    for c in cols:
        fail_at(src, df[c] == "", df, c, "is empty")


def split_patients(patients, fractions: dict, seed: int) -> dict:
    """Patient id -> split: fractions like {"val": 0.1, "train": 0.9} (of patients; the
    last name takes the rest). Patients are ranked by a keyed hash of (seed, id), so each
    patient's place depends on its own id only: adding or removing a few patients moves
    at most a few others across a split boundary (a permutation of the sorted ids would
    reshuffle thousands). Same ids and seed, same answer, on every platform."""
    ids = sorted(set(map(str, patients)), key=lambda p: hashlib.blake2b(
        f"{seed}:{p}".encode(), digest_size=8).digest())
    out, start = {}, 0
    names = list(fractions)
    for k, name in enumerate(names):
        n = len(ids) - start if k == len(names) - 1 else int(round(fractions[name] * len(ids)))
        out.update(dict.fromkeys(ids[start:start + n], name))
        start += n
    return out


def no_patient_in_two(sources: dict):
    """sources: name -> set of patient ids; raise if one patient is in two of them."""
    names = list(sources)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            both = sources[names[a]] & sources[names[b]]
            if both:
                raise ValueError(f"patient(s) {sorted(both)[:5]} appear in both {names[a]} and {names[b]}: "
                                 "the splits would leak")


def rel(image_path, out_csv: Path) -> str:
    """Image path as the label CSV will hold it: relative to the CSV's folder."""
    return rel_many(Path(image_path).parent, [Path(image_path).name], out_csv)[0]


def rel_many(base, names, out_csv: Path) -> list:
    """Paths base/name (names relative to base, "/"-separated) as the label CSV will hold
    them: relative to the CSV's folder. One relpath for all: 200,000 names take 0.1 s."""
    a = os.path.abspath(base)
    try:
        prefix = Path(os.path.relpath(a, os.path.abspath(Path(out_csv).parent))).as_posix()
    except ValueError:                                   # another drive (Windows): keep absolute
        prefix = Path(a).as_posix()
    return [posixpath.normpath(posixpath.join(prefix, n)) for n in names]


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Images, patients, normal and abnormal images per split (and in all), from a label
    table with one or more rows per image."""
    img = df.drop_duplicates("path")
    rows = {}
    for s in ("train", "val", "test", "all"):
        part = img if s == "all" else img[img.split == s]
        rows[s] = {"images": len(part), "patients": part.patient_id.nunique(),
                   "normal": int((part.label == 0).sum()), "abnormal": int((part.label == 1).sum()),
                   "boxes": int(df[df.path.isin(part.path)].box_x.notna().sum())}
    return pd.DataFrame(rows).T


def write_new_csv(text_writer, out) -> Path:
    """Write a file that must not exist yet: to a temporary name beside it, checked by
    `text_writer(tmp)`, then linked into place (never replacing a file)."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; the converters never overwrite a file. Choose another --out.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}.partial"   # ours alone: "x" refuses an existing file
    try:
        text_writer(tmp)
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
    return out


def write_labels(rows: pd.DataFrame, out_csv, verbose: bool, notes: list) -> Path:
    """Write a new label CSV (never replacing a file), checked by the kit's own reader
    before it becomes visible; print the summary table and the notes."""
    cols = list(FIRST) + [c for c in rows.columns if c not in FIRST]
    rows = rows[cols]

    def writer(tmp):
        with open(tmp, "x", newline="") as f:
            rows.to_csv(f, index=False, float_format="%.2f", lineterminator="\n")
        read_cxr_labels(tmp)

    out = write_new_csv(writer, out_csv)
    if verbose:
        print(f"wrote {out}")
        print(summary(rows).to_string())
        for n in notes:
            print("  note:", n)
    return out
