"""BUV ultrasound videos: the format reader, the clip dataset, the real-data preparation and
the synthetic generator. Fixtures are written in the exact BUV layout by `write_buv`."""

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from data_prep import buv as prep
from data_prep import synthetic_buv as syn
from stkit.data import buv
from stkit.data.video import BUVClipDataset, ClipConfig, collate_clips, resized_hw, support_indices

H, W = 20, 24          # fixture frame size


# --------------------------------------------------------------------------- fixtures

def write_buv(root, videos, size=(H, W), seed=0, frame_fn=None):
    """Write a BUV-format folder. ``videos``: {"<class>/<video>": dict(split, n, label=None,
    boxes=None)}; boxes: callable k -> [x, y, w, h] (default: a box moving right). Frames are
    random grey noise (each video its own), or ``frame_fn(name, k)`` -> uint8 (H, W)."""
    rng = np.random.default_rng(seed)
    coco = {s: {"images": [], "annotations": [], "videos": [],
                "categories": [{"id": 1, "name": "benign"}, {"id": 2, "name": "malignant"}]} for s in buv.SPLIT_FILES}
    for name, v in videos.items():
        d = root / "rawframes" / name
        d.mkdir(parents=True, exist_ok=True)
        js = coco[v["split"]]
        js["videos"].append({"id": len(js["videos"]) + 1, "name": name})
        label = v.get("label") or buv.CLASS_IDS[name.split("/")[0]]
        hw = v.get("size", size)
        for k in range(v["n"]):
            a = frame_fn(name, k) if frame_fn else rng.integers(0, 256, hw, dtype=np.uint8)
            Image.fromarray(a).save(d / f"{k:06d}.png")
            iid = sum(len(c["images"]) for c in coco.values()) + 1
            js["images"].append({"id": iid, "file_name": f"{name}/{k:06d}.png", "width": hw[1],
                                 "height": hw[0], "video_id": len(js["videos"]), "frame_id": k})
            b = v["boxes"](k) if v.get("boxes") else [2 + k % 5, 3, 8, 6]
            js["annotations"].append({"id": iid, "image_id": iid, "bbox": b, "category_id": label,
                                      "area": abs(b[2] * b[3]), "iscrowd": 0})
    for s, js in coco.items():
        (root / buv.SPLIT_FILES[s]).write_text(json.dumps(js))
    return root


def two_videos(tmp_path, n=5):
    return write_buv(tmp_path / "buv", {"benign/va": dict(split="train", n=n), "malignant/vb": dict(split="val", n=n),
                                        "malignant/vc": dict(split="train", n=n + 2)})


def edit_json(root, split, fn):
    path = root / buv.SPLIT_FILES[split]
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def tree_hashes(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- the reader

def test_negative_boxes_normalised_never_dropped(tmp_path):
    rng = np.random.default_rng()
    raw = [[float(v) for v in rng.uniform(-10, 10, 4)] for _ in range(40)]
    root = write_buv(tmp_path, {"benign/va": dict(split="train", n=40, boxes=lambda k: raw[k]),
                                "malignant/vb": dict(split="val", n=2)})
    s = buv.read_split(root, "train")
    got = [s.videos["benign/va"].frames[k].boxes for k in range(40)]
    for b, g in zip(raw, got):
        assert len(g) == 1                                  # never dropped
        x0, x1 = sorted([b[0], b[0] + b[2]])                # the rectangle's edges, by hand
        y0, y1 = sorted([b[1], b[1] + b[3]])
        assert np.allclose(g[0], [x0, y0, x1 - x0, y1 - y0])
    assert s.n_negative == sum(b[2] < 0 or b[3] < 0 for b in raw)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["annotations"][3].update(category_id=3), r"annotations\[3\].*category_id 3 is not one of the declared"),
    (lambda d: d["annotations"][2].update(bbox=[1, 2, 0, 4]), r"annotations\[2\].*zero width"),
    (lambda d: d["annotations"][1].update(bbox=[1, 2, "a", 4]), r"annotations\[1\].*four finite numbers"),
    (lambda d: d["annotations"][0].update(image_id=999), r"annotations\[0\].*refers to no entry"),
    (lambda d: d["images"][4].update(file_name="benign/va/4.png"), r"images\[4\].*NNNNNN"),
    (lambda d: d["images"][2].update(id=d["images"][1]["id"]), r"images\[2\]: image id .* repeats images\[1\]"),
    (lambda d: d["images"][0].update(width=0), r"images\[0\].*width/height"),
    (lambda d: d["categories"].append({"id": 3, "name": "cyst"}), r"categories\[2\]"),
    (lambda d: d["categories"][0].update(name="malignant"), r"categories\[0\]"),
    (lambda d: d["annotations"][6].update(category_id=1), r"video 'malignant/vc' has two classes"),
    (lambda d: d.update(annotations=[a for a in d["annotations"] if a["category_id"] == 1]),
     r"video 'malignant/vc' is empty: none of its 7 listed frames"),
])
def test_reader_errors_name_file_and_entry(tmp_path, edit, message):
    root = two_videos(tmp_path)
    edit_json(root, "train", edit)
    with pytest.raises(buv.BUVFormatError, match=message) as e:
        buv.read_split(root, "train")
    assert str(root / buv.SPLIT_FILES["train"]) in str(e.value)


def test_frame_folders_checked(tmp_path):
    root = two_videos(tmp_path)
    (root / "rawframes/malignant/vc/000003.png").unlink()
    with pytest.raises(buv.BUVFormatError, match=r"vc: frame numbering is not contiguous: 000003.png is missing"):
        BUVClipDataset(root, "train")
    for p in (root / "rawframes/benign/va").iterdir():
        p.unlink()
    with pytest.raises(buv.BUVFormatError, match=r"rawframes/benign/va: empty video"):
        buv.scan_frames(root, "benign/va")


# --------------------------------------------------------------------------- clips

def test_support_frames_clamped_at_video_edges():
    for n_support in range(0, 6):
        for key in range(0, 7):
            brute = [min(max(key + s, 0), 6) for k in range(n_support) for s in [-(k // 2 + 1) if k % 2 == 0 else k // 2 + 1]]
            assert support_indices(key, n_support, 0, 6) == brute
    assert support_indices(0, 2, 0, 6) == [0, 1] and support_indices(6, 2, 0, 6) == [5, 6]


def test_clip_config_checked():
    for bad in (dict(n_global=-1), dict(train_short_sides=()), dict(hflip=1.5), dict(crop_size=(50, 20)), dict(key_stride=0)):
        with pytest.raises(ValueError, match=f"ClipConfig: invalid {next(iter(bad))}="):
            ClipConfig(**bad)
    assert ClipConfig().T == 6 and ClipConfig(n_support=4, n_global=0).T == 5


def test_key_stride(tmp_path):
    root = two_videos(tmp_path)
    ds = BUVClipDataset(root, "train", ClipConfig(key_stride=3))
    assert ds.keys == [("benign/va", 0), ("benign/va", 3), ("malignant/vc", 0), ("malignant/vc", 3), ("malignant/vc", 6)]


def test_clip_frames_are_the_right_files(tmp_path):
    root = two_videos(tmp_path)
    ds = BUVClipDataset(root, "train", ClipConfig(test_short_side=H, max_size=None), train=False)
    assert len(ds) == 5 + 7 and ds.clip.T == 6
    for i in (0, 4, 5, 11):                               # first/last frames of both videos
        item, nums = ds[i], ds.frame_numbers(i)
        video, key = ds.keys[i]
        first, last = ds.ranges[video]
        assert nums[:3] == [key, max(key - 1, first), min(key + 1, last)]
        assert key not in nums[3:] and all(first <= n <= last for n in nums[3:])
        for t, n in enumerate(nums):                       # pixels straight from the PNG
            ref = np.asarray(Image.open(buv.frame_path(root, video, n)), np.float32) / 255
            assert torch.allclose(item["frames"][t, 0], torch.from_numpy(ref))
            assert torch.equal(item["frames"][t, 0], item["frames"][t, 2])
            f = ds.info.videos[video].frames[n]
            x, y, w, h = f.boxes[0]
            assert torch.allclose(item["targets"][t]["boxes"], torch.tensor([[x, y, x + w, y + h]]))
            assert item["targets"][t]["image_id"] == f.image_id
        assert item["key_index"] == key and item["video"] == video


def test_global_frames_deterministic_at_evaluation_random_in_training(tmp_path):
    root = write_buv(tmp_path, {"benign/va": dict(split="train", n=30), "malignant/vb": dict(split="val", n=3)})
    a = BUVClipDataset(root, "train", train=False)
    b = BUVClipDataset(root, "train", train=False)
    assert [a.frame_numbers(i) for i in range(30)] == [b.frame_numbers(i) for i in reversed(range(30))][::-1]
    c = BUVClipDataset(root, "train", ClipConfig(seed=1), train=False)
    assert [a.frame_numbers(i) for i in range(30)] != [c.frame_numbers(i) for i in range(30)]
    t = BUVClipDataset(root, "train", train=True)
    draws = {tuple(t.frame_numbers(7)[3:]) for _ in range(20)}
    assert len(draws) > 5 and all(7 not in d for d in draws)
    short = BUVClipDataset(root, "val", ClipConfig(n_global=5), train=False)   # 3 frames, 5 globals: cycled
    assert all(short.frame_numbers(i)[3:].count(short.keys[i][1]) == 0 for i in range(3))


def square_video(name, k):
    """Frames with a bright rectangle exactly on the fixture box (the same in every frame)."""
    a = np.full((H, W), 40, np.uint8)
    a[5:13, 3:9] = 220
    return a


def test_same_transform_on_every_frame_and_boxes_follow_pixels(tmp_path):
    box = lambda k: [9, 5, -6, 8] if k % 2 else [3, 5, 6, 8]     # noqa: E731 - same rectangle, some drawn right-to-left
    root = write_buv(tmp_path, {"benign/va": dict(split="train", n=6, boxes=box),
                                "malignant/vb": dict(split="val", n=2)}, frame_fn=square_video)
    cfg = ClipConfig(train_short_sides=(16, 30, 40), max_size=100, hflip=0.5, crop=0.7, crop_size=(12, 18))
    ds = BUVClipDataset(root, "train", cfg, train=True)
    flips = crops = 0
    for seed in range(12):
        torch.manual_seed(seed)
        item = ds[seed % 6]
        x, tg = item["frames"], item["targets"]
        for t in range(1, x.shape[0]):                     # identical inputs -> identical outputs
            assert torch.equal(x[t], x[0])
            assert torch.allclose(tg[t]["boxes"], tg[0]["boxes"]) and torch.equal(tg[t]["size"], tg[0]["size"])
        h, w = x.shape[-2:]
        assert torch.equal(tg[0]["size"], torch.tensor([h, w])) and torch.equal(tg[0]["orig_size"], torch.tensor([H, W]))
        bright = (x[0, 0] > 0.5).nonzero()                # where the rectangle's pixels went
        ref = torch.tensor([bright[:, 1].min(), bright[:, 0].min(), bright[:, 1].max() + 1, bright[:, 0].max() + 1]).float()
        assert torch.allclose(tg[0]["boxes"][0], ref, atol=1.0), (tg[0]["boxes"], ref)   # within a pixel
        flips += bool(ref[0] > w / 2)                      # the rectangle sits left in the file
        crops += (h, w) not in {resized_hw(H, W, s, 100) for s in cfg.train_short_sides}
    assert flips >= 2 and crops >= 2                       # the draws did vary


def test_collate_batch_of_clips_of_different_sizes(tmp_path):
    root = write_buv(tmp_path, {"benign/va": dict(split="train", n=4), "malignant/vb": dict(split="val", n=2),
                                "malignant/vc": dict(split="val", n=3, size=(30, 18))})
    ds = BUVClipDataset(root, "val", ClipConfig(test_short_side=10, max_size=None))
    items = [ds[0], ds[1], ds[2]]
    batch = collate_clips(items)
    hs = [it["frames"].shape[-2] for it in items]
    ws = [it["frames"].shape[-1] for it in items]
    assert batch["frames"].shape == (3, 6, 3, max(hs), max(ws))
    for b, it in enumerate(items):
        h, w = it["frames"].shape[-2:]
        assert torch.equal(batch["frames"][b, :, :, :h, :w], it["frames"])
        assert batch["frames"][b, :, :, h:, :].abs().sum() == 0 and batch["frames"][b, :, :, :, w:].abs().sum() == 0
        assert not batch["mask"][b, :, :h, :w].any() and batch["mask"][b].sum() == 6 * (max(hs) * max(ws) - h * w)
    assert batch["video"] == [it["video"] for it in items] and len(batch["targets"][2]) == 6
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_clips)
    assert [b["frames"].shape[0] for b in loader] == [2, 2, 1]


# --------------------------------------------------------------------------- real-data preparation

ERRATA_VIDEOS = {
    "benign/x66ef02e7f1b9a0ef": dict(split="train", n=4),          # duplicate: dropped
    "malignant/x3b88488853e8b7d1": dict(split="train", n=4),
    "benign/x63c9ba1377f35bf6": dict(split="train", n=5),          # same patient: relabelled malignant
    "benign/x5a1c46ec6377e946": dict(split="val", n=3),
    "malignant/7a39ab5d4970bf89": dict(split="val", n=3),
    "benign/x1282311c38f808f": dict(split="train", n=6, boxes=lambda k: [12, 4, -7, 5]),   # near-duplicate pair
    "malignant/x9c1c965d274c457": dict(split="val", n=6),
}


def shared_pair_frames(name, k):
    """Random frames, except that the near-duplicate pair shares 5 of its 6 frames."""
    if name.endswith(("x1282311c38f808f", "x9c1c965d274c457")) and k < 5:
        return np.random.default_rng([99, k]).integers(0, 256, (H, W), dtype=np.uint8)
    return np.random.default_rng([sum(map(ord, name)), k]).integers(0, 256, (H, W), dtype=np.uint8)


@pytest.fixture
def download(tmp_path):
    return write_buv(tmp_path / "download", ERRATA_VIDEOS, frame_fn=shared_pair_frames)


def test_errata_applied_and_reported(download, tmp_path):
    before = tree_hashes(download)
    rep = prep.prepare_buv(download, tmp_path / "clean", verbose=False)
    train, val = buv.read_split(tmp_path / "clean", "train"), buv.read_split(tmp_path / "clean", "val")
    assert "benign/x66ef02e7f1b9a0ef" not in train.videos and "malignant/x3b88488853e8b7d1" in train.videos
    assert train.videos["benign/x63c9ba1377f35bf6"].label == 2 and val.videos["benign/x5a1c46ec6377e946"].label == 2
    assert val.videos["malignant/7a39ab5d4970bf89"].label == 2 and train.videos["benign/x1282311c38f808f"].label == 1
    assert rep["source_summary"]["train"] == {"videos": 4, "frames": 19, "boxes": 19, "benign": 3, "malignant": 1}
    assert rep["summary"]["train"] == {"videos": 3, "frames": 15, "boxes": 15, "benign": 1, "malignant": 2}
    assert rep["summary"]["val"] == {"videos": 3, "frames": 12, "boxes": 12, "benign": 0, "malignant": 3}
    log = "\n".join(rep["errata"])
    assert "dropped benign/x66ef02e7f1b9a0ef (4 frames)" in log and "x63c9ba1377f35bf6 relabelled malignant (was benign)" in log
    assert "7a39ab5d4970bf89 relabelled malignant (was malignant, unchanged)" in log
    assert "errata: video 2390fbea047347b is not in this copy" in log
    dup = "\n".join(rep["duplicates"])
    assert "known near-duplicate pair: benign/x1282311c38f808f (train) and malignant/x9c1c965d274c457 (val)" in dup
    assert "share 5 pixel-identical frame(s)" in dup
    raw = json.loads((tmp_path / "clean" / buv.SPLIT_FILES["train"]).read_text())
    assert all(a["bbox"][2] > 0 and a["bbox"][3] > 0 and a["area"] == a["bbox"][2] * a["bbox"][3] for a in raw["annotations"])
    assert len(raw["videos"]) == 3 and {"video_id", "frame_id"} <= set(raw["images"][0])   # other fields kept
    assert not any("'videos' entr" in n for n in rep["notes"])
    keep = prep.prepare_buv(download, tmp_path / "as_is", errata=False, verbose=False)
    assert keep["summary"] == keep["source_summary"] and keep["errata"] == []
    assert tree_hashes(download) == before                  # the source is only read
    ds = BUVClipDataset(tmp_path / "clean", "val")           # the output is a BUV folder
    assert len(ds) == 12 and ds[0]["frames"].shape[:2] == (6, 3)


def test_second_run_writes_nothing(download, tmp_path, capsys):
    out = tmp_path / "clean"
    before = tree_hashes(download)
    assert prep.prepare_buv(download, out, verbose=False)["written"]
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    prep.main(["--src", str(download), "--out", str(out)])
    assert "up to date, nothing written" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamp
    assert tree_hashes(download) == before
    with pytest.raises(FileExistsError, match="does not hold this preparation's output"):
        prep.prepare_buv(download, out, errata=False, verbose=False)   # other content: refused
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamp


def break_png(root):
    (root / "rawframes/malignant/x9c1c965d274c457/000002.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")


@pytest.mark.parametrize("damage, error, message", [
    (lambda r: (r / "rawframes/benign/x63c9ba1377f35bf6/000004.png").unlink(), buv.BUVFormatError,
     r"imagenet_vid_train_15frames.json: images\[\d+\] \(id \d+\) refers to .*x63c9ba1377f35bf6/000004.png, which does not exist"),
    (break_png, buv.BUVFormatError, r"x9c1c965d274c457/000002.png: cannot decode frame .*images\[\d+\] of .*imagenet_vid_val.json"),
    (lambda r: edit_json(r, "val", lambda d: d["annotations"][0].update(category_id=7)), buv.BUVFormatError,
     r"imagenet_vid_val.json: annotations\[0\].*category_id 7"),
    (lambda r: edit_json(r, "val", lambda d: d["annotations"][-1].update(category_id=1)), buv.BUVFormatError,
     r"imagenet_vid_val.json: video 'malignant/x9c1c965d274c457' has two classes"),
    (lambda r: [p.unlink() for p in (r / "rawframes/benign/x5a1c46ec6377e946").iterdir()], buv.BUVFormatError,
     r"x5a1c46ec6377e946: empty video"),
    (lambda r: edit_json(r, "train", lambda d: d["images"][0].update(width=99)), buv.BUVFormatError,
     r"imagenet_vid_train_15frames.json: images\[0\].*says 99x20"),
    (lambda r: (r / buv.SPLIT_FILES["val"]).unlink(), FileNotFoundError, r"is not a BUV download: missing .*imagenet_vid_val.json"),
])
def test_bad_download_clear_error_nothing_written(download, tmp_path, damage, error, message):
    damage(download)
    out = tmp_path / "clean"
    with pytest.raises(error, match=message):
        prep.prepare_buv(download, out, verbose=False)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["download"]


def test_output_inside_source_refused(download):
    before = tree_hashes(download)
    for out in (download, download / "clean", download / "rawframes" / "x"):
        with pytest.raises(ValueError, match="lies inside the source"):
            prep.prepare_buv(download, out, verbose=False)
    assert tree_hashes(download) == before and not (download / "clean").exists()


# --------------------------------------------------------------------------- synthetic videos

@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return syn.ensure_buv(tmp_path_factory.mktemp("data"), "smoke", seed=4)


def test_synthetic_is_valid_buv_and_deterministic(smoke, tmp_path):
    assert smoke.name == "buv_smoke_seed4"
    again = syn.generate_synthetic_buv(tmp_path / "again", "smoke", seed=4, verbose=False)
    other = syn.generate_synthetic_buv(tmp_path / "other", "smoke", seed=5, verbose=False)
    a, b, c = tree_hashes(smoke), tree_hashes(again), tree_hashes(other)
    assert a == b and sum(a[k] != c.get(k) for k in a if k.endswith(".png")) > len(a) // 2
    p = syn.resolve_params("smoke")
    for split, n in (("train", p["n_train"]), ("val", p["n_val"])):
        s = buv.read_split(smoke, split)
        assert len(s.videos) == n and s.n_negative >= 1
        assert sorted(v.label for v in s.videos.values()) == sorted([1] * (n - n // 2) + [2] * (n // 2))
        for name, v in s.videos.items():
            assert buv.scan_frames(smoke, name) == (0, len(v.frames) - 1)
            assert v.label == buv.CLASS_IDS[v.folder_class]
            assert all(len(f.boxes) == 1 and (f.width, f.height) == (p["width"], p["height"]) for f in v.frames.values())
    assert syn.ensure_buv(smoke.parent, "smoke", seed=4) == smoke           # reused
    with pytest.raises(FileExistsError, match="differs in: n_train"):
        syn.generate_synthetic_buv(smoke, "smoke", seed=4, verbose=False, n_train=6)
    with pytest.raises(ValueError, match="data_prep.buv"):
        syn.ensure_buv(tmp_path, "paper")


def test_synthetic_lesions_look_their_class():
    """Benign wider than tall, malignant taller than wide and shadowing; faded frames low contrast."""
    p = syn.resolve_params("quick", fade_fraction=0.2)
    stats = {False: [], True: []}
    for index in range(8):
        mal = index % 2 == 1
        frames, boxes, fade, _ = syn.render_video(11, index, mal, 12, p)
        for f, (x, y, w, h), fd in zip(frames.astype(float), boxes, fade):
            x0, y0, x1, y1, w, h = int(x), int(y), int(x + w), int(y + h), int(w), int(h)
            below = f[y1 + 2:min(y1 + 2 + h // 2, p["height"]), x0:x1].mean()
            beside = f[y1 + 2:min(y1 + 2 + h // 2, p["height"]), max(0, x0 - w):x0].mean()
            contrast = f[max(0, y0 - 6):y0, x0:x1].mean() - f[y0:y1, x0:x1].mean()
            stats[mal].append((w / h, below / beside, contrast, fd))
    benign, malignant = np.array(stats[False]), np.array(stats[True])
    assert np.median(benign[:, 0]) > 1.3 and np.median(malignant[:, 0]) < 0.9
    assert np.median(malignant[:, 1]) < 0.7 < np.median(benign[:, 1])     # posterior shadow
    both = np.concatenate([benign, malignant])
    faded, clear = both[both[:, 3] < 0.5], both[both[:, 3] == 1]
    assert len(faded) >= 4 and np.median(faded[:, 2]) < 0.4 * np.median(clear[:, 2])


def test_synthetic_clips_and_cli(smoke, tmp_path, capsys):
    ds = BUVClipDataset(smoke, "train", ClipConfig(train_short_sides=(48, 64), max_size=100))
    batch = collate_clips([ds[0], ds[len(ds) - 1]])
    assert batch["frames"].shape[:3] == (2, 6, 3) and batch["frames"].shape[-2] in (48, 64)
    assert all(len(t["boxes"]) == 1 for clip in batch["targets"] for t in clip)
    syn.main(["--out", str(tmp_path / "cli"), "--size", "smoke", "--set", "n_train=2", "--set", "n_val=1"])
    assert "wrote" in capsys.readouterr().out and len(buv.read_split(tmp_path / "cli", "train").videos) == 2
    with pytest.raises(SystemExit):
        syn.main(["--out", str(tmp_path / "bad"), "--set", "lesion_size=[0.4,0.1]"])
    assert not (tmp_path / "bad").exists()


def test_unused_video_entry_is_reported_not_fatal(download, tmp_path):
    edit_json(download, "val", lambda d: d["videos"].append({"id": 99, "name": "benign/ghost"}))
    assert buv.read_split(download, "val").unused_video_entries == ["videos[3] ('benign/ghost')"]
    rep = prep.prepare_buv(download, tmp_path / "clean", verbose=False)
    assert "val: 1 'videos' entr(ies) with no frame in 'images': videos[3] ('benign/ghost')" in rep["notes"]


def test_split_as_coco_scores_perfect_detections_with_pycocotools(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng()
    raw = [[float(v) for v in (*rng.uniform(4, 8, 2), *rng.choice([-1, 1], 2) * rng.uniform(3, 6, 2))] for _ in range(12)]
    root = write_buv(tmp_path, {"benign/va": dict(split="val", n=12, boxes=lambda k: raw[k]),
                                "malignant/vb": dict(split="train", n=2)})
    s = buv.read_split(root, "val")
    gt = COCO()
    gt.dataset = buv.split_as_coco(s)
    gt.createIndex()
    dets = [{"image_id": a["image_id"], "bbox": a["bbox"], "category_id": 1, "score": 1.0} for a in gt.dataset["annotations"]]
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)                # normalised boxes: the GT scores itself perfectly
    assert all(a["area"] == pytest.approx(abs(b[2] * b[3])) for a, b in zip(gt.dataset["annotations"], raw))
    keys = {("benign/va", 0), ("benign/va", 5)}
    assert len(buv.split_as_coco(s, keys)["images"]) == 2


def test_dataset_errors_name_the_frame_and_entry(tmp_path):
    root = two_videos(tmp_path)
    (root / "rawframes/benign/va/000002.png").write_bytes(b"not a png")
    ds = BUVClipDataset(root, "train", train=False)
    with pytest.raises(ValueError, match=r"benign/va/000002.png: cannot decode frame .*images\[2\] of .*train_15frames.json"):
        ds[2]
    edit_json(root, "train", lambda d: d["annotations"][6].update(bbox=[40, 2, 5, 5]))   # right of a 24-px frame
    ds = BUVClipDataset(root, "train", train=False)
    with pytest.raises(buv.BUVFormatError, match=r"annotations\[6\]: bbox lies outside its 20x24 frame malignant/vc/000001.png"):
        ds[6]


def test_figures(smoke):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stkit.viz import video as vviz

    assert vviz.clip_roles(4, 2) == ["key", "key-1", "key+1", "key-2", "key+2", "global 1", "global 2"]
    ds = BUVClipDataset(smoke, "val", ClipConfig(test_short_side=64, max_size=None))
    fig = vviz.show_clip(ds[0], ds.frame_numbers(0))
    assert len(fig.axes) == 6 and fig.axes[1].get_title().startswith("key-1 · #0")
    names = ds.videos
    assert len(vviz.contact_sheet(smoke, "val", names, n_frames=4).axes) == 4 * len(names)
    fig, c = vviz.plot_lesion_contrast(smoke, "val", names[0])
    assert c.shape == (len(ds.info.videos[names[0]].frames),) and np.isfinite(c).all()
    plt.close("all")
