"""The random transforms of a BUV clip (used by stkit.data.video.BUVClipDataset).

Every function here takes a clip's frames as a float tensor (T, C, h, w), its boxes as T
tensors (n_t, 4) xyxy in pixels of those frames, and their labels as T tensors (n_t,),
and applies ONE draw (of flip, crop, size) to all T frames alike. Two pipelines, chosen
by ``ClipConfig.crop_mode``:

- ``kit_transform``: training: with probability ``crop`` a crop in the file's pixels
  placed to keep the key frame's boxes when it can, then a flip, then a resize to a short
  side from ``train_short_sides``; evaluation: a resize to ``test_short_side``. Sizes
  follow `resized_hw` (rounded).
- ``released_transform``: the released training transform, in its order: a flip; then
  with probability ``crop`` [a resize to a short side from ``crop_resize_sides`` (no
  cap), a crop of random size and position that ignores the boxes, a resize to a short
  side from ``train_short_sides``], else the last resize alone. Evaluation: a resize to
  ``test_short_side``. Sizes follow `released_hw` (the release's truncating rule).

`center_crop` cuts a fixed square out of the middle of one frame (the released test's
treatment of the global frames). A crop keeps the boxes that still have an area, clipped
to it, with their labels; the others are removed (a crop can cut a lesion out).

Not here: reading files, choosing the clip's frames, building targets, normalising pixel
values for a backbone. Random draws use torch's generator (DataLoader seeds it per worker).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resized_hw(h: int, w: int, short: int, max_size: int | None) -> tuple[int, int]:
    """(H, W) with the short side ``short``, shrunk so that the long side stays <= max_size
    (the kit's rule: the long side rounded)."""
    lo, hi = min(h, w), max(h, w)
    if max_size is not None and hi * short > max_size * lo:
        short = max(1, int(max_size * lo / hi))
    if h <= w:
        return short, max(1, int(round(short * w / h)))
    return max(1, int(round(short * h / w))), short


def released_hw(h: int, w: int, short: int, max_size: int | None) -> tuple[int, int]:
    """(H, W) by the release's rule (datasets/transforms.py get_size_with_aspect_ratio):
    the capped short side is ``round(max_size * short / long)`` (Python's round), the long
    side is truncated (``int``), and a frame whose short side is already ``short`` keeps
    its size."""
    if max_size is not None and float(max(h, w)) / float(min(h, w)) * short > max_size:
        short = int(round(max_size * float(min(h, w)) / float(max(h, w))))
    if (w <= h and w == short) or (h <= w and h == short):
        return h, w
    if w < h:
        return int(short * h / w), short
    return short, int(short * w / h)


def resize_frames(x: torch.Tensor, boxes: list, nh: int, nw: int):
    """Frames (T, C, h, w) resized to (nh, nw) (bilinear, antialiased) and boxes scaled."""
    h, w = x.shape[-2:]
    if (nh, nw) == (h, w):
        return x, boxes
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    scale = torch.tensor([nw / w, nh / h, nw / w, nh / h])
    return x, [b * scale for b in boxes]


def flip_frames(x: torch.Tensor, boxes: list):
    """Frames mirrored left-right and their boxes with them."""
    w = x.shape[-1]
    return x.flip(-1), [torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1) for b in boxes]


def crop_boxes(b: torch.Tensor, x0: int, y0: int, cw: int, ch: int):
    """Boxes (n, 4) xyxy shifted into the crop (x0, y0, cw, ch) and clipped to it, and the
    mask of those that keep an area."""
    b = b - torch.tensor([x0, y0, x0, y0], dtype=b.dtype)
    b[:, 0::2] = b[:, 0::2].clamp(0, cw)
    b[:, 1::2] = b[:, 1::2].clamp(0, ch)
    keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return b[keep], keep


def crop_frames(x: torch.Tensor, boxes: list, labels: list, x0: int, y0: int, cw: int, ch: int):
    """The region (x0, y0, cw, ch) of every frame, zero where it reaches past the frame (as
    PIL's crop), with the boxes and labels that keep an area in it."""
    h, w = x.shape[-2:]
    out = x.new_zeros(*x.shape[:-2], ch, cw)
    ys, ye, xs, xe = max(y0, 0), min(y0 + ch, h), max(x0, 0), min(x0 + cw, w)
    if ys < ye and xs < xe:
        out[..., ys - y0:ye - y0, xs - x0:xe - x0] = x[..., ys:ye, xs:xe]
    cut = [crop_boxes(b, x0, y0, cw, ch) for b in boxes]
    return out, [b for b, _ in cut], [lab[k] for lab, (_, k) in zip(labels, cut)]


def center_crop(img: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, size: int):
    """The size x size square in the middle of one frame (C, h, w), as the release's
    CenterCrop (datasets/coco.py): top = round((h - size) / 2), left likewise (Python's
    round, halves to even), zero-padded where the frame is smaller than the square."""
    h, w = img.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    x, b, lab = crop_frames(img[None], [boxes], [labels], left, top, size, size)
    return x[0], b[0], lab[0]


def _choice(values) -> int:
    return int(values[int(torch.randint(len(values), ()))])


def kit_crop_box(h: int, w: int, key_boxes: torch.Tensor, crop_size) -> tuple[int, int, int, int]:
    """A random crop (x0, y0, cw, ch) that keeps the key frame's boxes when it can."""
    lo, hi = crop_size
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


def kit_transform(x: torch.Tensor, boxes: list, labels: list, c, train: bool):
    """The kit's pipeline (see the module docstring); c is a ClipConfig."""
    h, w = x.shape[-2:]
    if train and c.crop > 0 and torch.rand(()) < c.crop:
        x0, y0, cw, ch = kit_crop_box(h, w, boxes[0], c.crop_size)
        x, boxes, labels = crop_frames(x, boxes, labels, x0, y0, cw, ch)
        h, w = ch, cw
    if train and c.hflip > 0 and torch.rand(()) < c.hflip:
        x, boxes = flip_frames(x, boxes)
    short = _choice(c.train_short_sides) if train else int(c.test_short_side)
    x, boxes = resize_frames(x, boxes, *resized_hw(h, w, short, c.max_size))
    return x, boxes, labels


def released_transform(x: torch.Tensor, boxes: list, labels: list, c, train: bool):
    """The release's pipeline (see the module docstring); c is a ClipConfig."""
    if not train:
        x, boxes = resize_frames(x, boxes, *released_hw(*x.shape[-2:], int(c.test_short_side), c.max_size))
        return x, boxes, labels
    if c.hflip > 0 and torch.rand(()) < c.hflip:
        x, boxes = flip_frames(x, boxes)
    if c.crop > 0 and torch.rand(()) < c.crop:
        x, boxes = resize_frames(x, boxes, *released_hw(*x.shape[-2:], _choice(c.crop_resize_sides), None))
        h, w = x.shape[-2:]
        lo, hi = c.crop_size
        if min(hi, w) < lo or min(hi, h) < lo:
            raise ValueError(f"ClipConfig crop_size={tuple(c.crop_size)!r}: a {h}x{w} clip (after the resize to "
                             f"crop_resize_sides) is smaller than the least crop {lo}; the release fails here too")
        cw = int(torch.randint(lo, min(hi, w) + 1, ()))        # the release: random.randint(lo, min(w, hi))
        ch = int(torch.randint(lo, min(hi, h) + 1, ()))
        y0 = int(torch.randint(0, h - ch + 1, ()))             # torchvision RandomCrop.get_params
        x0 = int(torch.randint(0, w - cw + 1, ()))
        x, boxes, labels = crop_frames(x, boxes, labels, x0, y0, cw, ch)
    x, boxes = resize_frames(x, boxes, *released_hw(*x.shape[-2:], _choice(c.train_short_sides), c.max_size))
    return x, boxes, labels
