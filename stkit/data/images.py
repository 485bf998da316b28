"""Decoding radiographs to float arrays: PNG/JPEG through PIL, DICOM through pydicom.

One decoder for every path that reads an image (CXRDataset, data_prep.prepare_images),
so an image looks the same whichever way it is read. Imports no torch.

DICOM, in the order of the standard's pixel pipeline (PS3.3 C.11 / PS3.4 N.2):
 1. stored values -> pixel_array (pydicom masks to Bits Stored, honours Pixel
    Representation: signed or unsigned);
 2. modality LUT: Rescale Slope / Intercept (or a Modality LUT Sequence);
 3. VOI: a VOI LUT Sequence if present (output / (2^bits per entry - 1)), else Window
    Center / Width (LINEAR, LINEAR_EXACT or SIGMOID), mapped to [0, 1]; with neither,
    the full range the stored bit depth allows, after step 2, maps to [0, 1];
 4. MONOCHROME1 (low values bright) is inverted: x -> 1 - x.
`voi="minmax"` replaces step 3 by a per-image min-max scaling. Not a viewer: presentation
LUTs, overlays, multi-frame and colour images are refused or ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

DICOM_SUFFIXES = (".dcm", ".dicom")
VOI_MODES = ("auto", "minmax")


class ImageDecodeError(ValueError):
    """An image file exists but cannot be decoded (corrupt, truncated, unsupported)."""


def is_dicom(path: Path) -> bool:
    """By suffix (.dcm, .dicom), else by the "DICM" marker at byte 128."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        return False
    with open(path, "rb") as f:
        return f.read(132)[128:] == b"DICM"


def load_cxr_image(path, voi: str = "auto") -> np.ndarray:
    """Decode one radiograph to a float32 (H, W) array in [0, 1], bright = dense.
    PNG/JPEG: 8-bit / 255, 16-bit / 65535, colour converted to grey. DICOM: see the module
    docstring. Raises FileNotFoundError, or ImageDecodeError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    try:
        if is_dicom(path):
            return decode_dicom(path, voi)
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


def image_size(path) -> tuple[int, int]:
    """(H, W) from the file header, without decoding the pixels."""
    path = Path(path)
    try:
        if is_dicom(path):
            import pydicom
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return int(ds.Rows), int(ds.Columns)
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ImageDecodeError(f"{path}: cannot read the image size ({type(e).__name__}: {e})") from e


# --------------------------------------------------------------------------- DICOM

def decode_dicom(path, voi: str = "auto") -> np.ndarray:
    """A single-frame greyscale DICOM -> float32 (H, W) in [0, 1] (module docstring)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    if voi not in VOI_MODES:
        raise ValueError(f"voi must be one of {VOI_MODES}, got {voi!r}")
    path = Path(path)
    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        raise ImageDecodeError(f"{path}: the DICOM has no pixel data (tag PixelData (7FE0,0010) is missing)")
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageDecodeError(f"{path}: PhotometricInterpretation {photometric or 'missing'!r}; "
                               "expected a greyscale MONOCHROME1 or MONOCHROME2 radiograph")
    try:
        stored = ds.pixel_array
    except Exception as e:
        raise ImageDecodeError(f"{path}: cannot decode DICOM pixels ({type(e).__name__}: {e}); compressed "
                               "DICOMs may need pylibjpeg or python-gdcm installed") from e
    if stored.ndim != 2:
        raise ImageDecodeError(f"{path}: expected one greyscale frame, got pixel array shape {stored.shape}")
    x = apply_modality_lut(stored, ds).astype(np.float32)      # (H, W) modality values (exact below 2^24)
    if voi == "minmax":
        lo, hi = float(x.min()), float(x.max())
        y = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    elif ds.get("VOILUTSequence"):
        y = _voi_lut(x, ds.VOILUTSequence[0])
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        y = window(x, _first(ds.WindowCenter), _first(ds.WindowWidth),
                   str(ds.get("VOILUTFunction", "LINEAR")).upper())
    else:
        y = _bit_range(x, ds)
    y = np.clip(y, 0, 1, out=y if y.dtype == np.float32 else None).astype(np.float32, copy=False)
    if photometric == "MONOCHROME1":
        np.subtract(1.0, y, out=y)
    return y


def _first(v) -> float:
    """Window Center / Width may hold several values (alternative views): the first."""
    try:
        return float(v[0])
    except TypeError:
        return float(v)


def window(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM VOI windowing (PS3.3 C.11.2.1.2) with output range [0, 1]."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ImageDecodeError(f"Window Width {width:g} must be > 0 for LINEAR_EXACT")
        return np.clip((x - center) / width + 0.5, 0, 1)
    if function != "LINEAR":
        raise ImageDecodeError(f"VOI LUT Function {function!r} is not LINEAR, LINEAR_EXACT or SIGMOID")
    if width < 1:
        raise ImageDecodeError(f"Window Width {width:g} must be >= 1 for LINEAR")
    c, w = center - 0.5, width - 1.0
    if w == 0:                                                  # width 1: a threshold
        return (x > c).astype(x.dtype)
    y = x - np.asarray(c - 0.5 * w, x.dtype)                    # one temporary, then in place
    y *= np.asarray(1.0 / w, x.dtype)
    return np.clip(y, 0, 1, out=y)


def _voi_lut(x: np.ndarray, item) -> np.ndarray:
    """Look modality values up in a VOI LUT (descriptor: entries, first mapped value, bits)."""
    n, first, bits = (int(v) for v in item.LUTDescriptor)
    n = n or 65536
    data = item.LUTData
    if isinstance(data, (bytes, bytearray)):                   # OW: raw little-endian words
        table = np.frombuffer(bytes(data), dtype="<u2")[:n].astype(np.float64)
    else:
        table = np.asarray(data if isinstance(data, (list, tuple)) else [data], np.float64)
    idx = np.clip(np.round(x).astype(np.int64) - first, 0, len(table) - 1)
    return table[idx] / float(2 ** bits - 1)


def _bit_range(x: np.ndarray, ds) -> np.ndarray:
    """Map the range the stored bit depth allows (after the modality LUT) to [0, 1]."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    slope, icpt = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    lo, hi = sorted((lo * slope + icpt, hi * slope + icpt))
    return (x - lo) / (hi - lo)
