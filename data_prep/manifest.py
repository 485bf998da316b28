"""The manifest that marks a generated data set as complete, shared by the generators.

A generator writes ``manifest.json`` last (generator, version, seed, parameters, counts),
so its presence means the folder is finished. :func:`check_existing` decides whether a
folder may be reused (same manifest, files present), filled (absent or empty), or must be
left alone (anything else: someone's files, an interrupted run, another data set).
It knows nothing about what the files contain; each generator says what "complete" means.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable


def manifest_key(generator: str, version: str, seed: int, params: dict) -> dict:
    """What two data sets must share to be the same (JSON round trip: tuples become lists)."""
    return json.loads(json.dumps({"generator": generator, "version": version, "seed": seed, "params": params}))


def _differences(old: dict, key: dict) -> list[str]:
    params = old.get("params") or {}
    diff = sorted(n for n in set(key["params"]) | set(params) if params.get(n) != key["params"].get(n))
    return [n for n in ("version", "seed") if old.get(n) != key[n]] + diff


def check_existing(out: Path, key: dict, incomplete: Callable[[Path, dict], str | None]) -> bool:
    """True when ``out`` holds this exact data set; False when it is absent or empty (ours
    to fill); FileExistsError otherwise. ``incomplete(out, manifest)`` returns what is
    missing from a folder whose manifest matches, or None when nothing is."""
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
        raise FileExistsError(f"{out} holds a different synthetic data set (differs in: "
                              f"{', '.join(_differences(old, key)) or 'generator'}). Nothing was changed; "
                              "choose another folder or delete it yourself.")
    missing = incomplete(out, old)
    if missing:
        raise FileExistsError(f"{out} has a matching manifest.json but {missing}. Nothing was changed; delete it and regenerate.")
    return True


def write_manifest(out: Path, data: dict) -> None:
    """Write ``out/manifest.json`` atomically: its presence marks a complete data set."""
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, out / "manifest.json")
