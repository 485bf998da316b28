"""Clips of BUV ultrasound videos for a spatial-temporal detector (STNet, CVA-Net).

One item is one KEY frame of a video (every frame listed in the split's JSON, or every
``key_stride``-th of them) with the frames around it:

    [key, key-1, key+1, key-2, key+2, ..., global_1, ..., global_G]     T = 1 + S + G

Support frames (S, official 2) are the key's neighbours, clamped at the video's first and
last frame (so a key on the first frame repeats itself as key-1). Global frames (G,
official 3) are other frames of the same video: random in training; at evaluation a
fixed choice seeded by (seed, video), where the official code draws them at random (so
two evaluations of one model differ). Every frame of a clip gets the SAME random
transform (horizontal flip, resize to a short side from a list, optional crop) and its
own target (boxes of that frame, or none if the JSON does not list it).

Not here: reading/validating the format (stkit.data.buv), normalising pixel values for
a backbone, or the detector. The item and batch layout is the kit's contract with
stkit.stnet; see `BUVClipDataset` and `collate_clips`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .buv import BUVFormatError, check_listed_frames, frame_path, read_split
from .cxr import ImageDecodeError


@dataclass
class ClipConfig:
    n_support: int = 2                        # neighbours of the key: key-1, key+1, key-2, ...
    n_global: int = 3                         # other frames of the same video
    train_short_sides: tuple = (480, 512, 544, 576)  # training: short side drawn from these
    test_short_side: int = 512                # evaluation short side
    max_size: int = 1333                      # the long side never exceeds this
    hflip: float = 0.5                        # training: probability of a horizontal flip
    crop: float = 0.0                         # training: probability of a random crop first
    crop_size: tuple = (384, 600)             # crop width and height drawn from this range (px of the file)
    key_stride: int = 1                       # key frames: every key_stride-th listed frame
    seed: int = 0                             # evaluation: seeds the global frames of each video

    def __post_init__(self):
        bad = [f"{k}={getattr(self, k)!r}" for k, ok in (
            ("n_support", self.n_support >= 0), ("n_global", self.n_global >= 0),
            ("train_short_sides", len(self.train_short_sides) > 0 and min(self.train_short_sides) >= 1),
            ("test_short_side", self.test_short_side >= 1), ("hflip", 0 <= self.hflip <= 1), ("crop", 0 <= self.crop <= 1),
            ("crop_size", len(self.crop_size) == 2 and 1 <= self.crop_size[0] <= self.crop_size[1]),
            ("key_stride", self.key_stride >= 1)) if not ok]
        if bad:
            raise ValueError(f"ClipConfig: invalid {', '.join(bad)}")

    @property
    def T(self) -> int:
        return 1 + self.n_support + self.n_global


def resized_hw(h: int, w: int, short: int, max_size: int | None) -> tuple[int, int]:
    """(H, W) with the short side ``short``, shrunk so that the long side stays <= max_size."""
    lo, hi = min(h, w), max(h, w)
    if max_size is not None and hi * short > max_size * lo:
        short = max(1, int(max_size * lo / hi))
    if h <= w:
        return short, max(1, int(round(short * w / h)))
    return max(1, int(round(short * h / w))), short


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


class BUVClipDataset(torch.utils.data.Dataset):
    """Clips of one split of a BUV-format folder (``root`` holds rawframes/ and the JSONs).

    item = {"frames": float32 (T, 3, H, W) in [0, 1] (grey replicated to 3 channels),
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
        """Frame numbers of item i's clip, in clip order (global frames random in training)."""
        video, key = self.keys[i]
        first, last = self.ranges[video]
        c = self.clip
        idx = [key] + support_indices(key, c.n_support, first, last)
        if c.n_global > 0:
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
        """One frame as uint8 (H, W) grey; errors name the file (and its JSON entry)."""
        key = (video, index)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        path = frame_path(self.root, video, index)
        try:
            with Image.open(path) as im:
                a = np.asarray(im.convert("L"))
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
        """Boxes of one frame as xyxy clipped to the (h, w) file; a box wholly outside fails."""
        f = self.info.videos[video].frames.get(index)
        rows = [] if f is None else [(x, y, x + bw, y + bh) for x, y, bw, bh in f.boxes]
        boxes = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
        if len(boxes):
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
            if empty.any():
                j = f.ann_entries[int(empty.nonzero()[0])]
                raise BUVFormatError(f"{self.info.path}: annotations[{j}]: bbox lies outside its "
                                     f"{h}x{w} frame {f.file_name}")
        return {"boxes": boxes, "labels": torch.tensor([] if f is None else f.labels, dtype=torch.int64),
                "image_id": -1 if f is None else f.image_id, "orig_size": torch.tensor([h, w])}

    def __getitem__(self, i: int) -> dict:
        video, key = self.keys[i]
        idx = self.frame_numbers(i)
        frames, targets = [], []
        for n in idx:
            a = self.load_frame(video, n)
            t = self._target(video, n, *a.shape)
            img = torch.tensor(a, dtype=torch.float32).div_(255)[None]            # (1, h, w)
            if frames and img.shape != frames[0].shape:      # a frame of another size: match the key's
                h0, w0 = frames[0].shape[-2:]
                t["boxes"] *= torch.tensor([w0 / a.shape[1], h0 / a.shape[0]] * 2)
                img = F.interpolate(img[None], size=(h0, w0), mode="bilinear", antialias=True, align_corners=False)[0]
            frames.append(img)
            targets.append(t)
        x = torch.stack(frames)                                # (T, 1, h, w)
        x, boxes = self.transform(x, [t["boxes"] for t in targets], targets)
        for t, b in zip(targets, boxes):
            t["boxes"] = b
            t["size"] = torch.tensor(x.shape[-2:])
        return {"frames": x.expand(-1, 3, -1, -1).contiguous(), "targets": targets,   # (T, 3, H, W)
                "video": video, "key_index": key}

    def transform(self, x: torch.Tensor, boxes: list, targets: list):
        """One draw of (crop, flip, size) applied to all T frames (T, 1, h, w) and their boxes."""
        c = self.clip
        h, w = x.shape[-2:]
        if self.train and c.crop > 0 and torch.rand(()) < c.crop:
            x0, y0, cw, ch = self._crop_box(h, w, boxes[0])
            x = x[..., y0:y0 + ch, x0:x0 + cw]
            boxes = [_crop_boxes(b, x0, y0, cw, ch) for b in boxes]
            for t, b in zip(targets, boxes):
                t["labels"] = t["labels"][b[1]]
            boxes = [b[0] for b in boxes]
            h, w = ch, cw
        if self.train and c.hflip > 0 and torch.rand(()) < c.hflip:
            x = x.flip(-1)
            boxes = [torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1) for b in boxes]
        if self.train:
            short = int(c.train_short_sides[int(torch.randint(len(c.train_short_sides), ()))])
        else:
            short = int(c.test_short_side)
        nh, nw = resized_hw(h, w, short, c.max_size)
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
            scale = torch.tensor([nw / w, nh / h, nw / w, nh / h])
            boxes = [b * scale for b in boxes]
        return x.clamp_(0, 1), boxes

    def _crop_box(self, h, w, key_boxes):
        """A random crop (x0, y0, cw, ch) that keeps the key frame's boxes when it can."""
        lo, hi = self.clip.crop_size
        cw = int(torch.randint(min(lo, w), min(hi, w) + 1, ()))
        ch = int(torch.randint(min(lo, h), min(hi, h) + 1, ()))
        spans = []
        for size, full, a, b in ((cw, w, 0, 2), (ch, h, 1, 3)):
            lo_, hi_ = 0, full - size
            if len(key_boxes):
                need_lo = int(np.ceil(float(key_boxes[:, b].max()))) - size
                need_hi = int(np.floor(float(key_boxes[:, a].min())))
                if max(lo_, need_lo) <= min(hi_, need_hi):
                    lo_, hi_ = max(lo_, need_lo), min(hi_, need_hi)
            spans.append(int(torch.randint(lo_, hi_ + 1, ())))
        return spans[0], spans[1], cw, ch


def _crop_boxes(b: torch.Tensor, x0: int, y0: int, cw: int, ch: int):
    """Boxes (n, 4) xyxy shifted into a crop and clipped to it, and which of them keep an area
    (a crop can cut a lesion out of a support or global frame, as in Deformable DETR)."""
    b = b - torch.tensor([x0, y0, x0, y0], dtype=b.dtype)
    b[:, 0::2] = b[:, 0::2].clamp(0, cw)
    b[:, 1::2] = b[:, 1::2].clamp(0, ch)
    keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return b[keep], keep


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
