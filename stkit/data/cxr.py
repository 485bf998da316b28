"""Chest X-ray data in the kit's label format: check the CSV, load the images.

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

`read_cxr_labels` validates a CSV and says which file, line and column are wrong;
`CXRDataset` serves one split of it as tensors, decoding every image up front. This is
not an augmentation pipeline nor a sampler: training code adds those.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

REQUIRED = ("path", "label", "patient_id", "split")
BOX = ("box_x", "box_y", "box_w", "box_h")
SPLITS = ("train", "val", "test")
DICOM_SUFFIXES = (".dcm", ".dicom")


class ImageDecodeError(ValueError):
    """An image file exists but cannot be decoded (corrupt, truncated, unsupported)."""


# --------------------------------------------------------------------------- labels

def _first_bad(mask: pd.Series) -> int:
    """Index label of the first False in a boolean Series."""
    return mask.index[~mask.to_numpy()][0]


def read_text_csv(path, what: str, skip_blank_lines: bool = True, empty_hint: str = "") -> pd.DataFrame:
    """A CSV read as strings (no NA guessing), header names stripped; errors name ``path``
    and say what the file should be (``what``). Shared with data_prep's converters."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=skip_blank_lines)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the {what} is empty" + (f" ({empty_hint})" if empty_hint else "")) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: the {what} is not a readable CSV ({e})") from e
    df.columns = [str(c).strip() for c in df.columns]
    return df


def read_cxr_labels(csv_path) -> pd.DataFrame:
    """Read and validate a label CSV. Returns one row per CSV row with typed columns
    (label int, box_* float with NaN for empty) plus `csv_line` (header = line 1).
    Raises FileNotFoundError or ValueError naming the file and the line or column."""
    src = Path(csv_path)
    raw = read_text_csv(src, "label CSV", skip_blank_lines=False, empty_hint=f"expected a header: {', '.join(REQUIRED)}")
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise ValueError(f"{src}: missing required column(s) {missing}; found columns {list(raw.columns)}")
    has_box = [c in raw.columns for c in BOX]
    if any(has_box) and not all(has_box):
        raise ValueError(f"{src}: box columns come together; found {[c for c in BOX if c in raw.columns]}, "
                         f"missing {[c for c in BOX if c not in raw.columns]}")
    raw = raw.apply(lambda col: col.str.strip())
    raw = raw[(raw != "").any(axis=1)]                  # blank lines are not rows
    if raw.empty:
        raise ValueError(f"{src}: the label CSV has a header but no rows")
    line = raw.index.to_series() + 2

    def fail(mask, what):
        if not mask.all():
            i = _first_bad(mask)
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

    # one image = one label, patient and split; either one row without a box or one row per box
    g = df.groupby("path", sort=False)
    for col in ("label", "patient_id", "split"):
        bad = g[col].nunique() > 1
        if bad.any():
            p = bad.index[bad.to_numpy()][0]
            rows = df[df.path == p]
            raise ValueError(f"{src}, lines {rows.csv_line.tolist()}: image {p!r} has conflicting {col} "
                             f"values {sorted(rows[col].astype(str).unique())}")
    n = g.path.transform("size")
    fail((n == 1) | df.box_x.notna(), lambda i: f"image {df.path[i]!r} has {n[i]} rows but this one has no "
         "box (an image has either one row without a box or one row per box)")
    # patients never straddle two splits
    per_patient = df.groupby("patient_id", sort=False).split.nunique()
    if (per_patient > 1).any():
        pid = per_patient.index[(per_patient > 1).to_numpy()][0]
        rows = df[df.patient_id == pid].groupby("split", sort=False).csv_line.first()
        where = ", ".join(f"{s} (line {ln})" for s, ln in rows.items())
        raise ValueError(f"{src}: patient {pid!r} is in more than one split: {where}. "
                         "Split by patient, or the test set leaks into training.")
    return df.reset_index(drop=True)


# --------------------------------------------------------------------------- images

def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        return False
    with open(path, "rb") as f:                          # DICOM files carry "DICM" at byte 128
        return f.read(132)[128:] == b"DICM"


def load_cxr_image(path) -> np.ndarray:
    """Decode one radiograph to a float32 (H, W) array in [0, 1], bright = dense.
    PNG/JPEG via PIL (8-bit as is, 16-bit / 65535); DICOM via pydicom (rescale slope and
    intercept, MONOCHROME1 inverted, min-max scaled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    try:
        if _is_dicom(path):
            return _load_dicom(path)
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.clip(np.asarray(im, np.float32) / 65535, 0, 1)
            if im.mode == "F":
                return np.clip(np.asarray(im, np.float32), 0, 1)
            return np.asarray(im.convert("L"), np.float32) / 255
    except ImageDecodeError:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, zlib.error, ...
        raise ImageDecodeError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e


def _load_dicom(path: Path) -> np.ndarray:
    import pydicom

    ds = pydicom.dcmread(path)
    try:
        a = ds.pixel_array.astype(np.float32)
    except Exception as e:
        raise ImageDecodeError(f"{path}: cannot decode DICOM pixels ({e}); compressed DICOMs may need "
                               "pylibjpeg or python-gdcm installed") from e
    if a.ndim != 2:
        raise ImageDecodeError(f"{path}: expected one grayscale frame, got pixel array shape {a.shape}")
    a = a * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        a = -a                                           # MONOCHROME1: low values are bright
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file header, without decoding the pixels."""
    if _is_dicom(path):
        import pydicom
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.Rows), int(ds.Columns)
    with Image.open(path) as im:
        return im.size[1], im.size[0]


# --------------------------------------------------------------------------- dataset

class CXRDataset(torch.utils.data.Dataset):
    """One split of a label CSV, one item per image: (image (1, H, W) float32 in [0, 1],
    label float32 scalar, index). `boxes(i)` gives the image's lesion boxes (K, 4) as
    (x, y, w, h) in pixels of the returned image; K may be 0.

    image_size: None keeps the files' size (all must match), int or (H, W) resizes
    (antialiased bilinear) and scales the boxes. preload=True decodes every image once,
    up front, into `self.images` (uint8 (N, 1, H, W)): fast CPU training, and a bad file
    fails before training starts. preload=False decodes on access (large real data sets).
    """

    def __init__(self, csv_path, split: str, image_size=None, preload: bool = True):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.csv_path = Path(csv_path)
        df = read_cxr_labels(self.csv_path)
        df = df[df.split == split]
        if df.empty:
            raise ValueError(f"{self.csv_path}: no images in split {split!r}")
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.split = split
        root = self.csv_path.parent
        first = df.drop_duplicates("path")                # one row per image, in CSV order
        self.paths = [Path(p) if Path(p).is_absolute() else root / p for p in first.path]
        self.labels = torch.tensor(first.label.to_numpy(), dtype=torch.float32)
        self.patient_ids = first.patient_id.astype(str).tolist()
        self._lines = first.csv_line.tolist()
        boxed = df[df.box_x.notna()]
        rows_of = {p: r[["csv_line", *BOX]].to_numpy(np.float64) for p, r in boxed.groupby("path", sort=False)}
        self._box_rows = [rows_of.get(p, np.zeros((0, 5))) for p in first.path]
        self._sizes: list = [None] * len(self.paths)   # original (H, W) of each file
        missing = next((i for i, p in enumerate(self.paths) if not p.is_file()), None)
        if missing is not None:
            raise FileNotFoundError(f"{self.paths[missing]}: image not found "
                                    f"(listed in {self.csv_path}, line {self._lines[missing]})")
        self.images = None
        if preload:
            self.images = torch.stack([self._decode(i) for i in range(len(self.paths))])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        img = self.images[i] if self.images is not None else self._decode(i)
        return img.float() / 255, self.labels[i], i

    def boxes(self, i) -> torch.Tensor:
        """Lesion boxes of image i, (K, 4) float32 (x, y, w, h) in returned-image pixels."""
        rows = self._box_rows[i]
        b = torch.tensor(rows[:, 1:], dtype=torch.float32).reshape(-1, 4)
        if self.image_size is not None and len(b):
            h0, w0 = self._size(i)
            b = b * torch.tensor([self.image_size[1] / w0, self.image_size[0] / h0] * 2)
        return b

    # -- internals
    def _where(self, i):
        return f"{self.paths[i]} (listed in {self.csv_path}, line {self._lines[i]})"

    def _size(self, i):
        if self._sizes[i] is None:
            self._sizes[i] = _image_size(self.paths[i])
        return self._sizes[i]

    def _decode(self, i) -> torch.Tensor:
        """Image i as uint8 (1, H, W), resized if asked; checks its size and boxes."""
        try:
            a = load_cxr_image(self.paths[i])
        except (ImageDecodeError, FileNotFoundError) as e:
            raise type(e)(f"{e} (listed in {self.csv_path}, line {self._lines[i]})") from e
        h0, w0 = a.shape
        self._sizes[i] = (h0, w0)
        if self.image_size is None:
            h_ref, w_ref = self._size(0)
            if (h0, w0) != (h_ref, w_ref):
                raise ValueError(f"{self._where(i)}: image is {h0}x{w0} pixels but {self.paths[0]} is "
                                 f"{h_ref}x{w_ref}; pass image_size=... to resize them all")
        for line, x, y, w, h in self._box_rows[i]:
            if x < -1 or y < -1 or x + w > w0 + 1 or y + h > h0 + 1:
                raise ValueError(f"{self.csv_path}, line {int(line)}: box ({x:g}, {y:g}, {w:g}, {h:g}) lies "
                                 f"outside its {h0}x{w0} image {self.paths[i]}")
        t = torch.from_numpy(a)[None, None]
        if self.image_size is not None and self.image_size != (h0, w0):
            t = F.interpolate(t, size=self.image_size, mode="bilinear", antialias=True, align_corners=False)
        return (t[0].clamp(0, 1) * 255).round().to(torch.uint8)
