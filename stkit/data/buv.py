"""The BUV breast-ultrasound video format (CVA-Net, MICCAI 2022): read and check it.

On disk (the real download, and data_prep.synthetic_buv's built-in default alike):

    <root>/rawframes/{benign,malignant}/<video>/<NNNNNN>.png   every frame of every video
    <root>/imagenet_vid_train_15frames.json                    COCO detection JSON, train
    <root>/imagenet_vid_val.json                               COCO detection JSON, val

JSON fields used: categories [{id 1 benign}, {id 2 malignant}]; images[].id, file_name
``<class>/<video>/<NNNNNN>.png`` (relative to rawframes/), width, height; annotations[].id,
image_id, bbox [x, y, w, h] in pixels (w or h may be NEGATIVE: boxes drawn right-to-left),
category_id, area, iscrowd. The frame number is parsed from the file name. Other fields
(videos, video_id, frame_id, ...) are allowed and ignored.

`read_split` checks a JSON and returns its videos: per video the listed frames with their
boxes, negative widths/heights normalised (never dropped; each box remembers whether it was
negative in the file, for the clip dataset's released mode). Every error names the file and
the JSON entry (``images[12]``, ``annotations[40]``); a video with no box is an error, a
``videos`` entry that no image belongs to is only recorded. `scan_frames` checks a video's frame
files on disk (numbered contiguously). `released_key_ids` lists the key frames the released
test scores. This module needs no torch: data_prep uses it too.
It does not decode images (data_prep.buv does, when it validates a download).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

SPLIT_FILES = {"train": "imagenet_vid_train_15frames.json", "val": "imagenet_vid_val.json"}
CATEGORIES = {1: "benign", 2: "malignant"}          # the BUV category ids and names
CLASS_IDS = {name: cid for cid, name in CATEGORIES.items()}
FRAMES_DIR = "rawframes"
_FILE_RE = re.compile(r"^(benign|malignant)/([^/\\]+)/(\d{6})\.png$")
_FRAME_RE = re.compile(r"^(\d{6})\.png$")


class BUVFormatError(ValueError):
    """A BUV JSON or frame folder breaks the format; the message names the file and entry."""


@dataclass
class Frame:
    index: int                  # frame number, parsed from the file name
    image_id: int               # COCO images[].id
    file_name: str              # "<class>/<video>/<NNNNNN>.png", relative to rawframes/
    width: int
    height: int
    entry: int                  # position in the JSON's images list (for messages)
    boxes: list = field(default_factory=list)    # [(x, y, w, h)] normalised: w, h > 0
    labels: list = field(default_factory=list)   # category id of each box
    ann_entries: list = field(default_factory=list)  # position of each box in annotations
    negative: list = field(default_factory=list)     # per box: True where the file's w or h was < 0


@dataclass
class Video:
    name: str                   # "<class>/<video>", the folder under rawframes/
    folder_class: str           # "benign" or "malignant", from the folder name
    frames: dict = field(default_factory=dict)   # frame number -> Frame (the listed ones)
    label: int | None = None    # category id of its boxes; None if it has no box

    @property
    def indices(self) -> list[int]:
        return sorted(self.frames)


@dataclass
class BUVSplit:
    path: Path                  # the JSON file
    categories: dict            # id -> name, as declared
    videos: dict                # name -> Video, in order of first appearance
    n_negative: int = 0         # boxes that had a negative width or height (normalised)
    unused_video_entries: list = field(default_factory=list)   # 'videos' entries without frames

    @property
    def n_frames(self) -> int:
        return sum(len(v.frames) for v in self.videos.values())

    @property
    def n_boxes(self) -> int:
        return sum(len(f.boxes) for v in self.videos.values() for f in v.frames.values())


def normalise_box(x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
    """A box drawn right-to-left (w < 0) or bottom-to-top (h < 0) as the same rectangle
    with positive size: [x + w, y, -w, h] for w < 0, likewise for h."""
    if w < 0:
        x, w = x + w, -w
    if h < 0:
        y, h = y + h, -h
    return x, y, w, h


def load_json(path) -> dict:
    """A COCO JSON as a dict; FileNotFoundError / BUVFormatError name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: BUV annotation JSON not found")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as e:
        raise BUVFormatError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(data, dict):
        raise BUVFormatError(f"{path}: expected a JSON object with images, annotations, categories")
    return data


def read_split(root, split: str) -> BUVSplit:
    """Read and check ``root/<split JSON>`` (split 'train' or 'val')."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
    path = Path(root) / SPLIT_FILES[split]
    return parse_split(load_json(path), path)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _categories(data: dict, path: Path) -> dict:
    cats = data.get("categories")
    if not isinstance(cats, list) or not cats:
        raise BUVFormatError(f"{path}: 'categories' is missing or empty (expected 1 benign, 2 malignant)")
    out = {}
    for i, c in enumerate(cats):
        cid, name = (c.get("id"), c.get("name")) if isinstance(c, dict) else (None, None)
        if not isinstance(name, str) or CATEGORIES.get(cid) != name.strip().lower():
            raise BUVFormatError(f"{path}: categories[{i}] is {c!r}; BUV declares only "
                                 f"{{'id': 1, 'name': 'benign'}} and {{'id': 2, 'name': 'malignant'}}")
        out[cid] = CATEGORIES[cid]
    return out


def _images(data: dict, path: Path) -> tuple[dict, dict]:
    """(videos by name, Frame by image id) from images[]."""
    images = data.get("images")
    if not isinstance(images, list) or not images:
        raise BUVFormatError(f"{path}: 'images' is missing or empty")
    videos, by_id = {}, {}
    for i, im in enumerate(images):
        where = f"{path}: images[{i}]"
        if not isinstance(im, dict):
            raise BUVFormatError(f"{where} is not an object")
        iid, fn = im.get("id"), im.get("file_name")
        if not _int(iid):
            raise BUVFormatError(f"{where}: id {iid!r} is not an integer")
        m = _FILE_RE.match(fn) if isinstance(fn, str) else None
        if m is None:
            raise BUVFormatError(f"{where} (id {iid}): file_name {fn!r} is not "
                                 "'<benign|malignant>/<video>/<NNNNNN>.png'")
        w, h = im.get("width"), im.get("height")
        if not (_int(w) and _int(h) and w > 0 and h > 0):
            raise BUVFormatError(f"{where} (id {iid}): width/height {w!r}/{h!r} are not positive integers")
        if iid in by_id:
            raise BUVFormatError(f"{where}: image id {iid} repeats images[{by_id[iid].entry}]")
        cls, vid, idx = m.group(1), m.group(2), int(m.group(3))
        video = videos.setdefault(f"{cls}/{vid}", Video(f"{cls}/{vid}", cls))
        if idx in video.frames:
            raise BUVFormatError(f"{where}: file_name {fn!r} repeats images[{video.frames[idx].entry}]")
        by_id[iid] = video.frames[idx] = Frame(idx, iid, fn, w, h, i)
    return videos, by_id


def _annotations(data: dict, path: Path, cats: dict, by_id: dict) -> int:
    """Attach every annotation's normalised box to its frame; return the negative count."""
    anns = data.get("annotations")
    if not isinstance(anns, list):
        raise BUVFormatError(f"{path}: 'annotations' is missing or not a list")
    negative = 0
    for j, a in enumerate(anns):
        where = f"{path}: annotations[{j}]"
        if not isinstance(a, dict):
            raise BUVFormatError(f"{where} is not an object")
        where += f" (id {a.get('id')!r}, image_id {a.get('image_id')!r})"
        frame = by_id.get(a.get("image_id"))
        if frame is None:
            raise BUVFormatError(f"{where}: image_id refers to no entry of 'images'")
        cid = a.get("category_id")
        if cid not in cats:
            raise BUVFormatError(f"{where}: category_id {cid!r} is not one of the declared categories "
                                 f"{sorted(cats)}")
        b = a.get("bbox")
        if not (isinstance(b, list) and len(b) == 4 and all(_number(v) for v in b)):
            raise BUVFormatError(f"{where}: bbox {b!r} is not four finite numbers [x, y, w, h]")
        if b[2] == 0 or b[3] == 0:
            raise BUVFormatError(f"{where}: bbox {b!r} has zero width or height")
        negative += b[2] < 0 or b[3] < 0
        frame.negative.append(bool(b[2] < 0 or b[3] < 0))
        frame.boxes.append(tuple(float(v) for v in normalise_box(*b)))
        frame.labels.append(int(cid))
        frame.ann_entries.append(j)
    return negative


def parse_split(data: dict, path) -> BUVSplit:
    """Check one split's COCO dict (read from ``path``) and group it by video."""
    path = Path(path)
    cats = _categories(data, path)
    videos, by_id = _images(data, path)
    negative = _annotations(data, path, cats, by_id)
    unused = []                                    # 'videos' entries no image belongs to
    listed = data.get("videos")
    if isinstance(listed, list) and all(isinstance(im, dict) and "video_id" in im for im in data["images"]):
        used = {im["video_id"] for im in data["images"]}
        unused = [f"videos[{k}] ({v.get('name', v.get('id'))!r})" for k, v in enumerate(listed)
                  if isinstance(v, dict) and v.get("id") not in used]
    for video in videos.values():
        seen = {}                                  # category id -> first annotation entry
        for f in video.frames.values():
            for cid, j in zip(f.labels, f.ann_entries):
                seen.setdefault(cid, j)
        if not seen:
            raise BUVFormatError(f"{path}: video {video.name!r} is empty: none of its "
                                 f"{len(video.frames)} listed frames has a lesion box")
        if len(seen) > 1:
            parts = [f"{CATEGORIES[c]} ({c}) in annotations[{j}]" for c, j in sorted(seen.items())]
            raise BUVFormatError(f"{path}: video {video.name!r} has two classes: {' and '.join(parts)}; "
                                 "a BUV video has one class")
        video.label = next(iter(seen))
    return BUVSplit(path, cats, videos, negative, unused)


def released_test_ids(image_ids, n_support: int = 2) -> list[int]:
    """The released test's rule (TestCocoClipDetection): the image ids sorted, then every
    (n_support + 1)-th from n_support // 2 (``[1::3]`` for 2 support frames), across video
    boundaries, not per video."""
    if not (isinstance(n_support, int) and not isinstance(n_support, bool) and n_support >= 0):
        raise ValueError(f"released_test_ids: n_support must be an integer >= 0, got {n_support!r}")
    return sorted(int(i) for i in image_ids)[n_support // 2::n_support + 1]


def released_key_ids(split: BUVSplit, n_support: int = 2) -> list[int]:
    """The image ids the released test scores of a split: :func:`released_test_ids` of every
    image id of its JSON."""
    return released_test_ids((f.image_id for v in split.videos.values() for f in v.frames.values()), n_support)


def video_dir(root, video: str) -> Path:
    """The folder of a video's frames: ``root/rawframes/<class>/<video>``."""
    return Path(root) / FRAMES_DIR / video


def frame_path(root, video: str, index: int) -> Path:
    return video_dir(root, video) / f"{index:06d}.png"


def scan_frames(root, video: str) -> tuple[int, int]:
    """(first, last) frame number of a video's PNG files on disk. Raises BUVFormatError
    naming the folder when it is missing or empty, has a PNG named otherwise than
    NNNNNN.png, or has a gap in the numbering."""
    folder = video_dir(root, video)
    if not folder.is_dir():
        raise BUVFormatError(f"{folder}: frame folder of video {video!r} not found")
    pngs = [p.name for p in folder.iterdir() if p.name.lower().endswith(".png")]
    if not pngs:
        raise BUVFormatError(f"{folder}: empty video, no PNG frames")
    bad = sorted(n for n in pngs if not _FRAME_RE.match(n))
    if bad:
        raise BUVFormatError(f"{folder}: frame file {bad[0]!r} is not named NNNNNN.png")
    idx = sorted(int(n[:6]) for n in pngs)
    if idx[-1] - idx[0] + 1 != len(idx):
        gap = next(a + 1 for a, b in zip(idx, idx[1:]) if b != a + 1)
        raise BUVFormatError(f"{folder}: frame numbering is not contiguous: {gap:06d}.png is missing "
                             f"between {idx[0]:06d}.png and {idx[-1]:06d}.png")
    return idx[0], idx[-1]


def check_listed_frames(root, split: BUVSplit) -> dict:
    """scan_frames for every video of a split, and every JSON-listed frame within the
    files found. Returns {video name: (first, last)}."""
    ranges = {}
    for name, video in split.videos.items():
        first, last = ranges[name] = scan_frames(root, name)
        for f in video.frames.values():
            if not first <= f.index <= last:
                raise BUVFormatError(f"{split.path}: images[{f.entry}] (id {f.image_id}) refers to "
                                     f"{frame_path(root, name, f.index)}, which does not exist")
    return ranges


def split_as_coco(split: BUVSplit, key_frames=None) -> dict:
    """A split as a COCO ground-truth dict with the boxes normalised (positive w, h; area
    = w * h), in pixels of the files: what pycocotools needs to score detections. Only the
    frames in ``key_frames`` (a set of (video, frame number)) when given."""
    images, anns = [], []
    for name, video in split.videos.items():
        for i in video.indices:
            if key_frames is not None and (name, i) not in key_frames:
                continue
            f = video.frames[i]
            images.append({"id": f.image_id, "file_name": f.file_name, "width": f.width, "height": f.height})
            for (x, y, w, h), cid in zip(f.boxes, f.labels):
                anns.append({"id": len(anns) + 1, "image_id": f.image_id, "bbox": [x, y, w, h],
                             "category_id": cid, "area": w * h, "iscrowd": 0})
    cats = [{"id": c, "name": n} for c, n in sorted(split.categories.items())]
    return {"images": images, "annotations": anns, "categories": cats}
