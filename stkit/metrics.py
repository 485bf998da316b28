"""The names of every number the notebooks report, with meaning and unit: defined once.

Each notebook writes ``{section: {key: value}}`` to ``OUT_DIR/metrics.json`` through
``stkit.nbutil.write_metrics``, which refuses a key not declared here; the report's index
page, ``stkit.paper`` (which run number sits beside which paper number) and the tests
read the same table. A key may be a pattern (``speedup_fwd_*``) for per-shape numbers.

This module holds names and descriptions only; it computes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase


@dataclass(frozen=True)
class Metric:
    key: str  # name in metrics.json (may contain * for a family of keys)
    meaning: str  # one line a student can read
    unit: str = ""  # "AUC", "fraction", "s", "x", "px", "AP" ... ("" for counts and labels)
    required: bool = False  # every run of the notebook must write it
    chance: float | None = None  # the value a model that learned nothing gets (flagged in the report)
    compare_to: str | None = None  # key of the baseline this number should beat (flagged when it does not)


def _m(*rows) -> dict[str, Metric]:
    return {r[0]: Metric(*r) for r in rows}


SECTIONS: dict[str, dict[str, Metric]] = {
    "data": _m(
        ("cxr_images", "synthetic chest X-rays generated", "", True),
        ("cxr_abnormal", "of which abnormal (with lesions)", "", True),
        ("cxr_lesion_boxes", "lesion boxes in the label CSV", "", True),
        ("cxr_patients", "patients (splits never share one)", "", True),
        ("cxr_canvas_px", "side of the square synthetic radiograph", "px", True),
        ("buv_videos", "synthetic ultrasound videos (train + val, BUV format)", "", False),
        ("buv_frames", "frames in them", "", False),
        ("buv_negative_boxes", "boxes drawn right-to-left (negative width or height), normalised on reading", "", False),
        ("buv_clip_frames", "frames per clip (key, neighbours, global frames)", "", False),
        ("buv_lesion_contrast_median", "median lesion-vs-surround grey-level contrast per frame", "grey level", False),
        ("buv_lesion_contrast_weakest", "weakest frame's lesion contrast (the lesion fades into speckle)", "grey level", False),
        ("buv_real_prepared", "a real BUV download was prepared in this run", "", False),
    ),
    "stn_geometry": _m(
        ("crop_max_abs_error", "largest difference between an edge-aligned glimpse and the exact crop", "", True),
        ("fit_window_distance", "distance to the target window after descent from a nearby start", "", True),
        ("fit_window_distance_from_full", "the same from the whole-image start", "", True),
        ("bounded_windows_inside", "every bounded window stays inside the image", "", True),
        ("faithful_initial_aspect", "sx/sy of the official initial window", "", True),
    ),
    "stern": _m(
        ("test_auc", "STERN (bounded STN) after both stages, test split", "AUC", True, 0.5, "baseline_test_auc"),
        ("baseline_test_auc", "no-STN baseline (whole image resized), test split", "AUC", True, 0.5),
        ("faithful_test_auc", "STERN with the official parameterisation and loss, test split", "AUC", False, 0.5),
        ("test_auc_stage1", "STERN after stage 1 only, test split", "AUC", False, 0.5),
        ("lesion_center_in_window", "lesion box centres inside the attended window", "fraction", True),
        ("lesion_area_in_window", "mean share of each lesion box inside the window", "fraction", True),
        ("mean_window_area", "mean attended-window area (1 = the whole image)", "fraction", False),
        ("n_lesion_boxes", "lesion boxes the localisation numbers are computed over", ""),
        ("mean_aspect_stage1", "mean window width/height (sx/sy) after stage 1", "", True),
        ("mean_aspect_stage2", "mean sx/sy after stage 2 (its hinge acts above Sf = 1.25)", "", True),
        ("faithful_mean_aspect", "mean sx/sy of the official parameterisation", ""),
        ("window_thorax_iou", "mean IoU of STERN's window with the true thorax box, test split", "IoU", True),
        ("fixed_window_thorax_iou", "mean IoU of the best single input-independent window (chosen on the test boxes)", "IoU", True),
        ("thorax_coverage", "mean share of the thorax box inside STERN's window", "fraction", True),
        ("windows_at_min_scale", "share of STERN's windows within 0.01 of the smallest scale on either axis", "fraction", True),
        ("oracle_crop_test_auc", "same classifier on the true thorax crop (two-step pipeline with a perfect detector)", "AUC", True, 0.5),
        ("seconds", "wall time of the notebook's training and evaluation", "s", True),
    ),
    "ops": _m(
        ("backend", "deformable-attention implementation that ran", "", True),
        ("bilinear_error", "op vs a hand-computed bilinear sample", "", True),
        ("max_abs_err_vs_reference", "op vs the grid_sample reference in float64, output and gradients", "", True),
        ("speedup_fwd_*", "compiled op forward speed over the reference, per benchmark shape", "x"),
        ("speedup_fwd_bwd_*", "compiled op forward+backward speed over the reference, per shape", "x"),
        ("fwd_ms_*", "forward time per call, per backend and shape", "ms"),
    ),
    "stnet": _m(
        ("val_ap", "STNet COCO AP@[.5:.95], every validation frame", "AP", True, 0.0),
        ("val_ap50", "STNet COCO AP@.5, every validation frame", "AP", True, 0.0, "baseline_val_ap50"),
        ("val_ap75", "STNet COCO AP@.75, every validation frame", "AP", True, 0.0),
        ("key_ap", "STNet COCO AP@[.5:.95], key frames only (the official STNet test)", "AP", True, 0.0),
        ("key_ap50", "STNet COCO AP@.5, key frames only", "AP", True, 0.0),
        ("key_ap75", "STNet COCO AP@.75, key frames only", "AP", True, 0.0),
        ("baseline_val_ap50", "single-frame baseline COCO AP@.5, every validation frame", "AP", True, 0.0),
        ("fps_shuffle", "frames per second with encoder feature shuffle", "frames/s", True),
        ("fps_per_frame", "frames per second running the whole model per frame", "frames/s", True),
        ("shuffle_speedup", "fps_shuffle / fps_per_frame, measured in the same run", "x"),
        ("op_backend", "deformable-attention implementation that ran", "", True),
        ("seconds", "wall time of the notebook's training and evaluation", "s", True),
    ),
    "paper": _m(  # notebook 06: the papers' numbers beside the runs'
        ("paper_numbers", "papers' numbers in notebook 06's side-by-side tables", "", True),
        ("paper_numbers_unverified", "of which nobody could check against the paper (labelled so)", "", True),
        ("run_numbers_present", "run numbers found beside them", "", True),
        ("run_numbers_missing", "run numbers shown as 'not run' (their notebook did not run or write them)", "", True),
        ("sections_on_real_data", "metric sections whose numbers come from real data (0: all synthetic)", "", True),
    ),
}


def find(section: str, key: str) -> Metric:
    """The declaration of ``key`` in ``section``; KeyError naming what is declared."""
    table = SECTIONS.get(section)
    if table is None:
        raise KeyError(f"unknown metrics section {section!r}; declared: {sorted(SECTIONS)} (stkit/metrics.py)")
    if key in table:
        return table[key]
    for pattern, metric in table.items():
        if "*" in pattern and fnmatchcase(key, pattern):
            return metric
    raise KeyError(f"metric {section}.{key} is not declared in stkit/metrics.py; declared: {sorted(table)}")


def required(section: str) -> set[str]:
    """Keys every run of the section's notebook must write."""
    return {k for k, m in SECTIONS[section].items() if m.required}


def check(section: str, values: dict) -> None:
    """Raise KeyError for an undeclared key or a missing required one."""
    for key in values:
        find(section, key)
    missing = required(section) - set(values)
    if missing:
        raise KeyError(f"metrics section {section!r} lacks required key(s) {sorted(missing)}")
