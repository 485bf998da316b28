"""Tests of stkit.stern.experiment: run's label check, ThoraxCrops and the CXRDataset thorax boxes it reads."""

import math

import numpy as np
import pytest
from PIL import Image

from stkit.data import CXRDataset
from stkit.stern.experiment import ThoraxCrops


def test_bad_label_csv_fails_before_a_run_folder_exists(tmp_path):
    from stkit.stern import experiment

    bad = tmp_path / "labels.csv"
    bad.write_text("path,label,patient_id\nimages/a.png,0,P1\n")  # no split column
    with pytest.raises(ValueError, match=r"labels.csv.*split"):
        experiment.run(bad, tmp_path / "run", size="smoke")
    assert not (tmp_path / "run").exists()


def _thorax_csv(tmp_path, size=(96, 128)):
    """Two images with a bright rectangle exactly on their thorax box."""
    (tmp_path / "im").mkdir()
    h, w = size
    rows, boxes = [], [(20, 10, 48, 60), (60, 30, 40, 40)]
    for k, (x, y, bw, bh) in enumerate(boxes):
        a = np.zeros((h, w), np.uint8)
        a[y:y + bh, x:x + bw] = 255
        Image.fromarray(a).save(tmp_path / f"im/{k}.png")
        rows.append(f"im/{k}.png,{k},P{k},test,,,,,{x},{y},{bw},{bh}")
    head = "path,label,patient_id,split,box_x,box_y,box_w,box_h,thorax_x,thorax_y,thorax_w,thorax_h"
    (tmp_path / "labels.csv").write_text("\n".join([head, *rows]) + "\n")
    return tmp_path / "labels.csv", boxes


def test_thorax_box_survives_resizing(tmp_path):
    csv, boxes = _thorax_csv(tmp_path)
    ds = CXRDataset(csv, "test", image_size=(48, 64))
    assert ds.has_thorax
    for i in range(len(ds)):
        img = ds[i][0][0]
        x, y, bw, bh = ds.thorax_box(i).tolist()
        assert np.allclose([x, y, bw, bh], np.array(boxes[i]) / 2)
        bright = (img > 0.5).nonzero()  # the rectangle, found in the resized image
        assert bright[:, 1].min() == math.floor(x) and bright[:, 1].max() + 1 == math.ceil(x + bw)
        assert bright[:, 0].min() == math.floor(y) and bright[:, 0].max() + 1 == math.ceil(y + bh)


def test_bad_thorax_cells_are_named(tmp_path):
    csv, _ = _thorax_csv(tmp_path)
    text = csv.read_text().replace(",60,30,40,40", ",60,30,abc,40")
    csv.write_text(text)
    with pytest.raises(ValueError, match="line 3"):
        CXRDataset(csv, "test")


def test_oracle_crop_is_the_thorax(tmp_path):
    csv, _ = _thorax_csv(tmp_path)
    crops = ThoraxCrops(CXRDataset(csv, "test"), (16, 16))
    assert crops.images.shape == (2, 1, 16, 16)
    assert crops.images[..., 3:-3, 3:-3].min() > 0.99  # the bright rectangle fills the crop ...
    assert crops.images.mean() > 0.85  # ... up to the pyramid's smoothing at its edges
    assert crops[1][0].shape == (1, 16, 16) and crops[1][1] == 1 and crops[1][2] == 1
