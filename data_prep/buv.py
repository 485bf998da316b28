"""Prepare the real BUV videos (CVA-Net, MICCAI 2022) for the kit: check, correct, summarise.

    python -m data_prep.buv --src /data/BUV --out data/buv_clean

``--src`` is the download as distributed: ``rawframes/{benign,malignant}/<video>/NNNNNN.png``,
``imagenet_vid_train_15frames.json`` and ``imagenet_vid_val.json``. `prepare_buv`

1. checks the layout and both JSONs with stkit.data.buv (file names, ids, categories,
   boxes, one class per video, no empty video), each video's frame files (present,
   numbered contiguously) and, unless ``decode=False``, that every frame decodes and has
   the size its JSON entry says;
2. normalises boxes drawn right-to-left or bottom-up (negative width/height): same
   rectangle, positive size; none is dropped;
3. applies the published errata (``errata=True``, the default; table ERRATA below):
   drops the benign copy of a duplicated video, relabels four same-patient videos
   malignant; and reports the known train/val near-duplicate pair and any other videos
   that share identical frames;
4. writes the cleaned JSONs, in the same format, into a NEW folder ``--out`` with a link
   ``rawframes`` to the source frames and ``prepare_report.json``. The source is only
   read. A second run with the same inputs finds the same files and writes nothing; an
   output folder holding anything else is refused, as is one inside the source.

It ends with a table: videos, frames, boxes, benign/malignant videos per split. The data
are for research and education only; request them from the CVA-Net authors.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

from PIL import Image

from stkit.data.buv import (CATEGORIES, FRAMES_DIR, SPLIT_FILES, BUVFormatError, check_listed_frames,
                            frame_path, load_json, normalise_box, parse_split)

# The published errata. Videos are matched by their folder name (the README writes them
# both as "rawframes/benign/x..." and "benign\x..."). Edit this table if your copy of
# the data differs; `prepare_buv(..., errata=False)` skips the drop and the relabelling.
ERRATA = {
    "drop": {   # video -> why (CVA-Net README, news of 2023-03-25)
        "x66ef02e7f1b9a0ef": "identical to malignant/x3b88488853e8b7d1; the benign copy is wrong (CVA-Net README)",
    },
    "relabel_malignant": {   # same patient, several acquisitions (CVA-Net README, 2023-03-25)
        "x63c9ba1377f35bf6": "same patient as three other videos; correct label malignant (CVA-Net README)",
        "x5a1c46ec6377e946": "same patient as three other videos; correct label malignant (CVA-Net README)",
        "2390fbea047347b": "same patient as three other videos; correct label malignant (CVA-Net README)",
        "7a39ab5d4970bf89": "same patient as three other videos; correct label malignant (CVA-Net README)",
    },
    "near_duplicates": [   # reported, never changed: a train video nearly identical to a val video
        ("x1282311c38f808f", "x9c1c965d274c457",
         "106 of 110 frames pixel-identical, opposite labels (independent audit; not in the CVA-Net README)"),
    ],
}
REPORT = "prepare_report.json"


def _video_id(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _check_paths(src: Path, out: Path):
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: BUV folder not found")
    if out == src or src in out.parents:
        raise ValueError(f"--out {out} lies inside the source {src}; the source is never written to. "
                         "Choose a folder outside it.")
    missing = [str(src / n) for n in [FRAMES_DIR, *SPLIT_FILES.values()] if not (src / n).exists()]
    if missing:
        raise FileNotFoundError(f"{src} is not a BUV download: missing {', '.join(missing)} (expected "
                                f"{FRAMES_DIR}/, {', '.join(SPLIT_FILES.values())})")


def decode_frames(src: Path, split, ranges: dict, hashes: dict):
    """Decode every frame of every video of a split; check the listed frames' sizes; record
    a hash of each frame's pixels in ``hashes`` (hash -> [(video, frame)])."""
    for name, (first, last) in ranges.items():
        listed = split.videos[name].frames
        for i in range(first, last + 1):
            path = frame_path(src, name, i)
            try:
                with Image.open(path) as im:
                    im.load()
                    size, pixels = im.size, im.tobytes()
            except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, zlib.error, ...
                where = f" (images[{listed[i].entry}] of {split.path})" if i in listed else ""
                raise BUVFormatError(f"{path}: cannot decode frame ({type(e).__name__}: {e}){where}") from e
            f = listed.get(i)
            if f is not None and size != (f.width, f.height):
                raise BUVFormatError(f"{split.path}: images[{f.entry}] (id {f.image_id}) says {f.width}x{f.height} "
                                     f"(width x height) but {path} is {size[0]}x{size[1]}")
            hashes[hashlib.blake2b(pixels, digest_size=12).digest()].append((name, i))


def shared_frames(hashes: dict, min_frames: int = 3) -> list[tuple[str, str, int]]:
    """Pairs of videos with at least ``min_frames`` pixel-identical frames: (a, b, count)."""
    count = defaultdict(int)
    for where in hashes.values():
        videos = sorted({v for v, _ in where})
        for i, a in enumerate(videos):
            for b in videos[i + 1:]:
                count[a, b] += 1
    return sorted((a, b, n) for (a, b), n in count.items() if n >= min_frames)


def _clean(data: dict, split, errata: bool, log: list) -> dict:
    """The cleaned copy of one split's JSON: boxes normalised, errata applied."""
    out = copy.deepcopy(data)
    drop = set(ERRATA["drop"]) if errata else set()
    relabel = set(ERRATA["relabel_malignant"]) if errata else set()
    keep_ids, dropped_vids = set(), set()
    for name, video in split.videos.items():
        vid = _video_id(name)
        if vid in drop:
            log.append(f"{split.path.name}: dropped {name} ({len(video.frames)} frames): {ERRATA['drop'][vid]}")
            continue
        if vid in relabel:
            was = CATEGORIES[video.label]
            log.append(f"{split.path.name}: {name} relabelled malignant (was {was}" +
                       (", unchanged)" if video.label == 2 else ")") + f": {ERRATA['relabel_malignant'][vid]}")
        keep_ids.update(f.image_id for f in video.frames.values())
    relabel_ids = {f.image_id for n, v in split.videos.items() if _video_id(n) in relabel for f in v.frames.values()}
    dropped_vids = {im.get("video_id") for im in out["images"] if im["id"] not in keep_ids}
    out["images"] = [im for im in out["images"] if im["id"] in keep_ids]
    anns = []
    for a in out["annotations"]:
        if a["image_id"] not in keep_ids:
            continue
        x, y, w, h = normalise_box(*a["bbox"])
        a["bbox"], a["area"] = [x, y, w, h], w * h
        if a["image_id"] in relabel_ids:
            a["category_id"] = 2
        anns.append(a)
    out["annotations"] = anns
    if isinstance(out.get("videos"), list) and dropped_vids - {None}:
        kept_vids = {im.get("video_id") for im in out["images"]}
        gone = dropped_vids - kept_vids
        out["videos"] = [v for v in out["videos"] if not (isinstance(v, dict) and v.get("id") in gone)]
    return out


def summarise(splits: dict) -> dict:
    """Per split: videos, frames (listed), boxes, benign and malignant videos."""
    return {name: {"videos": len(s.videos), "frames": s.n_frames, "boxes": s.n_boxes,
                   "benign": sum(v.label == 1 for v in s.videos.values()),
                   "malignant": sum(v.label == 2 for v in s.videos.values())}
            for name, s in splits.items()}


def format_table(summary: dict) -> str:
    cols = ["videos", "frames", "boxes", "benign", "malignant"]
    lines = [f"{'split':<8}" + "".join(f"{c:>11}" for c in cols)]
    for split, row in summary.items():
        lines.append(f"{split:<8}" + "".join(f"{row[c]:>11}" for c in cols))
    return "\n".join(lines)


def _validate(src: Path, decode: bool):
    """Read and check both splits of the source: (raw JSON dicts, BUVSplits, notes)."""
    raw, splits, notes, hashes = {}, {}, [], defaultdict(list)
    for split, fname in SPLIT_FILES.items():
        raw[split] = load_json(src / fname)
        splits[split] = parse_split(raw[split], src / fname)
        ranges = check_listed_frames(src, splits[split])
        if decode:
            decode_frames(src, splits[split], ranges, hashes)
    both = sorted(set(splits["train"].videos) & set(splits["val"].videos))
    if both:
        notes.append(f"{len(both)} video(s) in both train and val: {', '.join(both[:5])}")
    for split, s in splits.items():
        off = [n for n, v in s.videos.items() if CATEGORIES[v.label] != v.folder_class]
        if off:
            notes.append(f"{split}: {len(off)} video(s) whose boxes' category differs from their folder: {', '.join(off[:5])}")
        if s.unused_video_entries:
            notes.append(f"{split}: {len(s.unused_video_entries)} 'videos' entr(ies) with no frame in 'images': "
                         f"{', '.join(s.unused_video_entries[:5])}")
        if s.n_negative:
            notes.append(f"{split}: {s.n_negative} box(es) with negative width or height, normalised")
    on_disk = {f"{c.name}/{v.name}" for c in (src / FRAMES_DIR).iterdir() if c.is_dir() for v in c.iterdir() if v.is_dir()}
    unused = sorted(on_disk - set(splits["train"].videos) - set(splits["val"].videos))
    if unused:
        notes.append(f"{len(unused)} video folder(s) in {FRAMES_DIR}/ listed in neither JSON: {', '.join(unused[:5])}")
    return raw, splits, notes, hashes


def _duplicates(splits: dict, hashes: dict, decode: bool) -> list[str]:
    """Report lines: the known near-duplicate pair(s), and videos sharing identical frames."""
    where = {_video_id(n): (split, n) for split, s in splits.items() for n in s.videos}
    lines = []
    for a, b, why in ERRATA["near_duplicates"]:
        if a in where and b in where:
            lines.append(f"known near-duplicate pair: {where[a][1]} ({where[a][0]}) and {where[b][1]} "
                         f"({where[b][0]}): {why}; kept as distributed")
    split_of = {n: split for split, s in splits.items() for n in s.videos}
    for a, b, n in shared_frames(hashes) if decode else []:
        lines.append(f"identical frames: {a} ({split_of[a]}) and {b} ({split_of[b]}) share {n} pixel-identical frame(s)")
    return lines


def prepare_buv(src, out, errata: bool = True, decode: bool = True, verbose: bool = True) -> dict:
    """Check the BUV download in ``src`` and write the cleaned JSONs into ``out`` (see the
    module docstring). Returns the report: summary (after cleaning), source summary,
    errata log, duplicate and other notes, and whether anything was written."""
    src, out = Path(src).resolve(), Path(out).resolve()
    _check_paths(src, out)
    raw, splits, notes, hashes = _validate(src, decode)
    log = []
    cleaned = {split: _clean(raw[split], splits[split], errata, log) for split in SPLIT_FILES}
    if errata:
        seen = {_video_id(n) for s in splits.values() for n in s.videos}
        for vid in [*ERRATA["drop"], *ERRATA["relabel_malignant"]]:
            if vid not in seen:
                log.append(f"errata: video {vid} is not in this copy of the data (nothing to do)")
    after = {split: parse_split(cleaned[split], out / SPLIT_FILES[split]) for split in SPLIT_FILES}
    report = {"source": str(src), "errata_applied": errata, "summary": summarise(after),
              "source_summary": summarise(splits), "errata": log,
              "duplicates": _duplicates(splits, hashes, decode), "notes": notes}
    files = {SPLIT_FILES[s]: json.dumps(cleaned[s]) for s in SPLIT_FILES}
    files[REPORT] = json.dumps(report, indent=2) + "\n"
    report["written"] = _write_outputs(src, out, files)
    if verbose:
        for line in log + report["duplicates"] + notes:
            print(line)
        print(("wrote" if report["written"] else "up to date, nothing written:") + f" {out}")
        if report["source_summary"] != report["summary"]:
            print("source:\n" + format_table(report["source_summary"]) + "\nprepared:")
        print(format_table(report["summary"]))
    return report


def _write_outputs(src: Path, out: Path, files: dict) -> bool:
    """Write ``files`` and the rawframes link into ``out`` all at once (a temporary folder
    renamed into place). False if ``out`` already holds exactly these; raises if it holds
    anything else."""
    link = out / FRAMES_DIR
    if out.exists() and any(out.iterdir()):
        same = (link.is_symlink() and Path(os.readlink(link)) == src / FRAMES_DIR and
                {p.name for p in out.iterdir()} == {FRAMES_DIR, *files} and
                all((out / n).read_text() == text for n, text in files.items()))
        if same:
            return False
        raise FileExistsError(f"{out} is not empty and does not hold this preparation's output; nothing was "
                              "changed. Delete it yourself or choose another --out folder.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)                     # mkdtemp makes it private; a plain folder is not
    try:
        for name, text in files.items():
            (tmp / name).write_text(text)
        os.symlink(src / FRAMES_DIR, tmp / FRAMES_DIR, target_is_directory=True)
        for split in SPLIT_FILES:                     # the written files read back as valid BUV
            check_listed_frames(tmp, parse_split(load_json(tmp / SPLIT_FILES[split]), tmp / SPLIT_FILES[split]))
        if out.exists():
            out.rmdir()                               # empty: checked above
        os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m data_prep.buv",
                                 description="Check the BUV download, apply the errata, write cleaned JSONs.")
    ap.add_argument("--src", required=True, help="the BUV download: rawframes/ and the two JSONs (only read)")
    ap.add_argument("--out", required=True, help="a new folder (outside --src) for the cleaned JSONs")
    ap.add_argument("--no-errata", action="store_true", help="keep the duplicate video and the original labels")
    ap.add_argument("--no-decode", action="store_true", help="skip decoding every frame (faster, weaker check)")
    a = ap.parse_args(argv)
    try:
        prepare_buv(a.src, a.out, errata=not a.no_errata, decode=not a.no_decode)
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as e:
        ap.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    main()
