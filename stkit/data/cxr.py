"""Chest X-ray data as torch tensors: `CXRDataset` serves one split of a label CSV.

The label format and its reader live in stkit.data.cxr_labels, the image decoders in
stkit.data.images (neither imports torch); they are re-exported here. This is not an
augmentation pipeline nor a sampler: training code adds those.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .cxr_labels import BOX, REQUIRED, SPLITS, read_cxr_labels, read_text_csv  # noqa: F401 (re-exports)
from .images import DICOM_SUFFIXES, ImageDecodeError, load_cxr_image  # noqa: F401
from .images import image_size as file_image_size


THORAX = ("thorax_x", "thorax_y", "thorax_w", "thorax_h")  # optional: the thorax box (x, y, w, h), px


def _thorax_boxes(df, first, src):
    """(N, 4) thorax boxes of the images in ``first`` (one row per image), or None when the
    CSV has no thorax columns. Every row of an image must give the same finite box."""
    present = [c for c in THORAX if c in df.columns]
    if not present:
        return None
    if len(present) != len(THORAX):
        raise ValueError(f"{src}: thorax columns come together; missing {[c for c in THORAX if c not in present]}")
    num = df[list(THORAX)].apply(lambda col: col.map(_to_float))
    bad = ~np.isfinite(num.to_numpy()).all(1) | (num.thorax_w.to_numpy() <= 0) | (num.thorax_h.to_numpy() <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{src}, line {df.csv_line.iloc[i]}: thorax box {df[list(THORAX)].iloc[i].tolist()} "
                         "is not four finite numbers with positive width and height")
    per_image = num.assign(path=df.path.to_numpy()).groupby("path", sort=False)
    differs = (per_image.nunique() > 1).any(axis=1)
    if differs.any():
        p = differs.index[differs.to_numpy()][0]
        raise ValueError(f"{src}, lines {df.csv_line[df.path == p].tolist()}: image {p!r} has different thorax boxes")
    return per_image.first().loc[first.path].to_numpy(np.float64)


def _to_float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


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
        self._thorax = _thorax_boxes(df, first, self.csv_path)   # (N, 4) float64 or None
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

    @property
    def has_thorax(self) -> bool:
        """True when the label CSV has the optional thorax_x/_y/_w/_h columns."""
        return self._thorax is not None

    def thorax_box(self, i) -> torch.Tensor:
        """Thorax box of image i, (4,) float32 (x, y, w, h) in returned-image pixels."""
        if self._thorax is None:
            raise ValueError(f"{self.csv_path} has no thorax_x, thorax_y, thorax_w, thorax_h columns")
        b = torch.tensor(self._thorax[i], dtype=torch.float32)
        if self.image_size is not None:
            h0, w0 = self._size(i)
            b = b * torch.tensor([self.image_size[1] / w0, self.image_size[0] / h0] * 2)
        return b

    # -- internals
    def _where(self, i):
        return f"{self.paths[i]} (listed in {self.csv_path}, line {self._lines[i]})"

    def _size(self, i):
        if self._sizes[i] is None:
            self._sizes[i] = file_image_size(self.paths[i])
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
