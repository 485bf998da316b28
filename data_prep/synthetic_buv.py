"""Synthetic breast-ultrasound videos in the BUV format: the kit's built-in default for STNet.

Each video is a B-mode sweep over a drawn breast: skin line, subcutaneous fat crossed by
bright Cooper's ligaments, textured fibroglandular tissue, striated pectoral muscle. The
image forms like an ultrasound image does, in the probe's beam coordinates: scatterers
fixed in the tissue (so the speckle moves with it) are weighted by the tissue's
reflectivity, blurred by an anisotropic point-spread function (longer across the beam),
attenuated along each beam (an attenuating lesion casts a shadow behind it, a weakly
attenuating one brightens what is behind it), lifted by a depth-dependent gain curve and
log-compressed. A linear probe gives a rectangular image, a convex probe a fan. The probe
moves between frames (lateral translation and a slight zoom); one lesion per video moves
and deforms smoothly; in a few short runs of frames it fades into the speckle, so that a
detector gains from looking at neighbouring frames.

Benign lesions: smooth ovals, wider than tall, thin bright capsule, posterior enhancement.
Malignant lesions: irregular, spiculated margin, taller than wide, posterior shadow.

Written in exactly the BUV layout (stkit.data.buv), read by the same code as the real
download. This is a drawing with the look of B-mode, not an acoustic simulator.

    python -m data_prep.synthetic_buv --out data/buv_quick --size quick --seed 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from stkit.data.buv import FRAMES_DIR, SPLIT_FILES

GENERATOR_VERSION = "1.0"

# Every parameter, with its default. Ranges are (low, high), drawn per video (or per frame).
# Lengths are in units of the imaged depth at zoom 1 (the image is 1 deep).
DEFAULTS = dict(
    height=128,                   # frame height, pixels
    width=160,                    # frame width, pixels
    n_train=24,                   # videos in the train JSON
    n_val=8,                      # videos in the val JSON
    frames=(20, 28),              # frames per video (both ends included)
    malignant_fraction=0.5,       # share of malignant videos in each split
    fan_fraction=0.3,             # share of videos from a convex probe (fan), the rest linear
    lesion_size=(0.24, 0.36),     # lesion's long axis: benign width, malignant height
    lesion_depth=(0.38, 0.55),    # depth of the lesion centre
    fade_fraction=0.12,           # share of frames in which the lesion fades into the speckle
    fade_contrast=(0.0, 0.25),    # lesion contrast left in a faded frame (1 = full)
    probe_shift=0.10,             # amplitude of the probe's lateral sweep
    zoom=0.06,                    # amplitude of the zoom change (0.06 = +-6 %)
    speckle_decorrelation=0.25,   # share of speckle power renewed each frame (0 = frozen)
    dynamic_range=42.0,           # dB shown between black and white
    negative_boxes=0.03,          # share of boxes written right-to-left (w < 0) or bottom-up (h < 0)
)

SIZES = {
    "smoke": dict(height=64, width=80, n_train=4, n_val=2, frames=(6, 8)),   # CI: about a second
    "quick": dict(),                      # the CPU job: 32 videos of 128x160 px, ~770 frames
}

_RANGES = ("frames", "lesion_size", "lesion_depth", "fade_contrast")


def resolve_params(size: str = "quick", **overrides) -> dict:
    """DEFAULTS, then SIZES[size], then overrides; validated. Returns a plain dict."""
    if size == "paper":
        raise ValueError("size='paper' has no synthetic data: the paper's recipe runs on the real BUV "
                         "videos. Prepare the download with `python -m data_prep.buv` (data_prep/README.md).")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZES)} (or 'paper' for real data)")
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"unknown synthetic_buv parameter(s) {unknown}; known: {sorted(DEFAULTS)}")
    p = {**DEFAULTS, **SIZES[size], **overrides}
    for name in _RANGES:
        v = p[name]
        if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v) and v[0] <= v[1]):
            raise ValueError(f"parameter {name} must be (low, high) with low <= high, got {v!r}")
        p[name] = (int(v[0]), int(v[1])) if name == "frames" else (float(v[0]), float(v[1]))
    checks = [
        ("height", isinstance(p["height"], int) and 32 <= p["height"] <= 2048, "an integer in [32, 2048]"),
        ("width", isinstance(p["width"], int) and 32 <= p["width"] <= 2048, "an integer in [32, 2048]"),
        ("n_train", isinstance(p["n_train"], int) and p["n_train"] >= 1, "a positive integer"),
        ("n_val", isinstance(p["n_val"], int) and p["n_val"] >= 1, "a positive integer"),
        ("frames", p["frames"][0] >= 3, "at least 3 frames"),
        ("malignant_fraction", 0 <= p["malignant_fraction"] <= 1, "in [0, 1]"),
        ("fan_fraction", 0 <= p["fan_fraction"] <= 1, "in [0, 1]"),
        ("lesion_size", 0.05 <= p["lesion_size"][0] and p["lesion_size"][1] <= 0.5, "within [0.05, 0.5]"),
        ("lesion_depth", 0.2 <= p["lesion_depth"][0] and p["lesion_depth"][1] <= 0.7, "within [0.2, 0.7]"),
        ("fade_fraction", 0 <= p["fade_fraction"] <= 0.5, "in [0, 0.5]"),
        ("fade_contrast", 0 <= p["fade_contrast"][0] and p["fade_contrast"][1] <= 1, "within [0, 1]"),
        ("probe_shift", 0 <= p["probe_shift"] <= 0.3, "in [0, 0.3]"),
        ("zoom", 0 <= p["zoom"] <= 0.2, "in [0, 0.2]"),
        ("speckle_decorrelation", 0 <= p["speckle_decorrelation"] <= 1, "in [0, 1]"),
        ("dynamic_range", 10 <= p["dynamic_range"] <= 80, "in [10, 80] dB"),
        ("negative_boxes", 0 <= p["negative_boxes"] <= 1, "in [0, 1]"),
    ]
    for name, ok, what in checks:
        if not ok:
            raise ValueError(f"parameter {name} must be {what}, got {p[name]!r}")
    return p


# --------------------------------------------------------------------------- the plan

def plan_videos(seed: int, p: dict) -> list[dict]:
    """Name, split, class and frame count of every video (classes balanced per split)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    plan = []
    for split, n in (("train", p["n_train"]), ("val", p["n_val"])):
        n_mal = int(round(p["malignant_fraction"] * n))
        for cls in rng.permutation(["malignant"] * n_mal + ["benign"] * (n - n_mal)):
            k = len(plan)
            plan.append(dict(index=k, name=f"{cls}/v{k:03d}", split=split, malignant=cls == "malignant",
                             n_frames=int(rng.integers(p["frames"][0], p["frames"][1] + 1))))
    return plan


def _smooth(rng, shape, cell):
    """Low-frequency noise with blobs about `cell` samples wide, roughly unit std."""
    small = rng.standard_normal((shape[0] // cell + 3, shape[1] // cell + 3))
    return ndimage.zoom(small, cell, order=3)[: shape[0], : shape[1]] * 1.3


class Tissue:
    """One video's breast, fixed in world coordinates (x lateral, z depth): reflectivity,
    attenuation and scatterers, sampled on a grid of `res` samples per unit length."""

    X0, X1, Z0, Z1 = -1.6, 1.6, -0.35, 1.6          # the world region any probe pose can see

    def __init__(self, rng, res: int):
        self.res = res
        shape = (int((self.Z1 - self.Z0) * res), int((self.X1 - self.X0) * res))
        z, x = np.meshgrid(np.linspace(self.Z0, self.Z1, shape[0]), np.linspace(self.X0, self.X1, shape[1]), indexing="ij")
        wav = lambda a, f: a * np.sin(f * x + rng.uniform(0, 2 * np.pi))           # noqa: E731
        skin = 0.035 + wav(0.004, 3)
        fat = 0.20 + wav(0.04, rng.uniform(1.5, 3)) + wav(0.015, 7)
        gland = 0.72 + wav(0.05, rng.uniform(1, 2.5))
        muscle = gland + 0.16 + wav(0.02, 4)
        tex = _smooth(rng, shape, max(2, res // 16))
        lig = np.exp(-((np.sin(np.pi * (z * rng.uniform(9, 13) + 0.5 * _smooth(rng, shape, max(2, res // 8)))) / 0.18) ** 2))
        refl = np.where(z < skin, 4.0, 0.0)
        refl += np.where((z >= skin) & (z < fat), 0.12 + 0.04 * tex + 2.5 * lig * (tex > -0.3), 0)
        refl += np.where((z >= fat) & (z < gland), np.clip(1.3 + 0.7 * tex, 0.3, None), 0)
        stria = 0.5 + 0.5 * np.sin(2 * np.pi * (z * 28 + 0.6 * x))
        refl += np.where((z >= gland) & (z < muscle), 0.25 + 0.9 * stria ** 3, 0)
        refl += np.where(z >= muscle, 0.07 + 0.03 * tex, 0)
        refl += 2.2 * np.exp(-((z - fat) / 0.008) ** 2) + 1.6 * np.exp(-((z - muscle) / 0.008) ** 2)
        self.refl = np.where(z < 0, 0.0, np.maximum(refl, 0.02)).astype(np.float32)   # nothing above the skin
        self.atten = np.select([z < fat, z < gland, z < muscle], [1.0, 1.3, 1.6], 1.2).astype(np.float32)
        self.scatter = (rng.standard_normal((2, *shape)) / math.sqrt(2)).astype(np.float32)

    def sample(self, arr, x, z, order=1):
        """Values of a world-grid array at world points (x, z) (arrays of one shape)."""
        coords = [(z - self.Z0) * self.res, (x - self.X0) * self.res]
        return ndimage.map_coordinates(arr, coords, order=order, mode="nearest")


# --------------------------------------------------------------------------- lesion

class Lesion:
    """One lesion: an outline r <= rho(phi) in its own ellipse coordinates, moving and
    deforming smoothly with the frame time t in [0, 1]."""

    def __init__(self, rng, malignant: bool, p: dict):
        size = rng.uniform(*p["lesion_size"])
        self.malignant = malignant
        if malignant:                                  # taller than wide
            self.b = size / 2
            self.a = self.b / rng.uniform(1.15, 1.5)
        else:                                          # wider than tall
            self.a = size / 2
            self.b = self.a / rng.uniform(1.4, 2.0)
        self.x0, self.z0 = rng.uniform(-0.05, 0.05), rng.uniform(*p["lesion_depth"])
        self.tilt = rng.uniform(-0.2, 0.2) if not malignant else rng.uniform(-0.1, 0.1)
        k = np.arange(2, 7)
        self.harm_k, self.harm_phase = k, rng.uniform(0, 2 * np.pi, k.size)
        self.harm_amp = rng.uniform(0.04, 0.10, k.size) / np.sqrt(k - 1) if malignant else rng.uniform(0, 0.02, k.size)
        n_spic = int(rng.integers(7, 13)) if malignant else 0
        self.spic = rng.uniform(0, 2 * np.pi, n_spic), rng.uniform(0.25, 0.6, n_spic), rng.uniform(0.05, 0.09, n_spic)
        self.motion = rng.uniform(0.3, 0.9, 4), rng.uniform(0, 2 * np.pi, 4)

    def pose(self, t: float):
        """Centre, semi-axes and tilt at time t: a slow drift and a compression wobble."""
        f, ph = self.motion
        w = np.sin(2 * np.pi * f * t + ph)
        return (self.x0 + 0.03 * w[0], self.z0 + 0.02 * w[1],
                self.a * (1 + 0.07 * w[2]), self.b * (1 - 0.05 * w[2]), self.tilt + 0.08 * w[3])

    def shape(self, x, z, t: float):
        """(inside, rim): soft inside-indicator in [0, 1] and the signed normalised distance
        to the outline (negative inside), at world points (x, z)."""
        cx, cz, a, b, tilt = self.pose(t)
        dx, dz = x - cx, z - cz
        u = (dx * np.cos(tilt) + dz * np.sin(tilt)) / a
        v = (-dx * np.sin(tilt) + dz * np.cos(tilt)) / b
        r, phi = np.hypot(u, v), np.arctan2(v, u)
        rho = 1 + sum(amp * np.cos(k * phi + ph + 0.6 * t) for k, amp, ph in zip(self.harm_k, self.harm_amp, self.harm_phase))
        for ang, amp, width in zip(*self.spic):
            d = np.angle(np.exp(1j * (phi - ang - 0.15 * t)))       # wrapped angle difference
            rho = rho + amp * np.exp(-(d / width) ** 2)
        dist = r - rho
        return np.clip(0.5 - dist / 0.08, 0, 1), dist

    def echo(self, inside, dist):
        """(reflectivity, attenuation) of the lesion and its margin, given shape()."""
        if self.malignant:                              # dark, heterogeneous; echogenic halo; shadowing
            margin = 0.9 * np.exp(-((dist - 0.12) / 0.10) ** 2) * (dist > 0)
            return 0.07 * inside + margin, 10.0
        capsule = 4.0 * np.exp(-(dist / 0.08) ** 2)      # thin bright capsule; posterior enhancement
        return 0.10 * inside + capsule, 0.2


# --------------------------------------------------------------------------- one video

ATTEN_K = 1.5          # attenuation per unit of depth and unit of the attenuation map
PSF_SIGMA = (0.6, 1.2)  # point-spread function, pixels (along the beam, across it)


class Probe:
    """Where each sample of the (H, W) beam grid lies in the world for a probe pose, and how
    the beam grid maps to the displayed image (identity for a linear probe, a fan else)."""

    def __init__(self, rng, p: dict, fan: bool):
        self.h, self.w, self.fan = p["height"], p["width"], fan
        aspect = self.w / self.h
        self.d = (np.arange(self.h) + 0.5) / self.h                     # depth of each beam row
        across = (np.arange(self.w) + 0.5) / self.w - 0.5
        if fan:
            self.r0 = rng.uniform(0.5, 0.8)                             # apex above the skin
            self.theta_max = math.asin(0.95 * aspect / 2 / (self.r0 + 1))
            self.lat = across * 2 * self.theta_max                      # beam angles
            X = across * aspect
            Y = self.d[:, None] + self.r0
            r = np.hypot(X[None, :], Y) - self.r0
            th = np.arctan2(X[None, :], Y)
            self.valid = (r >= 0) & (r <= 1) & (np.abs(th) <= self.theta_max)
            self.coords = [r * self.h - 0.5, (th / (2 * self.theta_max) + 0.5) * self.w - 0.5]
        else:
            self.lat = across * aspect
            self.valid = np.ones((self.h, self.w), bool)
        self.motion = rng.uniform(0.3, 0.8, 3), rng.uniform(0, 2 * np.pi, 3)

    def pose(self, t: float, p: dict):
        """(lateral offset, depth offset, zoom) at time t: a sweep, a small push, a zoom drift."""
        f, ph = self.motion
        w = np.sin(2 * np.pi * f * t + ph)
        return p["probe_shift"] * w[0], 0.015 * w[1], 1 + p["zoom"] * w[2]

    def world(self, t: float, p: dict):
        """World (x, z) of every beam-grid sample, (H, W) each, and the zoom."""
        px, pz, s = self.pose(t, p)
        d = self.d[:, None]
        if self.fan:
            rr = self.r0 + d
            return px + s * rr * np.sin(self.lat), pz + s * (rr * np.cos(self.lat) - self.r0), s
        return px + s * self.lat + 0 * d, pz + s * d + 0 * self.lat, s

    def display(self, a, cval=0.0):
        """A beam-grid array as the displayed image (scan conversion for a fan)."""
        if not self.fan:
            return a
        return np.where(self.valid, ndimage.map_coordinates(a, self.coords, order=1, mode="nearest"), cval)


def fade_schedule(rng, n: int, p: dict) -> np.ndarray:
    """Lesion contrast per frame: 1, except short runs (1-3 frames) where it fades."""
    f = np.ones(n)
    target = int(round(p["fade_fraction"] * n))
    while target > 0 and (f < 1).sum() < target:
        run = int(rng.integers(1, 4))
        start = int(rng.integers(0, n - run + 1))
        f[start:start + run] = np.minimum(f[start:start + run], rng.uniform(*p["fade_contrast"]))
    return f


def render_video(seed: int, index: int, malignant: bool, n_frames: int, p: dict):
    """Frames (n, H, W) uint8, lesion boxes [(x, y, w, h)] per frame (pixel edges), the
    fade factor per frame and whether the probe is a fan. Random streams are keyed by
    (seed, video index), so a video does not change when other videos do."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, index)))
    fresh = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, index)))
    probe = Probe(rng, p, fan=bool(rng.random() < p["fan_fraction"]))
    tissue = Tissue(rng, res=2 * p["height"])
    lesion = Lesion(rng, malignant, p)
    fade = fade_schedule(rng, n_frames, p)
    comp, gain_db = rng.uniform(0.65, 0.9), rng.uniform(-2, 2)          # TGC compensation, overall gain
    h, w = p["height"], p["width"]
    ticks = np.zeros((h, w), bool)
    frames, boxes, ref_db = [], [], None
    for k in range(n_frames):
        t = k / max(1, n_frames - 1)
        x, z, s = probe.world(t, p)
        refl, atten = tissue.sample(tissue.refl, x, z), tissue.sample(tissue.atten, x, z)
        inside, dist = lesion.shape(x, z, t)
        l_refl, l_att = lesion.echo(inside, dist)
        m = inside * fade[k]
        refl = refl * (1 - m) + l_refl * fade[k]
        atten = atten * (1 - m) + l_att * m
        e = p["speckle_decorrelation"]
        field = [math.sqrt(1 - e) * tissue.sample(c, x, z) * 1.6 + math.sqrt(e) * fresh.standard_normal((h, w)) / math.sqrt(2)
                 for c in tissue.scatter]                                  # speckle moves with the tissue
        field = [ndimage.gaussian_filter(c * np.sqrt(refl), PSF_SIGMA) for c in field]
        inten = field[0] ** 2 + field[1] ** 2
        path = np.cumsum(atten, axis=0) * s / h                             # attenuation along each beam
        tgc = np.exp(ATTEN_K * 1.3 * comp * s * probe.d)[:, None] * (0.7 + 0.3 * np.clip(probe.d / 0.12, 0, 1))[:, None]
        db = 10 * np.log10(inten * np.exp(-ATTEN_K * path) * tgc + 1e-9) + gain_db
        if ref_db is None:
            ref_db = float(np.percentile(db, 99.5))                         # one gain for the whole video
        img = probe.display(np.clip(1 + (db - ref_db) / p["dynamic_range"], 0, 1) ** 1.5)
        ticks[:] = False
        depth_marks = np.arange(0.1, 1.0, 0.1) / s
        ticks[(depth_marks[depth_marks < 1] * h).astype(int), w - 3:w - 1] = True
        img = np.where(ticks, 0.85, img)                                   # depth scale at the right edge
        frames.append(np.round(img * 255).astype(np.uint8))
        boxes.append(_box(probe.display((inside > 0.5).astype(np.float32)) > 0.5, index, k))
    return np.stack(frames), boxes, fade, probe.fan


def _box(mask: np.ndarray, index: int, k: int):
    """Bounding box (x, y, w, h) of a mask in pixel-edge coordinates."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        raise RuntimeError(f"synthetic video {index}, frame {k}: the lesion left the field of view")
    return float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())


# --------------------------------------------------------------------------- the data set

def _coco(videos: list[dict], rng, p: dict) -> dict:
    """The COCO JSON of one split from rendered videos (dicts with name, boxes, malignant)."""
    images, anns = [], []
    for vid, v in enumerate(videos, start=1):
        for k, (x, y, bw, bh) in enumerate(v["boxes"]):
            iid = len(images) + 1
            images.append({"id": iid, "file_name": f"{v['name']}/{k:06d}.png", "width": p["width"],
                           "height": p["height"], "video_id": vid, "frame_id": k})
            anns.append({"id": len(anns) + 1, "image_id": iid, "bbox": [x, y, bw, bh],
                         "category_id": 2 if v["malignant"] else 1, "area": bw * bh, "iscrowd": 0})
    n_neg = int(round(p["negative_boxes"] * len(anns)))
    if p["negative_boxes"] > 0:
        n_neg = max(1, n_neg)
    for j in rng.choice(len(anns), size=min(n_neg, len(anns)), replace=False):
        x, y, bw, bh = anns[j]["bbox"]                      # drawn right-to-left (or bottom-up)
        anns[j]["bbox"] = [x + bw, y, -bw, bh] if rng.random() < 0.75 else [x, y + bh, bw, -bh]
    return {"info": {"description": "stkit synthetic breast-ultrasound videos (BUV format)"},
            "videos": [{"id": vid, "name": v["name"]} for vid, v in enumerate(videos, start=1)],
            "images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "benign"}, {"id": 2, "name": "malignant"}]}


def _manifest_key(seed, p):
    return json.loads(json.dumps({"generator": "data_prep.synthetic_buv", "version": GENERATOR_VERSION,
                                  "seed": seed, "params": p}))


def _check_existing(out: Path, key: dict) -> bool:
    """True when `out` already holds this exact data set; raise when it holds anything
    else; False when it is absent or empty (then it is ours to fill)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return False
    manifest = out / "manifest.json"
    if not manifest.is_file():
        raise FileExistsError(f"{out} is not empty and has no manifest.json: an interrupted generation or "
                              "someone else's files. Nothing was changed; delete it yourself or choose another folder.")
    try:
        old = json.loads(manifest.read_text())
    except (OSError, ValueError) as e:
        raise FileExistsError(f"{manifest} is unreadable ({e}); nothing was changed") from e
    if {k: old.get(k) for k in key} != key:
        diff = sorted(n for n in set(key["params"]) | set(old.get("params") or {})
                      if (old.get("params") or {}).get(n) != key["params"].get(n))
        diff = (["seed"] if old.get("seed") != key["seed"] else []) + diff
        raise FileExistsError(f"{out} holds a different synthetic data set (differs in: "
                              f"{', '.join(diff) or 'generator version'}). Nothing was changed; "
                              "choose another folder or delete it yourself.")
    n_png = sum(1 for _ in (out / FRAMES_DIR).rglob("*.png")) if (out / FRAMES_DIR).is_dir() else 0
    missing = [f for f in SPLIT_FILES.values() if not (out / f).is_file()]
    if missing or n_png != old.get("summary", {}).get("frames"):
        raise FileExistsError(f"{out} has a matching manifest.json but files are missing ({n_png} PNG frames, "
                              f"missing {missing or 'no JSON'}). Nothing was changed; delete it and regenerate.")
    return True


def _write_json(path: Path, data: dict):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def generate_synthetic_buv(out_dir, size: str = "quick", seed: int = 0, verbose: bool = True, **overrides) -> Path:
    """Write a synthetic BUV-format data set into ``out_dir`` and return ``out_dir``.

    out_dir/rawframes/{benign,malignant}/v<NNN>/<NNNNNN>.png   8-bit grey frames
    out_dir/imagenet_vid_train_15frames.json, imagenet_vid_val.json   COCO detection JSONs
    out_dir/manifest.json   generator version, seed, parameters, counts; written last

    The same seed and parameters give byte-identical files. A folder holding the same
    manifest is reused; any other non-empty folder raises FileExistsError.
    """
    p = resolve_params(size, **overrides)
    out = Path(out_dir)
    key = _manifest_key(int(seed), p)
    if _check_existing(out, key):
        if verbose:
            print(f"reusing synthetic BUV videos in {out} (same generator, seed and parameters)")
        return out
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    done = {"train": [], "val": []}
    faded = fans = 0
    for v in plan_videos(int(seed), p):
        frames, boxes, fade, fan = render_video(int(seed), v["index"], v["malignant"], v["n_frames"], p)
        folder = out / FRAMES_DIR / v["name"]
        folder.mkdir(parents=True, exist_ok=True)
        for k, f in enumerate(frames):
            Image.fromarray(f, mode="L").save(folder / f"{k:06d}.png", optimize=False)
        done[v["split"]].append({**v, "boxes": boxes})
        faded += int((fade < 1).sum())
        fans += fan
    summary = {"frames": sum(len(v["boxes"]) for vs in done.values() for v in vs), "faded_frames": faded,
               "fan_videos": fans}
    for k, (split, videos) in enumerate(done.items()):
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(3, k)))
        _write_json(out / SPLIT_FILES[split], _coco(videos, rng, p))
        summary[split] = {"videos": len(videos), "malignant": sum(v["malignant"] for v in videos),
                          "frames": sum(len(v["boxes"]) for v in videos)}
    _write_json(out / "manifest.json", {**key, "size": size, "summary": summary})   # marks it complete
    if verbose:
        print(f"wrote {summary['frames']} frames of {p['n_train'] + p['n_val']} synthetic ultrasound videos "
              f"({p['height']}x{p['width']} px) to {out} in {time.perf_counter() - t0:.1f} s: " +
              ", ".join(f"{s} {summary[s]['videos']} videos ({summary[s]['malignant']} malignant)" for s in done))
    return out


def ensure_buv(data_dir, run_size: str, seed: int = 0) -> Path:
    """The synthetic BUV folder of ``run_size``: generated on first use into
    ``data_dir/buv_<size>_seed<seed>`` and reused afterwards. The ``paper`` size needs the
    real videos (prepare them with ``python -m data_prep.buv``)."""
    if run_size == "paper":
        raise ValueError("RUN_SIZE='paper' needs the real BUV videos: prepare the download with "
                         "`python -m data_prep.buv --src <download> --out <folder>` and point BUV_DIR at it")
    return generate_synthetic_buv(Path(data_dir) / f"buv_{run_size}_seed{seed}", size=run_size, seed=seed)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m data_prep.synthetic_buv",
                                 description="Generate the kit's synthetic breast-ultrasound videos (BUV format).")
    ap.add_argument("--out", required=True, help="output folder (created; never overwritten)")
    ap.add_argument("--size", default="quick", help=f"one of {sorted(SIZES)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a parameter, e.g. --set n_train=48 --set fade_fraction=0.2")
    a = ap.parse_args(argv)
    overrides = {}
    for item in a.set:
        name, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set expects NAME=VALUE, got {item!r}")
        try:
            overrides[name.strip()] = json.loads(value)
        except ValueError:
            ap.error(f"--set {name}: {value!r} is not a number or a JSON list")
    try:
        print(generate_synthetic_buv(a.out, a.size, a.seed, **overrides))
    except (ValueError, TypeError, FileExistsError) as e:
        ap.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    main()
