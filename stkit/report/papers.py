"""The papers' reported numbers: defined once, with their sources.

- :data:`REPORTED_STERN`, :data:`REPORTED_STNET`: every number the kit compares against, each a
  :class:`Reported` with the number on the kit's scale (AUC and AP as fractions), the
  text as the source states it, the source, and whether anyone here checked it against
  the source. "unverified" marks a number nobody could check against the paper's PDF;
  :meth:`Reported.label` says so, and every table and figure shows that label.

This module holds facts; ``stkit.report.compare`` builds the report's and notebook 06's
tables from them, ``stkit.viz.paper`` draws them, and the real datasets' facts are
``stkit.data.datasets``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import find


@dataclass(frozen=True)
class Reported:
    quantity: str  # what was measured, by which method, on which data
    value: float | None  # on the kit's scale (AUC, AP as fractions; speed as a ratio); None: not a number
    text: str  # as the source states it
    source: str  # where it is stated
    verified: bool  # checked against the source (False: from memory or a secondary source)
    metric_key: tuple[str, str] | None = None  # (section, key) of the run number that sits beside it
    method: str = ""  # STERN, CVA-Net, STNet, FA-DETR
    unstated: str = ""  # what the source does NOT state that a reader would assume (shown with the label)

    def label(self) -> str:
        """The stated text, with "(unverified)" appended when nobody checked it and what the
        source leaves unstated in brackets."""
        text = self.text if self.verified else f"{self.text} (unverified)"
        return f"{text} [{self.unstated}]" if self.unstated else text


CBMS = "Rocha et al., IEEE CBMS 2022, abstract"
AIIM = "Rocha et al., Artif. Intell. Med. 147 (2024) 102737"
CVA_README = "CVA-Net README (Lin et al., MICCAI 2022)"
STNET_PAPER = "Qin et al., MICCAI 2023 (arXiv 2309.04702), results table"
STNET_ABSTRACT = "Qin et al., MICCAI 2023, abstract"

REPORTED_STERN = [
    Reported("STERN mean AUC, CheXpert (CBMS 2022)", 0.8422, "84.22 %", CBMS, True, ("stern", "test_auc"), "STERN"),
    Reported("STERN mean AUC, CheXpert (AIIM 2024)", 0.8567, "about 85.67 %", AIIM, False, ("stern", "test_auc"), "STERN"),
    Reported("STERN vs YOLO-crop pipeline", None, "similar AUC, < 2/3 of the training parameters", AIIM, False, None, "STERN"),
]

REPORTED_STNET = [
    Reported("CVA-Net mAP, BUV val", 0.368, "36.8", CVA_README, True, ("stnet", "val_ap"), "CVA-Net"),
    Reported("CVA-Net AP, BUV (STNet paper table)", 0.361, "36.1", STNET_PAPER, False, ("stnet", "val_ap"), "CVA-Net"),
    Reported("CVA-Net AP50, BUV (STNet paper table)", 0.651, "65.1", STNET_PAPER, False, ("stnet", "val_ap50"), "CVA-Net"),
    Reported("CVA-Net AP75, BUV (STNet paper table)", 0.385, "38.5", STNET_PAPER, False, ("stnet", "val_ap75"), "CVA-Net"),
    Reported("STNet AP, BUV val", 0.400, "about 40.0", STNET_PAPER, False, ("stnet", "val_ap"), "STNet"),
    Reported("STNet AP50, BUV val", 0.703, "about 70.3", STNET_PAPER, False, ("stnet", "val_ap50"), "STNet"),
    Reported("STNet AP75, BUV val", 0.433, "about 43.3", STNET_PAPER, False, ("stnet", "val_ap75"), "STNet"),
    Reported("STNet inference speed (abstract)", 2.0, "about twice as fast", STNET_ABSTRACT, True,
             ("stnet", "shuffle_speedup"), "STNet",
             unstated="the abstract does not say against what; the released benchmark.py times the "
                      "main.py model, not the clip model with encoder feature shuffle"),
    Reported("FA-DETR vs best earlier method", None, "+3.8 AP, 2.5x faster", "Qin et al., MIDL 2025", False, None, "FA-DETR"),
]

REPORTED = REPORTED_STERN + REPORTED_STNET


def _check_keys() -> None:
    """Every run number a paper number points at is declared in stkit.report.catalog."""
    for r in REPORTED:
        if r.metric_key is not None:
            find(*r.metric_key)


_check_keys()
