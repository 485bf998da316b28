"""The papers beside this run: gather the runs' numbers, and build the comparison tables.

- :func:`collect_report`: the numbers the notebooks of a report wrote (each notebook's
  ``OUT_DIR/metrics.json``, or one merged ``metrics.json``), with the data each came from.
- :func:`collect_stern_run`: the numbers of a ``python -m stkit stern train`` run folder,
  from its ``results.json`` or, given a label CSV, its checkpoints evaluated afresh.
- :func:`stern_table`, :func:`stnet_table`, :func:`speed_table`: long tables, one number per
  row. A paper row carries its source and verified flag (and "(unverified)" in the text
  shown); a run row carries the ``section.key`` it came from and the data it used; a
  number the runs did not produce is "not run", never a blank or a zero.

- :func:`comparison_rows`: the papers-vs-this-run rows of the report's index page.

Not here: the papers' numbers themselves (``stkit.report.papers``) and the figures
(``stkit.viz.paper``, which draw these rows).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..engine.checkpoint import load
from ..stern.experiment import RESULT_KEYS, evaluate_run, final_checkpoints
from . import papers
from .catalog import find

SYNTHETIC, REAL = "synthetic", "real"
DATA_SECTIONS = {"stern": "CheXpert", "stnet": "BUV"}  # metric sections whose numbers depend on a dataset

# What each run row is (label, section, key); the papers' rows come from stkit.report.papers.
STERN_RUN_ROWS = [("STERN (bounded STN), both stages", "stern", "test_auc"),
                  ("STERN after stage 1 only", "stern", "test_auc_stage1"),
                  ("STERN, official parameterisation (faithful)", "stern", "faithful_test_auc"),
                  ("baseline: no STN, whole image", "stern", "baseline_test_auc"),
                  ("oracle crop: true thorax box, then classify", "stern", "oracle_crop_test_auc")]
STNET_PROTOCOLS = (("all frames", "val"), ("kit key frames", "key"), ("released test, ids [1::3]", "released"))
STNET_RUN_ROWS = [(f"STNet, {frames}", "stnet", f"{prefix}_{m}") for frames, prefix in STNET_PROTOCOLS
                  for m in ("ap", "ap50", "ap75")] + [("single-frame baseline, all frames", "stnet", "baseline_val_ap50")]
SPEED_RUN_ROWS = [("frame by frame (whole model per frame)", "stnet", "fps_per_frame"),
                  ("encoder feature shuffle", "stnet", "fps_shuffle"),
                  ("speed-up, shuffle / per frame", "stnet", "shuffle_speedup")]


# ----------------------------------------------------------------------------- collecting
def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable metrics file ({err})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: expected {{section: {{key: value}}}}")
    return data


def collect_report(report_dir: str | Path, run_size: str, skip: str | Path | None = None) -> tuple[dict, dict]:
    """(metrics, data) of a report folder: ``{section: values}`` and ``{section: data description}``
    (the latter for the sections whose numbers depend on a dataset, :data:`DATA_SECTIONS`).

    Reads ``report_dir/*/metrics.json`` (each notebook's OUT_DIR; ``skip`` is this
    notebook's own) or, when there are none, ``report_dir/metrics.json``. A section
    written by two files is an error naming both. The data: the report's run size says
    it (``smoke``/``quick`` run on the kit's synthetic sets, ``paper`` on the real ones).
    """
    report_dir = Path(report_dir)
    skip = Path(skip).resolve() if skip else None
    files = [p for p in sorted(report_dir.glob("*/metrics.json")) if skip is None or p.parent.resolve() != skip]
    if not files and (report_dir / "metrics.json").is_file():
        files = [report_dir / "metrics.json"]
    metrics, origin = {}, {}
    for f in files:
        for section, values in _read_json(f).items():
            if section == "report":
                run_size = values.get("size", run_size)
                continue
            if section in metrics:
                raise ValueError(f"metrics section {section!r} is in both {origin[section]} and {f}")
            metrics[section], origin[section] = values, f
    kind = REAL if run_size == "paper" else SYNTHETIC
    data = {s: f"{kind} ({DATA_SECTIONS[s] if kind == REAL else 'built-in'}, run size {run_size}, {origin[s].parent.name})"
            for s in metrics if s in DATA_SECTIONS}
    return metrics, data


def labels_data(labels_csv: str | Path) -> str:
    """"synthetic" when the label CSV sits beside the kit generator's manifest, else "real"."""
    manifest = Path(labels_csv).parent / "manifest.json"
    try:
        gen = json.loads(manifest.read_text()).get("generator", "")
    except (OSError, ValueError, AttributeError):
        gen = ""
    return SYNTHETIC if str(gen).startswith("data_prep.synthetic") else REAL


def collect_stern_run(run_dir: str | Path, labels_csv: str | Path | None = None, device: str = "cpu") -> tuple[dict, str]:
    """(stern section, data description) of a ``stern train`` run folder.

    Without ``labels_csv``: the AUCs of its ``results.json``. With it: each variant's
    final best checkpoint rebuilt from its recorded config and evaluated afresh on the
    CSV's test split.
    """
    run_dir = Path(run_dir)
    if labels_csv is None:
        results = _read_json(run_dir / "results.json")
        section = {RESULT_KEYS[v]: r["test_auc"] for v, r in results.items() if v in RESULT_KEYS}
        labels = _recorded_labels(run_dir)
    else:
        aucs = evaluate_run(labels_csv, run_dir, device)
        section, labels = {RESULT_KEYS[v]: auc for v, auc in aucs.items()}, labels_csv
    where = f"{labels_data(labels)} ({labels})" if labels else "unknown (no label file recorded)"
    return section, where


def _recorded_labels(run_dir: Path) -> str | None:
    try:
        ckpt = load(next(iter(final_checkpoints(run_dir).values())))
    except (FileNotFoundError, StopIteration):
        return None
    return ckpt["record"].get("data", {}).get("labels")


# ----------------------------------------------------------------------------- tables
def group_of(row: dict) -> str:
    """The bar group of an AP row: the publication (method, where stated) or the run row."""
    if row["kind"] == "paper":
        return f"{row['method']}, {'CVA-Net README' if 'README' in row['source'] else 'STNet paper'}" + ("" if row["verified"] else " (unverified)")
    return f"this run: {row['row']}"


def _placed(row: dict) -> dict:
    """A table row with its figure group and AP column (what viz.paper draws it by)."""
    return row | {"group": group_of(row), "column": ap_column(row["metric"])}


def _paper_row(r: papers.Reported, table: str) -> dict:
    return _placed({"table": table, "kind": "paper", "row": r.quantity, "method": r.method, "value": r.value,
                    "shown": r.label(), "source": r.source, "verified": r.verified, "data": "the paper's data",
                    "metric": "" if r.metric_key is None else ".".join(r.metric_key)})


def _run_row(label: str, section: str, key: str, metrics: dict, data: dict, table: str) -> dict:
    v = run_value(metrics, (section, key))
    return _placed({"table": table, "kind": "this run", "row": label, "method": "this run", "value": v,
                    "shown": "not run" if v is None else format_value(v, find(section, key).unit),
                    "source": "this run", "verified": None,
                    "data": data.get(section, "not run") if v is not None else "not run", "metric": f"{section}.{key}"})


def _table(name: str, reported, run_rows, metrics: dict, data: dict) -> list[dict]:
    rows = [_paper_row(r, name) for r in reported if r.value is not None]
    return rows + [_run_row(label, s, k, metrics, data, name) for label, s, k in run_rows]


def stern_table(metrics: dict, data: dict) -> list[dict]:
    """STERN test AUC: the papers (CheXpert) beside STERN, its variants, the baseline and the oracle crop."""
    return _table("stern_auc", [r for r in papers.REPORTED_STERN if r.metric_key == ("stern", "test_auc")], STERN_RUN_ROWS, metrics, data)


def stnet_table(metrics: dict, data: dict) -> list[dict]:
    """COCO AP / AP50 / AP75: CVA-Net and STNet as published beside this run, under each protocol (STNET_PROTOCOLS)."""
    reported = [r for r in papers.REPORTED_STNET if r.metric_key and r.metric_key[1].startswith("val_ap")]
    return _table("stnet_ap", reported, STNET_RUN_ROWS, metrics, data)


def speed_table(metrics: dict, data: dict) -> list[dict]:
    """Inference speed with and without encoder feature shuffle, beside the abstract's "about twice as fast"."""
    reported = [r for r in papers.REPORTED_STNET if r.metric_key == ("stnet", "shuffle_speedup")]
    return _table("speed", reported, SPEED_RUN_ROWS, metrics, data)


def all_tables(metrics: dict, data: dict) -> dict[str, list[dict]]:
    return {"stern_auc": stern_table(metrics, data), "stnet_ap": stnet_table(metrics, data), "speed": speed_table(metrics, data)}


def ap_wide(rows: list[dict]):
    """The AP table as a DataFrame: one row per publication or run row, columns AP, AP50, AP75, source, verified."""
    df = pd.DataFrame(rows)
    wide = df.pivot_table(index="group", columns="column", values="shown", aggfunc="first", sort=False).reindex(columns=["AP", "AP50", "AP75"])
    info = df.groupby("group", sort=False)[["source", "verified", "data"]].first()
    return wide.join(info).fillna("-")


def ap_column(metric: str) -> str:
    """``stnet.key_ap75`` -> ``AP75`` (the column of the wide AP table)."""
    key = metric.split(".")[-1]
    return "AP" + key.rsplit("ap", 1)[-1] if "ap" in key else key


def summary(tables: dict, data: dict) -> dict:
    """The numbers notebook 06 writes to its metrics.json (section ``paper``)."""
    rows = [r for t in tables.values() for r in t]
    papers = [r for r in rows if r["kind"] == "paper"]
    return {"paper_numbers": len(papers), "paper_numbers_unverified": sum(not r["verified"] for r in papers),
            "run_numbers_present": sum(r["kind"] == "this run" and r["value"] is not None for r in rows),
            "run_numbers_missing": sum(r["kind"] == "this run" and r["value"] is None for r in rows),
            "sections_on_real_data": sum(d.startswith(REAL) for d in data.values())}


def data_banner(data: dict) -> str:
    """An HTML banner: which data each section's numbers came from, and what that means."""
    if not data:
        return "<div style='background:#fde2e2;border:2px solid #c33;padding:.6em 1em'><b>No run numbers found.</b> Nothing below is a result of this kit.</div>"
    synthetic = [s for s, d in data.items() if not d.startswith(REAL)]
    lines = "".join(f"<li><code>{s}</code>: {d}</li>" for s, d in data.items())
    if synthetic:
        head = ("<b>SYNTHETIC DATA: these runs are not a reproduction.</b> The sections below marked synthetic ran on the kit's "
                "built-in synthetic sets; their numbers show what the code does on a controlled task and cannot be compared with "
                "the papers' CheXpert and BUV numbers.")
        style = "background:#fff4d6;border:2px solid #e0a800"
    else:
        head = "<b>Real data.</b> Every section below ran on a real dataset; check that its split and protocol match the paper's."
        style = "background:#e6f4ea;border:2px solid #3a7"
    return f"<div style='{style};padding:.6em 1em'>{head}<ul>{lines}</ul></div>"


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
    for r in papers.REPORTED:
        v = run_value(metrics, r.metric_key)
        if r.metric_key is None:
            mine = "(no counterpart in the kit)"
        else:
            mine = "not run" if v is None else format_value(v, find(*r.metric_key).unit)
        rows.append({"quantity": r.quantity, "paper": r.label(), "source": r.source, "verified": r.verified, "this_run": mine})
    return rows
