"""B-mode ultrasound image formation for the kit's synthetic videos (data_prep.synthetic_buv).

A drawn breast fixed in world coordinates (x lateral, z depth; the imaged depth is 1 at
zoom 1): reflectivity and attenuation of skin, fat with Cooper's ligaments, glandular
tissue and pectoral muscle, and scatterers. A probe (linear: a rectangle; convex: a fan)
looks at it from a pose that changes frame by frame. Per frame, in the probe's beam grid:

    intensity = |PSF * (sqrt(reflectivity) * scatterers)|^2 * exp(-k * attenuation along the beam) * gain(depth)

then log compression to the displayed dynamic range and, for a fan, scan conversion. One
lesion per video (benign: smooth, wider than tall, capsule, weak attenuation; malignant:
spiculated, taller than wide, halo, strong attenuation = posterior shadow) moves, deforms
and in some frames fades into the speckle. A drawing with the look of B-mode, not an
acoustic simulator; it writes no files (synthetic_buv does).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

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
