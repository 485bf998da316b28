"""The released STNet data handling as options of the BUV clip dataset (stkit.data.video
ClipConfig fields, stkit.data.clip_transforms, stkit.data.buv.released_key_ids). Folders
are written in the BUV layout by `write_buv` of test_buv."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from stkit.data import buv
from stkit.data.clip_transforms import center_crop, released_hw, released_transform, resized_hw
from stkit.data.video import BUVClipDataset, ClipConfig, released_clip
from tests.data.test_buv import H, W, edit_json, write_buv


def colour_frame(name, k):
    """R encodes the column (10 x), G the row (10 y), B a constant: every channel differs."""
    a = np.zeros((H, W, 3), np.uint8)
    a[..., 0] = np.arange(W)[None, :] * 10
    a[..., 1] = np.arange(H)[:, None] * 10
    a[..., 2] = 77
    return a


def test_rgb_reads_the_colour_channels_grey_replicates(tmp_path):
    root = write_buv(tmp_path, {"benign/va": dict(split="val", n=4), "malignant/vb": dict(split="train", n=2)},
                     frame_fn=colour_frame)
    same = dict(test_short_side=H, max_size=None)
    rgb = BUVClipDataset(root, "val", ClipConfig(color="rgb", **same))[1]["frames"]
    grey = BUVClipDataset(root, "val", ClipConfig(**same))[1]["frames"]
    ref = torch.from_numpy(colour_frame("", 0)).permute(2, 0, 1).float() / 255
    assert rgb.dtype == grey.dtype == torch.float32 and rgb.shape == grey.shape == (6, 3, H, W)
    assert torch.allclose(rgb[0], ref) and not torch.equal(rgb[0, 0], rgb[0, 2])
    luma = np.asarray(Image.fromarray(colour_frame("", 0)).convert("L"), np.float32) / 255
    for c in range(3):
        assert torch.allclose(grey[:, c], torch.from_numpy(luma).expand(6, H, W))
    assert 0 <= float(rgb.min()) and float(rgb.max()) <= 1


def test_negative_boxes_flipped_by_default_dropped_in_drop_mode(tmp_path):
    box = lambda k: [[3, 5, 6, 8], [9, 5, -6, 8], [3, 13, 6, -8]][k % 3]     # noqa: E731 - one rectangle, three ways
    root = write_buv(tmp_path, {"benign/va": dict(split="train", n=6, boxes=box),
                                "malignant/vb": dict(split="val", n=2)})
    s = buv.read_split(root, "train")
    assert [s.videos["benign/va"].frames[k].negative for k in range(3)] == [[False], [True], [True]]
    assert s.n_negative == 4
    cfg = dict(n_global=0, test_short_side=H, max_size=None)
    kept = BUVClipDataset(root, "train", ClipConfig(**cfg), train=False)
    drop = BUVClipDataset(root, "train", ClipConfig(negative_boxes="drop", **cfg), train=False)
    for i in range(6):
        tk, td = kept[i]["targets"][0], drop[i]["targets"][0]
        assert torch.allclose(tk["boxes"], torch.tensor([[3.0, 5, 9, 13]])) and tk["labels"].tolist() == [1]
        if i % 3 == 0:
            assert torch.equal(td["boxes"], tk["boxes"]) and td["labels"].tolist() == [1]
        else:
            assert td["boxes"].shape == (0, 4) and td["labels"].shape == (0,)
    edit_json(root, "train", lambda d: d["annotations"][0].update(bbox=[40, 2, 5, 5]))   # right of the frame
    with pytest.raises(buv.BUVFormatError, match=r"annotations\[0\]: bbox lies outside"):
        BUVClipDataset(root, "train", ClipConfig(**cfg), train=False)[0]
    gone = BUVClipDataset(root, "train", ClipConfig(negative_boxes="drop", **cfg), train=False)[0]["targets"][0]
    assert gone["boxes"].shape == (0, 4)                      # dropped as released, no error


def test_released_global_draw(tmp_path):
    root = write_buv(tmp_path, {"benign/va": dict(split="val", n=9), "malignant/vb": dict(split="train", n=4)})
    rel = BUVClipDataset(root, "val", ClipConfig(global_draw="released"))
    assert not rel.train
    last = rel.ranges["benign/va"][1]
    seen = set()
    for _ in range(30):
        for i, (_, key) in enumerate(rel.keys):
            g = rel.frame_numbers(i)[3:]
            assert len(set(g)) == 3 and key not in g and last not in g and all(0 <= n < last for n in g)
            seen |= set(g)
    assert seen == set(range(last))                           # every candidate comes up
    torch.manual_seed(5)
    first = [rel.frame_numbers(i) for i in range(len(rel))]
    second = [rel.frame_numbers(i) for i in range(len(rel))]
    torch.manual_seed(5)
    assert first != second and first == [rel.frame_numbers(i) for i in range(len(rel))]   # torch's generator
    kit = BUVClipDataset(root, "val")
    fixed = [kit.frame_numbers(i) for i in range(len(kit))]
    torch.manual_seed(6)
    assert fixed == [kit.frame_numbers(i) for i in range(len(kit))]
    short = BUVClipDataset(root, "train", ClipConfig(global_draw="released"), train=False)   # 4 frames
    assert sorted(short.frame_numbers(3)[3:]) == [0, 1, 2]      # key 3 is the last frame: 0, 1, 2 left
    with pytest.raises(ValueError, match=r"train_15frames.json: video 'malignant/vb' .*2 candidate global frames "
                                         r"for key 1 .*n_global=3"):
        short.frame_numbers(1)


def block_frame(name, k):
    """A 24 x 24 frame of 6 x 6 blocks, block (r, c) of value 40 r + 10 c."""
    r, c = np.meshgrid(np.arange(24) // 6, np.arange(24) // 6, indexing="ij")
    return (40 * r + 10 * c).astype(np.uint8)


def test_center_crop_by_hand():
    a = torch.arange(20 * 24, dtype=torch.float32).reshape(1, 20, 24)
    box, lab = torch.tensor([[8.0, 6, 12, 9], [0, 0, 3, 3]]), torch.tensor([1, 2])
    img, b, lb = center_crop(a, box, lab, 10)                  # top round(5) = 5, left round(7) = 7
    assert torch.equal(img, a[:, 5:15, 7:17])
    assert torch.equal(b, torch.tensor([[1.0, 1, 5, 4]])) and lb.tolist() == [1]   # the corner box is cut out
    img, _, _ = center_crop(a, box, lab, 11)                   # round(4.5) = 4, round(6.5) = 6: halves to even
    assert torch.equal(img, a[:, 4:15, 6:17])
    img, _, _ = center_crop(a, box, lab, 9)                    # round(5.5) = 6, round(7.5) = 8 (not floor)
    assert torch.equal(img, a[:, 6:15, 8:17])
    img, b, _ = center_crop(a, box, lab, 30)                   # larger than the frame: zero around it
    assert img.shape == (1, 30, 30) and torch.equal(img[:, 5:25, 3:27], a) and img.sum() == a.sum()
    assert torch.equal(b, box + torch.tensor([3.0, 5, 3, 5]))


def test_global_frames_center_cropped_at_evaluation(tmp_path):
    root = write_buv(tmp_path, {"benign/va": dict(split="val", n=6, size=(24, 24), boxes=lambda k: [4, 8, 10, 6]),
                                "malignant/vb": dict(split="train", n=2)}, frame_fn=block_frame)
    cfg = ClipConfig(global_center_crop=12, test_short_side=24, max_size=None)
    item = BUVClipDataset(root, "val", cfg)[2]
    x, tg = item["frames"][:, 0] * 255, item["targets"]
    file = torch.from_numpy(block_frame("", 0)).float()
    for t in range(3):                                          # key and support frames: the file
        assert torch.allclose(x[t], file, atol=1e-3) and torch.allclose(tg[t]["boxes"], torch.tensor([[4.0, 8, 14, 14]]))
    for t in range(3, 6):      # crop [6:18, 6:18] = blocks (1..2, 1..2), each 6 px, then x2 to 24 x 24
        for (yy, xx), v in {(3, 3): 50, (3, 20): 60, (20, 3): 90, (20, 20): 100}.items():
            assert abs(float(x[t, yy, xx]) - v) < 1e-3
        assert torch.allclose(tg[t]["boxes"], torch.tensor([[0.0, 4, 16, 16]]))   # (4,8,14,14) -6, clip 12, x2
    plain = BUVClipDataset(root, "val", ClipConfig(test_short_side=24, max_size=None))[2]["frames"][:, 0] * 255
    train = BUVClipDataset(root, "val", ClipConfig(global_center_crop=12, train_short_sides=(24,), hflip=0),
                           train=True)[2]["frames"][:, 0] * 255
    assert torch.allclose(plain[3:], file.expand(3, 24, 24), atol=1e-3)
    assert torch.allclose(train[3:], file.expand(3, 24, 24), atol=1e-3)   # training: no centre crop


def test_released_size_rule():
    assert released_hw(20, 24, 40, None) == (40, 48)
    assert released_hw(21, 33, 40, None) == (40, 62) and resized_hw(21, 33, 40, None) == (40, 63)   # int vs round
    assert released_hw(33, 21, 40, None) == (62, 40) and resized_hw(33, 21, 40, None) == (63, 40)   # int vs round
    assert released_hw(20, 24, 20, 22) == (18, 21)            # cap: round(22 * 20 / 24) = 18, int(18 * 24 / 20) = 21
    assert released_hw(30, 40, 30, None) == (30, 40)          # already that short side: unchanged


def test_released_crop_branch_keeps_image_and_boxes_consistent():
    x = torch.from_numpy(colour_frame("", 0)).permute(2, 0, 1).float()[None].repeat(2, 1, 1, 1) / 255
    box = torch.tensor([[3.0, 5, 9, 13]])
    # no resize (short side already 20, and 12 after the fixed 12 x 12 crop): pixels tell the crop's place
    c = ClipConfig(crop_mode="released", crop=1.0, crop_resize_sides=(H,), crop_size=(12, 12), train_short_sides=(12,))
    cases = set()
    for seed, flip in [(s, f) for s in range(40) for f in (0.0, 1.0)]:
        torch.manual_seed(seed)
        cf = ClipConfig(**{**c.__dict__, "hflip": flip})
        labels = [torch.tensor([2]), torch.tensor([], dtype=torch.int64)]
        out, boxes, labels = released_transform(x.clone(), [box, box[:0]], labels, cf, train=True)
        assert out.shape == (2, 3, 12, 12) and torch.equal(out[0], out[1])
        col, y0 = (out[0, 0] * 255 / 10).round(), int(round(float(out[0, 1, 0, 0]) * 255 / 10))
        if flip:                                                # file columns run backwards: flipped first
            x0 = W - 1 - int(col[0, 0])                         # crop origin in the flipped frame
            b = torch.tensor([[W - 9.0, 5, W - 3, 13]])
        else:
            x0 = int(col[0, 0])
            b = box.clone()
        assert torch.equal(col[0], (torch.arange(12) * (-1 if flip else 1) + int(col[0, 0])).float())   # a true crop
        assert torch.equal((out[0, 1] * 255 / 10).round()[:, 0], torch.arange(y0, y0 + 12).float())
        want = b - torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        want[:, 0::2], want[:, 1::2] = want[:, 0::2].clamp(0, 12), want[:, 1::2].clamp(0, 12)
        if want[0, 2] > want[0, 0] and want[0, 3] > want[0, 1]:
            assert torch.allclose(boxes[0], want) and labels[0].tolist() == [2]
            cases.add("kept")
        else:
            assert boxes[0].shape == (0, 4) and labels[0].shape == (0,)
            cases.add("cut out")
        assert boxes[1].shape == (0, 4)
    assert cases == {"kept", "cut out"}
    never = ClipConfig(crop_mode="released", crop=0.0, hflip=0.0, train_short_sides=(40,))
    out, boxes, _ = released_transform(x.clone(), [box], [torch.tensor([2])], never, train=True)
    assert out.shape[-2:] == (40, 48) and torch.allclose(boxes[0], box * 2)      # the resize alone


def test_released_key_ids_across_videos(tmp_path):
    root = write_buv(tmp_path, {"benign/va": dict(split="val", n=4), "malignant/vb": dict(split="val", n=5),
                                "malignant/vc": dict(split="train", n=2)})
    new = dict(zip(range(1, 10), [40, 10, 30, 20, 5, 50, 15, 25, 35]))   # val ids 1..9 -> non-contiguous

    def remap(d):
        for im in d["images"]:
            im["id"] = new[im["id"]]
        for a in d["annotations"]:
            a["image_id"] = new[a["image_id"]]
    edit_json(root, "val", remap)
    s = buv.read_split(root, "val")
    assert buv.released_key_ids(s) == [10, 25, 40]             # sorted [5,10,15,20,25,30,35,40,50][1::3]; [2::5] next
    assert buv.released_key_ids(s, 4) == [15, 40] and buv.released_key_ids(s, 0) == sorted(new.values())
    with pytest.raises(ValueError, match="n_support"):
        buv.released_key_ids(s, -1)


def test_released_clip_turns_every_option_on(tmp_path):
    base = ClipConfig(n_global=2, train_short_sides=(32,), test_short_side=24, max_size=40)
    r = released_clip(base)
    assert (r.color, r.negative_boxes, r.global_draw, r.global_center_crop, r.crop_mode) == ("rgb", "drop", "released", 400, "released")
    assert r.crop == 0.5 and tuple(r.crop_resize_sides) == (400, 500, 600) and tuple(r.crop_size) == (384, 600)
    assert (r.n_global, r.train_short_sides, r.test_short_side, r.max_size) == (2, (32,), 24, 40)
    assert base.color == "grey" and base.crop_mode == "kit"      # the default untouched
    root = write_buv(tmp_path, {"benign/va": dict(split="train", n=6), "malignant/vb": dict(split="val", n=6)},
                     frame_fn=colour_frame)
    for split in ("train", "val"):
        ds = BUVClipDataset(root, split, r)
        for i in range(3):
            x = ds[i]["frames"]
            assert x.dtype == torch.float32 and x.shape[:2] == (5, 3) and 0 <= float(x.min()) <= float(x.max()) <= 1


def test_new_fields_checked():
    for bad in (dict(color="bgr"), dict(negative_boxes="keep"), dict(global_draw="x"), dict(crop_mode="y"),
                dict(global_center_crop=-1), dict(crop_resize_sides=())):
        with pytest.raises(ValueError, match=f"ClipConfig: invalid {next(iter(bad))}="):
            ClipConfig(**bad)
    json.dumps(ClipConfig().__dict__)                            # stays plain data
