"""Test fixtures in the exact formats of the real chest X-ray files (headers, quirks such as
BBox_List_2017's split header and trailing empty columns, CRLF, BOM) and DICOMs written
with pydicom. Helpers for the tests only; nothing here is a test."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
                   "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia",
                   "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"]
NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
VINDR_HEADER = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max"


def write_lines(path: Path, header: str, lines, crlf=False, bom=False) -> Path:
    """A text file: header + lines, LF or CRLF, with or without a UTF-8 BOM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nl = "\r\n" if crlf else "\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + (nl.join([header, *lines]) + nl).encode())
    return path


def chexpert_line(pid: int, view: str, obs: dict, k: int = 1, part: str = "train") -> str:
    """One train.csv row as the release writes it (lateral rows have an empty AP/PA)."""
    cells = [f"CheXpert-v1.0-small/{part}/patient{pid:05d}/study1/view{k}_{view.lower()}.jpg", "Female", "68",
             view, "AP" if view == "Frontal" else ""] + [obs.get(c, "") for c in CHEXPERT_HEADER[5:]]
    return ",".join(cells)


def nih_line(patient: int, follow: int, labels: str, view: str = "PA") -> str:
    return f"{patient:08d}_{follow:03d}.png,{labels},{follow},{patient},57,M,{view},2682,2749,0.143,0.143"


def bbox_line(name: str, finding: str, x, y, w, h) -> str:
    return f"{name},{finding},{x},{y},{w},{h},,,"


def vindr_line(image_id, class_name, class_id, rad, box=None) -> str:
    coords = ",".join(f"{v:.1f}" for v in box) if box is not None else ",,,"
    return f"{image_id},{class_name},{class_id},{rad},{coords}"


def write_dicom(path: Path, stored: np.ndarray, *, bits_stored=12, photometric="MONOCHROME2", signed=False,
                rescale=None, window=None, voi_lut=None, voi_function=None, pixels=True, lut_vr="US") -> Path:
    """A single-frame greyscale DICOM (explicit VR little endian) written with pydicom.
    stored: (H, W) stored values; rescale (slope, intercept); window (center, width);
    voi_lut (first mapped value, bits per entry, table) stored as lut_vr US or OW; pixels=False omits PixelData."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"      # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.SamplesPerPixel = stored.shape[0], stored.shape[1], 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16 if bits_stored > 8 else 8
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, int(signed)
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_function is not None:
        ds.VOILUTFunction = voi_function
    if voi_lut is not None:
        first, bits, table = voi_lut
        item = pydicom.Dataset()
        item.LUTDescriptor = [len(table), first, bits]
        if lut_vr == "US":
            item.add_new(0x00283006, "US", [int(v) for v in table])
        else:                                              # OW: raw little-endian 16-bit words
            item.add_new(0x00283006, "OW", np.asarray(table, "<u2").tobytes())
        ds.VOILUTSequence = Sequence([item])
    if pixels:
        dtype = {(16, False): "<u2", (16, True): "<i2", (8, False): "u1", (8, True): "i1"}[(ds.BitsAllocated, signed)]
        ds.PixelData = np.ascontiguousarray(stored.astype(dtype)).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
