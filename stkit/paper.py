"""The papers' reported numbers and the real datasets they come from: defined once.

- :data:`STERN`, :data:`STNET`: every number the kit compares against, each a
  :class:`Reported` with the number on the kit's scale (AUC and AP as fractions), the
  text as the source states it, the source, and whether anyone here checked it against
  the source. "unverified" marks a number nobody could check against the paper's PDF;
  :meth:`Reported.label` says so, and every table and figure shows that label.
- :data:`DATASETS`: the real datasets (where to request them, their terms, the command
  that prepares them); :func:`require_data` stops a ``paper``-size run at once when the
  prepared data is not where it should be, with that information in the message.
- :func:`comparison_rows`: the papers-vs-this-run rows of the report's index page.

This module holds facts and their formatting; ``stkit.reproduce`` builds notebook 06's
tables from them and ``stkit.viz.paper`` draws them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .metrics import find


@dataclass(frozen=True)
class Reported:
    quantity: str  # what was measured, by which method, on which data
    value: float | None  # on the kit's scale (AUC, AP as fractions; speed as a ratio); None: not a number
    text: str  # as the source states it
    source: str  # where it is stated
    verified: bool  # checked against the source (False: from memory or a secondary source)
    metric_key: tuple[str, str] | None = None  # (section, key) of the run number that sits beside it
    method: str = ""  # STERN, CVA-Net, STNet, FA-DETR

    def label(self) -> str:
        """The stated text, with "(unverified)" appended when nobody checked it."""
        return self.text if self.verified else f"{self.text} (unverified)"


CBMS = "Rocha et al., IEEE CBMS 2022, abstract"
AIIM = "Rocha et al., Artif. Intell. Med. 147 (2024) 102737"
CVA_README = "CVA-Net README (Lin et al., MICCAI 2022)"
STNET_PAPER = "Qin et al., MICCAI 2023 (arXiv 2309.04702), results table"
STNET_ABSTRACT = "Qin et al., MICCAI 2023, abstract"

STERN = [
    Reported("STERN mean AUC, CheXpert (CBMS 2022)", 0.8422, "84.22 %", CBMS, True, ("stern", "test_auc"), "STERN"),
    Reported("STERN mean AUC, CheXpert (AIIM 2024)", 0.8567, "about 85.67 %", AIIM, False, ("stern", "test_auc"), "STERN"),
    Reported("STERN vs YOLO-crop pipeline", None, "similar AUC, < 2/3 of the training parameters", AIIM, False, None, "STERN"),
]

STNET = [
    Reported("CVA-Net mAP, BUV val", 0.368, "36.8", CVA_README, True, ("stnet", "val_ap"), "CVA-Net"),
    Reported("CVA-Net AP, BUV (STNet paper table)", 0.361, "36.1", STNET_PAPER, False, ("stnet", "val_ap"), "CVA-Net"),
    Reported("CVA-Net AP50, BUV (STNet paper table)", 0.651, "65.1", STNET_PAPER, False, ("stnet", "val_ap50"), "CVA-Net"),
    Reported("CVA-Net AP75, BUV (STNet paper table)", 0.385, "38.5", STNET_PAPER, False, ("stnet", "val_ap75"), "CVA-Net"),
    Reported("STNet AP, BUV val", 0.400, "about 40.0", STNET_PAPER, False, ("stnet", "val_ap"), "STNet"),
    Reported("STNet AP50, BUV val", 0.703, "about 70.3", STNET_PAPER, False, ("stnet", "val_ap50"), "STNet"),
    Reported("STNet AP75, BUV val", 0.433, "about 43.3", STNET_PAPER, False, ("stnet", "val_ap75"), "STNet"),
    Reported("STNet inference speed with encoder feature shuffle vs per frame", 2.0, "about twice as fast", STNET_ABSTRACT, True,
             ("stnet", "shuffle_speedup"), "STNet"),
    Reported("FA-DETR vs best earlier method", None, "+3.8 AP, 2.5x faster", "Qin et al., MIDL 2025", False, None, "FA-DETR"),
]

ALL = STERN + STNET


def _check_keys() -> None:
    """Every run number a paper number points at is declared in stkit.metrics."""
    for r in ALL:
        if r.metric_key is not None:
            find(*r.metric_key)


_check_keys()


# ----------------------------------------------------------------------------- datasets
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


# ----------------------------------------------------------------------------- report rows
def format_value(value, unit: str) -> str:
    """A run number on the scale the papers print it: AUC in %, AP x 100, ratios with x."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    if unit == "AUC":
        return f"{100 * value:.2f} %"
    if unit == "AP":
        return f"{100 * value:.1f}"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:.4g}"


def run_value(metrics: dict, key: tuple[str, str] | None):
    """The run's number for ``(section, key)``, or None when the report did not produce it."""
    if key is None:
        return None
    v = metrics.get(key[0], {}).get(key[1]) if isinstance(metrics.get(key[0]), dict) else None
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def comparison_rows(metrics: dict) -> list[dict]:
    """Rows of (quantity, paper value, source, verified, this run's value or 'not run') for the index page."""
    rows = []
    for r in ALL:
        v = run_value(metrics, r.metric_key)
        if r.metric_key is None:
            mine = "(no counterpart in the kit)"
        else:
            mine = "not run" if v is None else format_value(v, find(*r.metric_key).unit)
        rows.append({"quantity": r.quantity, "paper": r.label(), "source": r.source, "verified": r.verified, "this_run": mine})
    return rows
