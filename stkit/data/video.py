"""Clips of BUV ultrasound videos for a spatial-temporal detector (STNet, CVA-Net).

One item is one KEY frame of a video (every frame listed in the split's JSON, or every
``key_stride``-th of them) with the frames around it:

    [key, key-1, key+1, key-2, key+2, ..., global_1, ..., global_G]     T = 1 + S + G

Support frames (S, official 2) are the key's neighbours, clamped at the video's first and
last frame (so a key on the first frame repeats itself as key-1). Global frames (G,
official 3) are other frames of the same video. Every frame of a clip gets the SAME random
transform (horizontal flip, resize to a short side from a list, optional crop) and its
own target (boxes of that frame, or none if the JSON does not list it).

`ClipConfig` chooses, field by field, between the kit's reading (the defaults) and the
released STNet code's (`released_clip` turns every released choice on):

    color             "grey" (L, replicated to 3 channels) | "rgb" (the release: RGB)
    negative_boxes    "flip" (normalised, kept) | "drop" (the release drops them)
    global_draw       "kit" (random in training, fixed per (seed, video) at evaluation)
                      | "released" (random always, from first..last-1, key excluded)
    global_center_crop  0 | N: at evaluation the global frames' middle N x N square,
                      resized back to the key's size (the release's test: 400)
    crop_mode         "kit" (box-aware crop in file pixels, then flip, resize) |
                      "released" (flip, then the release's resize-crop-resize branch)

Not here: reading/validating the format (stkit.data.buv), the transforms themselves
(stkit.data.clip_transforms), normalising pixel values for a backbone, or the detector.
The item and batch layout is the kit's contract with stkit.stnet; see `BUVClipDataset`
and `collate_clips`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .buv import BUVFormatError, check_listed_frames, frame_path, read_split
from .clip_transforms import center_crop, kit_transform, released_transform, resized_hw  # noqa: F401 (resized_hw re-exported)
from .cxr import ImageDecodeError

CHOICES = {"color": ("grey", "rgb"), "negative_boxes": ("flip", "drop"), "global_draw": ("kit", "released"),
           "crop_mode": ("kit", "released")}


@dataclass
class ClipConfig:
    n_support: int = 2                        # neighbours of the key: key-1, key+1, key-2, ...
    n_global: int = 3                         # other frames of the same video
    train_short_sides: tuple = (480, 512, 544, 576)  # training: short side drawn from these
    test_short_side: int = 512                # evaluation short side
    max_size: int = 1333                      # the long side never exceeds this
    hflip: float = 0.5                        # training: probability of a horizontal flip
    crop: float = 0.0                         # training: probability of a random crop (released mode: of the crop branch)
    crop_size: tuple = (384, 600)             # crop width and height drawn from this range (px of the file; released: px
                                              # after the resize to crop_resize_sides)
    key_stride: int = 1                       # key frames: every key_stride-th listed frame
    seed: int = 0                             # evaluation: seeds the global frames of each video (global_draw "kit")
    # How frames are decoded: "grey" (L, replicated to 3 channels) or "rgb". The release: convert('RGB').
    color: str = "grey"
    # Boxes with a negative w or h in the file: "flip" (normalised to the same rectangle, kept) or "drop". The release
    # drops them: xyxy = (x, y, x+w, y+h) clamped to the frame, kept only where x2 > x1 and y2 > y1 (any box empty
    # after the clamp goes too, in "drop" mode; a frame may end with no box).
    negative_boxes: str = "flip"
    # Global frames: "kit" (a random permutation in training, a fixed choice per (seed, video) at evaluation, the
    # last frame allowed) or "released" (random at evaluation too: n distinct frames of first..last-1 without the
    # key, torch's generator). The release: random.sample(range(0, max_frm_id) minus the key, n).
    global_draw: str = "kit"
    # Evaluation: N > 0 cuts each GLOBAL frame's middle N x N square out of the file (zero past its edges) and resizes
    # it to the key frame's size, its boxes following; 0: off. The released test flags (--shuffled_aug centerCrop): 400.
    global_center_crop: int = 0
    # Training order: "kit" (a crop of the file placed to keep the key's boxes, flip, resize; sizes rounded) or
    # "released" (flip; with probability `crop` resize to crop_resize_sides, a crop ignoring the boxes, resize; else
    # the resize alone; sizes truncated as the release's resize, at evaluation too). The release: "released", p=0.5.
    crop_mode: str = "kit"
    # crop_mode "released": the crop branch's first short side (no cap on the long side). The release: 400, 500, 600.
    crop_resize_sides: tuple = (400, 500, 600)

    def __post_init__(self):
        bad = [f"{k}={getattr(self, k)!r}" for k, ok in (
            ("n_support", self.n_support >= 0), ("n_global", self.n_global >= 0),
            ("train_short_sides", len(self.train_short_sides) > 0 and min(self.train_short_sides) >= 1),
            ("test_short_side", self.test_short_side >= 1), ("hflip", 0 <= self.hflip <= 1), ("crop", 0 <= self.crop <= 1),
            ("crop_size", len(self.crop_size) == 2 and 1 <= self.crop_size[0] <= self.crop_size[1]),
            ("key_stride", self.key_stride >= 1),
            ("global_center_crop", isinstance(self.global_center_crop, int) and self.global_center_crop >= 0),
            ("crop_resize_sides", len(self.crop_resize_sides) > 0 and min(self.crop_resize_sides) >= 1)) if not ok]
        bad += [f"{k}={getattr(self, k)!r} (one of {', '.join(map(repr, v))})" for k, v in CHOICES.items()
                if getattr(self, k) not in v]
        if bad:
            raise ValueError(f"ClipConfig: invalid {', '.join(bad)}")

    @property
    def T(self) -> int:
        return 1 + self.n_support + self.n_global


def released_clip(clip: ClipConfig) -> ClipConfig:
    """``clip`` with every choice of the released data handling on: RGB frames, negative
    boxes dropped, the released global draw, the released test's 400-px centre crop of the
    global frames, the released training order with its crop branch at p=0.5 and its sizes
    (resize to 400/500/600, crop 384..600). Frame counts, the final sizes
    (train/test_short_side, max_size), the flip probability and key_stride stay ``clip``'s."""
    return replace(clip, color="rgb", negative_boxes="drop", global_draw="released", global_center_crop=400,
                   crop_mode="released", crop=0.5, crop_resize_sides=(400, 500, 600), crop_size=(384, 600))


def support_indices(key: int, n_support: int, first: int, last: int) -> list[int]:
    """key-1, key+1, key-2, key+2, ... (n_support of them), clamped to [first, last]."""
    out = []
    for k in range(n_support):
        step = k // 2 + 1
        out.append(min(max(key - step if k % 2 == 0 else key + step, first), last))
    return out


def _pick_global(order: np.ndarray, key: int, n: int) -> list[int]:
    """The first n frames of ``order`` other than the key (cycled when the video is short)."""
    cand = [int(i) for i in order if i != key] or [key]
    return [cand[k % len(cand)] for k in range(n)]


def released_global(key: int, n: int, first: int, last: int, video: str) -> list[int]:
    """n distinct frames drawn at random (torch's generator) from first..last-1 without the
    key, as the release's ``random.sample(range(0, max_frm_id) - key, n)``; a video too short
    for that fails (the release's random.sample raises ValueError too)."""
    cand = [i for i in range(first, last) if i != key]
    if len(cand) < n:
        raise ValueError(f"video {video!r} (frames {first}..{last}): {len(cand)} candidate global frames for key {key} "
                         f"(first..last-1 without the key), fewer than n_global={n} (global_draw 'released')")
    return [cand[int(j)] for j in torch.randperm(len(cand))[:n]]


class BUVClipDataset(torch.utils.data.Dataset):
    """Clips of one split of a BUV-format folder (``root`` holds rawframes/ and the JSONs).

    item = {"frames": float32 (T, 3, H, W) in [0, 1] (grey replicated to 3 channels, or RGB),
            "targets": T dicts {"boxes" float32 (n, 4) xyxy in pixels of the transformed
                       frame, "labels" int64 (n,) category ids (1 benign, 2 malignant),
                       "image_id" int (COCO id; -1 for a frame the JSON does not list),
                       "orig_size" int64 (2,) (h, w) of the file, "size" int64 (2,) (h, w) now},
            "video": "<class>/<video>", "key_index": frame number of the key}

    train: random transform and global frames (default: split == "train"). cache: keep
    decoded frames in memory (small data sets; CPU training).
    """

    def __init__(self, root, split: str, clip: ClipConfig | None = None, train: bool | None = None,
                 cache: bool = False):
        self.root, self.split = root, split
        self.clip = clip or ClipConfig()
        self.train = split == "train" if train is None else bool(train)
        self.info = read_split(root, split)
        self.ranges = check_listed_frames(root, self.info)       # video -> (first, last) on disk
        stride = int(self.clip.key_stride)
        self.keys = [(name, i) for name, v in self.info.videos.items() for i in v.indices[::stride]]
        self._cache = {} if cache else None
        self._orders = {}                                        # eval: video -> frame order

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def videos(self) -> list[str]:
        return list(self.info.videos)

    def frame_numbers(self, i: int) -> list[int]:
        """Frame numbers of item i's clip, in clip order (global frames as ``global_draw`` says)."""
        video, key = self.keys[i]
        first, last = self.ranges[video]
        c = self.clip
        idx = [key] + support_indices(key, c.n_support, first, last)
        if c.n_global > 0 and c.global_draw == "released":
            try:
                idx += released_global(key, c.n_global, first, last, video)
            except ValueError as e:
                raise ValueError(f"{self.info.path}: {e}") from None
        elif c.n_global > 0:
            if self.train:
                order = (torch.randperm(last - first + 1) + first).numpy()
            else:
                order = self._orders.get(video)
                if order is None:
                    rng = np.random.default_rng([c.seed, zlib.crc32(video.encode())])
                    order = self._orders[video] = rng.permutation(np.arange(first, last + 1))
            idx += _pick_global(order, key, c.n_global)
        return idx

    def load_frame(self, video: str, index: int) -> np.ndarray:
        """One frame as uint8 (H, W) grey or (H, W, 3) RGB (``color``); errors name the file
        (and its JSON entry)."""
        key = (video, index)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        path = frame_path(self.root, video, index)
        try:
            with Image.open(path) as im:
                a = np.asarray(im.convert("RGB" if self.clip.color == "rgb" else "L"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: frame not found{self._listed(video, index)}") from None
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, zlib.error, ...
            raise ImageDecodeError(f"{path}: cannot decode frame ({type(e).__name__}: {e})"
                                   f"{self._listed(video, index)}") from e
        if self._cache is not None:
            self._cache[key] = a
        return a

    def _listed(self, video, index) -> str:
        f = self.info.videos[video].frames.get(index)
        return "" if f is None else f" (images[{f.entry}] of {self.info.path})"

    def _target(self, video: str, index: int, h: int, w: int) -> dict:
        """Boxes of one frame as xyxy clipped to the (h, w) file. "flip": a box wholly outside
        fails; "drop": boxes negative in the file and boxes empty after the clip are dropped."""
        f = self.info.videos[video].frames.get(index)
        rows = [] if f is None else [(x, y, x + bw, y + bh) for x, y, bw, bh in f.boxes]
        boxes = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([] if f is None else f.labels, dtype=torch.int64)
        if len(boxes):
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
            if self.clip.negative_boxes == "drop":      # as released: x2 < x1 (or y2 < y1) for a negative box
                keep = ~empty & ~torch.tensor(f.negative, dtype=torch.bool)
                boxes, labels = boxes[keep], labels[keep]
            elif empty.any():
                j = f.ann_entries[int(empty.nonzero()[0])]
                raise BUVFormatError(f"{self.info.path}: annotations[{j}]: bbox lies outside its "
                                     f"{h}x{w} frame {f.file_name}")
        return {"boxes": boxes, "labels": labels,
                "image_id": -1 if f is None else f.image_id, "orig_size": torch.tensor([h, w])}

    def __getitem__(self, i: int) -> dict:
        video, key = self.keys[i]
        idx = self.frame_numbers(i)
        c = self.clip
        frames, targets = [], []
        for t_, n in enumerate(idx):
            a = self.load_frame(video, n)
            t = self._target(video, n, *a.shape[:2])
            img = torch.tensor(a, dtype=torch.float32).div_(255)
            img = img.permute(2, 0, 1) if img.ndim == 3 else img[None]               # (C, h, w)
            if t_ > c.n_support and c.global_center_crop > 0 and not self.train:   # a global frame, released test
                img, t["boxes"], t["labels"] = center_crop(img, t["boxes"], t["labels"], c.global_center_crop)
            if frames and img.shape != frames[0].shape:      # a frame of another size: match the key's
                (h0, w0), (h1, w1) = frames[0].shape[-2:], img.shape[-2:]
                t["boxes"] = t["boxes"] * torch.tensor([w0 / w1, h0 / h1] * 2)
                img = F.interpolate(img[None], size=(h0, w0), mode="bilinear", antialias=True, align_corners=False)[0]
            frames.append(img)
            targets.append(t)
        x = torch.stack(frames)                                # (T, C, h, w)
        x, boxes = self.transform(x, [t["boxes"] for t in targets], targets)
        for t, b in zip(targets, boxes):
            t["boxes"] = b
            t["size"] = torch.tensor(x.shape[-2:])
        return {"frames": x.expand(-1, 3, -1, -1).contiguous(), "targets": targets,   # (T, 3, H, W)
                "video": video, "key_index": key}

    def transform(self, x: torch.Tensor, boxes: list, targets: list):
        """One draw of (crop, flip, size) applied to all T frames (T, C, h, w) and their boxes
        (the pipeline of ``crop_mode``; labels of cropped-out boxes leave ``targets``)."""
        pipeline = released_transform if self.clip.crop_mode == "released" else kit_transform
        x, boxes, labels = pipeline(x, boxes, [t["labels"] for t in targets], self.clip, self.train)
        for t, lab in zip(targets, labels):
            t["labels"] = lab
        return x.clamp_(0, 1), boxes


def collate_clips(items: list[dict]) -> dict:
    """Batch B clips of T frames each, of any sizes:
    {"frames": (B, T, 3, Hmax, Wmax) zero-padded at the bottom/right, "mask": bool
    (B, T, Hmax, Wmax) True on padding, "targets": B lists of T dicts, "video", "key_index"}."""
    if not items:
        raise ValueError("collate_clips: empty batch")
    T = items[0]["frames"].shape[0]
    if any(it["frames"].shape[0] != T for it in items):
        raise ValueError(f"collate_clips: clips of different lengths {[it['frames'].shape[0] for it in items]}")
    hmax = max(it["frames"].shape[-2] for it in items)
    wmax = max(it["frames"].shape[-1] for it in items)
    frames = torch.zeros(len(items), T, 3, hmax, wmax)
    mask = torch.ones(len(items), T, hmax, wmax, dtype=torch.bool)
    for b, it in enumerate(items):
        h, w = it["frames"].shape[-2:]
        frames[b, :, :, :h, :w] = it["frames"]
        mask[b, :, :h, :w] = False
    return {"frames": frames, "mask": mask, "targets": [it["targets"] for it in items],
            "video": [it["video"] for it in items], "key_index": [it["key_index"] for it in items]}
