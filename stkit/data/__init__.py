"""Readers and dataset classes of the kit's on-disk formats (data_prep/ writes them).

- chest X-rays: the kit's label CSV (``read_cxr_labels``) and ``CXRDataset``;
- breast-ultrasound video: the BUV layout and COCO JSONs (``read_split`` and friends, in
  ``stkit.data.buv``) and clips of it (``BUVClipDataset``, ``collate_clips``).

The label formats and the image decoders import no torch (`from stkit.data import
read_cxr_labels` stays light, for data_prep's converters); the torch dataset is loaded on
first use of its name.
"""

from .cxr_labels import BOX, REQUIRED, SPLITS, read_cxr_labels
from .buv import (BUVFormatError, BUVSplit, CATEGORIES, SPLIT_FILES, check_listed_frames, load_json,
                  normalise_box, parse_split, read_split, scan_frames, split_as_coco)
from .images import ImageDecodeError, load_cxr_image

# names whose module imports torch, loaded on first use
_LAZY = {"CXRDataset": ".cxr", "BUVClipDataset": ".video", "ClipConfig": ".video", "collate_clips": ".video"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BOX", "REQUIRED", "SPLITS", "CXRDataset", "ImageDecodeError", "load_cxr_image", "read_cxr_labels",
           "BUVFormatError", "BUVSplit", "CATEGORIES", "SPLIT_FILES", "check_listed_frames", "load_json", "normalise_box",
           "parse_split", "read_split", "scan_frames", "split_as_coco", "BUVClipDataset", "ClipConfig", "collate_clips"]
