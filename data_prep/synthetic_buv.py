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

The image formation lives in data_prep.bmode; this module holds the parameters, the plan
(videos, splits, classes) and writes the files, in exactly the BUV layout (stkit.data.buv),
read by the same code as the real download. A drawing with the look of B-mode, not an
acoustic simulator.

    python -m data_prep.synthetic_buv --out data/buv_quick --size quick --seed 0
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from stkit.data.buv import FRAMES_DIR, SPLIT_FILES

from . import generator_cli
from .manifest import check_existing, manifest_key, write_manifest
from .bmode import render_video  # noqa: F401  (the image formation; re-exported)


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


def _incomplete(out: Path, manifest: dict) -> str | None:
    """What is missing from a folder whose manifest matches (None: nothing)."""
    n_png = sum(1 for _ in (out / FRAMES_DIR).rglob("*.png")) if (out / FRAMES_DIR).is_dir() else 0
    missing = [f for f in SPLIT_FILES.values() if not (out / f).is_file()]
    if missing or n_png != manifest.get("summary", {}).get("frames"):
        return f"files are missing ({n_png} PNG frames, missing {missing or 'no JSON'})"
    return None


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
    key = manifest_key("data_prep.synthetic_buv", GENERATOR_VERSION, int(seed), p)
    if check_existing(out, key, _incomplete):
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
    write_manifest(out, {**key, "size": size, "summary": summary})   # its presence marks a complete data set
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
    generator_cli.run(argv, "python -m data_prep.synthetic_buv", "Generate the kit's synthetic breast-ultrasound videos (BUV format).", SIZES, generate_synthetic_buv,
                      "--set n_train=48 --set fade_fraction=0.2")


if __name__ == "__main__":
    main()
