"""The papers' reported numbers, with where each comes from and whether it was verified.

"unverified" marks a number nobody could check against the paper's PDF; every figure or
table that shows one must say so (``label()`` does).
"""

from __future__ import annotations

from dataclasses import dataclass

from .metrics import find


@dataclass(frozen=True)
class Reported:
    quantity: str
    value: str
    source: str
    verified: bool
    metric_key: tuple[str, str] | None = None  # (section, key) in the report's metrics.json

    def label(self) -> str:
        return self.value if self.verified else f"{self.value} (unverified)"


STERN = [
    Reported("STERN mean AUC, CheXpert (CBMS 2022)", "84.22 %", "Rocha et al., CBMS 2022, abstract", True, ("stern", "test_auc")),
    Reported("STERN mean AUC, CheXpert (AIIM 2024)", "about 85.67 %", "Rocha et al., AIIM 147 (2024) 102737", False, ("stern", "test_auc")),
    Reported("STERN vs YOLO-crop pipeline", "similar AUC, < 2/3 of the training parameters", "Rocha et al., AIIM 2024", False),
]

STNET = [
    Reported("CVA-Net mAP, BUV val", "36.8", "CVA-Net README (Lin et al., MICCAI 2022)", True, ("stnet", "val_ap")),
    Reported("CVA-Net AP / AP50 / AP75 (STNet paper table)", "36.1 / 65.1 / 38.5", "Qin et al., MICCAI 2023", False),
    Reported("STNet AP / AP50 / AP75, BUV val", "about 40.0 / 70.3 / 43.3", "Qin et al., MICCAI 2023", False, ("stnet", "val_ap")),
    Reported("STNet inference speed vs per-frame", "about 2x", "Qin et al., MICCAI 2023, abstract", True, ("stnet", "shuffle_speedup")),
    Reported("FA-DETR vs best earlier method", "+3.8 AP, 2.5x faster", "Qin et al., MIDL 2025", False),
]


def _check_keys() -> None:
    """Every run number a paper number points at is declared in stkit.metrics."""
    for r in STERN + STNET:
        if r.metric_key is not None:
            find(*r.metric_key)


_check_keys()


def comparison_rows(metrics: dict) -> list[dict]:
    """Rows of (quantity, paper value, source, this run's value or 'not run') for the report."""
    rows = []
    for r in STERN + STNET:
        mine = "not run" if r.metric_key is not None else "(no counterpart in the kit)"
        if r.metric_key is not None:
            section, key = r.metric_key
            v = metrics.get(section, {}).get(key)
            if v is not None:
                mine = f"{100 * v:.2f} %" if key.endswith("auc") else f"{v:.3g}"
        rows.append({"quantity": r.quantity, "paper": r.label(), "source": r.source, "this_run": mine})
    return rows
