"""Image preparation: the images of a kit label CSV (DICOM, large PNG/JPEG) -> PNGs of one
size, with a new label CSV whose boxes are scaled to them.

    python -m data_prep.prepare_images --labels data/vindr/labels.csv --out data/vindr_512 --size 512

Writes out/images/<source path below the images' common folder>.png, out/labels.csv (the
kit's format: same rows, paths to the PNGs, boxes scaled, plus orig_path, orig_height,
orig_width) and out/prepare.json (the settings). The originals are only read.

- Idempotent: a PNG that exists is finished and is not written again; a second run with
  the same settings writes nothing. Other settings in the same folder are refused.
- Resumable: every file is written to a hidden temporary name and renamed when complete,
  so a killed run leaves only temporaries (removed on the next run), never a half PNG.
- Parallel: a process pool (``workers``, default all cores); each output depends only on
  its source and the settings, so the result is the same for any number of workers.
- Ends with a table of images, patients, normal/abnormal per split.
Decoding (DICOM VOI LUT / window, MONOCHROME1, rescale, bit depth) is stkit.data.images'.
Not an augmentation step: no crops, no flips, no contrast changes beyond the decoding.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from stkit.data.cxr_labels import BOX, read_cxr_labels
from stkit.data.images import VOI_MODES, ImageDecodeError, image_size, load_cxr_image

from .csvtools import rel, summary, write_new_csv

VERSION = 1


@dataclass
class PrepConfig:
    size: tuple = (512, 512)   # (H, W) of every output PNG; boxes are scaled to it
    bits: int = 8              # 8 or 16 bits per pixel in the PNGs
    voi: str = "auto"          # DICOM intensity window: "auto" (VOI LUT / window / bit range) or "minmax"


def _task(job):
    """Worker: (source, target, cfg dict) -> (H0, W0) of the source; writes target if absent.
    Errors come back as a string so that the parent names the CSV line."""
    src, dst, cfg = job
    try:
        if os.path.exists(dst):
            return image_size(src), False
        a = load_cxr_image(src, voi=cfg["voi"])                 # (H0, W0) float32 in [0, 1]
        h, w = cfg["size"]
        im = Image.fromarray(a).resize((w, h), Image.Resampling.BILINEAR)   # antialiased
        top = 255 if cfg["bits"] == 8 else 65535
        q = np.round(np.clip(np.asarray(im, np.float64), 0, 1) * top).astype(np.uint8 if top == 255 else np.uint16)
        tmp = os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.{os.getpid()}.partial")
        try:
            Image.fromarray(q).save(tmp, format="PNG")
            os.replace(tmp, dst)                                  # complete, or absent
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return a.shape, True
    except (OSError, ValueError) as e:
        return str(e) if str(src) in str(e) else f"{src}: {type(e).__name__}: {e}", False


def _plan(df, labels: Path, out: Path) -> tuple[list, list]:
    """Unique source images (absolute) and their targets under out/images, with checks."""
    first = df.drop_duplicates("path")
    srcs = [Path(os.path.abspath(p if Path(p).is_absolute() else labels.parent / p)) for p in first.path]
    root = Path(os.path.commonpath([str(s.parent) for s in srcs]))
    o = Path(os.path.abspath(out))
    if o == root or root in o.parents or o in root.parents:
        raise ValueError(f"{out}: the output folder must lie outside the source images' folder {root} "
                         "(and not contain it): the originals are never touched")
    dsts = [o / "images" / s.relative_to(root).with_suffix(".png") for s in srcs]
    seen = {}
    for s, d, line in zip(srcs, dsts, first.csv_line):
        if d in seen:
            raise ValueError(f"{labels}, line {line}: {s} and {seen[d]} would both become {d}")
        seen[d] = s
    return srcs, dsts


def _settings(out: Path, labels: Path, cfg: PrepConfig) -> None:
    """Record the settings in out/prepare.json, or check that they match a previous run's."""
    want = {"version": VERSION, "labels": str(labels.resolve()),
            "labels_sha256": hashlib.sha256(labels.read_bytes()).hexdigest(),
            **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}}
    path = out / "prepare.json"
    if path.is_file():
        have = json.loads(path.read_text())
        diff = sorted(k for k in set(want) | set(have) if k != "labels" and want.get(k) != have.get(k))
        if diff:
            raise FileExistsError(f"{out} holds images prepared with other settings ({', '.join(diff)}); "
                                  "choose another --out")
        return
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty and has no prepare.json: not a folder of this command")
    out.mkdir(parents=True, exist_ok=True)
    write_new_csv(lambda tmp: open(tmp, "x").write(json.dumps(want, indent=1) + "\n"), path)


def _run(jobs, workers: int, progress: bool):
    """Results of _task in job order, on `workers` processes (1: in this process)."""
    try:
        from tqdm import tqdm
    except ImportError:                                          # pragma: no cover
        def tqdm(it, **kw):
            return it
    bar = dict(total=len(jobs), unit="img", disable=not progress, file=sys.stderr, desc="preparing")
    if workers <= 1:
        yield from tqdm(map(_task, jobs), **bar)
        return
    import multiprocessing                                       # fork where there is one: workers run
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    pool = ProcessPoolExecutor(workers, mp_context=ctx)          # no torch, so a parent's threads are harmless
    try:
        yield from tqdm(pool.map(_task, jobs, chunksize=8), **bar)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def prepare_images(labels, out, size=512, *, bits=8, voi="auto", workers=None, progress=True, verbose=True):
    """Prepare the images of the label CSV `labels` into folder `out` (module docstring).
    size: int (square) or (H, W). Returns the path of out/labels.csv."""
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1 or bits not in (8, 16) or voi not in VOI_MODES:
        raise ValueError(f"need a positive size, bits 8 or 16, voi in {VOI_MODES}; got {size}, {bits}, {voi!r}")
    cfg = PrepConfig(size=(h, w), bits=bits, voi=voi)
    labels, out = Path(labels), Path(out)
    df = read_cxr_labels(labels)
    srcs, dsts = _plan(df, labels, out)
    _settings(out, labels, cfg)
    for stale in (out / "images").rglob(".*.partial") if (out / "images").is_dir() else []:
        stale.unlink()                                           # a killed run's temporaries
    for d in sorted({d.parent for d in dsts}):
        d.mkdir(parents=True, exist_ok=True)
    jobs = [(str(s), str(d), asdict(cfg)) for s, d in zip(srcs, dsts)]
    first = df.drop_duplicates("path")
    sizes, written = {}, 0
    results = _run(jobs, workers or os.cpu_count() or 1, progress)
    try:
        for p, line, (res, new) in zip(first.path, first.csv_line, results):
            if isinstance(res, str):
                raise ImageDecodeError(f"{res} (listed in {labels}, line {line}); no PNG was made for it")
            sizes[p], written = tuple(res), written + new
    finally:
        results.close()                                          # stops the pool, cancels what is queued
    new_csv = _relabel(df, labels, out, dict(zip(first.path, dsts)), sizes, cfg)
    if verbose:
        print(f"{out}: {written} images written, {len(dsts) - written} already there")
        print(summary(new_csv).to_string())
    return _write_if_new(new_csv, out / "labels.csv")


def _relabel(df, labels, out, dst_of, sizes, cfg):
    """The new label table: PNG paths, boxes checked against the original size and scaled."""
    h, w = cfg.size
    h0 = df.path.map(lambda p: sizes[p][0]).astype(float)
    w0 = df.path.map(lambda p: sizes[p][1]).astype(float)
    outside = (df.box_x < -1) | (df.box_y < -1) | (df.box_x + df.box_w > w0 + 1) | (df.box_y + df.box_h > h0 + 1)
    if outside.any():
        i = outside.to_numpy().argmax()
        r = df.iloc[i]
        raise ValueError(f"{labels}, line {r.csv_line}: box ({r.box_x:g}, {r.box_y:g}, {r.box_w:g}, {r.box_h:g}) "
                         f"lies outside its {h0.iloc[i]:g}x{w0.iloc[i]:g} image {r.path}")
    new = df.drop(columns="csv_line").copy()
    csv_path = out / "labels.csv"
    new["orig_path"] = [rel(Path(p) if Path(p).is_absolute() else labels.parent / p, csv_path) for p in df.path]
    new["orig_height"], new["orig_width"] = h0.astype(int), w0.astype(int)
    new["path"] = [rel(dst_of[p], csv_path) for p in df.path]
    for c, scale in zip(BOX, (w / w0, h / h0, w / w0, h / h0)):
        new[c] = new[c] * scale
    return new


def _write_if_new(table, path: Path) -> Path:
    """Write path unless it already holds exactly this table (a second run writes nothing)."""
    def writer(tmp):
        with open(tmp, "x", newline="") as f:
            table.to_csv(f, index=False, float_format="%.3f", lineterminator="\n")
        read_cxr_labels(tmp)
    if path.exists():
        probe = path.parent / f".{path.name}.{os.getpid()}.check"
        try:
            writer(probe)
            same = probe.read_bytes() == path.read_bytes()
        finally:
            probe.unlink(missing_ok=True)
        if not same:
            raise FileExistsError(f"{path} exists with other contents; nothing was overwritten")
        return path
    return write_new_csv(writer, path)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m data_prep.prepare_images", description=__doc__.split("\n")[0])
    ap.add_argument("--labels", required=True, help="a kit label CSV (from data_prep.cxr_datasets)")
    ap.add_argument("--out", required=True, help="new folder (outside the source images' folder)")
    ap.add_argument("--size", default="512", help="N (square) or HxW, e.g. 512 or 512x640")
    ap.add_argument("--bits", type=int, choices=(8, 16), default=8)
    ap.add_argument("--voi", choices=VOI_MODES, default="auto", help="DICOM intensity window")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    a = ap.parse_args(argv)
    parts = a.size.lower().split("x")
    if not (1 <= len(parts) <= 2 and all(p.isdigit() for p in parts)):
        ap.error(f"--size {a.size!r}: expected N or HxW, e.g. 512 or 512x640")
    size = int(parts[0]) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    try:
        prepare_images(a.labels, a.out, size, bits=a.bits, voi=a.voi, workers=a.workers)
    except (OSError, ValueError) as e:
        ap.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    main()
