"""Chest X-ray data: the synthetic generator, the label reader/dataset, the converters."""

import csv
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from data_prep import cxr_datasets as conv
from data_prep import synthetic_cxr as syn
from stkit.data import CXRDataset, ImageDecodeError, read_cxr_labels

TINY = dict(n_images=24)  # smoke canvas (128 px), fewer images: fast


def files(folder):
    """{relative path: bytes} of every file under folder."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "cxr"
    return syn.generate_synthetic_cxr(out, "smoke", seed=3, verbose=False)


# --------------------------------------------------------------------------- generator

def test_sizes_table():
    assert syn.SIZES["smoke"] == {"canvas": 128, "n_images": 96}
    assert syn.SIZES["quick"] == {"canvas": 256, "n_images": 2000}
    assert "paper" not in syn.SIZES
    with pytest.raises(ValueError, match="cxr_datasets"):
        syn.resolve_params("paper")


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = syn.generate_synthetic_cxr(tmp_path / "a", "smoke", seed=1, verbose=False, **TINY).parent
    b = syn.generate_synthetic_cxr(tmp_path / "b", "smoke", seed=1, verbose=False, **TINY).parent
    c = syn.generate_synthetic_cxr(tmp_path / "c", "smoke", seed=2, verbose=False, **TINY).parent
    fa, fb, fc = files(a), files(b), files(c)
    assert len([k for k in fa if k.endswith(".png")]) == 24
    assert fa == fb
    pngs = [k for k in fa if k.endswith(".png")]
    assert fa["labels.csv"] != fc["labels.csv"] or any(fa[k] != fc.get(k) for k in pngs)
    assert sum(fa[k] != fc.get(k) for k in pngs) > 12         # most images change with the seed


def test_image_does_not_depend_on_other_images():
    p, q = syn.resolve_params("smoke"), syn.resolve_params("smoke", n_images=20)
    assert np.array_equal(syn.render_case(5, 7, True, p).image, syn.render_case(5, 7, True, q).image)


def test_output_format_labels_and_splits(smoke):
    df = read_cxr_labels(smoke)
    img = df.drop_duplicates("path")
    assert len(img) == 96 and (smoke.parent / img.path.iloc[0]).is_file()
    assert (df.groupby("patient_id").split.nunique() == 1).all()
    assert img.groupby("patient_id").size().max() <= 2
    share = img.split.value_counts(normalize=True)
    assert abs(share["train"] - 0.70) < 0.05 and abs(share["val"] - 0.15) < 0.05
    for _, part in img.groupby("split"):
        assert abs(part.label.mean() - 0.5) < 0.1              # balanced in every split
    boxed = df.box_x.notna()
    assert not (boxed & (df.label == 0)).any()                # normal: one row, no box
    assert df[df.label == 1].groupby("path").size().between(1, 3).all()
    assert boxed[df.label == 1].all()
    manifest = json.loads((smoke.parent / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["params"]["canvas"] == 128
    thorax = pd.read_csv(smoke.parent / "thorax.csv")
    assert list(thorax.path) == list(img.path)


def test_lesions_lie_inside_lungs_and_images_match(smoke):
    df = read_cxr_labels(smoke)
    p = syn.resolve_params("smoke")
    cases = {c.path: c for c in syn.plan_cases(3, p)}
    checked = 0
    for path, rows in df[df.label == 1].groupby("path"):
        c = cases[path]
        r = syn.render_case(3, c.index, True, p)
        assert np.array_equal(r.image, np.asarray(Image.open(smoke.parent / path)))
        for x, y, w, h in rows[["box_x", "box_y", "box_w", "box_h"]].to_numpy():
            assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128
            win = r.lung_field[math.floor(y):math.ceil(y + h), math.floor(x):math.ceil(x + w)]
            assert win.size and win.all(), f"{path}: box {x, y, w, h} leaves the lung field"
            checked += 1
    assert checked >= 48


def test_label_changes_only_the_lesions():
    """Normal and abnormal versions of an image differ only around the lesions: no other leak."""
    p = syn.resolve_params("smoke")
    for i in range(6):
        normal, abnormal = syn.render_case(0, i, False, p), syn.render_case(0, i, True, p)
        assert normal.boxes == [] and abnormal.boxes
        near = np.zeros(normal.image.shape, bool)
        for x, y, w, h in abnormal.boxes:
            cx, cy, r = x + w / 2, y + h / 2, max(w, h) / 2
            near[max(0, int(cy - 2.5 * r - 4)):int(cy + 2.5 * r + 5), max(0, int(cx - 2.5 * r - 4)):int(cx + 2.5 * r + 5)] = True
        diff = normal.image != abnormal.image
        assert diff.any() and not (diff & ~near).any()
        assert abs(float(normal.image.mean()) - float(abnormal.image.mean())) < 1.0


def test_distractors_and_text_stay_off_the_lungs():
    p = syn.resolve_params("smoke", noise=0.0, n_distractors=(4, 4))
    q = dict(p, n_distractors=(0, 0), n_text=(0, 0))
    for i in range(4):
        with_extras, bare = syn.render_case(1, i, False, p), syn.render_case(1, i, False, q)
        changed = np.abs(with_extras.image.astype(int) - bare.image.astype(int)) > 2
        assert changed.any() and not (changed & with_extras.lungs).any()


def test_reuse_and_refuse(tmp_path, capsys):
    out = tmp_path / "cxr"
    csv_path = syn.generate_synthetic_cxr(out, "smoke", seed=0, **TINY)
    before = files(out)
    assert syn.generate_synthetic_cxr(out, "smoke", seed=0, **TINY) == csv_path
    assert "reusing" in capsys.readouterr().out and files(out) == before
    with pytest.raises(FileExistsError, match="seed"):
        syn.generate_synthetic_cxr(out, "smoke", seed=1, **TINY)
    with pytest.raises(FileExistsError, match="n_images"):
        syn.generate_synthetic_cxr(out, "smoke", seed=0, n_images=30)
    assert files(out) == before
    (out / "manifest.json").unlink()                      # as if interrupted before the end
    with pytest.raises(FileExistsError, match="no manifest"):
        syn.generate_synthetic_cxr(out, "smoke", seed=0, **TINY)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="mine"):
        syn.generate_synthetic_cxr(mine, "smoke", seed=0, **TINY)
    assert files(mine) == {"notes.txt": b"keep me"}


def test_bad_parameters_are_named(tmp_path):
    with pytest.raises(TypeError, match="lesion_radiuss"):
        syn.generate_synthetic_cxr(tmp_path / "x", "smoke", lesion_radiuss=(0.1, 0.2))
    with pytest.raises(ValueError, match="lesion_contrast"):
        syn.generate_synthetic_cxr(tmp_path / "x", "smoke", lesion_contrast=(0.3, 0.1))
    with pytest.raises(ValueError, match="huge"):
        syn.generate_synthetic_cxr(tmp_path / "x", "huge")
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- reader

HEADER = "path,label,patient_id,split,box_x,box_y,box_w,box_h\n"
GOOD = ["a.png,0,p1,train,,,,", "b.png,1,p2,train,10,12,8,6", "b.png,1,p2,train,30,30,5,5", "c.png,1,p3,val,,,,"]


def write_set(folder, rows=GOOD, header=HEADER, sizes=None):
    """A label CSV plus small PNGs for the images it names that do not exist yet."""
    folder.mkdir(parents=True, exist_ok=True)
    for line in rows:
        name = line.split(",")[0]
        if name.endswith(".png") and not (folder / name).exists():
            h, w = (sizes or {}).get(name, (48, 64))
            Image.fromarray((np.arange(h * w) % 251).astype(np.uint8).reshape(h, w)).save(folder / name)
    (folder / "labels.csv").write_text(header + "\n".join(rows) + "\n")
    return folder / "labels.csv"


def test_reader_accepts_the_format(tmp_path):
    df = read_cxr_labels(write_set(tmp_path))
    assert df.label.tolist() == [0, 1, 1, 1] and df.csv_line.tolist() == [2, 3, 4, 5]
    assert df.box_w.iloc[1] == 8 and np.isnan(df.box_x.iloc[0])
    no_box_cols = tmp_path / "plain.csv"
    no_box_cols.write_text("path,label,patient_id,split\na.png,0,p1,train\n")
    assert np.isnan(read_cxr_labels(no_box_cols).box_x.iloc[0])


@pytest.mark.parametrize("rows, header, message", [
    (["a.png,0,p1,train"], "path,patient_id,split,lbl\n", r"missing required column\(s\) \['label'\]"),
    (GOOD[:1] + ["b.png,2,p2,train,,,,"], HEADER, r"line 3: label '2'"),
    (GOOD[:1] + ["b.png,0.5,p2,train,,,,"], HEADER, r"line 3: label '0.5'"),
    (GOOD[:1] + ["b.png,yes,p2,train,,,,"], HEADER, r"line 3: label 'yes'"),
    (GOOD[:1] + ["b.png,,p2,train,,,,"], HEADER, r"line 3: label ''"),
    (GOOD[:1] + ["b.png,1,p2,training,,,,"], HEADER, r"line 3: split 'training'"),
    (GOOD[:1] + [",1,p2,train,,,,"], HEADER, r"line 3: empty path"),
    (GOOD[:1] + ["b.png,1,p2,train,10,12,,6"], HEADER, r"line 3: box partly filled: empty box_w"),
    (GOOD[:1] + ["b.png,1,p2,train,10,x,8,6"], HEADER, r"line 3: box_y 'x' is not a finite number"),
    (GOOD[:1] + ["b.png,1,p2,train,10,12,0,6"], HEADER, r"line 3: box_w = 0"),
    (["a.png,0,p1,train,1,2,3,4"], HEADER, r"line 2: a normal image \(label 0\) has a lesion box"),
    (GOOD[:2] + ["b.png,1,p2,val,30,30,5,5"], HEADER, r"image 'b.png' has conflicting split"),
    (GOOD[:2] + ["b.png,1,p2,train,,,,"], HEADER, r"line 4: image 'b.png' has 2 rows but this one has no box"),
    (GOOD[:2] + ["c.png,1,p1,test,,,,"], HEADER, r"patient 'p1' is in more than one split: train \(line 2\), test \(line 4\)"),
], ids=["missing-column", "label-2", "label-half", "label-yes", "label-blank", "split", "empty-path",
        "partial-box", "box-not-number", "box-zero-width", "box-on-normal", "image-disagrees", "mixed-box-rows",
        "patient-leak"])
def test_reader_names_the_culprit(tmp_path, rows, header, message):
    path = write_set(tmp_path, rows, header)
    before = files(tmp_path)
    with pytest.raises(ValueError, match=message) as e:
        read_cxr_labels(path)
    assert str(path) in str(e.value)
    assert files(tmp_path) == before                      # nothing written, nothing changed


def test_reader_file_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_cxr_labels(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty.csv.*empty"):
        read_cxr_labels(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text(HEADER)
    with pytest.raises(ValueError, match="header.csv.*no rows"):
        read_cxr_labels(tmp_path / "header.csv")


# --------------------------------------------------------------------------- dataset

def test_dataset_items_and_boxes(tmp_path):
    path = write_set(tmp_path)
    ds = CXRDataset(path, "train")
    assert len(ds) == 2 and ds.images.dtype == torch.uint8 and ds.images.shape == (2, 1, 48, 64)
    x, y, i = ds[1]
    assert x.shape == (1, 48, 64) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.dtype == torch.float32 and y.ndim == 0 and y.item() == 1 and i == 1
    assert ds.boxes(0).shape == (0, 4)
    assert torch.equal(ds.boxes(1), torch.tensor([[10.0, 12, 8, 6], [30, 30, 5, 5]]))
    assert ds.patient_ids == ["p1", "p2"] and ds.paths[0] == tmp_path / "a.png"
    small = CXRDataset(path, "train", image_size=(24, 16))
    assert small[0][0].shape == (1, 24, 16)
    assert torch.allclose(small.boxes(1)[0], torch.tensor([2.5, 6, 2, 3]))
    lazy = CXRDataset(path, "train", image_size=(24, 16), preload=False)
    assert torch.equal(lazy[1][0], small[1][0]) and torch.equal(lazy.boxes(1), small.boxes(1))
    with pytest.raises(ValueError, match="no images in split 'test'"):
        CXRDataset(path, "test")


def test_dataset_reads_the_synthetic_set(smoke):
    ds = CXRDataset(smoke, "val", image_size=64)
    assert ds.images.shape[1:] == (1, 64, 64) and set(ds.labels.tolist()) == {0.0, 1.0}
    k = int(torch.nonzero(ds.labels)[0])
    assert len(ds.boxes(k)) >= 1 and (ds.boxes(k)[:, :2] + ds.boxes(k)[:, 2:] <= 64).all()


def test_dataset_missing_image(tmp_path):
    path = write_set(tmp_path)
    (tmp_path / "b.png").unlink()
    before = files(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"b\.png.*line 3"):
        CXRDataset(path, "train")
    assert files(tmp_path) == before


def test_dataset_corrupt_png(tmp_path):
    path = write_set(tmp_path)
    data = (tmp_path / "b.png").read_bytes()
    (tmp_path / "b.png").write_bytes(data[: len(data) // 2])  # truncated
    before = files(tmp_path)
    with pytest.raises(ImageDecodeError, match=r"b\.png.*cannot decode.*line 3"):
        CXRDataset(path, "train")
    (tmp_path / "b.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageDecodeError, match=r"b\.png"):
        CXRDataset(path, "train")
    assert set(files(tmp_path)) == set(before)


def test_dataset_size_mismatch_and_box_outside(tmp_path):
    path = write_set(tmp_path, sizes={"b.png": (50, 64)})
    with pytest.raises(ValueError, match=r"b\.png.*50x64.*a\.png is 48x64"):
        CXRDataset(path, "train")
    assert len(CXRDataset(path, "train", image_size=32)) == 2
    other = write_set(tmp_path / "o", GOOD[:1] + ["b.png,1,p2,train,60,12,8,6"])
    with pytest.raises(ValueError, match=r"line 3: box .* outside"):
        CXRDataset(other, "train")


def test_dataset_reads_dicom(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 4, 6, 1
    ds.PhotometricInterpretation = "MONOCHROME1"            # low values are bright
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 2, -100
    ds.PixelData = (np.arange(24, dtype=np.uint16) * 100).reshape(4, 6).tobytes()
    ds.save_as(tmp_path / "x.dicom", enforce_file_format=True)
    (tmp_path / "labels.csv").write_text("path,label,patient_id,split\nx.dicom,0,p,test\n")
    img = CXRDataset(tmp_path / "labels.csv", "test")[0][0]
    assert img.shape == (1, 4, 6)
    assert img[0, 0, 0] == 1.0 and img[0, -1, -1] == 0.0    # inverted, scaled to [0, 1]


# --------------------------------------------------------------------------- converters

CHEX_OBS = ["No Finding", *conv.CHEXPERT_PATHOLOGIES, "Support Devices"]


def chexpert_csv(path, rows):
    """rows: (patient number, 'Frontal'|'Lateral', {observation: value})."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEX_OBS])
        for k, (pid, view, obs) in enumerate(rows):
            part = path.stem if path.stem == "valid" else "train"
            w.writerow([f"CheXpert-v1.0-small/{part}/patient{pid:05d}/study1/view{k}_{view.lower()}.jpg",
                        "Male", "50", view, "PA", *[obs.get(o, "") for o in CHEX_OBS]])
    return path


def test_convert_chexpert(tmp_path):
    train = chexpert_csv(tmp_path / "CheXpert-v1.0-small" / "train.csv", [
        (1, "Frontal", {"No Finding": "1.0", "Support Devices": "1.0"}),   # normal
        (1, "Lateral", {"No Finding": "1.0"}),                              # dropped: lateral
        (2, "Frontal", {"Edema": "1.0", "Cardiomegaly": "-1.0"}),          # abnormal
        (3, "Frontal", {"Atelectasis": "-1.0", "Fracture": "0.0"}),        # uncertain only
        (4, "Frontal", {"Support Devices": "1.0"}),                         # no label: dropped
    ] + [(10 + i, "Frontal", {"No Finding": "1.0"} if i % 2 else {"Pneumonia": "1.0"}) for i in range(20)])
    valid = chexpert_csv(tmp_path / "CheXpert-v1.0-small" / "valid.csv",
                         [(64541, "Frontal", {"No Finding": "1.0"}), (64542, "Frontal", {"Lung Lesion": "1.0"})])
    out = conv.convert_chexpert(train, tmp_path / "out" / "labels.csv", valid_csv=valid, verbose=False)
    df = read_cxr_labels(out)
    lab = dict(zip(df.patient_id, df.label))
    assert lab["patient00001"] == 0 and lab["patient00002"] == 1 and lab["patient00003"] == 1
    assert "patient00004" not in lab and len(df) == 25 - 2 + 2
    assert set(df.split[df.patient_id.isin(["patient64541", "patient64542"])]) == {"test"}
    assert set(df.split) == {"train", "val", "test"}
    assert df.path.iloc[0] == "../CheXpert-v1.0-small/train/patient00001/study1/view0_frontal.jpg"
    excl = conv.convert_chexpert(train, tmp_path / "excl.csv", uncertain="exclude", valid_as="val", verbose=False)
    assert "patient00003" not in set(read_cxr_labels(excl).patient_id)
    assert conv.convert_chexpert(train, tmp_path / "again.csv", verbose=False).read_text() != ""
    # never overwrite
    before = out.read_bytes()
    with pytest.raises(FileExistsError, match="labels.csv"):
        conv.convert_chexpert(train, out, verbose=False)
    assert out.read_bytes() == before
    # inputs are checked
    bad = tmp_path / "bad.csv"
    bad.write_text("Path,Frontal/Lateral\nx,Frontal\n")
    with pytest.raises(ValueError, match=r"bad\.csv.*No Finding"):
        conv.convert_chexpert(bad, tmp_path / "o2.csv", verbose=False)
    leak = chexpert_csv(tmp_path / "leak" / "valid.csv", [(2, "Frontal", {"No Finding": "1.0"})])
    with pytest.raises(ValueError, match="patient00002"):
        conv.convert_chexpert(train, tmp_path / "o3.csv", valid_csv=leak, verbose=False)
    assert not (tmp_path / "o2.csv").exists() and not (tmp_path / "o3.csv").exists()


def test_convert_nih(tmp_path):
    entries = pd.DataFrame({
        "Image Index": [f"{i:08d}_000.png" for i in range(12)],
        "Finding Labels": ["No Finding", "Nodule|Mass", "Effusion", "No Finding"] * 3,
        "Follow-up #": 0, "Patient ID": [i // 2 + 1 for i in range(12)], "View Position": "PA"})
    entries.to_csv(tmp_path / "Data_Entry_2017.csv", index=False)
    (tmp_path / "BBox_List_2017.csv").write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
        "00000001_000.png,Nodule,100.5,200.25,30,40,,,\n"
        "00000001_000.png,Mass,500,500,80.5,60,,,\n"
        "00000002_000.png,Effusion,50,60,70,80,,,\n")
    (tmp_path / "test_list.txt").write_text("".join(f"{i:08d}_000.png\n" for i in range(8, 12)))
    (tmp_path / "train_val_list.txt").write_text("".join(f"{i:08d}_000.png\n" for i in range(8)))
    sub = tmp_path / "images_001" / "images"
    sub.mkdir(parents=True)
    (sub / "00000000_000.png").write_bytes(b"")              # found in the release's subfolders
    out = conv.convert_nih(tmp_path / "Data_Entry_2017.csv", tmp_path / "labels.csv", image_dir=tmp_path,
                           bbox_csv=tmp_path / "BBox_List_2017.csv", train_val_list=tmp_path / "train_val_list.txt",
                           test_list=tmp_path / "test_list.txt", verbose=False)
    df = read_cxr_labels(out)
    assert df.path.iloc[0] == "images_001/images/00000000_000.png"
    assert df.drop_duplicates("path").label.tolist() == [0, 1, 1, 0] * 3
    one = df[df.path.str.endswith("00000001_000.png")]
    assert one[["box_x", "box_y", "box_w", "box_h"]].to_numpy().tolist() == [[100.5, 200.25, 30, 40], [500, 500, 80.5, 60]]
    assert one.finding.tolist() == ["Nodule", "Mass"]
    assert set(df.split[df.patient_id.astype(int) >= 5]) == {"test"}
    assert set(df.split[df.patient_id.astype(int) < 5]) <= {"train", "val"}
    (tmp_path / "bb2.csv").write_text("Image Index,Finding Label,Bbox [x,y,w,h]\n00000000_000.png,Nodule,1,2,3,4\n")
    with pytest.raises(ValueError, match=r"bb2\.csv, line 2.*No Finding"):
        conv.convert_nih(tmp_path / "Data_Entry_2017.csv", tmp_path / "o.csv", image_dir=tmp_path,
                         bbox_csv=tmp_path / "bb2.csv", verbose=False)
    with pytest.raises(FileExistsError):
        conv.convert_nih(tmp_path / "Data_Entry_2017.csv", out, image_dir=tmp_path, verbose=False)
    entries.drop(columns="Patient ID").to_csv(tmp_path / "no_pid.csv", index=False)
    with pytest.raises(ValueError, match=r"no_pid\.csv.*Patient ID"):
        conv.convert_nih(tmp_path / "no_pid.csv", tmp_path / "o.csv", image_dir=tmp_path, verbose=False)
    assert not (tmp_path / "o.csv").exists()


def test_convert_vindr(tmp_path):
    rows = [  # image_id, class_name, class_id, rad_id, x_min, y_min, x_max, y_max
        ("img_a", "No finding", 14, "R1", "", "", "", ""), ("img_a", "No finding", 14, "R2", "", "", "", ""),
        ("img_b", "No finding", 14, "R1", "", "", "", ""), ("img_b", "Nodule/Mass", 8, "R2", 10, 20, 40, 60),
        ("img_b", "Aortic enlargement", 0, "R3", 100, 100, 150, 130),
        ("img_c", "Pleural effusion", 10, "R1", 5, 5, 5, 50),  # degenerate: left out
    ] + [(f"img_{k}", "No finding", 14, "R1", "", "", "", "") for k in range(10)]
    pd.DataFrame(rows, columns=["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]
                 ).to_csv(tmp_path / "train.csv", index=False)
    out = conv.convert_vindr(tmp_path / "train.csv", tmp_path / "out" / "labels.csv", image_dir=tmp_path / "vindr",
                             verbose=False)
    df = read_cxr_labels(out)
    lab = df.drop_duplicates("path").set_index("patient_id").label
    assert lab["img_a"] == 0 and lab["img_b"] == 1 and lab["img_c"] == 1 and len(lab) == 13
    b = df[df.patient_id == "img_b"]
    assert b[["box_x", "box_y", "box_w", "box_h"]].to_numpy().tolist() == [[10, 20, 30, 40], [100, 100, 50, 30]]
    assert b.finding.tolist() == ["Nodule/Mass", "Aortic enlargement"]
    assert df[df.patient_id == "img_c"].box_x.isna().all()
    assert df.path.iloc[0] == "../vindr/train/img_a.dicom"
    with pytest.raises(FileExistsError):
        conv.convert_vindr(tmp_path / "train.csv", out, image_dir=tmp_path, verbose=False)
    pd.DataFrame(rows, columns=["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]
                 ).drop(columns=["y_max"]).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(ValueError, match=r"short\.csv.*y_max"):
        conv.convert_vindr(tmp_path / "short.csv", tmp_path / "o.csv", image_dir=tmp_path, verbose=False)


def test_convert_vindr_without_class_id(tmp_path):
    """The PhysioNet annotation files have class_name but no class_id."""
    pd.DataFrame([("i1", "R8", "No finding", "", "", "", ""), ("i2", "R9", "Nodule/Mass", 1, 2, 11, 22)]
                 + [(f"n{k}", "R8", "No finding", "", "", "", "") for k in range(8)],
                 columns=["image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max"]
                 ).to_csv(tmp_path / "annotations_train.csv", index=False)
    df = read_cxr_labels(conv.convert_vindr(tmp_path / "annotations_train.csv", tmp_path / "l.csv",
                                            image_dir=tmp_path, verbose=False))
    assert df.set_index("patient_id").label[["i1", "i2"]].tolist() == [0, 1]
    assert df[df.patient_id == "i2"][["box_w", "box_h"]].to_numpy().tolist() == [[10, 20]]


def test_command_lines(tmp_path, capsys):
    syn.main(["--out", str(tmp_path / "s"), "--size", "smoke", "--set", "n_images=20", "--set", "noise=0.01"])
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["params"]["n_images"] == 20
    with pytest.raises(SystemExit) as e:
        syn.main(["--out", str(tmp_path / "s"), "--size", "smoke", "--set", "n_images=21"])
    assert e.value.code == 2 and "s holds a different" in capsys.readouterr().err
    train = chexpert_csv(tmp_path / "c" / "train.csv", [(k, "Frontal", {"No Finding": "1.0"}) for k in range(10)])
    conv.main(["chexpert", "--train-csv", str(train), "--out", str(tmp_path / "c.csv")])
    assert len(read_cxr_labels(tmp_path / "c.csv")) == 10
    with pytest.raises(SystemExit) as e:
        conv.main(["chexpert", "--train-csv", str(train), "--out", str(tmp_path / "c.csv")])
    assert e.value.code == 2 and "never overwrite" in capsys.readouterr().err
