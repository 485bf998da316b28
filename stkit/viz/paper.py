"""Figures of notebook 06: the papers' numbers beside this run's.

Input: the long tables of ``stkit.report.compare`` (one number per row, with its bar
``group`` and AP ``column``; ``kind`` "paper" or "this run"). Conventions every figure keeps: a paper number nobody verified is drawn
hatched and labelled "(unverified)"; a run number is labelled with the data it came
from; a number the runs did not produce is written "not run", never drawn as zero.

Every function draws a new matplotlib figure and returns it; none computes a metric.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_stern_auc", "plot_stnet_ap", "plot_shuffle_vs_paper"]

PAPER_VERIFIED, PAPER_UNVERIFIED, RUN = "#555555", "#bbbbbb", "tab:blue"


def _style(row: dict) -> dict:
    if row["kind"] == "paper":
        return {"color": PAPER_VERIFIED if row["verified"] else PAPER_UNVERIFIED, "hatch": None if row["verified"] else "//",
                "edgecolor": "black"}
    return {"color": RUN, "hatch": None, "edgecolor": "black"}


def _label(row: dict) -> str:
    if row["kind"] == "paper":
        return f"{row['row']}{'' if row['verified'] else ' (unverified)'}"
    return f"this run: {row['row']}"


def _run_data(rows) -> str:
    data = sorted({r["data"].split(" (")[0] for r in rows if r["kind"] == "this run" and r["value"] is not None})
    return " + ".join(data) if data else "no run numbers"


def plot_stern_auc(rows: list[dict]):
    """Horizontal bars of test AUC: the papers' (grey), this run's STERN and references (blue)."""
    fig, ax = plt.subplots(figsize=(8.5, 0.45 * len(rows) + 1.4))
    y = np.arange(len(rows))[::-1]
    for yi, r in zip(y, rows):
        if r["value"] is None:
            ax.text(0.505, yi, "not run", va="center", fontsize=9, color="#a33")
            continue
        ax.barh(yi, r["value"] - 0.5, left=0.5, height=0.6, **_style(r))
        ax.text(r["value"] + 0.005, yi, r["shown"].replace(" (unverified)", ""), va="center", fontsize=9)
    ax.set_yticks(y, [_label(r) for r in rows], fontsize=9)
    ax.axvline(0.5, color="black", lw=0.8, ls=":")
    ax.set_xlim(0.5, 1.06)
    ax.set_xlabel("test ROC AUC (0.5 = guessing)")
    ax.set_title(f"STERN: the papers (CheXpert) and this run ({_run_data(rows)})", fontsize=10)
    fig.tight_layout()
    return fig


def plot_stnet_ap(rows: list[dict]):
    """Grouped bars of COCO AP, AP50, AP75 (x 100) per publication and per run row."""
    groups = list(dict.fromkeys(r["group"] for r in rows))
    cols = ["AP", "AP50", "AP75"]
    fig, ax = plt.subplots(figsize=(10, 4.2))
    width = 0.26
    for gi, g in enumerate(groups):
        for r in (r for r in rows if r["group"] == g):
            ci = cols.index(r["column"]) if r["column"] in cols else 0
            x = gi + (ci - 1) * width
            if r["value"] is None:
                ax.text(x, 1.5, "not run", rotation=90, ha="center", va="bottom", fontsize=7, color="#a33")
                continue
            style = _style(r)
            ax.bar(x, 100 * r["value"], width * 0.95, alpha=[1.0, 0.75, 0.5][ci], **style)
            ax.text(x, 100 * r["value"] + 0.8, f"{100 * r['value']:.1f}", ha="center", fontsize=7)
    ax.set_xticks(range(len(groups)), [g.replace(", ", ",\n", 1) for g in groups], fontsize=8)
    ax.set_ylabel("COCO AP x 100 (bars: AP, AP50, AP75)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Lesion detection on BUV: CVA-Net and STNet as published, and this run ({_run_data(rows)})", fontsize=10)
    fig.tight_layout()
    return fig


def plot_shuffle_vs_paper(rows: list[dict]):
    """Frames per second with and without encoder feature shuffle, and the speed-up beside the paper's."""
    fps = [r for r in rows if r["kind"] == "this run" and r["metric"].split(".")[-1].startswith("fps")]
    ratios = [r for r in rows if r["metric"].endswith("shuffle_speedup")]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2), gridspec_kw={"width_ratios": [3, 2]})
    for i, r in enumerate(fps):
        if r["value"] is None:
            a.text(i, 0, "not run", ha="center", va="bottom", color="#a33")
        else:
            a.bar(i, r["value"], 0.6, **_style(r))
            a.text(i, r["value"], f"{r['value']:.3g}", ha="center", va="bottom", fontsize=9)
    a.set_xticks(range(len(fps)), [r["row"].split(" (")[0] for r in fps], fontsize=9)
    a.set_ylabel("frames per second")
    a.set_title(f"this run ({_run_data(rows)})", fontsize=10)
    for i, r in enumerate(ratios):
        if r["value"] is None:
            b.text(i, 0.05, "not run", ha="center", va="bottom", color="#a33")
            continue
        b.bar(i, r["value"], 0.6, **_style(r))
        b.text(i, r["value"], f"{r['value']:.2f}x", ha="center", va="bottom", fontsize=9)
    b.set_xticks(range(len(ratios)), ["paper (abstract)" if r["kind"] == "paper" else "this run" for r in ratios], fontsize=9)
    b.axhline(1.0, color="black", lw=0.8, ls=":")
    b.set_ylabel("speed-up with shuffle")
    b.set_title("speed-up", fontsize=10)
    fig.tight_layout()
    return fig
