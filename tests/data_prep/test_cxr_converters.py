"""The CheXpert, ChestX-ray14 and VinDr-CXR converters on fixtures in the real files' exact
formats: labels, boxes, splits, box merging, and every kind of bad input they must refuse."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.cxr_fixtures import (BBOX_HEADER, CHEXPERT_HEADER, NIH_HEADER, VINDR_HEADER, bbox_line, chexpert_line,
                          nih_line, vindr_line, write_dicom, write_lines)
from data_prep import cxr_datasets as conv
from data_prep.boxfusion import FusionConfig, cluster_boxes, fuse, iou
from stkit.data.cxr_labels import read_cxr_labels, read_text_csv

BOXC = ["box_x", "box_y", "box_w", "box_h"]


# --------------------------------------------------------------------------- CheXpert

def chexpert_set(folder, extra=(), crlf=False, bom=False):
    lines = [
        chexpert_line(1, "Frontal", {"No Finding": "1.0", "Support Devices": "1.0"}),    # normal
        chexpert_line(1, "Lateral", {"No Finding": "1.0"}, k=2),                         # lateral: left out
        chexpert_line(2, "Frontal", {"Edema": "1.0", "Cardiomegaly": "-1.0"}),           # abnormal
        chexpert_line(3, "Frontal", {"Atelectasis": "-1.0", "Fracture": "0.0"}),         # uncertain only
        chexpert_line(4, "Frontal", {"Support Devices": "1.0", "Edema": "0.0"}),         # unlabelled
    ] + [chexpert_line(10 + i, "Frontal", {"No Finding": "1.0"} if i % 2 else {"Pneumonia": "1.0"})
         for i in range(20)] + list(extra)
    return write_lines(folder / "CheXpert-v1.0-small" / "train.csv", ",".join(CHEXPERT_HEADER), lines, crlf, bom)


def test_chexpert_labels_policies_and_splits(tmp_path, capsys):
    train = chexpert_set(tmp_path)
    valid = write_lines(tmp_path / "CheXpert-v1.0-small" / "valid.csv", ",".join(CHEXPERT_HEADER), [
        chexpert_line(64541, "Frontal", {"No Finding": "1.0"}, part="valid"),
        chexpert_line(64542, "Frontal", {"Lung Lesion": "1.0"}, part="valid")])
    out = conv.convert_chexpert(train, tmp_path / "out" / "labels.csv", valid_csv=valid)
    printed = capsys.readouterr().out
    assert "abnormal" in printed and "1 frontal images with no positive, no uncertain" in printed
    df = read_cxr_labels(out)
    lab = dict(zip(df.patient_id, df.label))
    assert lab["patient00001"] == 0 and lab["patient00002"] == 1 and lab["patient00003"] == 1
    assert "patient00004" not in lab and len(df) == 25 - 2 + 2
    assert set(df.split[df.patient_id.isin(["patient64541", "patient64542"])]) == {"test"}
    assert df.path.iloc[0] == "../CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    kept = read_cxr_labels(conv.convert_chexpert(train, tmp_path / "n.csv", unlabelled="normal", verbose=False))
    assert dict(zip(kept.patient_id, kept.label))["patient00004"] == 0
    excl = conv.convert_chexpert(train, tmp_path / "excl.csv", uncertain="exclude", valid_as="val", verbose=False)
    assert "patient00003" not in set(read_cxr_labels(excl).patient_id)
    before = out.read_bytes()
    with pytest.raises(FileExistsError, match="labels.csv"):
        conv.convert_chexpert(train, out, verbose=False)
    assert out.read_bytes() == before


def test_chexpert_crlf_and_bom_read_like_lf(tmp_path):
    a = conv.convert_chexpert(chexpert_set(tmp_path / "a"), tmp_path / "a.csv", verbose=False)
    b = conv.convert_chexpert(chexpert_set(tmp_path / "b", crlf=True, bom=True), tmp_path / "b.csv", verbose=False)
    assert a.read_text().replace("a/CheXpert", "CheXpert") == b.read_text().replace("b/CheXpert", "CheXpert")


@pytest.mark.parametrize("view", ["Frontl", "frontal", "", "PA"])
def test_chexpert_frontal_lateral_is_validated(tmp_path, view):
    bad = chexpert_line(99, "Frontal", {"No Finding": "1.0"}).replace(",Frontal,", f",{view},")
    train = chexpert_set(tmp_path, extra=[bad])
    with pytest.raises(ValueError, match=rf"train\.csv, line 27, column 'Frontal/Lateral': '{view}' is not one of"):
        conv.convert_chexpert(train, tmp_path / "o.csv", verbose=False)
    assert not (tmp_path / "o.csv").exists()


def test_chexpert_row_cut_short(tmp_path):
    cut = chexpert_line(99, "Frontal", {"No Finding": "1.0"})[:75]      # "...view1_frontal.jpg,Female,68,Fron"
    train = chexpert_set(tmp_path, extra=[cut, chexpert_line(100, "Frontal", {})])
    with pytest.raises(ValueError, match=r"train\.csv, line 27: 4 fields where the header has 19"):
        conv.convert_chexpert(train, tmp_path / "o.csv", verbose=False)


def test_splits_barely_move_when_one_patient_goes():
    """A patient's split depends on its own id: dropping one patient moves at most a couple
    of others (a permutation of sorted ids moved about half of them)."""
    ids = [f"patient{i:05d}" for i in range(3000)]
    a = conv.split_patients(ids, {"val": 0.1, "test": 0.1, "train": 1.0}, seed=0)
    b = conv.split_patients(ids[:1500] + ids[1501:], {"val": 0.1, "test": 0.1, "train": 1.0}, seed=0)
    assert sum(a[p] != b[p] for p in b) <= 2
    assert abs(sum(v == "val" for v in a.values()) - 300) <= 1
    c = conv.split_patients(ids, {"val": 0.1, "test": 0.1, "train": 1.0}, seed=1)
    assert sum(a[p] != c[p] for p in ids) > 300                      # the seed matters


# --------------------------------------------------------------------------- ChestX-ray14

def nih_set(tmp_path, entry_lines=None, bbox_lines=None, crlf=False):
    entries = entry_lines or [nih_line(p, f, lab) for p, f, lab in [
        (1, 0, "Cardiomegaly"), (1, 1, "Nodule|Mass"), (2, 0, "No Finding"), (3, 0, "Infiltration"),
        (4, 0, "No Finding"), (5, 0, "Effusion"), (6, 0, "No Finding"), (7, 0, "Atelectasis")]]
    write_lines(tmp_path / "Data_Entry_2017_v2020.csv", NIH_HEADER, entries, crlf=crlf)
    write_lines(tmp_path / "BBox_List_2017.csv", BBOX_HEADER, bbox_lines if bbox_lines is not None else [
        bbox_line("00000001_001.png", "Nodule", 100.5, 200.25, 30, 40),
        bbox_line("00000001_001.png", "Mass", 500, 500, 80.5, 60),
        bbox_line("00000003_000.png", "Infiltrate", 50, 60, 70, 80)], crlf=crlf)
    return tmp_path / "Data_Entry_2017_v2020.csv", tmp_path / "BBox_List_2017.csv"


def nih(tmp_path, entry, bbox, out="o.csv", **kw):
    return conv.convert_nih(entry, tmp_path / out, image_dir=tmp_path / "images", bbox_csv=bbox, verbose=False, **kw)


def test_nih_labels_boxes_and_official_split(tmp_path):
    entry, bbox = nih_set(tmp_path, crlf=True)
    names = [f"0000000{p}_00{f}.png" for p, f in [(1, 0), (1, 1), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0), (7, 0)]]
    (tmp_path / "train_val_list.txt").write_text("\n".join(names[:5]) + "\n")
    (tmp_path / "test_list.txt").write_text("\n".join(names[5:]) + "\n")
    sub = tmp_path / "images" / "images_001" / "images"
    sub.mkdir(parents=True)
    Image.new("L", (1024, 1024)).save(sub / names[0])               # found in the release's subfolders
    df = read_cxr_labels(nih(tmp_path, entry, bbox, train_val_list=tmp_path / "train_val_list.txt",
                             test_list=tmp_path / "test_list.txt"))
    assert df.path.iloc[0] == "images/images_001/images/00000001_000.png"
    assert df.drop_duplicates("path").label.tolist() == [1, 1, 0, 1, 0, 1, 0, 1]
    one = df[df.path.str.endswith("00000001_001.png")]
    assert one[BOXC].to_numpy().tolist() == [[100.5, 200.25, 30, 40], [500, 500, 80.5, 60]]
    assert one.finding.tolist() == ["Nodule", "Mass"]
    assert df[df.path.str.endswith("00000003_000.png")].finding.tolist() == ["Infiltration"]   # BBox says Infiltrate
    assert set(df.split[df.patient_id.astype(int) >= 5]) == {"test"}
    assert set(df.split[df.patient_id.astype(int) < 5]) <= {"train", "val"}


@pytest.mark.parametrize("entry, bbox, message", [
    ([nih_line(1, 0, "No Finding"), nih_line(2, 0, "Edema")[:-19]], None,
     r"Data_Entry_2017_v2020\.csv, line 3: 8 fields where the header has 11"),
    ([nih_line(1, 0, "No Finding"), nih_line(2, 0, "Edema").replace(",2,57,", ",3,57,")], None,
     r"line 3, column 'Patient ID': '3' differs from the patient number"),
    ([nih_line(1, 0, "Nodule|Infiltrate")], None, r"line 2, column 'Finding Labels': 'Nodule\|Infiltrate'"),
    ([nih_line(1, 0, "No Finding|Mass")], None, r"line 2, column 'Finding Labels'"),
    ([nih_line(1, 0, "Mass", view="LL")], None, r"line 2, column 'View Position': 'LL'"),
    ([nih_line(1, 0, "Mass"), nih_line(1, 0, "Mass")], None, r"line 3, column 'Image Index'.*listed twice"),
    (None, [bbox_line("00000001_001.png", "Nodule", 100, 200, 30, 40)[:-5]],
     r"BBox_List_2017\.csv, line 2: 6 fields where the header has 9"),
    (None, [bbox_line("00000001_001.png", "Nodule", 100, 200, 30, 40), bbox_line("00000003_000.png", "Nodul", 1, 2, 3, 4)],
     r"BBox_List_2017\.csv, line 3, column 'Finding Label': 'Nodul'"),
    (None, [bbox_line("00000001_001.png", "Nodule", 100, 200, 30, "x")], r"line 2, column 'h\]': 'x' is not a finite"),
    (None, [bbox_line("00000001_001.png", "Nodule", 100, 200, 0, 40)], r"line 2, column 'w': '0' is not a positive"),
    (None, [bbox_line("00000001_001.png", "Nodule", 1000, 200, 30, 40)], r"line 2, column 'w'.*right edge"),
    (None, [bbox_line("00000002_000.png", "Nodule", 10, 20, 30, 40)], r"line 2, column 'Image Index'.*No Finding"),
    (None, [bbox_line("00000009_000.png", "Nodule", 10, 20, 30, 40)], r"line 2, column 'Image Index'.*is not in"),
], ids=["short-entry", "patient-vs-name", "unknown-finding", "no-finding-mixed", "view", "duplicate",
        "short-bbox", "bbox-finding", "bbox-not-number", "bbox-zero", "bbox-outside", "bbox-on-normal", "bbox-unknown"])
def test_nih_bad_input_names_file_line_column(tmp_path, entry, bbox, message):
    e, b = nih_set(tmp_path, entry, bbox)
    with pytest.raises(ValueError, match=message):
        nih(tmp_path, e, b)
    assert not (tmp_path / "o.csv").exists() and not list(tmp_path.glob(".o.csv*"))


def test_nih_box_checked_against_the_png(tmp_path):
    e, b = nih_set(tmp_path, bbox_lines=[bbox_line("00000001_001.png", "Nodule", 40, 20, 30, 40)])
    (tmp_path / "images").mkdir()
    Image.new("L", (64, 64)).save(tmp_path / "images" / "00000001_001.png")
    with pytest.raises(ValueError, match=r"line 2, column 'w'.*right edge"):
        nih(tmp_path, e, b)


def test_nih_renamed_column(tmp_path):
    e, b = nih_set(tmp_path)
    e.write_text(e.read_text().replace("Patient ID", "PatientID", 1))
    with pytest.raises(ValueError, match=r"Data_Entry_2017_v2020\.csv.*lacks column\(s\) \['Patient ID'\]"):
        nih(tmp_path, e, b)


# --------------------------------------------------------------------------- VinDr-CXR

VINDR_ROWS = [
    vindr_line("img_a", "No finding", 14, "R1"), vindr_line("img_a", "No finding", 14, "R2"),
    vindr_line("img_a", "No finding", 14, "R3"),
    vindr_line("img_b", "Nodule/Mass", 8, "R1", (10, 10, 50, 50)),
    vindr_line("img_b", "Nodule/Mass", 8, "R2", (12, 10, 52, 50)),     # IoU 0.905 with R1's: merged
    vindr_line("img_b", "Nodule/Mass", 8, "R1", (11, 11, 51, 51)),     # R1 again: never merged with R1
    vindr_line("img_b", "Aortic enlargement", 0, "R3", (10, 10, 50, 50)),   # other class: separate
    vindr_line("img_b", "Nodule/Mass", 8, "R3", (200, 200, 240, 240)),
    vindr_line("img_c", "Pleural effusion", 10, "R1", (5, 5, 5, 50)),  # degenerate: left out
    vindr_line("img_c", "No finding", 14, "R2"),
] + [vindr_line(f"img_{k}", "No finding", 14, "R4") for k in range(10)]


def vindr(tmp_path, rows=VINDR_ROWS, out="o.csv", **kw):
    src = write_lines(tmp_path / "train.csv", VINDR_HEADER, rows)
    return conv.convert_vindr(src, tmp_path / out, image_dir=tmp_path / "vindr", verbose=False, **kw)


def test_vindr_labels_and_merged_boxes(tmp_path):
    df = read_cxr_labels(vindr(tmp_path))
    lab = df.drop_duplicates("path").set_index("patient_id").label
    assert lab["img_a"] == 0 and lab["img_b"] == 1 and lab["img_c"] == 1 and len(lab) == 13
    b = df[df.patient_id == "img_b"]
    assert b[BOXC].to_numpy().tolist() == [[11, 10, 40, 40], [11, 11, 40, 40], [200, 200, 40, 40], [10, 10, 40, 40]]
    assert b.finding.tolist() == ["Nodule/Mass"] * 3 + ["Aortic enlargement"]
    assert b.rad_id.tolist() == ["R1;R2", "R1", "R3", "R3"] and b.n_readers.astype(int).tolist() == [2, 1, 1, 1]
    assert df[df.patient_id == "img_a"].rad_id.tolist() == ["R1;R2;R3"]
    assert df[df.patient_id == "img_c"].box_x.isna().all()
    assert df.path.iloc[0] == "vindr/train/img_a.dicom"
    two = read_cxr_labels(vindr(tmp_path, out="two.csv", min_readers=2))
    assert two[two.patient_id == "img_b"][BOXC].to_numpy().tolist() == [[11, 10, 40, 40]]
    every = read_cxr_labels(vindr(tmp_path, out="all.csv", boxes="all"))
    eb = every[every.patient_id == "img_b"]
    assert len(eb) == 5 and eb.rad_id.tolist() == ["R1", "R2", "R1", "R3", "R3"]
    assert eb[BOXC].to_numpy().tolist()[1] == [12, 10, 40, 40]


@pytest.mark.parametrize("row, message", [
    ("img_x,Aortic enlargement", r"train\.csv, line 22: 2 fields where the header has 8"),
    ("img_x,Aortic enlargement,0,R1,1.0,2.0,3.0", r"line 22: 7 fields"),
    (vindr_line("img_x", "Cardiomegaly", 0, "R1", (1, 2, 3, 4)), r"line 22, column 'class_name': 'Cardiomegaly' does not match"),
    (vindr_line("img_x", "Cardiomegaly", 15, "R1", (1, 2, 3, 4)), r"line 22, column 'class_id': '15'"),
    (vindr_line("img_x", "Cardiomegaly", 3, "", (1, 2, 3, 4)), r"line 22, column 'rad_id': '' is empty"),
    ("img_x,Cardiomegaly,3,R1,1.0,2.0,,4.0", r"line 22, column 'x_max': '' is empty on a finding row"),
    ("img_x,Cardiomegaly,3,R1,,,,", r"line 22, column 'x_min': '' is empty on a finding row"),
    ("img_x,No finding,14,R1,1.0,,,", r"line 22, column 'x_min': '1.0' is not empty on a 'No finding' row"),
], ids=["cut-after-class", "cut-in-box", "name-vs-id", "id-range", "no-reader", "partial-box", "finding-no-box",
        "normal-with-box"])
def test_vindr_bad_rows_name_file_line_column(tmp_path, row, message):
    with pytest.raises(ValueError, match=message):
        vindr(tmp_path, VINDR_ROWS + [row])
    assert not (tmp_path / "o.csv").exists()


def test_vindr_boxes_checked_against_the_dicom_size(tmp_path):
    write_dicom(tmp_path / "vindr" / "train" / "img_b.dicom", np.zeros((300, 220), np.uint16))   # Rows 300, Columns 220
    with pytest.raises(ValueError, match=r"line 9, column 'x_max': '240.0' lies outside the image.*300 x 220"):
        vindr(tmp_path)
    write_dicom(tmp_path / "vindr" / "train" / "img_b.dicom", np.zeros((300, 260), np.uint16))
    assert len(read_cxr_labels(vindr(tmp_path))) > 0


def test_vindr_without_class_id(tmp_path):
    """The PhysioNet annotation files have class_name (more local labels) but no class_id."""
    rows = ["i1,R8,No finding,,,,", "i2,R9,Rib fracture,1,2,11,22"] + [f"n{k},R8,No finding,,,," for k in range(8)]
    src = write_lines(tmp_path / "annotations_train.csv", "image_id,rad_id,class_name,x_min,y_min,x_max,y_max", rows)
    df = read_cxr_labels(conv.convert_vindr(src, tmp_path / "l.csv", image_dir=tmp_path, verbose=False))
    assert df.set_index("patient_id").label[["i1", "i2"]].tolist() == [0, 1]
    assert df[df.patient_id == "i2"][["box_w", "box_h", "finding"]].to_numpy().tolist() == [[10, 20, "Rib fracture"]]
    bad = write_lines(tmp_path / "bad.csv", "image_id,rad_id,class_name,x_min,y_min,x_max,y_max",
                      rows + ["i3,R9,Rib fractur,1,2,11,22"])
    with pytest.raises(ValueError, match=r"line 12, column 'class_name': 'Rib fractur'"):
        conv.convert_vindr(bad, tmp_path / "m.csv", image_dir=tmp_path, verbose=False)
    test = write_lines(tmp_path / "annotations_test.csv", "image_id,class_name,x_min,y_min,x_max,y_max",
                       ["t1,No finding,,,,", "t2,Nodule/Mass,1,2,11,22", "t2,Nodule/Mass,2,2,12,22"])
    df = read_cxr_labels(conv.convert_vindr(src, tmp_path / "t.csv", image_dir=tmp_path, test_csv=test, verbose=False))
    t2 = df[df.patient_id == "t2"]
    assert set(t2.split) == {"test"} and t2.rad_id.tolist() == ["consensus"] * 2 and len(t2) == 2


def test_fusion_rule_against_hand_computation():
    a = np.array([0, 0, 10, 10.0])
    assert np.allclose(iou(a, np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])), [50 / 150, 0, 1])
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [1, 0, 11, 10], [19, 0, 29, 10], [0, 1, 10, 11.0]])
    # box 2 overlaps cluster 0 (IoU 90/110); box 3 cluster 1; box 4 (R2 again) cannot join cluster 0
    assert cluster_boxes(boxes, ["R1", "R1", "R2", "R2", "R2"], 0.5) == [[0, 2], [1, 3], [4]]
    fused = fuse(boxes, ["R1", "R1", "R2", "R2", "R2"], ["n"] * 5, FusionConfig(0.5, 2))
    assert [f["readers"] for f in fused] == [["R1", "R2"], ["R1", "R2"]]
    assert np.allclose(fused[0]["box"], [0.5, 0, 10.5, 10]) and np.allclose(fused[1]["box"], [19.5, 0, 29.5, 10])
    # a box joins the cluster it overlaps MOST, not the first one above the threshold
    two = np.array([[0, 0, 10, 10], [4, 0, 14, 10], [3, 0, 13, 10.0]])
    assert cluster_boxes(two, ["R1", "R1", "R2"], 0.3) == [[0], [1, 2]]


def test_fusion_properties_on_random_boxes():
    rng = np.random.default_rng(0)
    for _ in range(50):
        k = int(rng.integers(1, 12))
        xy = rng.uniform(0, 50, (k, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 30, (k, 2))], axis=1)
        readers = [f"R{r}" for r in rng.integers(1, 4, k)]
        clusters = cluster_boxes(boxes, readers, 0.4)
        assert sorted(j for c in clusters for j in c) == list(range(k))          # each box exactly once
        assert all(len({readers[j] for j in c}) == len(c) for c in clusters)     # one box per reader
        for c in clusters:                                                        # members overlap the mean
            if len(c) > 1:
                assert (iou(boxes[c].mean(0), boxes[c]) > 0).all()


# --------------------------------------------------------------------------- shared

def test_reader_refuses_short_rows_and_keeps_line_numbers(tmp_path):
    p = write_lines(tmp_path / "x.csv", "a,b,c", ["1,2,3", "", "4,5", "6,7,8"], crlf=True, bom=True)
    with pytest.raises(ValueError, match=r"x\.csv, line 4: 2 fields where the header has 3"):
        read_text_csv(p, "test CSV")
    p = write_lines(tmp_path / "y.csv", "a,b,c", ["1,2,3", "", '"4\n4",5,6', "7,8,9"], crlf=True, bom=True)
    df = read_text_csv(p, "test CSV")
    assert list(df.columns) == ["a", "b", "c"] and df.index.tolist() == [2, 4, 6] and df.a.tolist()[1] == "4\n4"
    lab = write_lines(tmp_path / "l.csv", "path,label,patient_id,split,box_x,box_y,box_w,box_h",
                      ["a.png,0,p1,train,,,,", "b.png,1,p2,train,1,2"])
    with pytest.raises(ValueError, match=r"l\.csv, line 3: 6 fields where the header has 8"):
        read_cxr_labels(lab)


def test_converters_and_label_reader_import_no_torch():
    code = ("import sys; import data_prep.cxr_datasets, data_prep.prepare_images, stkit.data.cxr_labels; "
            "from stkit.data import read_cxr_labels, load_cxr_image; "
            "bad = [m for m in ('torch', 'torchvision') if m in sys.modules]; assert not bad, bad; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    from stkit.data import CXRDataset                    # the dataset itself still loads on use
    assert CXRDataset.__name__ == "CXRDataset"


def test_command_line(tmp_path, capsys):
    train = chexpert_set(tmp_path)
    conv.main(["chexpert", "--train-csv", str(train), "--out", str(tmp_path / "c.csv"), "--unlabelled", "normal"])
    out = capsys.readouterr().out
    assert "patients" in out and "abnormal" in out and len(read_cxr_labels(tmp_path / "c.csv")) == 24
    with pytest.raises(SystemExit) as e:
        conv.main(["chexpert", "--train-csv", str(train), "--out", str(tmp_path / "c.csv")])
    assert e.value.code == 2 and "never overwrite" in capsys.readouterr().err
    src = write_lines(tmp_path / "v" / "train.csv", VINDR_HEADER, VINDR_ROWS)
    conv.main(["vindr", "--train-csv", str(src), "--image-dir", str(tmp_path / "v"), "--boxes", "all",
               "--out", str(tmp_path / "v.csv")])
    assert len(read_cxr_labels(tmp_path / "v.csv").query("patient_id == 'img_b'")) == 5
    assert isinstance(conv.summary(read_cxr_labels(tmp_path / "v.csv")), pd.DataFrame)
