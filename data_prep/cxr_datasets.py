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

from .chexpert import PATHOLOGIES as CHEXPERT_PATHOLOGIES
from .chexpert import UNCERTAIN_POLICIES, UNLABELLED_POLICIES, convert_chexpert
from .csvtools import split_patients, summary
from .nih import convert_nih
from .vindr import BOX_MODES, convert_vindr

__all__ = ["CHEXPERT_PATHOLOGIES", "convert_chexpert", "convert_nih", "convert_vindr", "split_patients",
           "summary", "main"]


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
