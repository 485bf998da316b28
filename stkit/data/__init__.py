"""Dataset classes that read the kit's on-disk formats (see data_prep/ for how to make them).

The label format and the image decoders import no torch (`from stkit.data import
read_cxr_labels` stays light, for data_prep's converters); the torch dataset is loaded on
first use of its name.
"""

from .cxr_labels import BOX, REQUIRED, SPLITS, read_cxr_labels
from .images import ImageDecodeError, load_cxr_image

_LAZY = {"CXRDataset": ".cxr"}                 # names whose module imports torch


def __getattr__(name):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BOX", "REQUIRED", "SPLITS", "CXRDataset", "ImageDecodeError", "load_cxr_image", "read_cxr_labels"]
