"""Command line of the chest X-ray converters: real data sets' label files -> the kit's label CSV.

    python -m data_prep.cxr_datasets chexpert --train-csv CheXpert-v1.0-small/train.csv \\
        --valid-csv CheXpert-v1.0-small/valid.csv --out data/chexpert_labels.csv
    python -m data_prep.cxr_datasets nih --data-entry Data_Entry_2017.csv --image-dir NIH \\
        --bbox BBox_List_2017.csv --train-val-list train_val_list.txt --test-list test_list.txt \\
        --out data/nih_labels.csv
    python -m data_prep.cxr_datasets vindr --train-csv vindr/train.csv --image-dir vindr \\
        --out data/vindr_labels.csv

Each writes a NEW CSV in the format of stkit.data.read_cxr_labels (it refuses to replace
an existing file), with image paths relative to the CSV's folder, and prints a table of
images, patients, normal and abnormal per split, and what it left out. The images stay
where the user downloaded them; data_prep.prepare_images turns them into small PNGs.
The converters themselves are in data_prep.chexpert, .nih and .vindr (re-exported here);
policies are in data_prep/README.md and each function's docstring. No torch is imported.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .chexpert import PATHOLOGIES as CHEXPERT_PATHOLOGIES
from .chexpert import UNCERTAIN_POLICIES, UNLABELLED_POLICIES, convert_chexpert
from .csvtools import split_patients, summary
from .nih import convert_nih
from .prepare_images import prepare_images
from .vindr import BOX_MODES, convert_vindr

__all__ = ["CHEXPERT_PATHOLOGIES", "convert_chexpert", "convert_nih", "convert_vindr", "from_download",
           "split_patients", "summary", "main"]
DATASETS = ("chexpert", "nih", "vindr")


def _first_file(folder: Path, names, what):
    """The first of names that exists in folder, or None (what=None) / an error naming all."""
    for n in names:
        if (folder / n).is_file():
            return folder / n
    if what is None:
        return None
    raise FileNotFoundError(f"{folder}: no {what} ({' or '.join(names)}); is this the {what}'s download folder?")


def from_download(dataset: str, src_dir, out_dir, size=256, workers=None, verbose=True) -> Path:
    """A download folder in its published layout -> out_dir/labels.csv (converted with the
    defaults; an existing one is reused, never replaced) -> out_dir/png_<size>/labels.csv
    (prepared PNGs, idempotent and resumable). Layouts: CheXpert: the folder holding
    train.csv (+ valid.csv); ChestX-ray14: Data_Entry_2017(_v2020).csv (+ BBox_List_2017.csv,
    train_val_list.txt and test_list.txt) with the images_*/ folders; VinDr-CXR: train.csv
    (Kaggle) or annotations/annotations_train.csv (+ annotations_test.csv, PhysioNet) beside
    train/ (and test/) DICOMs. Returns the prepared label CSV."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    src, out = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: {dataset} download folder not found")
    labels = out / "labels.csv"
    if labels.is_file():
        print(f"reusing {labels} (delete it to convert again)")
    elif dataset == "chexpert":
        convert_chexpert(_first_file(src, ["train.csv"], "CheXpert train.csv"), labels,
                         valid_csv=_first_file(src, ["valid.csv"], None), verbose=verbose)
    elif dataset == "nih":
        lists = [_first_file(src, [n], None) for n in ("train_val_list.txt", "test_list.txt")]
        convert_nih(_first_file(src, ["Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv"], "ChestX-ray14 Data_Entry"),
                    labels, image_dir=src, bbox_csv=_first_file(src, ["BBox_List_2017.csv"], None),
                    **(dict(train_val_list=lists[0], test_list=lists[1]) if all(lists) else {}), verbose=verbose)
    else:
        train = _first_file(src, ["train.csv", "annotations/annotations_train.csv"], "VinDr-CXR train.csv")
        test = _first_file(src, ["annotations/annotations_test.csv"], None) if train.name != "train.csv" else None
        convert_vindr(train, labels, image_dir=src, test_csv=test, verbose=verbose)
    return prepare_images(labels, out / f"png_{size}", size, workers=workers, verbose=verbose)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m data_prep.cxr_datasets",
                                 description="Convert a real chest X-ray data set's labels to the kit's label CSV.")
    sub = ap.add_subparsers(dest="dataset", required=True)
    c = sub.add_parser("chexpert", help="CheXpert train.csv / valid.csv")
    c.add_argument("--train-csv", required=True)
    c.add_argument("--valid-csv")
    c.add_argument("--image-root", help="folder the Path column is relative to (default: parent of train.csv's folder)")
    c.add_argument("--uncertain", choices=UNCERTAIN_POLICIES, default="abnormal",
                   help="images whose only findings are uncertain (-1)")
    c.add_argument("--unlabelled", choices=UNLABELLED_POLICIES, default="exclude",
                   help="images with no positive, no uncertain and no 'No Finding' label")
    c.add_argument("--valid-as", choices=("test", "val"), default="test")
    n = sub.add_parser("nih", help="ChestX-ray14 Data_Entry_2017.csv")
    n.add_argument("--data-entry", required=True)
    n.add_argument("--image-dir", required=True)
    n.add_argument("--bbox")
    n.add_argument("--train-val-list")
    n.add_argument("--test-list")
    v = sub.add_parser("vindr", help="VinDr-CXR train.csv")
    v.add_argument("--train-csv", required=True)
    v.add_argument("--test-csv")
    v.add_argument("--image-dir", required=True)
    v.add_argument("--boxes", choices=BOX_MODES, default="merged",
                   help="merge the radiologists' boxes (default) or keep them all")
    v.add_argument("--iou-threshold", type=float, default=0.5, help="merge boxes overlapping more than this")
    v.add_argument("--min-readers", type=int, default=1, help="keep merged boxes marked by at least this many")
    for p, val, test in ((c, 0.1, 0.1), (n, 0.1, 0.2), (v, 0.1, 0.1)):
        p.add_argument("--out", required=True, help="the new label CSV (never overwritten)")
        p.add_argument("--val-fraction", type=float, default=val)
        p.add_argument("--test-fraction", type=float, default=test)
        p.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    common = dict(val_fraction=a.val_fraction, test_fraction=a.test_fraction, seed=a.seed)
    try:
        if a.dataset == "chexpert":
            convert_chexpert(a.train_csv, a.out, valid_csv=a.valid_csv, image_root=a.image_root,
                             uncertain=a.uncertain, unlabelled=a.unlabelled, valid_as=a.valid_as, **common)
        elif a.dataset == "nih":
            convert_nih(a.data_entry, a.out, image_dir=a.image_dir, bbox_csv=a.bbox,
                        train_val_list=a.train_val_list, test_list=a.test_list, **common)
        else:
            convert_vindr(a.train_csv, a.out, image_dir=a.image_dir, test_csv=a.test_csv, boxes=a.boxes,
                          iou_threshold=a.iou_threshold, min_readers=a.min_readers, **common)
    except (OSError, ValueError) as e:
        ap.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    main()
