"""Chest X-ray data: the synthetic generator, the label reader, the dataset."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

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
    # no window: the 12-bit range after rescale, [-100, 4095 * 2 - 100], maps to [0, 1]; inverted
    want = 1 - ((np.arange(24) * 100 * 2 - 100) + 100) / (4095 * 2)
    assert torch.equal(img[0], torch.tensor(np.round(want * 255) / 255, dtype=torch.float32).reshape(4, 6))


# --------------------------------------------------------------------------- command line
# (the converters of the real data sets are tested in test_cxr_converters.py)

def test_command_line(tmp_path, capsys):
    syn.main(["--out", str(tmp_path / "s"), "--size", "smoke", "--set", "n_images=20", "--set", "noise=0.01"])
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["params"]["n_images"] == 20
    with pytest.raises(SystemExit) as e:
        syn.main(["--out", str(tmp_path / "s"), "--size", "smoke", "--set", "n_images=21"])
    assert e.value.code == 2 and "s holds a different" in capsys.readouterr().err
