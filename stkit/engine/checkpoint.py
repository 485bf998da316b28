"""The kit's checkpoint format: one place that writes, reads and vets checkpoint files.

A checkpoint is a dict of tensors, plain containers (dict, list, tuple), strings, numbers,
booleans and None, and nothing else, so it loads with ``torch.load(weights_only=True)``:
a downloaded or shared checkpoint can never run code on load. Every checkpoint carries a
``record`` (a plain dict saying what produced it: stage settings, seed, model config,
data); resuming compares it with the record of the run that wants to resume and refuses
a mismatch instead of silently continuing, or overwriting, someone else's run.

Files are written to a temporary name and renamed, so an interrupted save never leaves a
half-written checkpoint under the real name.

This module knows nothing about models or training loops; ``stkit.engine.trainer`` uses it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

__all__ = ["save", "write_json", "plain", "load", "check_record", "rng_state", "set_rng_state", "CheckpointMismatch"]

_PLAIN = (str, int, float, bool, type(None))


class CheckpointMismatch(FileExistsError):
    """A checkpoint on disk belongs to another configuration (it is left untouched)."""


def _check_plain(obj, where: str = "checkpoint") -> None:
    """Raise TypeError naming the first entry that weights_only loading would reject."""
    if isinstance(obj, (torch.Tensor, *_PLAIN)):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}; checkpoint keys must be str or int")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(obj).__name__}; checkpoints hold only tensors, plain containers and numbers")


def _atomic(path: str | Path, write) -> Path:
    """``write(tmp)`` to a temporary name beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary file, then rename)."""
    _check_plain(payload)
    return _atomic(path, lambda tmp: torch.save(payload, tmp))


def write_json(path: str | Path, data, indent: int = 1) -> Path:
    """A run's JSON file (results, history) written atomically like a checkpoint."""
    text = json.dumps(data, indent=indent, default=float)
    return _atomic(path, lambda tmp: tmp.write_text(text))


def plain(obj):
    """Tuples -> lists, paths -> strings: what a record looks like after a checkpoint round trip."""
    return json.loads(json.dumps(obj, default=str))


def load(path: str | Path, map_location: str | torch.device | None = "cpu") -> dict:
    """Read a checkpoint with ``weights_only=True``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle.UnpicklingError, RuntimeError (zip), EOFError (truncated)
        raise ValueError(f"{path}: not a readable stkit checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, dict) or "record" not in ckpt:
        raise ValueError(f"{path}: not a stkit checkpoint (no 'record' entry)")
    return ckpt


def _differences(saved, now, prefix: str = "") -> list[str]:
    """Dotted names of the entries where two records differ."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for k in sorted(set(saved) | set(now), key=str):
            out += _differences(saved.get(k, "<missing>"), now.get(k, "<missing>"), f"{prefix}{k}.")
        return out
    return [] if saved == now else [f"{prefix[:-1]}: saved {saved!r}, now {now!r}"]


def check_record(path: str | Path, saved: dict, now: dict) -> None:
    """Raise :class:`CheckpointMismatch` listing what differs when ``saved != now``."""
    diff = _differences(saved, now)
    if diff:
        raise CheckpointMismatch(
            f"{path} belongs to a different configuration; refusing to resume or overwrite it. "
            "Use another output folder or delete it yourself. Differences:\n  " + "\n  ".join(diff[:12])
        )


def rng_state() -> dict:
    """PyTorch's global random state (CPU and every CUDA device) as plain tensors."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`; CUDA states are restored only where devices exist."""
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
