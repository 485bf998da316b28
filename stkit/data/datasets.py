"""The real datasets the papers use: where to request them, their terms, how to prepare them.

    DATASETS["chexpert"].request                      # where to ask for it
    require_data("buv", DATA_DIR, RUN_SIZE)           # paper size: the prepared file, or a clear stop

The kit never downloads or ships them; ``smoke`` and ``quick`` sizes use the built-in
synthetic sets. :func:`require_data` stops a ``paper``-size run at once when the
prepared data is not where it should be, with the request address, the terms and the
preparation command in the message. This module reads no data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Dataset", "DATASETS", "MissingDataError", "require_data", "require_datasets", "missing_data_message"]


@dataclass(frozen=True)
class Dataset:
    name: str  # as the papers call it
    used_by: str  # which notebooks / commands read it
    request: str  # where to request it
    terms: str  # licence or use agreement
    prepare: str  # the command that turns the download into the kit's format (DATA_DIR in it)
    expected: str  # the prepared file the kit looks for, relative to DATA_DIR


DATASETS = {
    "chexpert": Dataset(
        "CheXpert (frontal chest radiographs, Stanford)", "notebooks 01 and 03, python -m stkit stern train",
        "https://stanfordmlgroup.github.io/competitions/chexpert/ (registration required)",
        "Stanford University School of Medicine CheXpert Dataset Research Use Agreement",
        "python -m data_prep.cxr_datasets chexpert --train-csv CheXpert-v1.0-small/train.csv "
        "--valid-csv CheXpert-v1.0-small/valid.csv --out DATA_DIR/chexpert/labels.csv",
        "chexpert/labels.csv"),
    "buv": Dataset(
        "BUV (188 breast-ultrasound videos, CVA-Net)", "notebooks 01 and 05, STNet training",
        "by request to the CVA-Net authors: https://github.com/jhl-Det/CVA-Net",
        "research and education use only",
        "python -m data_prep.buv --src /path/to/BUV --out DATA_DIR/buv",
        "buv/imagenet_vid_val.json"),
}


class MissingDataError(FileNotFoundError):
    """A ``paper``-size run found no prepared real dataset; the message says how to get one."""


def missing_data_message(name: str, data_dir: str | Path, looked_at: Path) -> str:
    d, data_dir, looked_at = DATASETS[name], Path(data_dir).resolve(), Path(looked_at).resolve()
    return (f"RUN_SIZE='paper' needs the real {d.name}, prepared: {looked_at} does not exist.\n"
            f"  request it: {d.request}\n  terms: {d.terms}\n"
            f"  then prepare it: {d.prepare.replace('DATA_DIR', str(data_dir))}\n"
            "  (the kit never downloads or ships it; smoke and quick sizes use built-in synthetic data)")


def require_data(name: str, data_dir: str | Path, run_size: str = "paper", given: str | Path | None = None) -> Path | None:
    """The prepared real dataset ``name`` for a ``paper``-size run; None for other sizes.

    ``given`` (e.g. a notebook's LABELS_CSV) is used when set, else ``DATA_DIR/<expected>``.
    Raises :class:`MissingDataError` naming the dataset, where to request it, its terms and
    the preparation command when the file is not there (an absent DATA_DIR included).
    """
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    if run_size != "paper":
        return None
    path = Path(given) if given else Path(data_dir) / DATASETS[name].expected
    if not path.exists():
        raise MissingDataError(missing_data_message(name, data_dir, path))
    return path


def require_datasets(data_dir: str | Path, run_size: str = "paper", names=tuple(DATASETS)) -> dict:
    """:func:`require_data` for several datasets at once; one error listing every missing one."""
    found, missing = {}, []
    for name in names:
        try:
            found[name] = require_data(name, data_dir, run_size)
        except MissingDataError as err:
            missing.append(str(err))
    if missing:
        raise MissingDataError("\n".join(missing))
    return found
