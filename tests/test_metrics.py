"""Metric names are declared once (stkit.metrics): writers refuse others, paper rows point at real keys."""

import json

import pytest

from stkit import metrics, nbutil, paper


def test_write_metrics_refuses_an_undeclared_key(tmp_path):
    good = {k: 1.0 for k in metrics.required("stern")}
    nbutil.write_metrics(tmp_path, "stern", good)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"stern": good}
    with pytest.raises(KeyError, match=r"stern\.test_acu is not declared"):
        nbutil.write_metrics(tmp_path, "stern", good | {"test_acu": 0.9})
    with pytest.raises(KeyError, match="lacks required key"):
        nbutil.write_metrics(tmp_path, "stern", {"test_auc": 0.9})
    with pytest.raises(KeyError, match="unknown metrics section"):
        nbutil.write_metrics(tmp_path, "sterm", good)


def test_patterns_and_declarations():
    assert metrics.find("ops", "speedup_fwd_A").unit == "x"
    assert metrics.find("stern", "test_auc").chance == 0.5
    for section, table in metrics.SECTIONS.items():
        for key, m in table.items():
            assert m.key == key and m.meaning, f"{section}.{key} needs a meaning"


def test_every_paper_number_points_at_a_declared_key():
    for r in paper.STERN + paper.STNET:
        if r.metric_key is not None:
            metrics.find(*r.metric_key)
