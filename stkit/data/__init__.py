"""Dataset classes that read the kit's on-disk formats (see data_prep/ for how to make them)."""

from .cxr import BOX, REQUIRED, SPLITS, CXRDataset, ImageDecodeError, load_cxr_image, read_cxr_labels

__all__ = ["BOX", "REQUIRED", "SPLITS", "CXRDataset", "ImageDecodeError", "load_cxr_image", "read_cxr_labels"]
