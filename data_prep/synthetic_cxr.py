"""Synthetic chest X-rays: the kit's built-in default data for STERN.

Each image is a schematic frontal radiograph (body outline, lungs, heart, spine, ribs,
clavicles, shoulders) placed at a random position and scale on a larger dark canvas,
with burned-in text, markers and nodule-like distractors OUTSIDE the lungs. Abnormal
images carry 1 to 3 small nodules or fainter opacities strictly INSIDE the lung fields.
The thorax covers a third to a half of the canvas width, so a classifier that sees the
whole canvas at its glimpse size (64 px from 256) sees a lesion one pixel or less across,
next to look-alike distractors; one that first crops the thorax (what STERN's spatial
transformer should learn) sees it two to three times larger and without the distractors.
Every image's thorax (rib-cage) box is recorded beside its label, so a learned crop can
be scored against it.

The output is the kit's chest X-ray label format (see data_prep/README.md), read by
``stkit.data.read_cxr_labels`` / ``stkit.data.CXRDataset`` exactly like the converted
real datasets. This module is not a radiological simulator: the anatomy is a drawing.

    python -m data_prep.synthetic_cxr --out data/cxr_quick --size quick --seed 0
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from . import generator_cli
from .manifest import check_existing, manifest_key, write_manifest


GENERATOR_VERSION = "2.0"
REF = 256  # text sizes and blur are specified on a 256 px canvas and scaled to others

# Every parameter of the generator, with its default. Ranges are (low, high), drawn
# uniformly per image (integer ranges include both ends). Sizes in "fraction of the
# thorax width" scale with the drawn thorax, so lesions keep their relative size.
DEFAULTS = dict(
    canvas=256,                   # side of the square canvas, pixels
    n_images=2000,                # number of images
    abnormal_fraction=0.5,        # share of abnormal images, in every split
    split_fractions=(0.70, 0.15, 0.15),  # train/val/test share of images, split by patient
    images_per_patient=(1, 2),    # each patient has 1 or 2 images
    thorax_width=(0.40, 0.65),    # rib cage width / canvas width; at (0.32, 0.50) the no-STN baseline stayed at chance
    thorax_aspect=(0.80, 1.20),   # rib cage height / width
    max_rotation=4.0,             # degrees, the thorax is tilted by up to this much
    n_lesions=(1, 3),             # lesions per abnormal image
    lesion_radius=(0.025, 0.045), # nodule radius / thorax width
    lesion_contrast=(0.12, 0.25), # nodule peak brightness added (image in [0, 1]); learnable by a small CNN in ~15 CPU epochs
    opacity_fraction=0.25,        # share of lesions that are opacities, not nodules
    opacity_scale=(1.8, 2.8),     # opacity radius / nodule radius ...
    opacity_contrast=(0.45, 0.65),  # ... and its peak / nodule peak (larger, fainter)
    n_distractors=(2, 5),         # nodule-like blobs outside the lungs, any label
    distractor_contrast=(0.10, 0.25),
    n_text=(2, 5),                # burned-in text items outside the thorax
    noise=0.025,                  # Gaussian noise sigma per pixel, scaled by a Poisson-like sqrt(brightness)
    blur=(0.3, 0.9),              # Gaussian blur sigma, pixels at 256 px
    gamma=(0.80, 1.25),
    contrast=(0.85, 1.15),
    brightness=(-0.05, 0.05),
)

# Run sizes. "paper" is deliberately absent: the paper's recipe needs real radiographs
# (CheXpert, ChestX-ray14, VinDr-CXR), converted by data_prep.cxr_datasets.
SIZES = {
    "smoke": dict(canvas=128, n_images=96),    # CI: generated in under a second
    "quick": dict(canvas=256, n_images=2000),  # the main CPU job: about 20 s on one core
}

_RANGES = {k for k, v in DEFAULTS.items() if isinstance(v, tuple)}
_INT_RANGES = {"images_per_patient", "n_lesions", "n_distractors", "n_text"}


# --------------------------------------------------------------------------- parameters

def resolve_params(size: str = "quick", **overrides) -> dict:
    """DEFAULTS, then SIZES[size], then overrides; validated. Returns a plain dict."""
    if size == "paper":
        raise ValueError(
            "size='paper' has no synthetic data: the paper's recipe runs on real chest "
            "X-rays. Convert CheXpert, ChestX-ray14 or VinDr-CXR with "
            "`python -m data_prep.cxr_datasets` (see data_prep/README.md).")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZES)} (or 'paper' for real data)")
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"unknown synthetic_cxr parameter(s) {unknown}; known: {sorted(DEFAULTS)}")
    p = {**DEFAULTS, **SIZES[size], **overrides}
    for name in _RANGES:
        v = p[name]
        n = 3 if name == "split_fractions" else 2
        if not (isinstance(v, (tuple, list)) and len(v) == n and all(isinstance(x, (int, float)) for x in v)):
            raise ValueError(f"parameter {name} must be a sequence of {n} numbers, got {v!r}")
        if n == 2 and v[0] > v[1]:
            raise ValueError(f"parameter {name} must be (low, high) with low <= high, got {v!r}")
        if name in _INT_RANGES and not all(float(x).is_integer() and x >= 0 for x in v):
            raise ValueError(f"parameter {name} must hold non-negative integers, got {v!r}")
        p[name] = tuple(int(x) for x in v) if name in _INT_RANGES else tuple(float(x) for x in v)
    checks = [
        ("canvas", isinstance(p["canvas"], int) and 64 <= p["canvas"] <= 4096, "an integer in [64, 4096]"),
        ("n_images", isinstance(p["n_images"], int) and p["n_images"] >= 1, "a positive integer"),
        ("abnormal_fraction", 0 <= p["abnormal_fraction"] <= 1, "in [0, 1]"),
        ("opacity_fraction", 0 <= p["opacity_fraction"] <= 1, "in [0, 1]"),
        ("split_fractions", min(p["split_fractions"]) > 0 and abs(sum(p["split_fractions"]) - 1) < 1e-6,
         "three positive numbers summing to 1"),
        ("images_per_patient", p["images_per_patient"][0] >= 1, "at least 1"),
        ("n_lesions", p["n_lesions"][0] >= 1, "at least 1 (an abnormal image has a lesion)"),
        ("thorax_width", 0.2 <= p["thorax_width"][0] and p["thorax_width"][1] <= 0.8, "within [0.2, 0.8]"),
        ("thorax_aspect", 0.6 <= p["thorax_aspect"][0] and p["thorax_aspect"][1] <= 1.4, "within [0.6, 1.4]"),
        ("max_rotation", 0 <= p["max_rotation"] <= 15, "in [0, 15] degrees"),
        ("lesion_radius", 0.005 <= p["lesion_radius"][0] and p["lesion_radius"][1] <= 0.1, "within [0.005, 0.1]"),
        ("noise", 0 <= p["noise"] <= 0.5, "in [0, 0.5]"),
    ]
    for name, ok, what in checks:
        if not ok:
            raise ValueError(f"parameter {name} must be {what}, got {p[name]!r}")
    if p["n_images"] * min(p["split_fractions"]) < p["images_per_patient"][1]:
        raise ValueError(f"parameter n_images={p['n_images']} is too small: with split_fractions "
                         f"{p['split_fractions']} some split would get no patient")
    return p


# --------------------------------------------------------------------------- the plan

@dataclass
class Case:
    index: int          # image number, also the key of its random stream
    patient_id: str
    k: int              # image number within the patient
    split: str
    label: int

    @property
    def path(self) -> str:
        return f"images/{self.patient_id}_{self.k}.png"


def plan_cases(seed: int, p: dict) -> list[Case]:
    """Patients, splits (by patient, ~split_fractions of the images) and labels."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    lo, hi = p["images_per_patient"]
    counts, total = [], 0
    while total < p["n_images"]:
        c = min(int(rng.integers(lo, hi + 1)), p["n_images"] - total)
        counts.append(c)
        total += c
    order = rng.permutation(len(counts))            # patients in random order fill the splits
    edges = np.cumsum(p["split_fractions"])[:2] * p["n_images"]
    split_of, seen = {}, 0
    for j in order:
        split_of[j] = "train" if seen < edges[0] else "val" if seen < edges[1] else "test"
        seen += counts[j]
    cases = []
    for j, c in enumerate(counts):
        for k in range(c):
            cases.append(Case(len(cases), f"P{j + 1:05d}", k, split_of[j], 0))
    for split in ("train", "val", "test"):          # balanced labels within each split
        members = [c for c in cases if c.split == split]
        n_abn = int(round(p["abnormal_fraction"] * len(members)))
        for c, lab in zip(members, rng.permutation([1] * n_abn + [0] * (len(members) - n_abn))):
            c.label = int(lab)
    return cases


# --------------------------------------------------------------------------- anatomy
# Coordinates: (u, v) are the thorax's own axes, u = -1..1 from the image-left to the
# image-right edge of the rib cage, v = -1..1 from its top to its bottom. The patient's
# left is on the image right (PA view), so the heart bulges towards u > 0.

def _ramp(d, width):
    """Soft inside-indicator of a signed distance d (negative inside), edge `width` wide."""
    return np.clip(0.5 - d / width, 0.0, 1.0)


def _ellipse(u, v, cu, cv, a, b, edge):
    r = np.sqrt(((u - cu) / a) ** 2 + ((v - cv) / b) ** 2)
    return _ramp((r - 1) * min(a, b), edge)


def _superellipse(u, v, cu, cv, a, b, edge):
    """A rounded rectangle: |du/a|^4 + |dv/b|^4 < 1."""
    du, dv = ((u - cu) / a) ** 2, ((v - cv) / b) ** 2
    return _ramp((np.sqrt(np.sqrt(du * du + dv * dv)) - 1) * min(a, b), edge)


def body_outline(u, v, g, edge):
    """Soft tissue: torso, neck, shoulders and upper arms (1 in the body, 0 on the canvas)."""
    torso = _superellipse(u, v, 0, 0.35, g["body_w"], 1.40, edge * 2)
    neck = _superellipse(u, v, 0, -1.15, 0.28, 0.40, edge * 2)
    parts = [torso, neck]
    for side in (-1, 1):
        parts.append(_ellipse(u, v, side * 0.95, -0.92, 0.50, 0.20, edge * 2))      # shoulder
        parts.append(_superellipse(u, v, side * 1.42, 0.10, 0.17, 1.05, edge * 2))  # arm
    return np.maximum.reduce(parts)


def lung_fields(u, v, g, edge):
    """The two lungs as soft masks: round apex, wide base, a diaphragm dome below."""
    masks = []
    for side, dome in ((-1, g["dome_r"]), (1, g["dome_l"])):
        s = side * u                                      # lateral coordinate of this lung
        t = np.clip((v + 0.92) / 1.8, 0, 1)               # 0 at the apex .. 1 at the base
        lateral = 0.46 + g["lung_w"] * np.sqrt(np.minimum(t / 0.55, 1))
        medial = 0.46 - 0.32 * np.sqrt(np.minimum(t / 0.35, 1))
        dome_v = dome + 0.28 * ((s - 0.50) / 0.42) ** 2   # diaphragm: highest mid-lung
        d = np.maximum.reduce([s - lateral, medial - s, -0.92 - v, v - dome_v])
        masks.append(_ramp(d, edge))
    return masks


def heart_shadow(u, v, g, edge):
    """Heart over the lower mediastinum, bulging to the image right, and the aortic knob."""
    return np.maximum(_ellipse(u, v, 0.14, 0.48, g["heart_w"], 0.30, edge),
                      _ellipse(u, v, 0.15, -0.30, 0.09, 0.08, edge))


def spine(u, v, edge):
    """Vertebral column: a band with darker disc spaces."""
    band = _ramp(np.abs(u) - 0.07, edge)
    discs = 0.7 + 0.3 * np.cos(np.pi * v / 0.115) ** 2
    return band * discs


def ribs(u, v, g, edge):
    """Posterior ribs (both sides alike): arcs rising from the spine, then falling laterally."""
    s = np.abs(u)                                         # lateral coordinate
    arc = v + 0.55 * s - 0.75 * s ** 2                    # each rib follows arc(u, v) = const
    phase = g["n_ribs"] * (arc + 0.95) / 1.75 + g["rib_phase"]
    band = np.exp(-((np.mod(phase, 1.0) - 0.5) / 0.14) ** 2)
    cage = _ramp(np.sqrt((s / 0.98) ** 2 + (np.minimum(v, 0.0) / 1.02) ** 2) - 1, edge * 3)
    return band * cage * _ramp(0.09 - s, edge) * _ramp(v - 0.85, edge * 4) * _ramp(-0.95 - arc, edge)


def clavicles(u, v, edge):
    """Clavicles: two gently curved bands at the top of the thorax."""
    s = np.abs(u)
    centre = -0.80 - 0.30 * s + 0.16 * s ** 2
    return _ramp(np.abs(v - centre) - 0.04, edge) * _ramp(0.12 - s, edge) * _ramp(s - 1.0, edge)


def arm_bones(u, v, edge):
    """Humeral heads at the shoulders and the humeri down the arms."""
    parts = []
    for side in (-1, 1):
        parts.append(_ellipse(u, v, side * 1.30, -0.86, 0.14, 0.15, edge))
        parts.append(_ramp(np.maximum(np.abs(u - side * 1.38) - 0.06, np.abs(v - 0.1) - 0.95), edge))
    return np.maximum.reduce(parts)


def _smooth_noise(rng, shape, cell):
    """Low-frequency noise (blobs about `cell` pixels wide), roughly unit std."""
    small = rng.standard_normal((shape[0] // cell + 2, shape[1] // cell + 2)).astype(np.float32)
    big = Image.fromarray(small, mode="F").resize((small.shape[1] * cell, small.shape[0] * cell), Image.BICUBIC)
    return np.asarray(big)[: shape[0], : shape[1]] * 1.6


# --------------------------------------------------------------------------- blobs

def blob(x, y, cx, cy, rx, ry):
    """Nodule-like soft disc, 1 at the centre and 0.5 at radius (rx, ry)."""
    d = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return 0.5 * (1 - np.tanh((d - 1) / 0.3))


def _window(shape, cx, cy, r):
    """Slices of the pixels within 2.5 r of (cx, cy): a blob is ~0 beyond."""
    r = 2.5 * r + 1
    return (slice(max(0, int(cy - r)), min(shape[0], int(cy + r) + 1)),
            slice(max(0, int(cx - r)), min(shape[1], int(cx + r) + 1)))


def _place(rng, room, half, taken, tries=60):
    """A pixel centre where a square of half-size `half` fits inside `room` (a chessboard
    distance map) and keeps clear of the (x, y, r) circles in `taken`; or None."""
    ys, xs = np.nonzero(room >= math.ceil(half) + 1)
    for _ in range(tries if len(xs) else 0):
        i = rng.integers(len(xs))
        cx, cy = xs[i] + 0.5, ys[i] + 0.5
        if all(math.hypot(cx - tx, cy - ty) > half + tr + 2 for tx, ty, tr in taken):
            return cx, cy
    return None


def lesions(rng, x, y, field, width, p):
    """1-3 nodules/opacities strictly inside the lung `field` (bool). Returns image, boxes."""
    room = ndimage.distance_transform_cdt(field, metric="chessboard")
    img = np.zeros(field.shape, np.float32)
    boxes, taken = [], []
    for _ in range(int(rng.integers(p["n_lesions"][0], p["n_lesions"][1] + 1))):
        r = rng.uniform(*p["lesion_radius"]) * width
        c = rng.uniform(*p["lesion_contrast"])
        if rng.random() < p["opacity_fraction"]:
            r *= rng.uniform(*p["opacity_scale"])
            c *= rng.uniform(*p["opacity_contrast"])
            rx, ry = r * rng.uniform(0.75, 1.25), r * rng.uniform(0.75, 1.25)
        else:
            rx = ry = r
        at = _place(rng, room, max(rx, ry), taken)
        while at is None and max(rx, ry) > 1.5:           # a small lung: shrink, try again
            rx, ry = rx * 0.8, ry * 0.8
            at = _place(rng, room, max(rx, ry), taken)
        if at is None:
            continue
        cx, cy = at
        win = _window(field.shape, cx, cy, max(rx, ry))
        shape = blob(x[win], y[win], cx, cy, rx, ry)
        if rx != ry:                                       # opacities: patchy, not smooth
            shape *= 0.75 + 0.25 * _smooth_noise(rng, shape.shape, max(2, int(r / 2))).clip(-1, 1)
        img[win] += c * shape
        taken.append((cx, cy, max(rx, ry)))
        boxes.append((cx - rx, cy - ry, 2 * rx, 2 * ry))
    return img, boxes


def distractors(rng, x, y, lungs_any, width, p):
    """Nodule-look-alikes anywhere outside the lungs: on the canvas, body, text corners."""
    outside = np.pad(~lungs_any, 1)                        # the canvas border counts as 'lung'
    room = ndimage.distance_transform_cdt(outside, metric="chessboard")[1:-1, 1:-1]
    img = np.zeros(lungs_any.shape, np.float32)
    taken = []
    for _ in range(int(rng.integers(p["n_distractors"][0], p["n_distractors"][1] + 1))):
        r = rng.uniform(*p["lesion_radius"]) * width * rng.uniform(0.8, 1.5)
        at = _place(rng, room, 1.5 * r + 1, taken)
        if at is not None:
            win = _window(img.shape, at[0], at[1], r)
            img[win] += rng.uniform(*p["distractor_contrast"]) * blob(x[win], y[win], at[0], at[1], r, r)
            taken.append((at[0], at[1], r))
    return img


# --------------------------------------------------------------------------- text

_FONT = ImageFont.load_default_imagefont()   # PIL's built-in bitmap font: same on every machine
_MONTHS = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()


def _text_item(rng) -> Image.Image:
    """One burned-in annotation as a small grayscale image (on a 256 px canvas)."""
    kind = rng.integers(6)
    if kind == 0:                                           # side marker, large, maybe boxed
        glyph = Image.new("L", (8, 12))
        ImageDraw.Draw(glyph).text((1, 0), "LR"[rng.integers(2)], fill=255, font=_FONT)
        im = glyph.resize((16, 24), Image.NEAREST)
        if rng.random() < 0.5:
            framed = Image.new("L", (22, 30))
            framed.paste(im, (3, 3))
            ImageDraw.Draw(framed).rectangle((0, 0, 21, 29), outline=255)
            im = framed
        return im
    if kind == 5:                                           # ruler with ticks
        n, step = int(rng.integers(8, 16)), int(rng.integers(4, 7))
        im = Image.new("L", (n * step + 1, 9))
        d = ImageDraw.Draw(im)
        d.line((0, 0, n * step, 0), fill=255)
        for t in range(n + 1):
            d.line((t * step, 0, t * step, 8 if t % 5 == 0 else 4), fill=255)
        return im if rng.random() < 0.5 else im.rotate(90, expand=True)
    words = [
        lambda: ["PORTABLE", "SUPINE", "ERECT", "AP", "PA", "UPRIGHT"][rng.integers(6)],
        lambda: f"{rng.integers(1, 29):02d}-{_MONTHS[rng.integers(12)]}-{rng.integers(2001, 2024)}",
        lambda: f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}",
        lambda: f"ID {rng.integers(10 ** 5, 10 ** 6)}" if rng.random() < 0.5 else
                f"{rng.integers(70, 125)} kVp {rng.integers(1, 9)} mAs",
    ]
    s = words[kind - 1]()
    x0, y0, x1, y1 = _FONT.getbbox(s)
    im = Image.new("L", (x1 + 2, y1 + 2))
    ImageDraw.Draw(im).text((1, 1), s, fill=255, font=_FONT)
    return im


def text_layer(rng, canvas, keep_out, p):
    """Burned-in text, markers and rulers, none touching the `keep_out` box (x0, y0, x1, y1)."""
    layer = Image.new("L", (REF, REF))
    f = REF / canvas
    boxes = [tuple(c * f for c in keep_out)]
    for _ in range(int(rng.integers(p["n_text"][0], p["n_text"][1] + 1))):
        im = _text_item(rng)
        w, h = im.size
        for _ in range(30):
            x, y = int(rng.integers(2, REF - w - 1)), int(rng.integers(2, REF - h - 1))
            if all(x + w < a or x > c or y + h < b or y > d for a, b, c, d in boxes):
                layer.paste(im, (x, y))
                boxes.append((x - 3, y - 3, x + w + 3, y + h + 3))
                break
    if canvas != REF:
        layer = layer.resize((canvas, canvas), Image.BILINEAR)
    return np.asarray(layer, np.float32) / 255


# --------------------------------------------------------------------------- one image

@dataclass
class Rendered:
    image: np.ndarray        # (S, S) uint8
    boxes: list              # [(x, y, w, h)] lesion boxes, pixel-edge coordinates
    lung_field: np.ndarray   # (S, S) bool: where lesions may lie (lungs minus heart)
    lungs: np.ndarray        # (S, S) bool: anywhere a lung is (distractors stay off it)
    thorax_box: tuple        # (x, y, w, h) of the rib cage, for judging a learned crop


def render_case(seed: int, index: int, abnormal: bool, p: dict) -> Rendered:
    """Draw image `index` of the data set with this seed. Anatomy, lesions, distractors
    and text each have their own random stream, keyed by (seed, index): an image is the
    same drawing whatever its label and whatever the other images are, and changing, say,
    the number of distractors leaves the rest of the drawing as it was."""
    anat, les, dis, txt = (np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, index, k)))
                           for k in range(4))
    S, k = p["canvas"], p["canvas"] / REF
    x, y = np.meshgrid(np.arange(S, dtype=np.float32) + 0.5, np.arange(S, dtype=np.float32) + 0.5)

    # placement of the thorax on the canvas
    W = anat.uniform(*p["thorax_width"]) * S
    H = anat.uniform(*p["thorax_aspect"]) * W
    t = math.radians(anat.uniform(-p["max_rotation"], p["max_rotation"]))
    hx = abs(math.cos(t)) * W / 2 + abs(math.sin(t)) * H / 2
    hy = abs(math.sin(t)) * W / 2 + abs(math.cos(t)) * H / 2
    cx, cy = anat.uniform(hx + 1, S - hx - 1), anat.uniform(hy + 1, S - hy - 1)
    u = ((x - cx) * math.cos(t) + (y - cy) * math.sin(t)) / (W / 2)
    v = (-(x - cx) * math.sin(t) + (y - cy) * math.cos(t)) / (H / 2)
    edge = 2.5 / W                                   # ~1 px soft edges, in u units

    g = dict(body_w=anat.uniform(1.08, 1.18), lung_w=anat.uniform(0.42, 0.48),
             dome_r=anat.uniform(0.52, 0.62), dome_l=anat.uniform(0.58, 0.68),
             heart_w=anat.uniform(0.38, 0.46), n_ribs=anat.uniform(8.5, 10),
             rib_phase=anat.uniform(0, 1))
    body = body_outline(u, v, g, edge)
    lung_r, lung_l = lung_fields(u, v, g, edge)
    lung = np.maximum(lung_r, lung_l)
    heart = heart_shadow(u, v, g, edge)
    bone = spine(u, v, edge) * body
    texture = _smooth_noise(anat, (S, S), max(2, round(6 * k)))
    hila = np.exp(-(((np.abs(u) - 0.22) / 0.12) ** 2 + ((v - 0.05) / 0.2) ** 2))

    img = anat.uniform(0.02, 0.07) + 0.03 * (y / S)       # detector background
    img = img + body * anat.uniform(0.36, 0.46) + 0.05 * body * np.clip(v - 0.5, 0, 1)
    img = img - lung * (1 - 0.8 * heart) * anat.uniform(0.20, 0.26)
    img = img + lung * (0.012 * texture + 0.06 * hila)
    img = img + heart * 0.04 + bone * 0.06
    img = img + ribs(u, v, g, edge) * body * anat.uniform(0.05, 0.08)
    img = img + clavicles(u, v, edge) * 0.10 + arm_bones(u, v, edge) * 0.10 * body

    field = (lung > 0.99) & (heart < 0.01)           # lesions: lungs, not behind the heart
    lungs_any = lung > 0.01
    img = img + distractors(dis, x, y, lungs_any, W, p)
    corners = [(i * W / 2, j * H / 2) for i in (-1.06, 1.06) for j in (-1.06, 1.02)]
    px = [cx + a * math.cos(t) - b * math.sin(t) for a, b in corners]
    py = [cy + a * math.sin(t) + b * math.cos(t) for a, b in corners]
    keep_out = (min(px), min(py), max(px), max(py))
    text = text_layer(txt, S, keep_out, p) * txt.uniform(0.75, 0.95)

    # global acquisition variation: the same whatever the label
    blur = anat.uniform(*p["blur"]) * k
    gamma, contrast = anat.uniform(*p["gamma"]), anat.uniform(*p["contrast"])
    bright = anat.uniform(*p["brightness"])
    noise = anat.standard_normal((S, S)).astype(np.float32)
    boxes = []
    if abnormal:
        lesion_img, boxes = lesions(les, x, y, field, W, p)
        img = img + lesion_img
    img = np.maximum(img, text)
    img = ndimage.gaussian_filter(img.astype(np.float32), blur)
    img = np.clip(img, 0, 1) ** gamma * contrast + bright
    img = img + noise * p["noise"] * np.sqrt(0.3 + 0.7 * np.clip(img, 0, 1))  # Poisson-like
    out = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)

    rib_cage = [(cx + a * W / 2 * math.cos(t) - b * H / 2 * math.sin(t),
                 cy + a * W / 2 * math.sin(t) + b * H / 2 * math.cos(t)) for a in (-1, 1) for b in (-1, 1)]
    xs, ys = [q[0] for q in rib_cage], [q[1] for q in rib_cage]
    thorax = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
    return Rendered(out, boxes, field, lungs_any, thorax)


# --------------------------------------------------------------------------- the data set

def _incomplete(out: Path, manifest: dict) -> str | None:
    """What is missing from a folder whose manifest matches (None: nothing)."""
    want = manifest["params"]["n_images"]
    n_png = len(list((out / "images").glob("*.png"))) if (out / "images").is_dir() else 0
    if not (out / "labels.csv").is_file() or n_png != want:
        return f"labels.csv or images are missing ({n_png} of {want} PNGs)"
    return None


def generate_synthetic_cxr(out_dir, size: str = "quick", seed: int = 0, verbose: bool = True,
                           **overrides) -> Path:
    """Write a synthetic chest X-ray data set; return the path of its labels.csv.

    out_dir/images/<patient_id>_<k>.png   8-bit grayscale radiographs
    out_dir/labels.csv                    the kit's label format (one row per lesion box), plus
                                          thorax_x, thorax_y, thorax_w, thorax_h: the image's
                                          rib-cage box in pixels (the same on each of its rows)
    out_dir/thorax.csv                    path, x, y, w, h: the same boxes, one row per image
    out_dir/manifest.json                 generator version, seed, all parameters; written last

    The same seed and parameters give byte-identical files. An existing folder with the
    same manifest is reused; any other non-empty folder raises FileExistsError.
    """
    p = resolve_params(size, **overrides)
    out = Path(out_dir)
    key = manifest_key("data_prep.synthetic_cxr", GENERATOR_VERSION, int(seed), p)
    if check_existing(out, key, _incomplete):
        if verbose:
            print(f"reusing synthetic chest X-rays in {out} (same generator, seed and parameters)")
        return out / "labels.csv"
    t0 = time.perf_counter()
    (out / "images").mkdir(parents=True, exist_ok=True)
    cases = plan_cases(int(seed), p)
    rows, thorax_rows = [], []
    for c in cases:
        r = render_case(int(seed), c.index, bool(c.label), p)
        Image.fromarray(r.image, mode="L").save(out / c.path, optimize=False)
        base = [c.path, c.label, c.patient_id, c.split]
        thorax = [f"{b:.2f}" for b in r.thorax_box]       # repeated on every row of the image
        if r.boxes:
            rows += [base + [f"{b:.2f}" for b in box] + thorax for box in r.boxes]
        else:
            rows.append(base + [""] * 4 + thorax)
        thorax_rows.append([c.path] + thorax)
    _write_csv(out / "labels.csv", ["path", "label", "patient_id", "split", "box_x", "box_y", "box_w", "box_h",
                                    "thorax_x", "thorax_y", "thorax_w", "thorax_h"], rows)
    _write_csv(out / "thorax.csv", ["path", "x", "y", "w", "h"], thorax_rows)
    summary = {s: {"images": sum(c.split == s for c in cases),
                   "abnormal": sum(c.split == s and c.label == 1 for c in cases),
                   "patients": len({c.patient_id for c in cases if c.split == s})}
               for s in ("train", "val", "test")}
    write_manifest(out, {**key, "size": size, "summary": summary})   # its presence marks a complete data set
    if verbose:
        print(f"wrote {len(cases)} synthetic chest X-rays ({p['canvas']} px) to {out} "
              f"in {time.perf_counter() - t0:.1f} s: " +
              ", ".join(f"{s} {v['images']} ({v['abnormal']} abnormal)" for s, v in summary.items()))
    return out / "labels.csv"


def ensure_labels(data_dir, run_size: str, seed: int = 0, labels_csv=None) -> Path:
    """The label CSV a notebook or command works on.

    ``labels_csv`` (a converted real data set) if given; otherwise the built-in synthetic
    chest X-rays of ``run_size``, generated on first use into
    ``data_dir/cxr_<size>_seed<seed>`` and reused afterwards (see
    :func:`generate_synthetic_cxr`). The ``paper`` size needs real data.
    """
    if labels_csv:
        path = Path(labels_csv)
        if not path.is_file():
            raise FileNotFoundError(f"LABELS_CSV {path} not found")
        return path
    if run_size == "paper":
        raise ValueError("RUN_SIZE='paper' needs real data: set LABELS_CSV to a kit-format label CSV "
                         "(data_prep/README.md explains the CheXpert, ChestX-ray14 and VinDr-CXR converters)")
    return Path(generate_synthetic_cxr(Path(data_dir) / f"cxr_{run_size}_seed{seed}", size=run_size, seed=seed))


def _write_csv(path: Path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def main(argv=None):
    generator_cli.run(argv, "python -m data_prep.synthetic_cxr", "Generate the kit's synthetic chest X-ray data set.", SIZES, generate_synthetic_cxr,
                      "--set n_images=500 --set lesion_contrast=[0.08,0.12]")


if __name__ == "__main__":
    main()
