"""Notebook 06's side-by-side: gather the runs' numbers and put them beside the papers'.

- :func:`collect_report`: the numbers the notebooks of a report wrote (each notebook's
  ``OUT_DIR/metrics.json``, or one merged ``metrics.json``), with the data each came from.
- :func:`collect_stern_run`: the numbers of a ``python -m stkit stern train`` run folder,
  from its ``results.json`` or, given a label CSV, its checkpoints evaluated afresh.
- :func:`stern_table`, :func:`stnet_table`, :func:`speed_table`: long tables, one number per
  row. A paper row carries its source and verified flag (and "(unverified)" in the text
  shown); a run row carries the ``section.key`` it came from and the data it used; a
  number the runs did not produce is "not run", never a blank or a zero.

Not here: the papers' numbers themselves (``stkit.paper``) and the figures (``stkit.viz.paper``).
"""

from __future__ import annotations

import json
from pathlib import Path

from . import paper
from .metrics import find

SYNTHETIC, REAL = "synthetic", "real"
DATA_SECTIONS = {"stern": "CheXpert", "stnet": "BUV"}  # metric sections whose numbers depend on a dataset

# What each run row is (label, section, key); the papers' rows come from stkit.paper.
STERN_RUN_ROWS = [("STERN (bounded STN), both stages", "stern", "test_auc"),
                  ("STERN after stage 1 only", "stern", "test_auc_stage1"),
                  ("STERN, official parameterisation (faithful)", "stern", "faithful_test_auc"),
                  ("baseline: no STN, whole image", "stern", "baseline_test_auc"),
                  ("oracle crop: true thorax box, then classify", "stern", "oracle_crop_test_auc")]
STNET_RUN_ROWS = [(f"STNet, {frames}", "stnet", f"{prefix}_{m}") for frames, prefix in (("all frames", "val"), ("key frames", "key"))
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


RESULT_KEYS = {"bounded": "test_auc", "faithful": "faithful_test_auc", "baseline": "baseline_test_auc", "oracle": "oracle_crop_test_auc"}


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
        section, labels = _evaluate_afresh(run_dir, labels_csv, device), labels_csv
    where = f"{labels_data(labels)} ({labels})" if labels else "unknown (no label file recorded)"
    return section, where


def _final_checkpoints(run_dir: Path) -> dict:
    """{variant: path of its last stage's best checkpoint} (stages in name order: stage1, stage2)."""
    out = {}
    for v in RESULT_KEYS:
        best = sorted((run_dir / v).glob("*_best.pt"))
        if best:
            out[v] = best[-1]
    if not out:
        raise FileNotFoundError(f"{run_dir}: no <variant>/<stage>_best.pt checkpoints (variants {sorted(RESULT_KEYS)})")
    return out


def _recorded_labels(run_dir: Path) -> str | None:
    from .checkpoint import load

    try:
        ckpt = load(next(iter(_final_checkpoints(run_dir).values())))
    except (FileNotFoundError, StopIteration):
        return None
    return ckpt["record"].get("data", {}).get("labels")


def _evaluate_afresh(run_dir: Path, labels_csv, device) -> dict:
    from .checkpoint import load
    from .experiment import evaluate_stern, load_cxr_splits, oracle_splits
    from .stern import STERN, STERNConfig

    section, splits = {}, None
    for variant, path in _final_checkpoints(run_dir).items():
        ckpt = load(path, device)
        model = STERN(STERNConfig.from_dict(ckpt["record"]["model_config"]))
        model.load_state_dict(ckpt["model"])
        size = ckpt["record"]["data"]["image"][-1]
        splits = splits or load_cxr_splits(labels_csv, size)
        data = oracle_splits(splits, model.config.glimpse_size) if variant == "oracle" else splits
        section[RESULT_KEYS[variant]] = evaluate_stern(model.to(device), data["test"], device)["test_auc"]
    return section


# ----------------------------------------------------------------------------- tables
def _paper_row(r: paper.Reported, table: str) -> dict:
    return {"table": table, "kind": "paper", "row": r.quantity, "method": r.method, "value": r.value,
            "shown": r.label(), "source": r.source, "verified": r.verified, "data": "the paper's data",
            "metric": "" if r.metric_key is None else ".".join(r.metric_key)}


def _run_row(label: str, section: str, key: str, metrics: dict, data: dict, table: str) -> dict:
    v = paper.run_value(metrics, (section, key))
    return {"table": table, "kind": "this run", "row": label, "method": "this run", "value": v,
            "shown": "not run" if v is None else paper.format_value(v, find(section, key).unit),
            "source": "this run", "verified": None, "data": data.get(section, "not run") if v is not None else "not run",
            "metric": f"{section}.{key}"}


def _table(name: str, reported, run_rows, metrics: dict, data: dict) -> list[dict]:
    rows = [_paper_row(r, name) for r in reported if r.value is not None]
    return rows + [_run_row(label, s, k, metrics, data, name) for label, s, k in run_rows]


def stern_table(metrics: dict, data: dict) -> list[dict]:
    """STERN test AUC: the papers (CheXpert) beside STERN, its variants, the baseline and the oracle crop."""
    return _table("stern_auc", [r for r in paper.STERN if r.metric_key == ("stern", "test_auc")], STERN_RUN_ROWS, metrics, data)


def stnet_table(metrics: dict, data: dict) -> list[dict]:
    """COCO AP / AP50 / AP75: CVA-Net and STNet as published beside this run, on all frames and key frames."""
    reported = [r for r in paper.STNET if r.metric_key and r.metric_key[1].startswith("val_ap")]
    return _table("stnet_ap", reported, STNET_RUN_ROWS, metrics, data)


def speed_table(metrics: dict, data: dict) -> list[dict]:
    """Inference speed with and without encoder feature shuffle, beside the abstract's "about twice as fast"."""
    reported = [r for r in paper.STNET if r.metric_key == ("stnet", "shuffle_speedup")]
    return _table("speed", reported, SPEED_RUN_ROWS, metrics, data)


def all_tables(metrics: dict, data: dict) -> dict[str, list[dict]]:
    return {"stern_auc": stern_table(metrics, data), "stnet_ap": stnet_table(metrics, data), "speed": speed_table(metrics, data)}


def ap_wide(rows: list[dict]):
    """The AP table as a DataFrame: one row per publication or run row, columns AP, AP50, AP75, source, verified."""
    import pandas as pd

    from .viz.paper import group_of

    df = pd.DataFrame(rows).assign(group=lambda d: [group_of(r) for r in rows], col=lambda d: d.metric.map(ap_column))
    wide = df.pivot_table(index="group", columns="col", values="shown", aggfunc="first", sort=False).reindex(columns=["AP", "AP50", "AP75"])
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
