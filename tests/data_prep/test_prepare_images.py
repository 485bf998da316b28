"""Image preparation: DICOM and large PNG/JPEG -> PNGs of one size with scaled boxes;
idempotent, resumable, parallel-deterministic, originals untouched, bad input named."""

import hashlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tests.cxr_fixtures import write_dicom
from data_prep.prepare_images import main, prepare_images
from stkit.data.cxr_labels import read_cxr_labels
from stkit.data.images import ImageDecodeError

HEADER = "path,label,patient_id,split,box_x,box_y,box_w,box_h,finding"


def source_set(tmp_path, n=6):
    """src/: DICOMs (12-bit MONOCHROME1 with a window, 16-bit MONOCHROME2), a 16-bit PNG,
    an 8-bit JPEG; labels.csv beside it. Images are 120 x 90 (H x W)."""
    rng = np.random.default_rng(0)
    src, rows = tmp_path / "src", [HEADER]
    for i in range(n):
        a = rng.integers(0, 4096, (120, 90))
        kind = i % 4
        if kind == 0:
            name = write_dicom(src / "train" / f"d{i}.dicom", a, photometric="MONOCHROME1", window=(2048, 3000))
        elif kind == 1:
            name = write_dicom(src / "train" / f"d{i}.dicom", a * 16, bits_stored=16)
        elif kind == 2:
            name = src / "png" / f"p{i}.png"
            name.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((a * 16).astype(np.uint16)).save(name)
        else:
            name = src / "jpg" / f"j{i}.jpg"
            name.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((a // 16).astype(np.uint8)).save(name, quality=95)
        split = ("train", "val", "test")[i % 3]
        rel = name.relative_to(tmp_path).as_posix()
        rows += [f"{rel},1,p{i},{split},9,12,30,24,Nodule", f"{rel},1,p{i},{split},0,0,90,120,Mass"] if i % 2 \
            else [f"{rel},0,p{i},{split},,,,,"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "labels.csv"


def hashes(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def stats(folder):
    return {p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def test_prepare_decodes_resizes_scales_boxes(tmp_path, capsys):
    labels = source_set(tmp_path)
    before = hashes(tmp_path / "src")
    csv_path = prepare_images(labels, tmp_path / "out", (60, 30), workers=1, progress=False)
    table = capsys.readouterr().out
    assert "patients" in table and "abnormal" in table and "6 images written" in table
    df = read_cxr_labels(csv_path)
    assert hashes(tmp_path / "src") == before                              # originals untouched
    assert (df.groupby("patient_id").split.nunique() == 1).all()
    assert df.path.iloc[0] == "images/train/d0.png" and df.orig_path.iloc[0] == "../src/train/d0.dicom"
    assert (df.orig_height.astype(int) == 120).all() and (df.orig_width.astype(int) == 90).all()
    boxed = df[df.box_x.notna()]
    assert boxed[["box_x", "box_y", "box_w", "box_h"]].to_numpy().tolist()[:2] == [[3, 6, 10, 12], [0, 0, 30, 60]]
    for p in df.path.unique():
        im = Image.open(tmp_path / "out" / p)
        assert im.size == (30, 60) and im.mode == "L"
    # same-size preparation reproduces the decoder exactly (rounded to 8 bits)
    same = prepare_images(labels, tmp_path / "same", (120, 90), workers=1, progress=False, verbose=False)
    from stkit.data.images import load_cxr_image
    for src, dst in zip(read_cxr_labels(same).orig_path, read_cxr_labels(same).path):
        want = np.round(load_cxr_image(same.parent / src) * 255).astype(np.uint8)
        assert np.array_equal(np.asarray(Image.open(same.parent / dst)), want)


def test_second_run_writes_nothing_and_workers_agree(tmp_path):
    labels = source_set(tmp_path, n=8)
    out = prepare_images(labels, tmp_path / "a", 32, workers=2, progress=False, verbose=False).parent
    first = stats(out)
    time.sleep(0.01)
    prepare_images(labels, out, 32, workers=2, progress=False, verbose=False)
    assert stats(out) == first                                             # not one file written
    one = prepare_images(labels, tmp_path / "b", 32, workers=1, progress=False, verbose=False).parent
    assert {k: v for k, v in hashes(one).items() if k != "prepare.json"} == \
           {k: v for k, v in hashes(out).items() if k != "prepare.json"}
    with pytest.raises(FileExistsError, match="other settings.*size"):
        prepare_images(labels, out, 64, workers=1, progress=False, verbose=False)
    assert stats(out) == first


def test_resume_after_an_interruption(tmp_path):
    labels = source_set(tmp_path, n=8)
    clean = hashes(prepare_images(labels, tmp_path / "clean", 32, workers=1, progress=False, verbose=False).parent)
    out = tmp_path / "out"
    prepare_images(labels, out, 32, workers=1, progress=False, verbose=False)
    # what a kill leaves: some PNGs finished, one half-written temporary, no labels.csv
    (out / "labels.csv").unlink()
    (out / "images" / "train" / "d4.png").unlink()
    (out / "images" / "jpg" / "j3.png").unlink()
    half = out / "images" / "train" / ".d4.png.4242.partial"
    half.write_bytes(b"\x89PNG\r\n\x1a\n half")
    kept = stats(out / "images" / "png")
    prepare_images(labels, out, 32, workers=2, progress=False, verbose=False)
    assert not half.exists() and hashes(out) == {k: v for k, v in clean.items()}
    assert stats(out / "images" / "png") == kept                           # finished files left alone


def test_resume_after_sigkill(tmp_path):
    labels = source_set(tmp_path, n=40)
    cmd = [sys.executable, "-m", "data_prep.prepare_images", "--labels", str(labels), "--out",
           str(tmp_path / "out"), "--size", "48", "--workers", "1"]
    env = dict(os.environ, TQDM_DISABLE="1")
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and p.poll() is None and not list((tmp_path / "out").rglob("*.png")):
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    p.wait()
    for f in (tmp_path / "out").rglob("*.png"):                             # whatever is named .png is whole
        Image.open(f).load()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    clean = prepare_images(labels, tmp_path / "clean", 48, workers=1, progress=False, verbose=False).parent
    assert {k: v for k, v in hashes(tmp_path / "out").items() if k != "prepare.json"} == \
           {k: v for k, v in hashes(clean).items() if k != "prepare.json"}


def test_unreadable_image_and_dicom_without_pixels(tmp_path):
    labels = source_set(tmp_path)
    (tmp_path / "src" / "png" / "p2.png").write_bytes(b"not a png")
    with pytest.raises(ImageDecodeError, match=r"p2\.png: cannot decode.*labels\.csv, line 5\)"):
        prepare_images(labels, tmp_path / "out", 32, workers=2, progress=False, verbose=False)
    assert not (tmp_path / "out" / "labels.csv").exists() and not (tmp_path / "out" / "images" / "png" / "p2.png").exists()
    assert not list((tmp_path / "out").rglob("*.partial"))
    labels = source_set(tmp_path / "b")
    write_dicom(tmp_path / "b" / "src" / "train" / "d1.dicom", np.zeros((120, 90)), pixels=False)
    with pytest.raises(ImageDecodeError, match=r"d1\.dicom: .*no pixel data.*line 3"):
        prepare_images(labels, tmp_path / "b" / "out", 32, workers=1, progress=False, verbose=False)
    assert not (tmp_path / "b" / "out" / "labels.csv").exists()


@pytest.mark.parametrize("change, message", [
    (lambda t: t.replace("patient_id", "patient", 1), r"missing required column\(s\) \['patient_id'\]"),
    (lambda t: t.replace(",Nodule\n", "\n", 1), r"line 3: 8 fields where the header has 9"),
    (lambda t: t.replace("0,0,90,120", "0,0,95,120", 1), r"line 4: box \(0, 0, 95, 120\) lies outside its 120x90"),
], ids=["renamed-column", "short-row", "box-outside"])
def test_bad_labels(tmp_path, change, message):
    labels = source_set(tmp_path)
    labels.write_text(change(labels.read_text()))
    with pytest.raises(ValueError, match=message):
        prepare_images(labels, tmp_path / "out", 32, workers=1, progress=False, verbose=False)
    assert not (tmp_path / "out" / "labels.csv").exists()


def test_output_inside_the_source_is_refused(tmp_path, capsys):
    labels = source_set(tmp_path)
    before = stats(tmp_path)
    for out in (tmp_path / "src" / "prepared", tmp_path / "src", tmp_path):
        with pytest.raises(ValueError, match="outside the source images' folder"):
            prepare_images(labels, out, 32, workers=1, progress=False, verbose=False)
    assert stats(tmp_path) == before
    with pytest.raises(SystemExit) as e:
        main(["--labels", str(labels), "--out", str(tmp_path / "src" / "x"), "--size", "32"])
    assert e.value.code == 2 and "outside the source" in capsys.readouterr().err


def test_from_download_all_three_layouts(tmp_path, capsys):
    from tests.cxr_fixtures import (BBOX_HEADER, CHEXPERT_HEADER, NIH_HEADER, VINDR_HEADER, bbox_line, chexpert_line,
                              nih_line, vindr_line, write_lines)
    from data_prep.cxr_datasets import from_download
    rng = np.random.default_rng(1)
    dl = tmp_path / "downloads"
    chex = dl / "CheXpert-v1.0-small"
    lines = [chexpert_line(p, "Frontal", {"No Finding": "1.0"} if p % 2 else {"Edema": "1.0"}) for p in range(1, 13)]
    write_lines(chex / "train.csv", ",".join(CHEXPERT_HEADER), lines)
    for line in lines:
        f = dl / line.split(",")[0]
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (80, 70)).astype(np.uint8)).save(f)
    nih = dl / "NIH"
    entries = [nih_line(p, 0, "No Finding" if p % 2 else "Nodule") for p in range(1, 13)]
    write_lines(nih / "Data_Entry_2017_v2020.csv", NIH_HEADER, entries)
    write_lines(nih / "BBox_List_2017.csv", BBOX_HEADER, [bbox_line("00000002_000.png", "Nodule", 10, 20, 30, 40)])
    (nih / "images_001" / "images").mkdir(parents=True)
    for e in entries:
        Image.fromarray(rng.integers(0, 256, (100, 100)).astype(np.uint8)).save(nih / "images_001" / "images" / e.split(",")[0])
    vin = dl / "vindr"
    vrows = [vindr_line(f"v{k}", "No finding", 14, r) for k in range(10) for r in ("R1", "R2", "R3")
             if k % 3] + [vindr_line(f"v{k}", "Nodule/Mass", 8, r, (5 + j, 6, 25 + j, 30)) for k in range(0, 10, 3)
                          for j, r in enumerate(("R1", "R2"))]
    write_lines(vin / "train.csv", VINDR_HEADER, vrows)
    for k in range(10):
        write_dicom(vin / "train" / f"v{k}.dicom", rng.integers(0, 4096, (60, 50)), photometric="MONOCHROME1")
    before = hashes(dl)
    for name, folder in (("chexpert", chex), ("nih", nih), ("vindr", vin)):
        out = from_download(name, folder, tmp_path / "data" / name, size=32, workers=2)
        df = read_cxr_labels(out)
        assert len(df.path.unique()) > 0 and (df.groupby("patient_id").split.nunique() == 1).all()
        assert all(Image.open(out.parent / p).size == (32, 32) for p in df.path.unique())
        assert from_download(name, folder, tmp_path / "data" / name, size=32, workers=2) == out   # reused
    assert "reusing" in capsys.readouterr().out and hashes(dl) == before
    vdf = read_cxr_labels(tmp_path / "data" / "vindr" / "png_32" / "labels.csv")
    merged = vdf[vdf.patient_id == "v0"]
    assert merged.rad_id.tolist() == ["R1;R2"] and np.allclose(merged.box_x, 5.5 * 32 / 50)
    with pytest.raises(FileNotFoundError, match="no VinDr-CXR train.csv"):
        from_download("vindr", nih, tmp_path / "data" / "x")
